"""`make gpu-check` (benchmarks/gpu_check.py): its CPU dry path on a tiny random encoder writes a
report with every part, and without a GPU the default path says so and measures nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the check would run")
def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "no CUDA GPU" in printed[0]
    assert not out.exists()


def test_cpu_dry_path_writes_every_part(tmp_path, capsys):
    results = gpu_check.RESULTS / "gpu_check.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    out = tmp_path / "gpu_check_cpu.json"
    assert gpu_check.main(["--device", "cpu", "--no-ddp", "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert (result["benchmark"], result["device"], result["dry_run"]) == ("gpu_check", "cpu", True)

    # (a) the Lightning stage and the plain loop both trained and were timed on the same batches
    (fig,) = result["figures"]
    assert fig["name"].startswith("esi_lightning_vs_plain_loop")
    assert fig["value"] > 0 and fig["baseline"] > 0
    assert fig["ratio"] == pytest.approx(fig["value"] / fig["baseline"], rel=1e-3)
    throughput = result["throughput"]
    assert throughput["batch_size"] == 16
    assert 3 <= throughput["mean_real_tokens_per_window"] <= 128  # data.anchors.max_length
    assert throughput["lightning_steps_per_s"] > 0
    assert all(len(runs) == 1 and runs[0] > 0 for runs in throughput["runs_tokens_per_s"].values())

    # (b) skipped, with the reason; (c) CPU k-means timed, no GPU figure claimed
    assert result["ddp"] == {"skipped": True, "reason": "skipped by --no-ddp"}
    kmeans = result["kmeans"]
    assert kmeans["gpu"] is None and "CPU" in kmeans["reason"]
    assert kmeans["cpu"]["seconds"] > 0 and 1 <= kmeans["cpu"]["iterations"] <= kmeans["niter"]
    assert kmeans["cpu"]["on_gpu"] is False

    assert str(out) in capsys.readouterr().out
    # the dry path never writes the GPU result file
    assert (results.stat().st_mtime_ns if results.exists() else None) == before


@pytest.mark.slow
def test_cpu_dry_path_ddp_on_two_processes_matches_one(tmp_path):
    """Lightning's DDP on 2 CPU processes (gloo) ends with the weights of 1 process accumulating the
    same half-batches; training on rank 0's half-batches alone does not."""
    out = tmp_path / "gpu_check_cpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    ddp = result["ddp"]
    assert ddp["skipped"] is False and ddp["update_norm"] > 0
    assert ddp["relative_distance"] < ddp["tolerance"] < ddp["control_rank0_only_distance"]
    (fig,) = [f for f in result["figures"] if f["name"] == "ddp_2dev_vs_1dev_weight_distance"]
    assert fig["met"] is True
