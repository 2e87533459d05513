"""The Ray executor: the run's batches as a Ray Dataset, each worker a Ray actor that loads the
detector and method once (``pipeline.Worker``) and runs its task through ``map_batches``.

Every row is one of the run's batches (pickled: paths, placements), every result row that batch's
records, which come back to this process as Ray finishes them and go to the same journal, keyfile
and manifest as the local executor's: the outputs do not depend on the executor. A stop ends the
Ray job; batches that had not come back are redone on resume (their files are written atomically,
so a redone image replaces itself). For a cluster beyond this machine, anoncli must be installed
on its nodes and the input and output folders must be on storage they share."""
from __future__ import annotations

import logging
import os
import pickle
import sys
from contextlib import contextmanager

from . import ExecutorOptions, ExecutorUnavailable, Take, WorkerSpec

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 ** 2   # rows are paths and records: a small store is plenty
INSTALL_HINT = "pip install 'anoncli[ray]'"


def ray_missing_message() -> str | None:
    """Why --executor ray cannot run here (None: Ray Data is installed)."""
    from importlib.util import find_spec

    if find_spec("ray") is None or find_spec("ray.data") is None:
        return f"--executor ray needs Ray Data, which is not installed: {INSTALL_HINT}"
    return None


class RayExecutor:
    def __init__(self, spec: WorkerSpec, options: ExecutorOptions):
        missing = ray_missing_message()
        if missing:
            raise ExecutorUnavailable(missing)
        self.spec, self.workers = spec, max(1, options.workers)
        self.address = options.ray_address or os.environ.get("RAY_ADDRESS") or None
        self.connected_here = False

    def run(self, batches: list, task: str, take: Take) -> None:
        if not batches:
            return
        import ray.data

        from ..pipeline import DiskFull, WorkerStartError

        self._connect()
        rows = ray.data.from_items([{"batch": pickle.dumps(b)} for b in batches], override_num_blocks=len(batches))
        threads = 1 if self.address else max(1, (os.cpu_count() or 1) // self.workers)
        done = rows.map_batches(_actor_class(self.spec, task, threads), batch_size=1,
                                concurrency=self.workers, num_cpus=1, batch_format="numpy")
        try:
            for block in done.iter_batches(batch_size=None, batch_format="numpy"):
                for payload in block["outcome"]:
                    kind, *values = pickle.loads(payload)
                    if kind == "start_error":
                        raise WorkerStartError(values[0])
                    if kind == "disk_full":
                        raise DiskFull(values[0], values[1])
                    take(values[0])
        except (WorkerStartError, DiskFull, KeyboardInterrupt):
            raise
        except Exception as e:   # the cluster failed (a node lost, out of memory): one line, resumable
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
            raise ExecutorUnavailable(f"the Ray job stopped: {first}. Run the same command again to resume.") from None

    def close(self) -> None:
        if self.connected_here:
            import ray

            ray.shutdown()   # ends this run's actors, and a local cluster started for it
            self.connected_here = False

    def _connect(self) -> None:
        import ray
        import ray.data

        if ray.is_initialized():
            return
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False   # the run's own bar counts images
        context.print_on_execution_start = False
        for name in ("ray", "ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        if self.address:
            _probe(self.address)
        options = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
        try:
            with _quiet_native_stderr():
                if self.address:
                    ray.init(address=self.address, **options)
                else:
                    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, self.workers),
                             object_store_memory=LOCAL_OBJECT_STORE_BYTES, **options)
        except Exception as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray cluster"
            raise ExecutorUnavailable(f"cannot start or reach {where}: {_connection_problem(e)}") from None
        self.connected_here = True


PROBE_SECONDS = 5.0


def _connection_problem(error: BaseException) -> str:
    """The first line of what ray.init raised, with what to do when the cluster wants a token."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    if any("Authentication" in type(e).__name__ or "InvalidAuthToken" in str(e) for e in chain):
        first += ("; the cluster uses token authentication: set RAY_AUTH_MODE=token, with its token in "
                  "$RAY_AUTH_TOKEN or ~/.ray/auth_token")
    return first


def _probe(address: str) -> None:
    """A HOST:PORT that accepts no connection is refused now (Ray itself retries for minutes)."""
    target = address.split("://", 1)[-1]
    if address == "auto" or ":" not in target:
        return
    import socket

    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_SECONDS):
            pass
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ExecutorUnavailable(f"cannot reach the Ray cluster at {address}: {reason}") from None


@contextmanager
def _quiet_native_stderr():
    """Ray's C++ core prints its log-level banner on the process's stderr while it starts; the
    user's terminal gets only anoncli's lines (failures come back as exceptions)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _actor_class(spec: WorkerSpec, task: str, threads: int) -> type:
    """``_RayWorker`` with its arguments bound: Ray ships the class with them, where constructor
    arguments would sit in the object store."""

    class RunWorker(_RayWorker):
        def __init__(self):
            super().__init__(spec, task, threads)

    return RunWorker


class _RayWorker:
    """One Ray actor: the detector and method loaded once, ``task`` run on each batch it is given;
    each outcome goes back pickled: ("records", [...]), ("start_error", why) or ("disk_full", why, done)."""

    def __init__(self, spec: WorkerSpec, task: str, threads: int):
        from ..pipeline import WorkerStartError, start_worker

        self.task, self.worker, self.error = task, None, ""
        try:
            self.worker = start_worker(spec.config, spec.weights_dir, threads, spec.keys)
        except WorkerStartError as e:
            self.error = str(e)

    def __call__(self, rows: dict) -> dict:
        import numpy as np

        from ..pipeline import DiskFull

        outcomes = []
        for payload in rows["batch"]:
            if self.worker is None:
                outcomes.append(pickle.dumps(("start_error", self.error)))
                continue
            try:
                outcomes.append(pickle.dumps(("records", getattr(self.worker, self.task)(pickle.loads(payload)))))
            except DiskFull as e:
                outcomes.append(pickle.dumps(("disk_full", e.message, e.done)))
        return {"outcome": np.array(outcomes, dtype=object)}
