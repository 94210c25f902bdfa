"""CurriculumCallback on its own: the parent check at fit start, the export and its record at fit end
(the curriculum runs in test_curriculum.py, test_esi.py, ... cover it inside a Trainer)."""

from types import SimpleNamespace

import pytest
import torch

from cofee.callbacks.curriculum import CurriculumCallback
from cofee.models.export import export_encoder, manifest_hash, read_export_manifest
from cofee.utils.errors import InputFileError
from cofee.utils.io import stable_hash


def _trainer(rank_zero=True, interrupted=False, events=None):
    events = [] if events is None else events
    clustering = SimpleNamespace(manifest_entry=lambda: {"clustering": {"k": 3}})
    return SimpleNamespace(
        is_global_zero=rank_zero,
        interrupted=interrupted,
        global_step=7,
        callback_metrics={"nee/val/f1": torch.tensor(0.25)},
        datamodule=SimpleNamespace(manifest={"counts": {"sentences": 4}}),
        callbacks=[clustering],
        loggers=["logger"],
        strategy=SimpleNamespace(barrier=lambda name: events.append(("barrier", name))),
    )


def test_a_parent_export_replaced_after_the_stage_read_it_is_refused(tmp_path, tiny_encoder, tokenizer):
    parent = tmp_path / "esi" / "encoder"
    export_encoder(tiny_encoder, tokenizer, parent, {"stage": "esi", "config_hash": "a"})
    inputs = {"parent": manifest_hash(read_export_manifest(parent))}
    callback = CurriculumCallback(
        "nee", tmp_path / "nee" / "encoder", tokenizer, inputs, {}, init_from=parent
    )
    callback.on_fit_start(_trainer(), None)  # the export the stage was planned from: fine
    export_encoder(tiny_encoder, tokenizer, parent, {"stage": "esi", "config_hash": "b"})
    with pytest.raises(InputFileError, match="manifest.json"):
        callback.on_fit_start(_trainer(), None)


def test_rank_zero_exports_every_rank_waits_then_the_export_is_recorded(tmp_path, tiny_encoder, tokenizer):
    events = []
    inputs = {"stages": {"nee": {"x": 1}}, "parent": "p" * 16}
    out = tmp_path / "nee" / "encoder"

    def record(loggers, folder, manifest):
        events.append(("record", loggers, folder, manifest["stage"]))

    module = SimpleNamespace(encoder=tiny_encoder)
    other = CurriculumCallback(
        "nee", out, tokenizer, inputs, {"seed": 1}, tmp_path / "esi", log_export=record
    )
    other.on_fit_end(_trainer(rank_zero=False, events=events), module)
    assert events == [("barrier", "encoder-export")] and not out.exists()

    events.clear()
    callback = CurriculumCallback(
        "nee", out, tokenizer, inputs, {"seed": 1}, tmp_path / "esi", log_export=record
    )
    callback.on_fit_end(_trainer(events=events), module)
    assert events == [("barrier", "encoder-export"), ("record", ["logger"], out, "nee")]
    manifest = read_export_manifest(out)
    assert manifest == callback.exported | {"created": manifest["created"]}
    assert manifest["config_hash"] == stable_hash(inputs) and manifest["inputs"] == inputs
    assert manifest["parent"] == "p" * 16 and manifest["parent_path"] == str(tmp_path / "esi")
    assert manifest["data_manifest_hash"] == stable_hash({"counts": {"sentences": 4}})
    assert manifest["data_counts"] == {"sentences": 4} and manifest["clustering"] == {"k": 3}
    assert manifest["metrics"] == {"nee/val/f1": 0.25} and manifest["global_step"] == 7

    events.clear()
    interrupted = CurriculumCallback("nee", tmp_path / "x", tokenizer, inputs, {}, log_export=record)
    interrupted.on_fit_end(_trainer(interrupted=True, events=events), module)
    assert events == [] and not (tmp_path / "x").exists()  # resumed later, never exported half-trained
