"""The local executor: in this process, or on the process pool (``executors.pool``) with every
finished image's record streamed back on a queue while its batch is still running."""
from __future__ import annotations

import os
import time

from . import ExecutorOptions, Take, WorkerSpec

QUEUE_GRACE_SECONDS = 60   # how long the last streamed records may take to arrive after their batches


class LocalExecutor:
    def __init__(self, spec: WorkerSpec, options: ExecutorOptions):
        self.spec, self.workers = spec, max(1, options.workers)

    def run(self, batches: list, task: str, take: Take) -> None:
        """In this process when one worker (or one batch) is enough, otherwise on the pool; for
        process and compose ``take`` gets one image's record at a time, as soon as it is written,
        so that a stop loses no finished image."""
        if not batches:
            return
        if self.workers <= 1 or len(batches) <= 1:
            self._run_here(batches, task, take)
        else:
            self._run_on_pool(batches, task, take)

    def close(self) -> None:
        pass   # the pool ends with each ``run``

    def _run_here(self, batches: list, task: str, take: Take) -> None:
        from ..pipeline import STREAMED_TASKS, start_worker

        worker = start_worker(self.spec.config, self.spec.weights_dir, threads=os.cpu_count() or 1, keys=self.spec.keys)
        for batch in batches:
            if task in STREAMED_TASKS:
                getattr(worker, task)(batch, emit=lambda rec: take([rec]))
            else:
                take(getattr(worker, task)(batch))

    def _run_on_pool(self, batches: list, task: str, take: Take) -> None:
        """Streamed records arrive on a queue while the batches run; on a stop the records
        already sent are still taken."""
        import multiprocessing as mp
        import queue as queue_module
        from contextlib import closing
        from functools import partial

        from ..pipeline import STREAMED_TASKS, Streamed, init_worker, process_in_worker
        from .pool import pool_results, worker_threads

        ctx = mp.get_context("spawn")
        results = ctx.Queue() if task in STREAMED_TASKS else None
        expected: set[str] = set()
        received: set[str] = set()

        def drain(wait_s: float = 0.0) -> None:
            while results is not None:
                try:
                    rec = results.get(timeout=wait_s) if wait_s else results.get_nowait()
                except queue_module.Empty:
                    return
                received.add(rec.input)
                take([rec])

        spec = self.spec
        initargs = (spec.config.to_dict(), spec.weights_dir, worker_threads(self.workers), spec.keys, results)
        try:
            with closing(pool_results(batches, partial(process_in_worker, task=task), self.workers, init_worker,
                                      initargs, poll=drain, context=ctx)) as finished:
                for result in finished:
                    if isinstance(result, Streamed):
                        expected.update(result.inputs)
                    else:
                        take(result)
            deadline = time.time() + QUEUE_GRACE_SECONDS
            while not expected <= received and time.time() < deadline:   # the queue's last records
                drain(0.2)
        except BaseException:
            try:
                drain(0.5)   # records the workers sent before the stop: their images are written
            except Exception:
                pass
            raise
