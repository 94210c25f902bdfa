"""Wikitext -> plain text plus anchor spans (character offsets into the plain text).

Hand-written scanning and compiled regular expressions, no full parser: a page is cleaned in a
fixed series of passes, each one C-speed regex work or a linear token scan.

1. Drop comments, ``<ref>`` (both forms) and the content of non-prose tags (math, gallery, ...).
2. Drop templates ``{{...}}`` (nested), then tables ``{| ... |}`` (nested).
3. Drop headings, list/indent markers, horizontal rules and ``__MAGIC__`` words (line level);
   Chinese Wikipedia's language-conversion markup ``-{...}-`` becomes the text it shows.
4. Internal links ``[[...]]``: article links become ``OPEN(i) surface CLOSE`` with two
   private-use marker characters; File/Image/Category/interlanguage links vanish (captions with
   nested links included); links into other namespaces or wikis keep their text only.
5. External links ``[http://x label]`` -> ``label``; HTML tags removed (inner text kept); bold and
   italic quotes removed; HTML entities unescaped; whitespace tidied.
6. One last scan removes the markers and records each anchor's exact ``(start, end)``.

Every later pass leaves the marker characters alone, so offsets are exact by construction:
``text[start:end]`` is the visible surface of the link.

Decisions (documented here because the tests rely on them):

* **Link trail.** As in MediaWiki, lower-case letters written directly after ``]]`` belong to the
  link: ``[[bus]]es`` renders "buses" and the span covers "buses". The trail letters are
  ``a-z`` plus the Latin-1 lower-case letters (``ß``-``ÿ``), English/German-wiki behaviour; CJK
  text has no link trail (``[[北京]]市`` -> span "北京").
* **Pipe trick.** ``[[Foo (bar)|]]`` -> "Foo", ``[[Paris, Texas|]]`` -> "Paris".
* **Targets** are normalised: section (``#...``) removed, underscores -> spaces, whitespace
  collapsed, first letter upper-cased, entities unescaped. ``[[#Section|x]]`` is text, not an anchor.
* Unpiped links show the target as written (``[[foo bar]]`` -> "foo bar", target "Foo bar").
* A leading colon (``[[:Category:X|y]]``) makes a visible link to a non-article: text only.
* **Conversion markup** (zhwiki): ``-{北京}-`` and ``-{R|北京}-`` -> "北京"; variant rules
  ``-{zh-hans:计算机;zh-hant:電腦;}-`` -> the first variant, "计算机" (no conversion between simplified
  and traditional characters is done); rules that show nothing (flags ``H``, ``T``, ``-``) vanish.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable

__all__ = ["WikitextCleaner", "clean_wikitext", "normalize_title"]

# Link i opens with OPEN + chr(_INDEX_BASE + i) (plane-15 private use) and closes with CLOSE.
_OPEN = "\ue000"
_CLOSE = "\ue001"
_INDEX_BASE = 0xF0000
_MAX_LINKS = 0xFFFD  # links per page that can carry a marker; later ones keep their text only
_MARKER_RE = re.compile("\ue000(.)|\ue001", re.DOTALL)
_STRAY_MARKER_RE = re.compile("[\ue000\ue001]")

# Tags whose content is not prose. <ref> is handled separately (it has a self-closing form that
# must not swallow the text after it).
_DROP_CONTENT_TAGS = (
    "math chem ce gallery timeline imagemap score graph syntaxhighlight source pre hiero "
    "references templatedata mapframe maplink inputbox categorytree includeonly table "
    "charinsert section"
).split()
_STRIP_RE = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<ref\b[^>]*?/\s*>"
    r"|<ref\b[^>]*>.*?</ref\s*>"
    r"|<(" + "|".join(_DROP_CONTENT_TAGS) + r")\b[^>]*?(?:/\s*>|>.*?</\1\s*>)",
    re.IGNORECASE | re.DOTALL,
)
_TEMPLATE_TOKEN_RE = re.compile(r"\{\{|\}\}")
_TABLE_TOKEN_RE = re.compile(r"\{\||\|\}")
# Applied to "\n" + text: a literal "\n" prefix is much faster to search than "^" in MULTILINE mode.
_LINE_RE = re.compile(r"\n(?:=+[^\n]*=+[ \t]*(?=\n|\Z)|[*#:;]+[ \t]*|-{4,}[ \t]*)")
_MAGIC_WORD_RE = re.compile(r"__[A-Z]+__")
_LINK_TOKEN_RE = re.compile(r"\[\[|\]\]")
_TRAIL = "[a-z\u00df-\u00f6\u00f8-\u00ff]"
_TRAIL_RE = re.compile(_TRAIL + "+")
# Links without brackets inside (the vast majority): one regex pass; the rest (File captions with
# nested links, stray brackets) go through the token scanner afterwards.
_SIMPLE_LINK_RE = re.compile(r"\[\[([^\[\]]*)\]\](" + _TRAIL + "*)")
_CONVERSION_RE = re.compile(r"-\{([^{}]*)\}-")
_CONVERSION_FLAGS_RE = re.compile(r"([A-Za-z;\- ]*)\|")  # "R|", "H|", "zh-hans;zh-hant|" before the text
_VARIANT_RULE_RE = re.compile(r"(?:^|;)\s*zh(?:-[a-z]+)?\s*:([^;]*)")
_HIDDEN_CONVERSION_FLAGS = frozenset("HT-")
_EXTERNAL_LINK_RE = re.compile(
    r"\[(?:https?://|ftp://|//|mailto:|news:|irc://|ircs://)[^\s\]]*(?:[ \t]+([^\]\n]*))?\]",
    re.IGNORECASE,
)
_BR_RE = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
_TAG_RE = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_QUOTES_RE = re.compile(r"''+")
_EMPTY_PARENS_RE = re.compile(r"\([\s,;:]*\)")
_PAREN_SEPARATOR_RE = re.compile(r"\(\s*[,;:][\s,;:]*")
_MULTI_SPACE_RE = re.compile("  +")
_BLANK_LINES_RE = re.compile(r"\n\n+")
_LEFTOVER_TOKENS = ("[[", "]]", "{{", "}}", "{|", "|}")
_ODD_SPACES = ("\t", "\u00a0", "\u2009", "\u202f")
_PAREN_SUFFIX_RE = re.compile(r"\s*\([^()]*\)\s*$")
_LANG_PREFIX_RE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8}){0,2}|simple")

# Canonical English names and aliases; a dump's own <siteinfo> names are added to these.
_DROP_NAMESPACES = {"file", "image", "media", "category"}
_TEXT_NAMESPACES = {
    "talk", "user", "user talk", "wikipedia", "wikipedia talk", "project", "project talk",
    "wp", "wt", "file talk", "image talk", "mediawiki", "mediawiki talk", "template",
    "template talk", "t", "help", "help talk", "category talk", "portal", "portal talk",
    "book", "book talk", "draft", "draft talk", "module", "module talk", "special",
    "timedtext", "timedtext talk", "education program", "gadget", "gadget definition", "topic",
    "mos", "h", "cat", "p",
}  # fmt: skip
# Sister projects and common interwiki prefixes: the link is shown, but it is no article anchor.
_INTERWIKI = {
    "w", "wikipedia", "wikt", "wiktionary", "s", "wikisource", "q", "wikiquote", "b", "wikibooks",
    "n", "wikinews", "v", "wikiversity", "voy", "wikivoyage", "c", "commons", "m", "meta",
    "metawiki", "species", "wikispecies", "d", "wikidata", "mw", "mediawikiwiki", "foundation",
    "wmf", "phab", "doi", "bugzilla", "google", "imdb", "oeis", "rfc", "ethnologue", "iarchive",
}  # fmt: skip
# Localised File/Category names of the larger wikis (a dump's siteinfo adds its own).
_DROP_NAMESPACES |= {
    "datei", "bild", "kategorie", "fichier", "catégorie", "archivo", "categoría", "imagen",
    "immagine", "categoria", "ficheiro", "arquivo", "plik", "kategoria", "bestand",
    "categorie", "файл", "категория", "文件", "檔案", "档案", "图像", "分类", "分類", "ファイル",
    "画像", "カテゴリ", "파일", "분류",
}  # fmt: skip


def normalize_title(title: str) -> str:
    """MediaWiki-style title normalisation: ``_`` -> space, collapsed whitespace, first letter upper."""
    if "&" in title:
        title = html.unescape(title)
    title = " ".join(title.replace("_", " ").split())
    if title:
        first = title[0].upper()
        if len(first) == 1:  # 'ß'.upper() == 'SS': MediaWiki leaves such letters alone
            title = first + title[1:]
    return title


def _replace_balanced(
    text: str,
    token_re: re.Pattern[str],
    open_token: str,
    render: Callable[[int, re.Match[str]], tuple[str, int]],
) -> str:
    """Replace each outermost balanced ``open ... close`` region (nested ones included) with
    ``render(start, closing_match)``, which returns the replacement and where the text resumes.
    An opener that never closes stays as literal text and scanning resumes right after it."""
    out: list[str] = []
    pos = 0
    while True:
        depth = 0
        start = last = pos
        for m in token_re.finditer(text, pos):
            if m.group() == open_token:
                if depth == 0:
                    start = m.start()
                depth += 1
            elif depth:
                depth -= 1
                if depth == 0:
                    out.append(text[last:start])
                    replacement, last = render(start, m)
                    out.append(replacement)
        if depth == 0:
            out.append(text[last:])
            return "".join(out)
        out.append(text[last : start + len(open_token)])
        pos = start + len(open_token)


def _drop_nested(text: str, token_re: re.Pattern[str], open_token: str) -> str:
    """Remove balanced ``open ... close`` regions (nested). An unclosed opener stays as text."""
    if open_token not in text:
        return text
    return _replace_balanced(text, token_re, open_token, lambda start, close: ("", close.end()))


class WikitextCleaner:
    """Cleans wikitext; holds the namespace tables (optionally from the dump's ``<siteinfo>``)."""

    def __init__(self, namespaces: dict[int, str] | Iterable[tuple[int, str]] | None = None):
        self.drop_namespaces = set(_DROP_NAMESPACES)
        self.text_namespaces = set(_TEXT_NAMESPACES)
        items = namespaces.items() if isinstance(namespaces, dict) else (namespaces or ())
        for key, name in items:
            name = name.strip().lower().replace("_", " ")
            if not name or key == 0:
                continue
            (self.drop_namespaces if key in (-2, 6, 14) else self.text_namespaces).add(name)
        self.text_namespaces -= self.drop_namespaces

    # -- links -----------------------------------------------------------------------------------
    def _render_link(self, inner: str, targets: list[str]) -> tuple[str, bool]:
        """Render the inside of one ``[[...]]``; returns (text, takes_link_trail)."""
        if "[[" in inner:  # nested links: only File/Image captions do this legitimately
            head = inner.split("|", 1)[0].strip().lstrip(":").strip()
            colon = head.find(":")
            if colon > 0 and not inner.lstrip().startswith(":"):
                prefix = head[:colon].strip().lower().replace("_", " ")
                if prefix in self.drop_namespaces or _LANG_PREFIX_RE.fullmatch(prefix):
                    return "", False
            pipe = inner.find("|")
            label = inner[pipe + 1 :] if 0 <= pipe < inner.find("[[") else inner
            return self._replace_links(label, targets), False

        pipe = inner.find("|")
        if pipe >= 0:
            raw_target, label = inner[:pipe], inner[pipe + 1 :]
        else:
            raw_target, label = inner, None
        if "\n" in raw_target or "{" in raw_target or "<" in raw_target:
            return (label if label is not None else raw_target), False  # not a valid link
        target = raw_target.strip()
        leading_colon = target.startswith(":")
        if leading_colon:
            target = target[1:].lstrip()
        colon = target.find(":")
        if colon > 0:
            prefix = " ".join(target[:colon].lower().replace("_", " ").split())
            namespaced = False
            if prefix in self.drop_namespaces:
                if not leading_colon:
                    return "", False
                namespaced = True
            elif prefix in self.text_namespaces or prefix in _INTERWIKI:
                namespaced = True
            elif _LANG_PREFIX_RE.fullmatch(prefix) and target[:colon] == target[:colon].lower():
                if not leading_colon:
                    return "", False  # interlanguage link: not rendered in the text
                namespaced = True
            if namespaced:
                if label is None:
                    return target, False
                if label == "":
                    return _pipe_trick(target[colon + 1 :].strip()), False
                return label, False
        if label is None:
            surface = target
        elif label == "":
            surface = _pipe_trick(target)
        else:
            surface = label
        page = normalize_title(target.split("#", 1)[0])
        if not page or len(targets) >= _MAX_LINKS:
            return surface, False
        if "\n" in surface:
            surface = surface.replace("\n", " ")
        targets.append(page)
        return _OPEN + chr(_INDEX_BASE + len(targets) - 1) + surface, True

    def _replace_links(self, text: str, targets: list[str]) -> str:
        if "[[" not in text:
            return text

        def simple(m: re.Match[str]) -> str:
            rendered, anchor = self._render_link(m.group(1), targets)
            return rendered + m.group(2) + _CLOSE if anchor else rendered + m.group(2)

        text = _SIMPLE_LINK_RE.sub(simple, text)
        if "[[" not in text:
            return text

        def nested(start: int, close: re.Match[str]) -> tuple[str, int]:
            rendered, anchor = self._render_link(text[start + 2 : close.start()], targets)
            resume = close.end()
            if anchor:
                trail = _TRAIL_RE.match(text, resume)
                if trail:
                    rendered += trail.group()
                    resume = trail.end()
                rendered += _CLOSE
            return rendered, resume

        return _replace_balanced(text, _LINK_TOKEN_RE, "[[", nested)

    # -- the whole page --------------------------------------------------------------------------
    def clean(self, wikitext: str) -> tuple[str, list[tuple[int, int, str]]]:
        """Return ``(plain_text, [(start, end, target), ...])`` with ``plain_text[start:end]`` the surface."""
        text = wikitext
        if _OPEN in text or _CLOSE in text:
            text = _STRAY_MARKER_RE.sub("", text)
        if "<" in text:
            text = _STRIP_RE.sub("", text)
        text = _drop_nested(text, _TEMPLATE_TOKEN_RE, "{{")
        text = _drop_nested(text, _TABLE_TOKEN_RE, "{|")
        text = _LINE_RE.sub("\n", "\n" + text)
        if "__" in text:
            text = _MAGIC_WORD_RE.sub("", text)
        if "-{" in text:
            text = _CONVERSION_RE.sub(_render_conversion, text)
        targets: list[str] = []
        text = self._replace_links(text, targets)
        if "[" in text:
            text = _EXTERNAL_LINK_RE.sub(r"\1", text)
        if "<" in text:
            text = _BR_RE.sub(" ", text)
            text = _TAG_RE.sub("", text)
        if "''" in text:
            text = _QUOTES_RE.sub("", text)
        if "&" in text:
            text = html.unescape(text)
        for token in _LEFTOVER_TOKENS:  # unbalanced brackets left by broken markup
            if token in text:
                text = text.replace(token, "")
        if "(" in text:
            text = _EMPTY_PARENS_RE.sub("", text)
            text = _PAREN_SEPARATOR_RE.sub("(", text).replace("( ", "(")
        if "\u200b" in text:
            text = text.replace("\u200b", "")
        # str.replace is much faster than a regex over every space of the page.
        for space in _ODD_SPACES:
            if space in text:
                text = text.replace(space, " ")
        if "  " in text:
            text = _MULTI_SPACE_RE.sub(" ", text)
        for punct in ",.;:!?)":
            text = text.replace(" " + punct, punct)
        text = text.replace(" \n", "\n").replace("\n ", "\n")
        text = _BLANK_LINES_RE.sub("\n", text).strip()
        if not targets:
            return text, []
        return _extract_markers(text, targets)


def _render_conversion(match: re.Match[str]) -> str:
    """The text a ``-{...}-`` shows: its content, the first variant of variant rules, or nothing."""
    content = match.group(1)
    flags = _CONVERSION_FLAGS_RE.match(content)
    if flags:
        if _HIDDEN_CONVERSION_FLAGS.intersection(flags.group(1).replace(" ", "").split(";")):
            return ""
        content = content[flags.end() :]
    variants = _VARIANT_RULE_RE.findall(content)
    return variants[0].strip() if variants else content


def _pipe_trick(target: str) -> str:
    stripped = _PAREN_SUFFIX_RE.sub("", target)
    if stripped != target:
        return stripped
    comma = target.find(", ")
    return target[:comma] if comma > 0 else target


def _extract_markers(text: str, targets: list[str]) -> tuple[str, list[tuple[int, int, str]]]:
    pieces: list[str] = []
    raw_spans: list[tuple[int, int, str]] = []
    length = last = 0
    open_at = -1
    open_index = 0
    for m in _MARKER_RE.finditer(text):
        piece = text[last : m.start()]
        pieces.append(piece)
        length += len(piece)
        last = m.end()
        index = m.group(1)
        if index is None:
            if open_at >= 0:
                raw_spans.append((open_at, length, targets[open_index]))
                open_at = -1
        else:
            open_at, open_index = length, ord(index) - _INDEX_BASE
    pieces.append(text[last:])
    plain = "".join(pieces)
    spans = []
    for start, end, target in raw_spans:
        while start < end and plain[start].isspace():
            start += 1
        while end > start and plain[end - 1].isspace():
            end -= 1
        if start < end:
            spans.append((start, end, target))
    return plain, spans


_DEFAULT = WikitextCleaner()


def clean_wikitext(wikitext: str, cleaner: WikitextCleaner | None = None):
    """Module-level shortcut: ``(plain_text, [(start, end, target), ...])``."""
    return (cleaner or _DEFAULT).clean(wikitext)
