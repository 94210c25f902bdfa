"""Kill -9 during an export: a stage's encoder export and `cofee-finetune`'s model export.

Each run is a real process, stalled inside the export's temporary folder (after the weights are written,
before the last file) and killed with SIGKILL, so no cleanup code runs. Nothing half-written may stand
where the export belongs. The rerun of the same command must then write what the killed process, whose
training was undisturbed, was about to write: the files it had written byte for byte, the same weights,
and the manifest or results it was writing (the entry script hands them to the test as it stalls); and it
must remove the temporary folder the killed process left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.integration.test_bad_input import FAST, gold
from tests.support import write_dump

ENTRY = '''
"""A console script (argv[1]: pretrain or finetune) whose export stalls when COFEE_TEST_STALL is set:
it writes {"folder": the temporary folder, "about_to_write": what it was writing} to that file, then
sleeps until it is killed."""
import json, os, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)
STALL = os.environ.get("COFEE_TEST_STALL")


def stall(folder, about_to_write):
    if STALL:
        record = {"folder": str(folder), "about_to_write": about_to_write}
        Path(STALL + ".part").write_text(json.dumps(record, default=str))
        os.replace(STALL + ".part", STALL)  # the test never reads a half-written record
        time.sleep(600)


program = sys.argv.pop(1)
if program == "pretrain":
    from cofee.models import export

    write_json = export.atomic_write_json

    def stalling_write_json(path, obj):  # the manifest: the last file of the export's temp folder
        stall(Path(path).parent, obj)
        write_json(path, obj)

    export.atomic_write_json = stalling_write_json
    from cofee.cli.pretrain import main
else:
    from cofee.pipeline import model_card

    card = model_card.model_card

    def stalling_card(summary):  # model/README.md, written after the weights in model/'s temp folder
        stall(None, summary)
        return card(summary)

    model_card.model_card = stalling_card
    from cofee.cli.finetune import main
main()
'''


def _env(stall: Path | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    env.pop("COFEE_TEST_STALL", None)
    if stall is not None:
        env["COFEE_TEST_STALL"] = str(stall)
    return env


def _run(entry: Path, program: str, args: list[str], cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(entry), program, *args],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _kill_when_stalled(entry: Path, program: str, args: list[str], cwd: Path, marker: Path) -> dict:
    """Run until the export stalls (the marker appears), then SIGKILL the process; the marker's record."""
    child = subprocess.Popen(
        [sys.executable, str(entry), program, *args],
        env=_env(marker),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 400
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the run never reached its export"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    return json.loads(marker.read_text())


def _temp_folders(final: Path) -> list[Path]:
    """The temporary folders `atomic_directory` makes beside `final`: `.<name>.<host>-<pid>.XXXX.tmp`."""
    return sorted(final.parent.glob(f".{final.name}.*.tmp"))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    path = tmp_path_factory.mktemp("entry") / "entry.py"
    path.write_text(ENTRY, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def killed_stage(entry, tmp_path_factory):
    """ESI killed in its export, what it had written and was writing, then the same command again."""
    root = tmp_path_factory.mktemp("stage")
    args = [
        "experiment=smoke",  # ESI only, tiny encoder
        "run_name=killed",
        f"paths.root={root}",
        f"data.anchors.dump={write_dump(root / 'dump.xml')}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        "stages.esi.max_steps=4",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]
    record = _kill_when_stalled(entry, "pretrain", args, root, root / "stalled.json")
    export = root / "outputs" / "killed" / "esi" / "encoder"
    left = {
        "temp_folders": _temp_folders(export),
        "export_existed": export.exists(),
        "last_ckpt": (export.parent / "checkpoints" / "last.ckpt").is_file(),
    }
    written = root / "written"  # the files the killed process had written, before the rerun removes them
    if len(left["temp_folders"]) == 1:
        shutil.copytree(left["temp_folders"][0], written)
    _run(entry, "pretrain", args, root)  # resumes at the end of the training, then exports
    return {"record": record, "left": left, "written": written, "export": export}


@pytest.mark.slow  # trains ESI twice on the tiny encoder (about a minute of CPU)
def test_stage_killed_during_its_export_leaves_no_export_and_its_rerun_writes_the_same_files(killed_stage):
    record, left, export = killed_stage["record"], killed_stage["left"], killed_stage["export"]
    (temp,) = left["temp_folders"]  # killed inside the export's temporary folder ...
    assert Path(record["folder"]) == temp
    written = _files(killed_stage["written"])
    assert "model.safetensors" in written and "span_head.pt" in written  # ... with the weights written
    assert "manifest.json" not in written  # ... but not the manifest: half-way
    assert not left["export_existed"]  # nothing half-written where the next stage looks
    assert left["last_ckpt"]  # the training is kept: the rerun resumes, it does not train again

    assert _temp_folders(export) == []  # the dead process's folder is removed
    rerun = _files(export)
    assert rerun.keys() == {*written, "manifest.json"}
    for name, content in written.items():
        assert rerun[name] == content, name
    manifest, expected = json.loads(rerun["manifest.json"]), record["about_to_write"]
    ignore = {"created", "seconds", "metrics"}  # wall clock; metrics: see the test below
    assert {k: v for k, v in manifest.items() if k not in ignore} == {
        k: v for k, v in expected.items() if k not in ignore
    }


@pytest.mark.slow
def test_stage_killed_during_its_export_keeps_its_metrics(killed_stage):
    manifest = json.loads((killed_stage["export"] / "manifest.json").read_text())
    assert manifest["metrics"] == killed_stage["record"]["about_to_write"]["metrics"] != {}


def test_finetune_killed_during_its_model_export(entry, tmp_path):
    out = tmp_path / "run"
    args = [*FAST, *gold(tmp_path), f"paths.root={tmp_path}", f"paths.output_dir={out}", "seed=3"]
    record = _kill_when_stalled(entry, "finetune", args, tmp_path, tmp_path / "stalled.json")
    (temp,) = _temp_folders(out / "model")
    assert (temp / "model.safetensors").is_file() and not (temp / "README.md").exists()  # half-way
    assert not (out / "model").exists() and not (out / "results.json").exists()
    assert not (out / ".hydra").exists()  # the attempt's config stays pending: it describes no outputs
    written = tmp_path / "written.safetensors"
    shutil.copyfile(temp / "model.safetensors", written)

    _run(entry, "finetune", args, tmp_path)
    assert _temp_folders(out / "model") == []
    assert (out / ".hydra" / "config.yaml").is_file() and not (out / ".hydra-pending").exists()
    from safetensors.torch import load_file

    ours, theirs = load_file(out / "model" / "model.safetensors"), load_file(written)
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    results = json.loads((out / "results.json").read_text())
    expected = record["about_to_write"]
    for summary in (results, expected):
        summary.pop("seconds")
    assert results == expected
