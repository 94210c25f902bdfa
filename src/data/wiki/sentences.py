"""A small rule-based sentence splitter returning character ranges.

Rules, in order:

* A newline always ends a sentence (the cleaned text has one paragraph or list item per line).
* ``。！？`` (CJK full stops) end a sentence, with any closing quotes/brackets after them.
* ``. ! ?`` (and ``…``) followed by whitespace end a sentence unless
  - the next word starts with a lower-case letter,
  - the punctuation is a single ``.`` after a known abbreviation (``Dr.``, ``e.g.``, ``No.``, ...),
    a single letter (initials such as ``J. R. R. Tolkien``) or a dotted acronym (``U.S.``).
  Decimals (``3.14``) never split because no whitespace follows the dot.
* Never inside an entity span: a candidate boundary that falls inside one is skipped.

The price of the acronym rule is that "... in the U.S. He ..." stays one sentence.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

__all__ = ["split_sentences", "ABBREVIATIONS"]

ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof st jr sr mt ft fr rev hon gen col lt sgt capt cpt maj adm gov sen rep pres
    vs v etc al e.g i.e cf ca c approx fig figs no nos vol vols pp p ed eds trans repr est dept
    univ assn bros inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec b d fl r op
    cit ibid viz lit esp incl nr ch sec art para pt
    """.split()
)
# Group 1: the punctuation run; group 2: the first non-blank character after it on the same line
# (None at a line end). A newline is a boundary by itself.
_BOUNDARY_RE = re.compile(
    # The leading look-ahead is a fast single-charset pre-check (about 2x faster on long text).
    r"(?=[.!?\u2026。！？\n])"
    r"(?:([.!?\u2026]+[\"'\u2019\u201d\u00bb)\]]*)(?:[ \t]+(?=(\S))|(?=\s))|[。！？]+[」』”’）)]*|\n)"
)
_DOTTED_RE = re.compile(r"(?:\w\.)+\w")
_OPENERS = "([\"'\u201c\u2018\u00ab"


def _inside(pos: int, starts: Sequence[int], ends: Sequence[int]) -> bool:
    """True when ``pos`` lies strictly inside one of the sorted, non-overlapping spans."""
    i = bisect.bisect_left(starts, pos) - 1
    return i >= 0 and ends[i] > pos


def split_sentences(
    text: str, spans: Sequence[tuple[int, int]] | Sequence[Sequence] = ()
) -> list[tuple[int, int]]:
    """Split ``text`` into sentence ranges ``(start, end)`` with no surrounding whitespace.

    ``spans`` (sorted, non-overlapping; only the first two items of each are read) are never cut.
    """
    starts = [s[0] for s in spans]
    ends = [s[1] for s in spans]
    out: list[tuple[int, int]] = []
    begin = 0
    for m in _BOUNDARY_RE.finditer(text):
        punct = m.group(1)
        if punct is None:  # newline or CJK full stop
            end = m.start() if m.group() == "\n" else m.end()
        else:
            end = m.end(1)
            nxt = m.group(2)
            if nxt is not None:
                if nxt.islower():
                    continue
                if punct[0] == "." and (len(punct) == 1 or punct[1] != "."):
                    punct_at = m.start()
                    word_start = max(text.rfind(" ", 0, punct_at), text.rfind("\n", 0, punct_at)) + 1
                    word = text[word_start:punct_at].lstrip(_OPENERS)
                    if (
                        (len(word) == 1 and word.isalpha())
                        or word.lower() in ABBREVIATIONS
                        or ("." in word and _DOTTED_RE.fullmatch(word))
                    ):
                        continue
        if starts and (_inside(end, starts, ends) or _inside(m.end(), starts, ends)):
            continue
        if begin < end:
            _emit(text, begin, end, out)
        begin = m.end()
    _emit(text, begin, len(text), out)
    return out


def _emit(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        out.append((start, end))
