"""Soak test (`make test-slow`): FET for several epochs, with a cluster refresh after every epoch and
self-training relabels at every epoch start, on the tiny encoder, in a process of its own. The resident
memory (RSS, after a garbage collection) is read at every epoch end; after the warm-up epochs it must
not grow by more than `TOLERANCE_MIB`, at the last epoch end or at any other. The figures go to
benchmarks/results/soak_memory.json: the growth against the tolerance (at most 1 is met)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import PACKAGED_OFF, user_lists, write_dump

EPOCHS = 10
WARM_UP = 2  # epochs 0-1: the first refreshes and relabel rounds; caches and allocator pools fill
TOLERANCE_MIB = 16.0  # RSS growth from the end of the warm-up; allocator noise here is a few MiB

ENTRY = '''
"""cofee-pretrain, recording the RSS after every FET epoch end (refresh included) to argv[1]."""
import gc, json, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
RECORD = Path(sys.argv.pop(1))
from cofee.callbacks.cluster_refresh import ClusterRefreshCallback


def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


epoch_end = ClusterRefreshCallback.on_train_epoch_end


def measured_epoch_end(self, trainer, pl_module):
    epoch_end(self, trainer, pl_module)
    gc.collect()
    rounds = [r for c in trainer.callbacks for r in getattr(c, "rounds", [])]  # self-training's
    with open(RECORD, "a") as out:
        out.write(json.dumps({"epoch": trainer.current_epoch, "rss_mib": round(rss_mib(), 2),
                              "refreshes": len(self.history), "relabel_rounds": len(rounds),
                              "relabelled_words": sum(r["changed_words"] for r in rounds)}) + "\\n")


ClusterRefreshCallback.on_train_epoch_end = measured_epoch_end
from cofee.cli.pretrain import main

main()
'''


@pytest.mark.slow
def test_fet_memory_does_not_grow_epoch_to_epoch(tmp_path):
    from benchmarks.common import figure, write_results

    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY, encoding="utf-8")
    record = tmp_path / "rss.jsonl"
    args = [
        "experiment=smoke",
        "run_name=soak",
        f"paths.root={tmp_path}",
        f"data.anchors.dump={write_dump(tmp_path / 'dump.xml')}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        f"data.gazetteer.user_lists_dir={user_lists(tmp_path / 'lists')}",
        *PACKAGED_OFF,
        "curriculum.stages=[fet]",
        f"stages.fet.max_epochs={EPOCHS}",
        "stages.fet.refresh_every_n_epochs=1",
        "stages.fet.noise.strategy=self_training",
        "stages.fet.noise.relabel_rate=0.5",
        "stages.fet.noise.relabel_threshold=0.0",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    done = subprocess.run(
        [sys.executable, str(entry), str(record), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = [json.loads(line) for line in record.read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))
    # the load ran: the clustering at train start, then a refresh after every epoch but the last
    assert [e["refreshes"] for e in epochs] == [min(e + 2, EPOCHS) for e in range(EPOCHS)]
    # and a self-training round at every epoch start but the first, which changed labels
    assert [e["relabel_rounds"] for e in epochs] == list(range(EPOCHS)) and epochs[-1]["relabelled_words"] > 0

    warm = epochs[WARM_UP - 1]["rss_mib"]
    growth = epochs[-1]["rss_mib"] - warm
    peak_growth = max(e["rss_mib"] for e in epochs[WARM_UP:]) - warm
    note = f"MiB of RSS over the end of the warm-up ({warm:.0f} MiB), against the tolerance"
    write_results(
        "soak_memory",
        [
            figure("FET RSS growth, last epoch end", growth, "MiB", TOLERANCE_MIB, 1.0, note, True),
            figure("FET RSS growth, peak", peak_growth, "MiB", TOLERANCE_MIB, 1.0, note, True),
        ],
        epochs=epochs,
        warm_up_epochs=WARM_UP,
        tolerance_mib=TOLERANCE_MIB,
    )
    assert growth <= TOLERANCE_MIB and peak_growth <= TOLERANCE_MIB, epochs
