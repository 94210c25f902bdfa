"""The parent-span artifact in parts: what a parent head marked on the training windows, on disk.

The windows of a view are cut into parts of `PART_BATCHES` batches (`plan_parts`); part `j` is
computed by rank `j % world` (the batches are those of one process, whatever the number of ranks).
A folder holds:

- `part-<first>-<stop>.arrow`: the marked windows among windows `[first, stop)`, sorted by table row
  (`PARENT_SCHEMA`). Each is written to a temporary file and renamed (`write_part`), so a part that
  exists is whole; a build holds one part in memory at a time, never the artifact.
- `manifest.json`, written last (`finish`: rank 0, once every rank wrote its parts): the parts with
  their row and marked counts, the total marked, and the caller's inputs. Without it the folder is
  not an artifact (a killed build): `complete` says no, readers refuse it, and a rebuild computes
  only the parts that are missing (`missing_parts`).

`ParentSpanParts` reads it back as `CachedWindows`' overlay (`lookup(row)`), each part
memory-mapped when first asked for. A folder of the single-file layout (`rows.arrow`) still reads.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from cofee.data_modules.token_cache import ParentSpans, read_arrow, write_arrow
from cofee.utils.errors import InputFileError
from cofee.utils.io import atomic_write_json, read_json

PART_BATCHES = 64  # batches of the parent pass per part: bounded memory, few files
MANIFEST = "manifest.json"


def parent_schema():
    import pyarrow as pa

    ints = pa.list_(pa.int32())
    return pa.schema(
        [
            ("row", pa.int64()),
            ("labels", ints),
            ("span_starts", ints),
            ("span_ends", ints),
            ("span_types", pa.list_(pa.string())),
            ("marked", pa.int32()),
        ]
    )


PARENT_SCHEMA = parent_schema()


def plan_parts(
    n_windows: int, batch_size: int, batches_per_part: int = PART_BATCHES
) -> list[tuple[int, int]]:
    """Window ranges `[first, stop)` of `batches_per_part` batches each (the last one shorter)."""
    size = max(int(batch_size), 1) * max(int(batches_per_part), 1)
    return [(first, min(first + size, n_windows)) for first in range(0, n_windows, size)]


def part_file(part: tuple[int, int]) -> str:
    return f"part-{part[0]:010d}-{part[1]:010d}.arrow"


def write_part(folder: Path, part: tuple[int, int], columns: dict) -> None:
    """The marked windows of one part, sorted by row, written whole or not at all."""
    import pyarrow as pa

    table = pa.Table.from_pydict(columns, schema=PARENT_SCHEMA).sort_by("row")
    final = Path(folder) / part_file(part)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        write_arrow(tmp, table)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def missing_parts(folder: Path, parts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [part for part in parts if not (Path(folder) / part_file(part)).is_file()]


def finish(folder: Path, parts: list[tuple[int, int]], inputs: dict, has_head: bool) -> dict:
    """Write the manifest (last): every part's rows and marked count; `marked` None without a head.
    Refuses while a part is missing, and removes what killed writes left behind."""
    folder = Path(folder)
    missing = missing_parts(folder, parts) if has_head else []
    if missing:
        raise InputFileError(
            folder / part_file(missing[0]), f"{len(missing)} parts of the parent pass are missing"
        )
    listed, marked = [], 0
    for part in parts if has_head else []:
        table = read_arrow(folder / part_file(part))
        count = int(np.asarray(table.column("marked").to_numpy(), dtype=np.int64).sum())
        listed.append(
            {
                "file": part_file(part),
                "first": part[0],
                "stop": part[1],
                "rows": table.num_rows,
                "marked": count,
            }
        )
        marked += count
    for leftover in folder.glob(".part-*.tmp-*"):
        leftover.unlink(missing_ok=True)
    manifest = {**inputs, "marked": marked if has_head else None, "layout": "parts", "parts": listed}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def complete(folder: Path) -> bool:
    """A finished artifact: its manifest is there and every part it lists too."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return False
    manifest = read_json(path)
    if manifest.get("layout") != "parts":
        return manifest.get("marked") is None or (Path(folder) / ParentSpans.FILE).is_file()
    return all((Path(folder) / p["file"]).is_file() for p in manifest["parts"])


class ParentSpanParts:
    """Labels and spans a parent head gave some rows, read from the parts (`CachedWindows.parent`):
    one sorted int64 row index over all parts (with the part and position of each), and each part's
    table memory-mapped when a row of it is first looked up."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not complete(self.folder):
            raise InputFileError(self.folder / MANIFEST, "not a finished parent-span artifact")
        self.files = [p["file"] for p in read_json(self.folder / MANIFEST)["parts"]]
        self._tables: dict[int, object] = {}
        rows, part, at = [], [], []
        for index in range(len(self.files)):
            found = np.asarray(self._table(index).column("row").to_numpy(), dtype=np.int64)
            rows.append(found)
            part.append(np.full(found.shape[0], index, dtype=np.int32))
            at.append(np.arange(found.shape[0], dtype=np.int32))
        self._tables = {}  # opened again on demand (in workers too)
        order = np.argsort(np.concatenate(rows) if rows else np.zeros(0, np.int64), kind="stable")
        self.rows = (np.concatenate(rows) if rows else np.zeros(0, np.int64))[order]
        self.part = (np.concatenate(part) if part else np.zeros(0, np.int32))[order]
        self.at = (np.concatenate(at) if at else np.zeros(0, np.int32))[order]

    def _table(self, index: int):
        if index not in self._tables:
            self._tables[index] = read_arrow(self.folder / self.files[index])
        return self._tables[index]

    def __getstate__(self):
        return {**self.__dict__, "_tables": {}}

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def lookup(self, row: int) -> dict | None:
        where = int(np.searchsorted(self.rows, row))
        if where >= len(self.rows) or self.rows[where] != row:
            return None
        return self._table(int(self.part[where])).slice(int(self.at[where]), 1).to_pylist()[0]


def open_parent_spans(folder: str | Path) -> ParentSpanParts | ParentSpans:
    """The overlay of a finished artifact, in parts or in the single-file layout."""
    if read_json(Path(folder) / MANIFEST).get("layout") == "parts":
        return ParentSpanParts(folder)
    return ParentSpans(folder)
