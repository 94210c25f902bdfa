"""Find gazetteer entries (and person-name patterns) in text: Aho-Corasick on token boundaries.

How a text is matched (one C-level automaton pass, Python work only per hit):

* Token boundaries. Every character that is not a letter, digit, mark or '_' is read as a space, in
  the text and in the entries alike (length-preserving, so offsets are the text's own), and entries
  are keyed with a space on each side; the text is padded with one space at each end. So a key only
  matches between non-word characters: "Paris" is found in "Paris, Texas" and "(Paris)" but not in
  "Parisian"; "São Paulo" and "Zürich" are whole words like any other (letters are letters in any
  script). A side of an entry that is a CJK character gets no pad: CJK text has no spaces, so such
  entries match anywhere ("北京" inside "北京大学"). Between a CJK character and a letter or digit of
  another script there is a boundary too, in the text and in the entries alike ("Paris" is found in
  "在Paris工作", "A股" in "买A股" but not in "买ZA股"): a space is put there before matching, in a text
  that holds a CJK character only, and the hits are mapped back to the text's own offsets. One consequence: "Guinea-Bissau" also matches "Guinea Bissau" and "AT&T"
  matches "AT T" (harmless). Entries match with single separators only ("New  York" with two spaces
  is not "New York"); text is expected in NFC, as the gazetteer is.
* Case (``match.case``): ``sensitive``: exact; ``insensitive``: both sides lower-cased (per character,
  so offsets stay; final sigma folded); ``smart``: exact, or the entry in ALL CAPS ("PARIS"), or, for
  an entry written all in lower case, its Capitalised and Title Case forms. So a capitalised entry
  ("Nice", "Reading") never matches a lower-case common word, and a user's "ebay" still matches "Ebay".
* Overlaps: all hits (nested and overlapping ones included) are candidates; the longest is taken
  first, then the next longest that does not overlap a taken one, and so on; equal lengths go to the
  leftmost, then to a gazetteer entry over a name pattern. The result is sorted and non-overlapping.
* Ambiguity: a matched surface listed under several types gets the first of them in
  ``match.priority`` (types not listed rank after, alphabetically) with ``ambiguity=priority``, or the
  type None with ``ambiguity=unknown``. Decided once per key when the matcher is built.

Person names. names-dataset lists first names and last names, not people, and most first names are
also common words or places ("Grace", "Georgia", "Will"); listing "first last" pairs would be a
cross product of millions. So a person mention is recognised by a *name pattern*: two or three capitalised
tokens (a middle name or an initial such as "F." in between, and lower-case particles such as "van",
"de", "bin" before the last name) whose first token is a known first name and whose last token is a
known last name, from the top-N names per country (``data.gazetteer.build.names_top_n``). Capitalised
function words, months and titles never start one ("May", "King"). Full names of people with a
Wikipedia page are entries in the gazetteer proper (typed by their infobox) and win ties. A name
pattern hit has the source ``name_pattern``, type PER and no fine type. First names are keys of the
same automaton (checked as written after a hit), and only after one does a small anchored regex
read the rest of the name, so the pattern costs little on text without names.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import NamedTuple

import ahocorasick

from cofee.config import MatchConfig
from cofee.data.gazetteer.build import Entry, Gazetteer

__all__ = ["GazetteerMatcher", "Match", "boundary_map", "NAME_PATTERN_TYPE"]

NAME_PATTERN_TYPE = "PER"
PARTICLES = frozenset(
    "van von de da del della der den di du la le dos das do bin ibn al el ter ten y zu af".split()
)


_CJK_RANGES = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
_CJK_RE = re.compile(f"[{_CJK_RANGES}]")
# Where a CJK character meets a non-CJK word character (in boundary-mapped text, where every
# non-word character is already a space): a word boundary for the entries of other scripts.
_CJK_EDGE_RE = re.compile(
    f"(?<=[{_CJK_RANGES}])(?=[^ {_CJK_RANGES}])|(?<=[^ {_CJK_RANGES}])(?=[{_CJK_RANGES}])"
)


def _is_cjk(char: str) -> bool:
    return _CJK_RE.match(char) is not None


def _space_cjk_edges(mapped: str) -> tuple[str, list[int] | None]:
    """``mapped`` with a space at each CJK / other-script edge, and the offset in ``mapped`` of each
    character of the result (None when there is no edge: the text is returned as it is)."""
    if mapped.isascii() or not _CJK_RE.search(mapped):  # isascii is O(1): most English text stops here
        return mapped, None
    cuts = [m.start() for m in _CJK_EDGE_RE.finditer(mapped)]
    if not cuts:
        return mapped, None
    pieces: list[str] = []
    offsets: list[int] = []
    last = 0
    for cut in cuts:
        pieces += (mapped[last:cut], " ")
        offsets += range(last, cut + 1)  # the inserted space takes the offset of the character after it
        last = cut
    pieces.append(mapped[last:])
    offsets += range(last, len(mapped))
    return "".join(pieces), offsets


class _BoundaryTable(dict):
    """``str.translate`` table: word characters (letters, digits, marks, '_') stay, others -> space."""

    def __missing__(self, key: int) -> int:
        char = chr(key)
        value = key if (char == "_" or unicodedata.category(char)[0] in "LNM") else 32
        self[key] = value
        return value


_BOUNDARY = _BoundaryTable()
for _o in range(128):
    _BOUNDARY[_o]  # noqa: B018 - warm the ASCII part of the cache


def boundary_map(text: str, lower: bool = False) -> str:
    """``text`` with every non-word character as a space (same length), lower-cased when asked."""
    if lower:
        text = _lower(text)
    return text.translate(_BOUNDARY)


def _lower(text: str) -> str:
    """Lower case, character by character where a character would lower to several ('İ')."""
    low = text.lower()
    if len(low) != len(text):
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    return low.replace("ς", "σ")


def _variants(surface: str, case: str) -> set[str]:
    if case != "smart":
        return {surface}
    out = {surface}
    upper = surface.upper()
    if len(upper) == len(surface):
        out.add(upper)
    if surface.islower():
        out.add(surface[0].upper() + surface[1:])
        out.add(" ".join(w[:1].upper() + w[1:] for w in surface.split(" ")))
    return {v for v in out if len(v) == len(surface)}


def _key(surface: str, lower: bool) -> str | None:
    """The automaton key of a surface: boundary-mapped, with a space pad on each non-CJK side."""
    mapped = boundary_map(surface, lower)
    if not mapped.strip():
        return None
    mapped, _ = _space_cjk_edges(mapped)
    return ("" if _is_cjk(mapped[0]) else " ") + mapped + ("" if _is_cjk(mapped[-1]) else " ")


class Match(NamedTuple):
    start: int
    end: int
    type: str | None
    source: str  # "gazetteer" or "name_pattern"
    fine_type: str | None


def _char_class(predicate) -> str:
    ranges = []
    start = prev = None
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        if predicate(chr(code)):
            if start is None:
                start = code
            elif code != prev + 1:
                ranges.append((start, prev))
                start = code
            prev = code
    if start is not None:
        ranges.append((start, prev))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


_NAME_TAIL_RE: re.Pattern[str] | None = None


def _name_tail_re() -> re.Pattern[str]:
    """What may follow a first name: one or more capitalised words, initials ("F.") and lower-case
    particles ("van"), each after one space."""
    global _NAME_TAIL_RE
    if _NAME_TAIL_RE is None:
        upper = _char_class(lambda c: c.isupper() or unicodedata.category(c) == "Lt")
        lower = _char_class(lambda c: c.islower() or unicodedata.category(c) == "Mn")
        end = rf"(?![^\W{_CJK_RANGES}])"  # no word character after it, except a CJK one ("John Smith说")
        token = rf"[{upper}](?:[{lower}]+|['’](?=[{upper}]))(?:['’-]?[{upper}][{lower}]+)*{end}"
        initial = rf"[{upper}]\.{end}"
        particle = r"(?:" + "|".join(sorted(PARTICLES, key=len, reverse=True)) + r")" + end
        _NAME_TAIL_RE = re.compile(rf"(?:[ \u00a0](?:{token}|{initial}|{particle}))+")
    return _NAME_TAIL_RE


class GazetteerMatcher:
    """``GazetteerMatcher(gazetteer, match).match(text)`` -> sorted ``[(start, end, type or None)]``.

    ``match_spans`` gives the same spans as ``Match`` records (with source and fine type).
    """

    def __init__(self, gazetteer: Gazetteer, match: MatchConfig | None = None):
        self.config = match = match or MatchConfig()
        match.validate()
        self.case = match.case
        self.gazetteer = gazetteer
        known = sorted({e.type for e in gazetteer.entries} - set(match.priority))
        self._rank = {t: i for i, t in enumerate(list(match.priority) + known)}
        by_key: dict[str, list[Entry]] = {}
        lower = match.case == "insensitive"
        for entry in gazetteer.entries:
            for variant in _variants(entry.surface, match.case):
                key = _key(variant, lower)
                if key is not None:
                    by_key.setdefault(key, []).append(entry)
        self.first_names = gazetteer.first_names
        self.last_names = gazetteer.last_names
        self._names = bool(match.name_pattern and self.first_names and self.last_names)
        first_keys: set[str] = set()
        if self._names:
            # First names are found by the same automaton pass (then checked exactly, as written).
            first_keys = {k for k in (_key(name, lower) for name in self.first_names) if k is not None}
            self._tail_re = _name_tail_re()
        self.automaton = ahocorasick.Automaton()
        for key in by_key.keys() | first_keys:
            entries = by_key.get(key)
            kind, fine = self._resolve(entries) if entries else (None, None)
            lpad = 1 if key[0] == " " else 0
            rpad = 1 if key[-1] == " " else 0
            self.automaton.add_word(key, (len(key), lpad, rpad, kind, fine, bool(entries), key in first_keys))
        self.keys = len(by_key)
        self._empty = not (by_key or first_keys)
        if not self._empty:
            self.automaton.make_automaton()

    def _resolve(self, entries: list[Entry]) -> tuple[str | None, str | None]:
        types = {e.type for e in entries}
        if len(types) > 1:
            if self.config.ambiguity == "unknown":
                return None, None
            kind = min(types, key=lambda t: (self._rank.get(t, len(self._rank)), t))
        else:
            kind = next(iter(types))
        fines = [e.fine_type for e in entries if e.type == kind and e.fine_type]
        return kind, (fines[0] if fines else None)

    def resolve_surface(self, surface: str) -> tuple[bool, str | None, str | None]:
        """``(found, type, fine_type)`` of an exact surface, with the ambiguity rule applied."""
        entries = self.gazetteer.lookup(surface)
        if not entries:
            return False, None, None
        kind, fine = self._resolve(entries)
        return True, kind, fine

    # -- matching ----------------------------------------------------------------------------------
    def _candidates(self, text: str) -> list[tuple[int, int, int, str | None, str | None]]:
        """``(start, end, tie_rank, type, fine_type)`` of every hit, overlapping ones included."""
        if self._empty:
            return []
        out = []
        names = []
        mapped, offsets = _space_cjk_edges(boundary_map(text, self.case == "insensitive"))
        padded = " " + mapped + " "
        for end, (length, lpad, rpad, kind, fine, is_entry, is_first) in self.automaton.iter(padded):
            start, stop = end - length + lpad, end - rpad  # offsets in `mapped`, end exclusive
            if offsets is not None:  # spaces were put at CJK edges: back to the text's offsets
                start, stop = offsets[start], offsets[stop - 1] + 1
            if is_entry:
                out.append((start, stop, 0, kind, fine))
            if is_first:
                names.append((start, stop))
        if names:
            out.extend(self._name_candidates(text, names))
        return out

    def _name_candidates(self, text: str, first_hits: list[tuple[int, int]]):
        """Name-pattern spans starting at the first names the automaton found."""
        first, last = self.first_names, self.last_names
        for start, end in first_hits:
            if text[start:end] not in first or (start and text[start - 1] in ".'’-"):
                continue  # a case variant (insensitive keys), or inside "Jean-John", "x.John"
            tail = self._tail_re.match(text, end)
            if tail is None:
                continue
            words = tail.group().replace("\u00a0", " ").split(" ")  # words[0] == "" (the first name's place)
            best = None
            middle = 0  # non-particle tokens between the first and the last name
            for j in range(1, min(len(words), 5)):
                w = words[j]
                if w in PARTICLES:
                    continue
                if w in last and middle <= 1:
                    best = j
                middle += 1
                if middle > 2:
                    break
            if best is not None:
                stop = end + sum(len(w) + 1 for w in words[1 : best + 1])
                yield (start, stop, 1, NAME_PATTERN_TYPE, None)

    def match_spans(self, text: str) -> list[Match]:
        candidates = self._candidates(text)
        if not candidates:
            return []
        if len(candidates) == 1:
            s, e, tie, kind, fine = candidates[0]
            return [Match(s, e, kind, "name_pattern" if tie else "gazetteer", fine)]
        candidates.sort(key=lambda c: (c[0] - c[1], c[0], c[2]))
        taken: list[tuple[int, int, int, str | None, str | None]] = []
        for cand in candidates:
            s, e = cand[0], cand[1]
            if all(e <= ts or s >= te for ts, te, *_ in taken):
                taken.append(cand)
        taken.sort()
        return [
            Match(s, e, kind, "name_pattern" if tie else "gazetteer", fine) for s, e, tie, kind, fine in taken
        ]

    def match(self, text: str) -> list[tuple[int, int, str | None]]:
        """Sorted, non-overlapping ``(start, end, type)`` (end exclusive; type None if ambiguous/unknown)."""
        return [(m.start, m.end, m.type) for m in self.match_spans(text)]


if (
    __name__ == "__main__"
):  # pragma: no cover - a quick manual check: python -m cofee.data.gazetteer.matcher DIR TEXT
    from cofee.data.gazetteer.build import load_gazetteer

    matcher = GazetteerMatcher(load_gazetteer(sys.argv[1]))
    sample = " ".join(sys.argv[2:])
    for m in matcher.match_spans(sample):
        print(m, repr(sample[m.start : m.end]))
