"""Pass 2 of the anchor build: rewrite the corpus shards with link targets that are redirects resolved.

Pass 1 writes the shards with targets as written and fills the redirect map (a ``RedirectStore``, an
SQLite file). Pass 2 cuts the shards into blocks of ``LINES_PER_TASK`` lines; a block's distinct
targets are looked up in a few queries a hop (most are not redirects), chains are followed up to
``MAX_HOPS`` hops, and up to ``TARGET_CACHE`` final targets are remembered between blocks.

With ``workers > 1`` the blocks go to an ``OrderedPool`` of processes (the anchor build hands over
pass 1's pool), each reading the store through its own read-only connection, so the pass is spread
over the workers like pass 1 instead of running in the main process alone. Results come back in submission order, so the shards are byte-identical for every
worker count. Each shard is rewritten into a ``.tmp`` file beside it and renamed over it once its last
block is written; a failed pass leaves only files of the build's temporary folder.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from cofee.data.ordered_pool import OrderedPool, SharedPool, start_pool
from cofee.data.wiki.redirect_store import RedirectStore

LINES_PER_TASK = 1000  # corpus lines whose targets are looked up together: one task of a worker
TARGET_CACHE = 50_000  # known final targets (~5 MB); the most linked come back in every block
MAX_HOPS = 8


def follow(target: str, redirects: RedirectStore | dict[str, str]) -> str:
    """Follow ``target``'s redirects, at most ``MAX_HOPS`` hops (a cycle stops there)."""
    hops = 0
    while hops < MAX_HOPS:
        nxt = redirects.get(target)
        if nxt is None or nxt == target:
            break
        target = nxt
        hops += 1
    return target


def final_targets(titles: set[str], redirects: RedirectStore) -> dict[str, str]:
    """``{title: follow(title)}`` for many titles, one hop of them all at a time: a few queries a hop,
    not one per title and hop."""
    final = {title: title for title in titles}
    at = dict(final)  # titles still moving -> where they are
    for _hop in range(MAX_HOPS):
        nxt = redirects.targets_of(set(at.values()))
        at = {title: nxt[where] for title, where in at.items() if nxt.get(where, where) != where}
        if not at:
            break
        final.update(at)
    return final


class BlockResolver:
    """Rewrites blocks of corpus lines against one redirect store, remembering final targets."""

    def __init__(self, redirects: RedirectStore):
        self.redirects = redirects
        self.final_of: dict[str, str] = {}  # target -> final target (itself if no redirect)

    def rewrite(self, lines: list[str]) -> tuple[list[str], int]:
        """The lines with redirect targets resolved (unchanged lines as they were, byte for byte), and
        the number of anchor spans changed."""
        records = [json.loads(line) for line in lines]
        unknown = {span[2] for record in records for span in record["spans"]} - self.final_of.keys()
        self.final_of.update(final_targets(unknown, self.redirects))
        out: list[str] = []
        resolved = 0
        for line, record in zip(lines, records, strict=True):
            changed = False
            for span in record["spans"]:
                new = self.final_of[span[2]]
                if new != span[2]:
                    span[2] = new
                    changed = True
                    resolved += span[3] == "anchor"
            out.append(json.dumps(record, ensure_ascii=False) + "\n" if changed else line)
        if len(self.final_of) > TARGET_CACHE:
            self.final_of.clear()
        return out, resolved


_WORKER_STORE: str | None = None
_WORKER_RESOLVER: BlockResolver | None = None


def init_worker(store_path: str) -> None:
    """In a worker: where the store is. It is opened at the first block, once pass 1 has committed it
    (a pool shared with pass 1 is started before there is anything to read)."""
    global _WORKER_STORE, _WORKER_RESOLVER
    _WORKER_STORE, _WORKER_RESOLVER = store_path, None


def _rewrite_in_worker(task: tuple[int, list[str]]) -> tuple[int, list[str], int]:
    global _WORKER_RESOLVER
    assert _WORKER_STORE is not None, "worker not initialised"
    if _WORKER_RESOLVER is None:
        _WORKER_RESOLVER = BlockResolver(RedirectStore.read_only(_WORKER_STORE))
    shard_index, lines = task
    return shard_index, *_WORKER_RESOLVER.rewrite(lines)


class _ShardRewriter:
    """Takes rewritten blocks in order; a shard's ``.tmp`` replaces it when the next shard begins."""

    def __init__(self, folder: Path, shards: list[dict[str, Any]]):
        self.paths = [folder / shard["file"] for shard in shards]
        self.current: int | None = None
        self.out = None
        self.resolved = 0

    def take(self, result: tuple[int, list[str], int]) -> None:
        shard_index, lines, resolved = result
        if shard_index != self.current:
            self.close()
            self.current = shard_index
            self.out = open(self._tmp(shard_index), "w", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.out.writelines(lines)
        self.resolved += resolved

    def _tmp(self, shard_index: int) -> Path:
        return self.paths[shard_index].with_suffix(".tmp")

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
            os.replace(self._tmp(self.current), self.paths[self.current])

    def abandon(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


def resolve_redirects(
    folder: Path,
    shards: list[dict[str, Any]],
    redirects: RedirectStore,
    workers: int = 1,
    shared: SharedPool | None = None,
) -> int:
    """Rewrite ``shards`` (in ``folder``) with redirect targets resolved; the number of anchors changed.
    With ``shared``, the blocks go to that pool (pass 1's, whose workers ran ``init_worker``)."""
    if not redirects or not shards:
        return 0
    redirects.commit()  # the workers' connections see only committed pairs
    local = BlockResolver(redirects)
    rewriter = _ShardRewriter(folder, shards)
    pool = OrderedPool(
        workers,
        start=lambda: start_pool(workers, init_worker, (str(redirects.path),)),
        remote=_rewrite_in_worker,
        local=lambda task: (task[0], *local.rewrite(task[1])),
        take=rewriter.take,
        shared=shared,
    )
    try:
        with pool:
            for shard_index, path in enumerate(rewriter.paths):
                with open(path, encoding="utf-8") as src:
                    while lines := list(itertools.islice(src, LINES_PER_TASK)):
                        pool.submit((shard_index, lines))
            pool.finish()
        rewriter.close()
    finally:
        rewriter.abandon()
    return rewriter.resolved
