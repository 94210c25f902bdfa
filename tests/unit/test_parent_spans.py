"""The parent-span artifact in parts: written part by part, complete only with its manifest, read back
by row, and a killed build neither taken as finished nor started over."""

import pytest

from cofee.data_modules.parent_spans import (
    MANIFEST,
    ParentSpanParts,
    complete,
    finish,
    missing_parts,
    open_parent_spans,
    part_file,
    plan_parts,
    write_part,
)
from cofee.utils.errors import InputFileError


def marked(rows):
    """Columns of marked windows for `rows` (row r: one unknown-type span, r % 3 + 1 spans marked)."""
    return {
        "row": list(rows),
        "labels": [[0, r % 5] for r in rows],
        "span_starts": [[0] for _ in rows],
        "span_ends": [[1 + r % 2] for r in rows],
        "span_types": [["?"] for _ in rows],
        "marked": [r % 3 + 1 for r in rows],
    }


def test_plan_cuts_whole_batches():
    assert plan_parts(10, batch_size=2, batches_per_part=2) == [(0, 4), (4, 8), (8, 10)]
    assert plan_parts(0, 4) == []


def test_parts_round_trip_by_row(tmp_path):
    parts = plan_parts(9, batch_size=1, batches_per_part=3)
    rows = {(0, 3): [12, 10], (3, 6): [], (6, 9): [31, 7]}  # a part's rows need not be in order
    for part in parts:
        write_part(tmp_path, part, marked(rows[part]))
    manifest = finish(tmp_path, parts, {"parent": "abc"}, has_head=True)
    assert manifest["marked"] == sum(r % 3 + 1 for r in (12, 10, 31, 7)) and manifest["parent"] == "abc"
    assert [p["rows"] for p in manifest["parts"]] == [2, 0, 2]
    assert complete(tmp_path)
    overlay = open_parent_spans(tmp_path)
    assert isinstance(overlay, ParentSpanParts) and overlay.rows.tolist() == [7, 10, 12, 31]
    assert overlay.lookup(31) == {
        "row": 31,
        "labels": [0, 1],
        "span_starts": [0],
        "span_ends": [2],
        "span_types": ["?"],
        "marked": 2,
    }
    assert overlay.lookup(11) is None and overlay.lookup(100) is None


def test_a_killed_build_is_not_complete_and_keeps_its_whole_parts(tmp_path):
    parts = plan_parts(6, batch_size=1, batches_per_part=2)
    write_part(tmp_path, parts[0], marked([1]))
    # killed while writing the second part: a temporary file, never renamed, and no manifest
    (tmp_path / f".{part_file(parts[1])}.tmp-123").write_bytes(b"ARROW1 half a file")
    assert not complete(tmp_path)
    with pytest.raises(InputFileError, match="not a finished parent-span artifact"):
        ParentSpanParts(tmp_path)
    assert missing_parts(tmp_path, parts) == parts[1:]  # the rebuild computes only these
    with pytest.raises(InputFileError, match="2 parts of the parent pass are missing"):
        finish(tmp_path, parts, {}, has_head=True)
    assert not (tmp_path / MANIFEST).exists()
    for part in parts[1:]:
        write_part(tmp_path, part, marked([part[0]]))
    finish(tmp_path, parts, {}, has_head=True)
    assert complete(tmp_path) and not list(tmp_path.glob(".*.tmp-*"))
    assert open_parent_spans(tmp_path).rows.tolist() == [1, 2, 4]
    (tmp_path / part_file(parts[2])).unlink()  # a listed part gone: not complete any more
    assert not complete(tmp_path)


def test_a_failed_part_write_leaves_nothing(tmp_path, monkeypatch):
    import cofee.data_modules.parent_spans as parent_spans

    def broken(path, table):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(parent_spans, "write_arrow", broken)
    with pytest.raises(OSError, match="disk full"):
        write_part(tmp_path, (0, 4), marked([3]))
    assert list(tmp_path.iterdir()) == []


def test_no_head_is_a_manifest_without_parts(tmp_path):
    manifest = finish(tmp_path, plan_parts(4, 2), {}, has_head=False)
    assert manifest["marked"] is None and manifest["parts"] == [] and complete(tmp_path)
