"""Dataset-level methods (the k-Same family; any method whose spec says ``dataset_level``):
every face is needed before any output. The method brings ``fit(rows, crops, labels, log,
progress, work) -> (plan, summary)`` and ``load_plan(record, arrays)``; its plan brings ``excluded``,
``replacement(key)``, ``guarantee(key)`` and ``saved()``. Nothing here names a method.

Pass 1 detects and aligns every face and appends its crop to an on-disk cache (``FaceStore``),
so an interrupted run resumes without aligning again what it already aligned. The plan then
groups the faces and computes their replacements once, saved beside the cache under a digest of
every crop and setting that decides it. Pass 2 writes each image with its faces replaced; an
output is done only if it was written under the same plan.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import RunConfig
from .io.atomic import write_atomic
from .io.face_store import FaceStore
from .io.labels import LabelsError, LabelTable, read_labels
from .methods.base import FaceMethod, PlanRefused
from .pipeline import Placement
from .records import ImageRecord

PASS1_DIR = "pass1"
FIT_DIR = "fit"   # a method's own resumable work while it plans (per plan digest); derived from the faces, so 0700
PLAN_ARRAYS = "plan.npy"
PLAN_RECORD = "plan.json"
PLAN_FORMAT = 2   # the saved plan's layout (2: the method's own record under "plan"); older plans are refitted


def _remove_original_faces(store: FaceStore, state: Path) -> None:
    """The first pass's cache and a method's planning work: both hold the original faces."""
    shutil.rmtree(store.root, ignore_errors=True)
    shutil.rmtree(state / FIT_DIR, ignore_errors=True)


class PlanError(ValueError):
    """The dataset cannot be planned as asked (labels unusable, columns missing)."""


def pass1_fingerprint(config: RunConfig, method: FaceMethod) -> str:
    """Everything that decides the detections and aligned crops of the first pass."""
    decisive = {k: v for k, v in config.decisive().items() if k not in ("method", "params", "no_face")}
    decisive.update(resolution=method.resolution, margin=method.margin)
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Pass1Result:
    store: FaceStore
    aligned_now: int
    cached: int


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def run_pass1(items, store: FaceStore, execute, on_error, progress: bool) -> Pass1Result:
    """Align every item not cached yet (or changed since); ``on_error`` gets final error records."""
    cached = store.records()
    todo = []
    for item in items:
        rec = cached.get(item.rel)
        if rec is None or (rec.get("input_size"), rec.get("input_mtime_ns")) != _file_state(item.path):
            todo.append((item.rel, str(item.path)))
    bar = _bar(len(todo), "pass 1/2: aligning", progress)

    def take(results):
        for rec, crops in results:
            if rec.status == "error":
                on_error(rec)
            else:
                crop_sha = [hashlib.sha256(c.tobytes()).hexdigest()[:16] for c in crops]
                keep = ("input", "input_size", "input_mtime_ns", "input_sha256", "status", "alignment_notes", "detections")
                store.append({**{k: getattr(rec, k) for k in keep}, "crop_sha256": crop_sha}, crops)
            if bar is not None:
                bar.update(1)

    try:
        execute(todo, take)
    finally:
        if bar is not None:
            bar.close()
    return Pass1Result(store, len(todo), len(items) - len(todo))


def _bar(total: int, desc: str, progress: bool):
    if not (progress and total):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True, file=sys.stderr)


def face_rows(items, store_records: dict[str, dict]) -> list[tuple[str, int, int, bool]]:
    """(relative input, face index, crop slot, is the image's largest face) per aligned face."""
    rows = []
    for item in items:
        rec = store_records.get(item.rel)
        if rec is None or rec["status"] != "ok":
            continue
        slots = iter(rec["slots"])
        dets = rec["detections"]
        areas = [(d["box"][2] - d["box"][0]) * (d["box"][3] - d["box"][1]) for d in dets]
        main = int(np.argmax(areas)) if areas else -1
        for index, det in enumerate(dets):
            if det["aligned"]:
                rows.append((item.rel, index, next(slots), index == main))
    return rows


def resolve_labels(params: dict) -> tuple[LabelTable | None, str | None, tuple[str, ...], str]:
    """The labels table, identity column (None: cluster faces), select columns and the labels' sha256."""
    path = params.get("labels") or ""
    select = tuple(c.strip() for c in params.get("select", "").split(",") if c.strip())
    wanted = params.get("identity_column", "auto")
    if not path:
        if wanted not in ("auto", "none"):
            raise PlanError(f"--identity-column {wanted} needs --labels CSV")
        return None, None, select, ""
    try:
        table = read_labels(Path(path))
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except LabelsError as e:
        raise PlanError(f"--labels: {e}") from None
    except OSError as e:
        raise PlanError(f"--labels: cannot read {path}: {e.strerror or e}") from None
    try:
        table.require(select, "--select")
        if wanted == "auto":
            identity = "identity" if "identity" in table.columns else None
        elif wanted == "none":
            identity = None
        else:
            table.require((wanted,), "--identity-column")
            identity = wanted
    except LabelsError as e:
        raise PlanError(str(e)) from None
    return table, identity, select, sha


def plan_digest(rows, store_records: dict, config: RunConfig, labels_sha: str) -> str:
    h = hashlib.sha256(json.dumps({"params": config.params, "method": config.method, "labels": labels_sha,
                                   "plan_format": PLAN_FORMAT}).encode())
    for rel, index, slot, is_main in rows:
        h.update(f"{rel}\0{index}\0{is_main}\0{store_records[rel]['crop_sha256'][_aligned_position(store_records[rel], index)]}\n".encode())
    return h.hexdigest()[:24]


def _aligned_position(rec: dict, index: int) -> int:
    return sum(1 for d in rec["detections"][:index] if d["aligned"])


def build_plan(rows, store: FaceStore, config: RunConfig, state: Path, inputs: list[str], labels_info, log,
               method: FaceMethod, progress: bool = False) -> tuple[object, dict]:
    """The method's plan of these faces (its ``fit``; loaded instead when saved under the same
    digest) and its summary; ``inputs`` are the images the plan covers (with or without faces);
    ``labels_info`` is what ``resolve_labels`` returned."""
    from .faces.landmarks68 import LandmarksUnavailable

    digest = plan_digest(rows, store.records(), config, labels_info[3])
    saved = _load_plan(state, digest)
    if saved is not None:
        record, arrays = saved
        return method.load_plan(record["plan"], arrays), {**record["summary"], "reused": True}
    try:
        work = state / FIT_DIR / digest
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        (state / FIT_DIR).chmod(0o700)
        plan, summary = method.fit(rows, store.crops(), labels_info, log, progress, work)
    except (LandmarksUnavailable, PlanRefused) as e:
        raise PlanError(str(e)) from None
    summary = {"digest": digest, **summary, "reused": False}
    _save_plan(state, digest, plan, summary, inputs)
    return plan, summary


def _save_plan(state: Path, digest: str, plan, summary: dict, inputs: list[str]) -> None:
    import io

    plan_record, arrays = plan.saved()
    buf = io.BytesIO()
    np.save(buf, arrays, allow_pickle=False)
    write_atomic(state / PLAN_ARRAYS, buf.getvalue())
    record = {"digest": digest, "summary": summary, "inputs": sorted(inputs),
              "arrays_sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "plan": plan_record}
    write_atomic(state / PLAN_RECORD, json.dumps(record).encode())


def _load_plan(state: Path, digest: str | None):
    """The saved plan record and replacements, if saved under ``digest`` (None: any) and intact."""
    try:
        record = json.loads((state / PLAN_RECORD).read_text())
        data = (state / PLAN_ARRAYS).read_bytes()
    except (OSError, ValueError):
        return None
    if (digest is not None and record.get("digest") != digest) or hashlib.sha256(data).hexdigest() != record.get("arrays_sha256"):
        return None
    import io

    return record, np.load(io.BytesIO(data), allow_pickle=False)


def placements(items, store_records: dict, plan, digest: str) -> dict[str, tuple[Placement | None, str | None]]:
    """Per item to write: (placement, None) or (None, reason it cannot be written). ``plan``: a
    dataset-level method's plan (``excluded``, ``replacement(key)``, ``guarantee(key)``)."""
    out = {}
    for item in items:
        rec = store_records[item.rel]
        replacements, guarantees, problems = [], [], []
        for index, det in enumerate(rec["detections"]):
            if not det["aligned"]:
                continue
            key = (item.rel, index)
            if key in plan.excluded:
                problems.append(f"face {index}: {plan.excluded[key]}")
                continue
            replacements.append(plan.replacement(key))
            guarantees.append(plan.guarantee(key))
        if problems:
            out[item.rel] = (None, "; ".join(problems))
        else:
            out[item.rel] = (Placement(rec["input_sha256"], rec["detections"], rec["alignment_notes"], replacements,
                                       guarantees, digest), None)
    return out


def _batches(todo: list, size: int) -> list[list]:
    return [todo[i:i + size] for i in range(0, len(todo), size)]


def run_two_passes(items, records: dict[str, ImageRecord], config: RunConfig, state: Path, output_dir: Path, *,
                   batch_size: int, execute, take, progress: bool, log, weights_dir: str | None = None) -> dict:
    """Both passes over ``items`` (discovery problems excluded by the caller). ``records`` holds
    the final records so far (done earlier, or failed); outputs of another plan are redone.
    ``execute(batches, task, take)`` runs worker tasks; ``take`` journals final records.
    Returns what run.json says about the dataset-level work."""
    from .methods import build_method
    from .pipeline import new_record

    labels_info = resolve_labels(config.params)  # bad labels are refused before any work
    labels_sha = labels_info[3]
    finished = _finished_under_saved_plan(items, records, state, labels_sha)
    if finished is not None:
        return {"pass1": {"aligned_now": 0, "cached": 0, "skipped": "every output was written under the saved plan"},
                "plan": {**finished, "reused": True}, "redone_for_new_plan": 0}
    from .faces.landmarks68 import LandmarksUnavailable

    try:
        method = build_method(config.method, config.params, weights_dir)
    except LandmarksUnavailable as e:
        raise PlanError(str(e)) from None
    store = FaceStore(state / PASS1_DIR, (method.resolution, method.resolution, 3), pass1_fingerprint(config, method))
    try:
        pass1 = run_pass1(items, store, lambda todo, take1: execute(_batches(todo, batch_size), "gather", take1),
                          lambda rec: take([rec]), progress)
        stored = store.records()
        current = {i.rel: stored[i.rel] for i in items
                   if i.rel in stored and (stored[i.rel]["input_size"], stored[i.rel]["input_mtime_ns"]) == _file_state(i.path)}
        aligned = [i for i in items if i.rel in current]
        plan, summary = build_plan(face_rows(aligned, current), store, config, state, [i.rel for i in aligned], labels_info, log,
                                   method, progress)
    except PlanError:
        store.close()
        _remove_original_faces(store, state)   # a refused plan is run again with other flags, which start afresh
        raise
    finally:
        store.close()
    redone = [rel for rel, rec in records.items()
              if rel in current and rec.status != "error" and rec.dataset_plan != summary["digest"]]
    for rel in redone:
        del records[rel]
    todo = [i for i in aligned if i.rel not in records]
    placed = placements(todo, current, plan, summary["digest"])
    batches = []
    for item in todo:
        placement, why = placed[item.rel]
        if placement is None:
            take([new_record(item.rel, config, item.path, reason=why)])
        else:
            batches.append((item.rel, str(item.path), str(output_dir / item.rel), placement))
    bar = _bar(len(batches), "pass 2/2: writing", progress)

    def take_written(recs):
        take(recs)
        if bar is not None:
            bar.update(len(recs))

    try:
        execute(_batches(batches, batch_size), "compose", take_written)
    finally:
        if bar is not None:
            bar.close()
    pass1_info = {"aligned_now": pass1.aligned_now, "cached": pass1.cached}
    if all(i.rel in records and records[i.rel].done for i in items):
        _remove_original_faces(store, state)
        pass1_info["cache"] = "removed: every image is done"
    else:
        pass1_info["cache"] = (f"kept in {store.root} until every image is done: it holds the ORIGINAL aligned faces, "
                               "do not share this output folder's .anoncli state")
    return {"pass1": pass1_info, "plan": summary, "redone_for_new_plan": len(redone)}


def _finished_under_saved_plan(items, records: dict, state: Path, labels_sha: str) -> dict | None:
    """The saved plan's summary when every item is done under it, with the same inputs and
    labels (a re-run of a finished run then needs neither pass); otherwise None."""
    saved = _load_plan(state, None)
    if saved is None:
        return None
    record = saved[0]
    summary = record["summary"]
    if sorted(i.rel for i in items) != record["inputs"] or (summary.get("labels") or {}).get("sha256", "") != labels_sha:
        return None
    done = all(i.rel in records and records[i.rel].done and records[i.rel].dataset_plan == record["digest"] for i in items)
    return summary if done else None
