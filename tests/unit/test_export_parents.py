"""An export's parents are found from any working folder (the curriculum records them relative)."""

import json
import logging

from cofee.experiments.fet_eval import run_exports
from cofee.models.export import MANIFEST
from cofee.pipeline.finetune import parent_stages


def _export(root, run, stage, parent=None):
    folder = root / "outputs" / run / stage / "encoder"
    folder.mkdir(parents=True)
    manifest = {"format": "cofee-encoder", "stage": stage, "parent_path": parent}
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def _chain(root):
    """study-wiki's ESI and NEE, and a FET run started from that NEE, recorded as the curriculum does:
    relative to the folder the runs were started in (`root`)."""
    _export(root, "study-wiki", "esi")
    _export(root, "study-wiki", "nee", "outputs/study-wiki/esi/encoder")
    return _export(root, "fet-run", "fet", "outputs/study-wiki/nee/encoder")


def test_parents_are_found_from_another_working_folder(tmp_path, monkeypatch):
    fet = _chain(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative parent_path does not name a folder from here
    assert parent_stages(fet) == ["esi", "nee", "fet"]
    project = tmp_path / "project" / "outputs"
    assert run_exports(fet.parents[1]) == {
        "esi": project / "study-wiki/esi/encoder",
        "nee": project / "study-wiki/nee/encoder",
        "fet": fet,
    }


def test_a_parent_no_longer_on_disk_ends_the_chain_with_a_warning(tmp_path, monkeypatch, caplog):
    fet = _chain(tmp_path)
    (tmp_path / "outputs/study-wiki/nee/encoder" / MANIFEST).unlink()
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert parent_stages(fet) == ["fet"]
    assert "outputs/study-wiki/nee/encoder" in caplog.text and "not on disk" in caplog.text
