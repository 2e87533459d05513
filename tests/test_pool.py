"""The process pool (anoncli.executors.pool): every result comes back, and once the work is done
the pool drains the caller's queue while its workers exit instead of waiting on them for ever."""
from __future__ import annotations

import multiprocessing as mp
import queue

from anoncli.executors import pool

_records = None


def _keep_queue(records):
    global _records
    _records = records


def _send_more_than_a_pipe_holds(x):
    _records.put(bytes(2_000_000))   # the worker's feeder thread is still writing this when the batch returns
    return x


def test_workers_exit_while_their_queue_is_drained():
    context = mp.get_context("spawn")
    records, received = context.Queue(), []

    def drain():
        while True:
            try:
                received.append(records.get_nowait())
            except queue.Empty:
                return

    results = sorted(pool.pool_results(range(4), _send_more_than_a_pipe_holds, 2, _keep_queue, (records,), poll=drain,
                                       context=context))
    while len(received) < 4:
        received.append(records.get(timeout=30))
    assert results == [0, 1, 2, 3] and [len(r) for r in received] == [2_000_000] * 4
