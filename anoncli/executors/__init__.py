"""Where a run's batches execute: one door (``create_executor``) for anonymize's passes.

``local``: in this process (one worker) or a pool of spawned processes, each finished image's
record sent back at once (``executors.local``); ``ray``: Ray Data on a Ray cluster, one actor per
model load, batches through ``map_batches`` (``executors.ray_data``). Both hand the same records
to the same journal, so the manifest and the images do not depend on the executor."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

Take = Callable[[list], None]


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker loads: the run's configuration (``config.RunConfig``), where weights are
    looked up first, and the keys (``pipeline.KeySetup``, None without --keyfile)."""

    config: Any
    weights_dir: str | None = None
    keys: Any = None


@dataclass(frozen=True)
class ExecutorOptions:
    """``--executor``, ``--workers`` and ``--ray-address`` of a command."""

    name: str = "local"
    workers: int = 1
    ray_address: str | None = None


class Executor(Protocol):
    def run(self, batches: list, task: str, take: Take) -> None:
        """``task`` (a ``pipeline.Worker`` method: process, gather, compose) on every batch; ``take``
        gets lists of results as they finish (process and compose: finished images' records)."""

    def close(self) -> None:
        """Release what ``run`` started (a Ray connection); the executor is not used again."""


class ExecutorUnavailable(RuntimeError):
    """The executor cannot start (Ray not installed, cluster unreachable): said in one line."""


_EXECUTORS = {   # name -> (module, class), imported only when chosen (Ray is an optional install)
    "local": ("anoncli.executors.local", "LocalExecutor"),
    "ray": ("anoncli.executors.ray_data", "RayExecutor"),
}


def list_executors() -> list[str]:
    return list(_EXECUTORS)


def create_executor(options: ExecutorOptions, spec: WorkerSpec) -> Executor:
    if options.name not in _EXECUTORS:
        raise ValueError(f"unknown executor {options.name!r}; available: {', '.join(_EXECUTORS)}")
    module, cls = _EXECUTORS[options.name]
    return getattr(importlib.import_module(module), cls)(spec, options)
