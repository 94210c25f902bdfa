"""Work for a process pool whose results must be written in input order, with bounded memory."""

from __future__ import annotations

import collections
import gc
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from typing import Any

FORCED_START_METHOD: str | None = None  # None: start_method() picks (tests force each method)


def start_method() -> str:
    """``fork`` on Linux, else ``spawn``.

    ``fork`` is the cheapest: a worker starts in milliseconds and imports nothing, whereas a ``spawn``
    (or ``forkserver``) worker starts an interpreter and re-runs the caller's main script, which for
    ``cofee-build-anchors`` imports cofee.config, so torch: seconds per worker. A ``forkserver`` that
    preloads the main script pays that once but then forks workers from a process holding torch's
    threads, so it is no safer. Forking a process with other threads (torch's OpenMP pool, the
    pre-training process) is safe here because the workers run only the builds' stdlib code
    (ElementTree/expat, re, json, pickle) and never touch torch, OpenMP or CUDA, the state a fork
    leaves broken; glibc malloc and CPython's own locks are reset in the child (PyTorch's DataLoader
    forks such processes by default too). macOS (system libraries are not fork-safe) and Windows spawn.
    """
    if FORCED_START_METHOD is not None:
        return FORCED_START_METHOD
    return "fork" if sys.platform.startswith("linux") else "spawn"


def start_pool(workers: int, initializer: Callable, initargs: tuple):
    """A process pool of `start_method()`'s workers. While it forks, the caller's objects are frozen,
    so a forked worker's collections skip them and do not copy their pages on write."""
    method = start_method()
    freeze = method == "fork" and gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        return multiprocessing.get_context(method).Pool(workers, initializer=initializer, initargs=initargs)
    finally:
        if freeze:
            gc.unfreeze()


class SharedPool:
    """One process pool for several `OrderedPool`s in turn (the passes of one build): started by the
    first that needs workers, so the workers are forked once, while the caller is still small (a
    worker forked later counts the caller's grown heap in its resident memory too), and closed when
    the `with` block ends, or terminated when it ends with an error."""

    def __init__(self):
        self.pool = None

    def get(self, start: Callable[[], Any]):
        """The pool, started with `start()` if no pass has started it yet."""
        if self.pool is None:
            self.pool = start()
        return self.pool

    def __enter__(self) -> SharedPool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
            self.pool = None


class OrderedPool:
    """Hands each task's result to `take` in submission order, with at most 2 x `workers` tasks in
    flight (`Pool.imap` would read the whole input ahead). The pool (`start()`) is started at the
    first task; with `workers` <= 1 every task runs in the calling process (`local`). Leaving the
    `with` block without `finish()` (an error) terminates the workers. With `shared`, the pool is that
    `SharedPool`'s (started by `start()` if still needed), and closing it is left to its owner."""

    def __init__(
        self,
        workers: int,
        start: Callable[[], Any],
        remote: Callable[[Any], Any],
        local: Callable[[Any], Any],
        take: Callable[[Any], None],
        shared: SharedPool | None = None,
    ):
        self.workers, self.remote, self.local, self.take = workers, remote, local, take
        self.start = start if shared is None else (lambda: shared.get(start))
        self.owns_pool = shared is None
        self.pool = None
        self.pending: collections.deque = collections.deque()

    def submit(self, task: Any) -> None:
        if self.workers <= 1:
            self.take(self.local(task))
            return
        if self.pool is None:
            self.pool = self.start()
        self.pending.append(self.pool.apply_async(self.remote, (task,)))
        while len(self.pending) >= 2 * self.workers:
            self.take(self.pending.popleft().get())

    def read(self, tasks: Iterator[Any], drain_on: type[BaseException]) -> Iterator[Any]:
        """`tasks` one at a time. When reading the next one raises `drain_on`, the tasks in flight are
        taken first: a serial run would have met an error of theirs, earlier in input order, first."""
        while True:
            try:
                task = next(tasks, None)
            except drain_on:
                self.drain()
                raise
            if task is None:
                return
            yield task

    def drain(self) -> None:
        """Take every result still in flight (also before re-raising an error met in the input)."""
        while self.pending:
            self.take(self.pending.popleft().get())

    def finish(self) -> None:
        self.drain()
        if self.pool is not None and self.owns_pool:
            self.pool.close()
            self.pool.join()
        self.pool = None

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None and self.owns_pool:
            self.pool.terminate()
            self.pool.join()
        self.pool = None
