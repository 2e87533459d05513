"""The resumable training loop every `anoncli train` command shares.

A trainer has ``step``, ``elapsed`` (seconds spent in steps), ``train_step() -> dict of losses``,
``evaluate() -> dict`` and ``save_checkpoint()``. The loop logs mean losses every ``log_every``
steps to a JSON-lines file (with a held-out evaluation every ``evaluate_every`` steps), writes a
checkpoint every ``checkpoint_every`` steps, and on SIGTERM or Ctrl-C stops after the current step
and writes one more, so that running the same command again resumes where it stopped.
"""
from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

from ..io.atomic import write_atomic

PRECISIONS = ("float32", "bfloat16")   # a trainer's --precision: its forward pass (or part of it) under bfloat16 autocast


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def load_checkpoint(path: Path, shape_key: dict, device) -> dict | None:
    """The checkpoint at ``path`` (None when there is none); refused when it was trained with other shapes."""
    import torch

    if not path.is_file():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    if state["shape_key"] != shape_key:
        raise ValueError(f"{path} was trained with other settings ({state['shape_key']}); use another --work folder")
    return state


def update_average(average, model, decay: float) -> None:
    """One step of the weights' exponential moving average: p̄ ← decay·p̄ + (1 − decay)·p; buffers
    (batch-norm statistics) are copied, not averaged."""
    import torch

    with torch.no_grad():
        torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), 1.0 - decay)
        for kept, current in zip(average.buffers(), model.buffers()):
            kept.copy_(current)


def run_resumable(trainer, steps: int, log_path: Path, *, checkpoint_every: int, evaluate_every: int,
                  log_every: int = 20, desc: str = "train", progress: bool = True) -> None:
    from tqdm import tqdm

    if trainer.step >= steps:
        return
    stop = {"now": False}

    def _interrupt(signum, frame):
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, _interrupt)
    bar = tqdm(total=steps, initial=trainer.step, desc=desc, unit="step", disable=not progress)
    try:
        sums: dict[str, float] = {}
        counted = 0   # steps in this log line: fewer than log_every right after a resume
        while trainer.step < steps and not stop["now"]:
            t0 = time.perf_counter()
            losses = trainer.train_step()
            trainer.elapsed += time.perf_counter() - t0
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            counted += 1
            bar.update(1)
            evaluating = trainer.step % evaluate_every == 0   # also where it is no multiple of log_every
            if trainer.step % log_every == 0 or evaluating:
                line = {"step": trainer.step, "elapsed_s": round(trainer.elapsed, 1),
                        **{k: round(v / counted, 5) for k, v in sums.items()}}
                sums, counted = {}, 0
                if evaluating:
                    line["eval"] = trainer.evaluate()
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(line) + "\n")
                bar.set_postfix({k: line[k] for k in list(losses)[:2]})
            if trainer.step % checkpoint_every == 0:
                trainer.save_checkpoint()
    except KeyboardInterrupt:
        pass
    finally:
        bar.close()
        trainer.save_checkpoint()
        signal.signal(signal.SIGTERM, previous)
