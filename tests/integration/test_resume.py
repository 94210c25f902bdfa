"""Resuming (issue 7): a stage killed mid-epoch ends exactly as an uninterrupted one; `stage=`,
`resume=<run folder>`, the canonical stage order; DDP with two processes on gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cofee.config import validate
from cofee.data_modules import batching
from cofee.data_modules.batching import LengthBucketBatchSampler, ResumableLoader
from cofee.pipeline.run_folder import load_run_config, resumed_config
from cofee.utils.errors import ConfigError
from tests.support import CITIES, PACKAGED_OFF, PEOPLE, write_dump

REPO = Path(__file__).resolve().parents[2]


# -- the loader, under Lightning ---------------------------------------------------------------
def _fit(ckpt_dir: Path, crash_at: int | None = None, ckpt_path: str | None = None) -> list:
    """Three epochs of 10 batches with a ResumableLoader; `crash_at`: raise at that global step."""
    import pytorch_lightning as pl

    from cofee.callbacks.resume import AtomicCheckpointIO, LoaderPositionCallback, last_checkpoints

    seen = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, batch_idx, batch.tolist()))
            if crash_at is not None and self.global_step == crash_at:
                raise RuntimeError("killed")
            return self.layer(batch.float()[:, None]).sum()

        def configure_optimizers(self):
            assert self.trainer.estimated_stepping_batches == 30  # builds the train loader before the restore
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            sampler = LengthBucketBatchSampler([1] * 40, batch_size=4, seed=1, bucket=False)
            return ResumableLoader(list(range(40)), batch_sampler=sampler)

    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*last_checkpoints(ckpt_dir, every_n_steps=3), LoaderPositionCallback()],
        plugins=[AtomicCheckpointIO()],
    )
    try:
        trainer.fit(Module(), ckpt_path=ckpt_path)
    except RuntimeError:
        pass
    return seen


def test_a_resumed_loader_gives_exactly_the_remaining_batches(tmp_path):
    full = _fit(tmp_path / "full")
    assert [b for e, _, b in full if e == 0] != [b for e, _, b in full if e == 1]  # set_epoch reaches us
    # 14: mid-epoch (last.ckpt at step 12); 11: after an epoch end (step 10); 23: mid-epoch 2
    for crash in (14, 11, 23):
        folder = tmp_path / f"crash{crash}"
        _fit(folder, crash_at=crash)
        last = folder / "last.ckpt"
        assert (
            last.is_file() and not last.is_symlink() and [p.name for p in folder.iterdir()] == ["last.ckpt"]
        )
        step = torch.load(last, weights_only=False)["global_step"]
        assert (
            step == (crash // 3) * 3 or step == (crash // 10) * 10
        )  # the newest save: every 3 steps, epoch ends
        resumed = _fit(folder, ckpt_path=str(last))
        assert resumed == full[step:], f"crash at {crash}, resumed from step {step}"


def test_ddp_evaluation_shards_score_every_window_once(monkeypatch):
    lengths = list(range(5, 5 + 37))
    for world in (2, 3, 8, 40):
        shards, train = [], []
        for rank in range(world):
            monkeypatch.setattr(batching, "_world", lambda r=rank, w=world: (r, w))
            evaluation = LengthBucketBatchSampler(lengths, batch_size=8, shuffle=False)
            shards.append(list(evaluation))
            assert len(evaluation) == len(shards[-1]) >= 1
            train.append(len(list(LengthBucketBatchSampler(lengths, batch_size=8, seed=3))))
        indices = sorted(i for shard in shards for batch in shard for i in batch)
        if world <= len(lengths):
            assert indices == list(range(len(lengths))), world  # no window twice, none left out
        assert len(set(train)) == 1  # training: every rank takes the same number of steps


# -- config: stage order, stage=, resume= ------------------------------------------------------
def test_stages_out_of_order_are_refused_by_key(compose_cfg):
    with pytest.raises(ConfigError, match=r"'curriculum\.stages'.*use \[esi, nee\]"):
        validate(compose_cfg(["curriculum.stages=[nee,esi]"]))
    with pytest.raises(ConfigError, match="'stage'"):
        validate(compose_cfg(["stage=ner"]))
    with pytest.raises(ConfigError, match="'curriculum.checkpoint_every_n_steps'"):
        validate(compose_cfg(["curriculum.checkpoint_every_n_steps=-1"]))


def test_stage_plan(compose_cfg, caplog, tmp_path):
    from cofee.pipeline.curriculum import run_curriculum, stage_plan

    plan = stage_plan(validate(compose_cfg(["stage=all"])))
    assert plan == [("esi", None), ("nee", "esi"), ("fet", "nee")]
    with caplog.at_level("WARNING", logger="cofee.pipeline.curriculum"):
        assert stage_plan(validate(compose_cfg(["curriculum.stages=[esi,fet]"]))) == [
            ("esi", None),
            ("fet", "esi"),
        ]
    assert "curriculum skips nee: fet starts from the esi export" in caplog.text
    assert stage_plan(validate(compose_cfg(["stage=fet", "curriculum.stages=[esi,fet]"]))) == [("fet", "esi")]
    assert stage_plan(validate(compose_cfg(["stage=nee"]))) == [("nee", "esi")]
    assert stage_plan(validate(compose_cfg(["stage=esi"]))) == [("esi", None)]
    missing = validate(compose_cfg(["stage=nee", f"paths.root={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"'stage': stage=nee starts from the esi export .* run stage=esi"):
        run_curriculum(missing)
    assert not (tmp_path / "outputs").exists()


def test_resume_needs_a_run_folder(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"not a run folder of cofee-pretrain \(no \.hydra/config\.yaml\)"):
        load_run_config(tmp_path)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("finetune: {}\n")
    with pytest.raises(ConfigError, match="not the config of a cofee-pretrain run"):
        load_run_config(tmp_path)


def test_resume_keeps_the_saved_config_and_takes_machine_overrides(compose_cfg, tmp_path):
    from omegaconf import OmegaConf

    saved = compose_cfg(["experiment=smoke", "stages.esi.optim.lr=0.5", "run_name=elsewhere"])
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(saved, tmp_path / ".hydra" / "config.yaml")
    overrides = [f"resume={tmp_path}", "trainer=ddp", "trainer.devices=4"]
    now = compose_cfg(overrides)
    root = validate(resumed_config(now, overrides))
    assert root.stages.esi.optim.lr == 0.5 and root.model.tiny is not None  # the saved run's settings
    assert root.trainer.strategy == "ddp" and root.trainer.devices == 4  # this machine's
    assert root.paths.output_dir == str(tmp_path.resolve()) and root.run_name == "elsewhere"
    with pytest.raises(ConfigError, match="changes the config group model"):
        resumed_config(
            compose_cfg([f"resume={tmp_path}", "model=minilm"]), [f"resume={tmp_path}", "model=minilm"]
        )


# -- a real process, killed in the middle of NEE ----------------------------------------------
ENTRY = '''
"""cofee-pretrain, plus a record of every NEE batch and an optional stall to be killed in."""
import hashlib, json, os, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)
from cofee.stages.base import StageModule

RECORD, STALL = os.environ["COFEE_TEST_RECORD"], int(os.environ.get("COFEE_TEST_STALL_AT", "-1"))


def on_train_batch_start(self, batch, batch_idx):
    if self.stage_name != "nee":
        return
    if self.global_step == STALL:
        Path(RECORD + ".stalled").write_text(str(self.global_step))
        time.sleep(600)
    digests = [hashlib.sha1(batch[key].numpy().tobytes()).hexdigest()[:12] for key in ("input_ids", "labels")]
    with open(RECORD, "a") as out:
        out.write(json.dumps([self.global_step, self.current_epoch, batch_idx, *digests]) + "\\n")


StageModule.on_train_batch_start = on_train_batch_start
from cofee.cli.pretrain import main

main()
'''


def _overrides(root: Path, run_name: str, *extra: str) -> list[str]:
    lists = root / "lists"
    return [
        "experiment=smoke",
        f"run_name={run_name}",
        f"paths.root={root}",
        f"data.anchors.dump={root / 'dump.xml'}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        f"data.gazetteer.user_lists_dir={lists}",
        *PACKAGED_OFF,
        "stages.nee.max_epochs=2",  # 5 batches an epoch: steps 0-4, 5-9
        "stages.nee.noise.strategy=self_training",
        "stages.nee.noise.relabel_rate=0.5",
        "stages.nee.noise.relabel_threshold=0.0",
        "curriculum.checkpoint_every_n_steps=2",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


def _env(record: Path, stall: int | None = None) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        COFEE_TEST_RECORD=str(record),
    )
    env.pop("COFEE_TEST_STALL_AT", None)
    if stall is not None:
        env["COFEE_TEST_STALL_AT"] = str(stall)
    return env


def _run(entry: Path, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(entry), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _records(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _weights(export: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = {f"encoder.{k}": v for k, v in load_file(export / "model.safetensors").items()}
    head = torch.load(export / "span_head.pt", weights_only=True)
    return {**weights, **{f"head.{k}": v for k, v in head.items()}}


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_dump(root / "dump.xml")
    (root / "lists").mkdir()
    (root / "lists" / "LOC.txt").write_text("\n".join(CITIES) + "\n", encoding="utf-8")
    (root / "lists" / "PER.txt").write_text("\n".join(PEOPLE[:3]) + "\n", encoding="utf-8")
    (root / "entry.py").write_text(ENTRY, encoding="utf-8")
    return root


def test_killed_in_nee_and_resumed_equals_uninterrupted(corpus_root):
    root, entry = corpus_root, corpus_root / "entry.py"
    args = ["curriculum.stages=[esi,nee]"]
    _run(entry, _overrides(root, "full", *args), _env(root / "full.jsonl"), root)
    full = _records(root / "full.jsonl")
    assert [r[0] for r in full] == list(range(10))

    # killed at the start of step 7 (epoch 1, batch 2): last.ckpt is from step 6, step 6 is lost
    record = root / "killed.jsonl"
    child = subprocess.Popen(
        [sys.executable, str(entry), *_overrides(root, "killed", *args)],
        env=_env(record, stall=7),
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while not Path(f"{record}.stalled").exists():
            assert child.poll() is None and time.time() < deadline, (
                "the run ended before it reached NEE step 7"
            )
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    run_dir = root / "outputs" / "killed"
    last = run_dir / "nee" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 6 and not (run_dir / "nee" / "encoder").exists()
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "consumed": 1, "seed": 13, "world": 1}
    ]
    assert _records(record) == full[:7]

    # resumed from another folder with `resume=<run folder>`: NEE goes on from step 6
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    resumed_record = root / "resumed.jsonl"
    _run(entry, [f"resume={run_dir}"], _env(resumed_record), elsewhere)
    assert _records(resumed_record) == full[6:]  # the same batches, labels included
    assert not (elsewhere / "outputs").exists()
    assert "esi: up to date" in (run_dir / "pretrain.log").read_text()

    done = json.loads((run_dir / "nee" / "encoder" / "manifest.json").read_text())
    reference = json.loads((root / "outputs" / "full" / "nee" / "encoder" / "manifest.json").read_text())
    assert done["global_step"] == reference["global_step"] == 10
    assert done["metrics"].keys() == reference["metrics"].keys()
    assert "nee/train/relabelled_words" in done["metrics"] and "nee/val/loss" in done["metrics"]
    for key, value in reference["metrics"].items():
        assert done["metrics"][key] == pytest.approx(value, abs=1e-6), key
    ours, theirs = (
        _weights(run_dir / "nee" / "encoder"),
        _weights(root / "outputs" / "full" / "nee" / "encoder"),
    )
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.allclose(ours[name], tensor, rtol=0, atol=1e-6), name

    # the same command once more: nothing trains, the export stays as it is
    again = root / "again.jsonl"
    _run(entry, _overrides(root, "killed", *args), _env(again), root)
    assert _records(again) == []
    assert json.loads((run_dir / "nee" / "encoder" / "manifest.json").read_text()) == done
    skipped = [
        line for line in (run_dir / "pretrain.log").read_text().splitlines() if "nee: up to date" in line
    ]
    assert len(skipped) == 1 and skipped[0].endswith(", skipped")


def test_cli_resume_of_a_folder_that_is_not_a_run(tmp_path):
    bogus = tmp_path / "not-a-run"
    bogus.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "cofee.cli.pretrain", f"resume={bogus}", f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline"),
        timeout=300,
    )
    assert done.returncode == 2
    assert "config key 'resume'" in done.stderr and "is not a run folder of cofee-pretrain" in done.stderr
    assert list(bogus.iterdir()) == []  # nothing written into it


# -- DDP: two processes on gloo, against one process -------------------------------------------
def _curriculum(root: Path, run_name: str, *extra: str) -> dict[str, dict]:
    """`cofee-pretrain stage=all` (esi, nee, fet) in a process of its own; the exports' manifests."""
    args = [
        "experiment=smoke",
        f"run_name={run_name}",
        f"paths.root={root}",
        f"data.anchors.dump={root / 'dump.xml'}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        f"data.gazetteer.user_lists_dir={root / 'lists'}",
        *PACKAGED_OFF,
        "stage=all",
        "trainer.enable_progress_bar=false",
        "trainer.limit_val_batches=null",  # the whole dev set: limits count per rank
        *(f"stages.{stage}.eval_batch_size=4" for stage in ("esi", "nee", "fet")),  # the same dev batches
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    for name in ("MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "cofee.cli.pretrain", *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folder = root / "outputs" / run_name
    return {
        s: json.loads((folder / s / "encoder" / "manifest.json").read_text()) for s in ("esi", "nee", "fet")
    }


def _val(manifest: dict) -> dict[str, float]:
    return {k: v for k, v in manifest["metrics"].items() if "/val/" in k}


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
HALF_BATCH = [f"stages.{stage}.batch_size=8" for stage in ("esi", "nee", "fet")]  # 2 x 8 = one process's 16
FROZEN = [f"stages.{s}.optim.{k}=1e-9" for s in ("esi", "nee", "fet") for k in ("lr", "head_lr")]


@pytest.mark.slow
def test_ddp_on_two_processes_gives_the_metrics_of_one(corpus_root):
    """The curriculum under DDP (2 processes, gloo) against 1 process.

    With learning rates of 1e-9 the weights barely move, so what is left to differ is the plumbing:
    dev sharding (each window scored once), metric sync, checkpoints and exports; the dev metrics
    must agree to 1e-6. With the real learning rates (2 x 8 windows a step against 16) training
    differs in dropout masks (per rank), in the per-rank mean losses DDP averages (a mean of two
    token means, not one) and in which windows share a bucketed batch: the dev loss may differ by
    up to 10% of its value after these ten-step stages, F1 by 0.1."""
    root = corpus_root
    one, two = (
        _curriculum(root, "one_frozen", *FROZEN),
        _curriculum(root, "ddp_frozen", *FROZEN, *DDP, *HALF_BATCH),
    )
    for stage in ("esi", "nee", "fet"):
        assert two[stage]["global_step"] == one[stage]["global_step"] > 0, stage
        assert two[stage]["parent"] == (None if stage == "esi" else manifest_hash_of(two, stage)), stage
        for key, value in _val(one[stage]).items():
            assert _val(two[stage])[key] == pytest.approx(value, abs=1e-6), key
    assert not list((root / "outputs" / "ddp_frozen").glob("*/encoder.replaced-*"))
    assert (root / "outputs" / "ddp_frozen" / "train_ddp_process_1.log").is_file()  # the second rank ran

    one, two = _curriculum(root, "one"), _curriculum(root, "ddp", *DDP, *HALF_BATCH)
    for stage in ("esi", "nee", "fet"):
        assert two[stage]["global_step"] == one[stage]["global_step"], stage
        ours, theirs = _val(two[stage]), _val(one[stage])
        assert ours[f"{stage}/val/loss"] == pytest.approx(theirs[f"{stage}/val/loss"], rel=0.1), stage
        assert abs(ours[f"{stage}/val/f1"] - theirs[f"{stage}/val/f1"]) <= 0.1, stage


def manifest_hash_of(manifests: dict[str, dict], stage: str) -> str:
    from cofee.models.export import manifest_hash

    parent = {"esi": None, "nee": "esi", "fet": "nee"}[stage]
    return manifest_hash(manifests[parent])
