"""What every built data folder shares (anchor corpus, gazetteer, labelled corpus).

A folder holds data files plus `manifest.json` with `format`, `version` and `build_hash`; a build is
skipped when the manifest's hash matches and its files are all there; readers check format and
version and stream JSONL lines with errors that name the file and line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cofee.utils.errors import CofeeError, InputFileError
from cofee.utils.io import read_json

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def up_to_date(
    out_dir: str | Path, build_hash: str, what: str, files: Iterable[str] | None = None
) -> dict | None:
    """The existing manifest when `out_dir` was built with `build_hash` and nothing is missing
    (`files`: the data files to check; None = the manifest's `shards`), else None."""
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        old = read_json(path)
    except CofeeError:
        return None  # unreadable: rebuild
    if not isinstance(old, dict) or old.get("build_hash") != build_hash:
        return None
    names = list(files) if files is not None else [s.get("file", "") for s in old.get("shards", [])]
    if not all((out_dir / name).is_file() for name in names):
        return None
    log.info("%s %s is up to date (build %s)", what, out_dir, build_hash)
    return old


def read_manifest(
    folder: str | Path, fmt: str, version: int, what: str, command: str, shards: bool = True
) -> dict:
    """A built folder's manifest, checked: present, of `fmt`, of this code's `version`."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise InputFileError(folder, f"no {MANIFEST}: run {command} to build the {what}")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        article = "an" if what[0] in "aeiou" else "a"
        raise InputFileError(path, f"not {article} {what} manifest (format is not '{fmt}')")
    if manifest.get("version") != version:
        raise InputFileError(
            path, f"{what} version {manifest.get('version')!r}, this code reads {version}: rebuild it"
        )
    if shards and not isinstance(manifest.get("shards"), list):
        raise InputFileError(path, "manifest has no 'shards' list")
    return manifest


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) for each line of a file listed in a manifest."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputFileError(path, f"file listed in {MANIFEST} is missing") from None
    with handle:
        for number, line in enumerate(handle, 1):
            try:
                yield number, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InputFileError(path, f"not valid UTF-8 ({exc.reason})", line=number) from None
            except json.JSONDecodeError as exc:
                raise InputFileError(path, f"not valid JSON ({exc.msg})", line=number) from None


def iter_shard_records(
    folder: str | Path, manifest: dict, check: Callable[[Any], str | None]
) -> Iterator[dict[str, Any]]:
    """Every record of the manifest's shards, in order; `check` returns what is wrong with one, or None."""
    folder = Path(folder)
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        for number, record in iter_jsonl(path):
            problem = check(record)
            if problem:
                raise InputFileError(path, problem, line=number)
            yield record


class ShardWriter:
    """Writes JSON lines into `shard-NNNNN.jsonl` files of at most `shard_size` lines each; `shards`
    lists them for the manifest."""

    def __init__(self, folder: Path, shard_size: int):
        self.folder = folder
        self.shard_size = shard_size
        self.shards: list[dict[str, Any]] = []
        self._handle = None
        self._count = 0

    def write(self, lines: list[str]) -> None:
        i = 0
        while i < len(lines):
            if self._handle is None:
                name = f"shard-{len(self.shards):05d}.jsonl"
                self._handle = open(self.folder / name, "w", encoding="utf-8")
                self.shards.append({"file": name, "sentences": 0})
                self._count = 0
            take = lines[i : i + self.shard_size - self._count]
            self._handle.write("\n".join(take) + "\n")
            self._count += len(take)
            self.shards[-1]["sentences"] = self._count
            i += len(take)
            if self._count >= self.shard_size:
                self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
