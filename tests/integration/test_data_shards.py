"""The token cache under DDP: 2 real processes on gloo (CPU) open one cache (the first builds it under
a file lock, the other waits) and each reads its own share of every epoch."""

import json
import socket

import pytest
import torch.multiprocessing as mp

from cofee.config import AnchorBuildConfig
from cofee.data.tagging import label_names
from cofee.data.wiki.build_anchors import build_anchor_corpus
from tests.support import write_dump

BATCH = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_module(root: str):
    from pathlib import Path

    from cofee.data_modules.wiki_anchor import WikiAnchorDataModule
    from cofee.models.encoder import load_tokenizer
    from tests.support import TINY

    label2id = {name: i for i, name in enumerate(label_names("BIO", ["ENT"]))}
    return WikiAnchorDataModule(
        load_tokenizer(TINY),
        label2id,
        Path(root) / "corpus",
        cache_dir=Path(root) / "cache",
        dev_fraction=0.2,
        batch_size=BATCH,
        eval_batch_size=BATCH,
    )


def _worker(rank: int, world: int, port: int, root: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dm = _data_module(root)
        dm.setup("fit")  # no prepare_data: both ranks ask for the cache, one builds it
        shares = {}
        for name, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
            indices = [i for batch in loader.batch_sampler for i in batch]
            batches = sum(1 for _ in loader)  # the windows this rank reads, collated
            shares[name] = {"indices": indices, "batches": batches}
        shares["cache"] = str(dm.cache)
        with open(f"{root}/rank{rank}.json", "w") as handle:
            json.dump(shares, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_read_disjoint_shares_whose_union_is_the_epoch(tmp_path):
    build_anchor_corpus(
        write_dump(tmp_path / "dump.xml"), tmp_path / "corpus", AnchorBuildConfig(), num_workers=1
    )
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["cache"] == ranks[1]["cache"]
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one cache folder (and its lock file)

    single = _data_module(str(tmp_path))
    single.setup("fit")
    for name, windows in (("train", single.train_windows), ("val", single.val_windows)):
        a, b = (set(r[name]["indices"]) for r in ranks)
        assert a | b == set(range(len(windows))), name  # together: the whole epoch
        if name == "val":
            assert not a & b  # evaluation shards are not padded: every window once
            assert len(ranks[0][name]["indices"]) + len(ranks[1][name]["indices"]) == len(windows)
        else:
            # training shards are padded to equal steps with repeats of leading batches: at most one batch
            assert len(a & b) <= BATCH and ranks[0][name]["batches"] == ranks[1][name]["batches"]
            assert len(ranks[0][name]["indices"]) < len(windows)  # each rank reads only its share
