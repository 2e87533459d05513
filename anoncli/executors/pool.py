"""The one process pool of anoncli: anonymize (both passes of dataset-level methods too), report.

Batches go to spawned worker processes, at most two queued per worker (bounded memory); each
batch's result comes back as soon as it is done. On any stop (Ctrl-C, SIGTERM, an error in a
batch) the workers are terminated at once, not waited for: a slow method's running batch would
otherwise hold the stop for minutes, and its work is redone on resume."""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator

POLL_SECONDS = 0.2   # how often ``poll`` runs while batches are in flight


def worker_threads(workers: int) -> int:
    """Threads per worker so that the pool uses the machine's cores once."""
    return max(1, (os.cpu_count() or 1) // workers)


def pool_results(batches: Iterable[Any], fn: Callable[[Any], Any], workers: int, initializer: Callable,
                 initargs: tuple, poll: Callable[[], None] | None = None, context=None) -> Iterator[Any]:
    """``fn(batch)`` for every batch on ``workers`` spawned processes (``initializer(*initargs)``
    in each), yielding each result as its batch finishes; ``poll`` runs every ``POLL_SECONDS``
    while batches are in flight (e.g. to drain a results queue)."""
    pool = ProcessPoolExecutor(workers, mp_context=context or mp.get_context("spawn"), initializer=initializer,
                               initargs=initargs)
    pending: set = set()

    def finished():
        nonlocal pending
        done, pending = wait(pending, timeout=POLL_SECONDS if poll else None, return_when=FIRST_COMPLETED)
        if poll is not None:
            poll()
        for future in done:
            yield future.result()

    try:
        for batch in batches:
            pending.add(pool.submit(fn, batch))
            while len(pending) >= 2 * workers:
                yield from finished()
        while pending:
            yield from finished()
        pool.shutdown(wait=True)
    except BaseException:
        for future in pending:
            future.cancel()
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
