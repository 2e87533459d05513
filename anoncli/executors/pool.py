"""The one process pool of anoncli: the local executor's (anonymize, both passes of dataset-level
methods too), report's and restore's.

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
TERMINATE_WAIT_SECONDS = 3.0   # a terminated worker is killed if still alive after this


def worker_threads(workers: int) -> int:
    """Threads per worker so that the pool uses the machine's cores once."""
    return max(1, (os.cpu_count() or 1) // workers)


def _shut_down_after_the_last_result(pool: ProcessPoolExecutor, poll: Callable[[], None] | None) -> None:
    """Every result is in: wait for the workers to exit, running ``poll`` meanwhile. A worker exits
    only once its queues' feeder threads have written everything it put on them, so a caller's
    queue that nobody drains (streamed records, escrow pixels among them: more than a pipe holds)
    would keep it alive for ever while ``shutdown(wait=True)`` waited for it (seen in CI)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False)
    for process in processes:
        while process.is_alive():
            if poll is not None:
                poll()
            process.join(POLL_SECONDS)


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
        _shut_down_after_the_last_result(pool, poll)
    except BaseException:
        # Futures are not cancelled: the pool's manager thread fails the pending ones itself when
        # it sees its workers gone (and, in Python 3.11, raises on a future already cancelled).
        call_queue = getattr(pool, "_call_queue", None)
        if call_queue is not None:   # its feeder may be blocked writing a large batch to a worker being stopped:
            call_queue.cancel_join_thread()   # never wait for it (neither here nor at exit)
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            process.terminate()
        for process in processes:   # gone before the caller cleans up what they were writing into
            process.join(TERMINATE_WAIT_SECONDS)
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False)
        raise
