"""``anoncli restore``: the original dataset back from an anonymized one and its keyfile.

Every check that can refuse the whole job runs before anything is written: the keyfile is
authentic and opens with the secret given, and it was sealed for this folder's run and
manifest. Then each image is checked on its own (its file is the one the run wrote) and
restored from escrow, or by the method's own inverse with the face's derived key. The result
is written into a hidden sibling folder that is renamed into place only when complete.

What a run can give back is decided first, from its method, parameters and escrow
(``MethodSpec.restore_capability``): a run nothing recovers is refused before anything is
written (``RestoreRefused``, exit status 7, naming the flags that would have made it
restorable); a lossy inverse writes its images as ``approximate``, never ``restored``, each with
its measured round trip; a restored face that is not a picture (NaN, out of range, black) makes
that image an error, never a written file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .io.atomic import write_atomic
from .io.discover import paths_overlap
from .io.partial_restores import record_staging, remove_abandoned, remove_dead_same_output, staging_folder
from .io.stop_signals import stop_signals_interrupt
from .keys.format import KeyfileMismatch
from .methods.base import RestoreCapability, RestoreKind
from .run import MANIFEST_NAME, RUN_RECORD_NAME, RunError, read_run_folder

RESTORE_RECORD_NAME = "restore.json"
RESTORE_COLUMNS = ["input", "status", "restored_from", "n_faces", "round_trip", "reason", "output_sha256"]
STATUSES = ("restored", "approximate", "copied", "modified", "missing", "not_anonymized", "error")
REFUSED_EXIT_CODE = 7
RESTORED_FILE_MODE = 0o600   # restored originals: this user only (the output folder is 0700 as well)


class RestoreRefused(RunError):
    """Nothing the run kept recovers its faces: refused before anything is written."""

    exit_code = REFUSED_EXIT_CODE


@dataclass
class RestoreSummary:
    counts: dict[str, int]
    problems: list[tuple[str, str, str]]   # (image, status, reason)
    output: Path
    seconds: float
    source: str                             # escrow or model
    notes: list[str] = field(default_factory=list)
    capability: RestoreCapability | None = None
    quality_measure: str | None = None      # what the round_trip column holds (approximate restores)
    round_trips: list[float] = field(default_factory=list)   # the worst face's, per approximate image
    removed_partial: list[Path] = field(default_factory=list)  # staging folders of killed restores, removed

    @property
    def exit_code(self) -> int:
        return 1 if any(self.counts[s] for s in ("modified", "missing", "error")) else 0


def default_restore_output(anon_dir: Path) -> Path:
    anon_dir = Path(os.path.abspath(anon_dir))
    return anon_dir.with_name(anon_dir.name + "-restored")


def run_capability(method: str, params: dict, escrow: bool) -> RestoreCapability:
    """What restore can recover of a run, from its method, parameters and escrow; raises
    ``RestoreRefused`` (one line naming the flags that would have made it possible) when nothing."""
    from .methods import get_method_spec

    spec = get_method_spec(method)
    capability = spec.restore_capability(spec.resolve_params(params or {}), bool(escrow))
    if capability.kind is RestoreKind.IMPOSSIBLE:
        raise RestoreRefused(capability.refusal(spec.name))
    return capability


def check_restorable(anon_dir: Path) -> None:
    """The up-front refusal from the folder's run.json, before a passphrase is asked for; the
    keyfile's authenticated seal decides again in ``run_restore``. A run.json that cannot be
    read here is left to ``run_restore``'s own checks."""
    try:
        record = json.loads((Path(anon_dir) / RUN_RECORD_NAME).read_text())
        config, keyfile = record["config"], record.get("keyfile")
        method, params, escrow = config["method"], config.get("params") or {}, (keyfile or {}).get("escrow", False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if "keyfile" in record and keyfile is None:
        raise RestoreRefused(f"this {method} run was made without a keyfile, so nothing can restore it; anonymize with "
                             "--keyfile PATH (and --escrow for methods that cannot be undone from their output) to make a "
                             "restorable run")
    try:
        run_capability(method, params, escrow)
    except (KeyError, ValueError):
        return


def check_binding(reader, record: dict, manifest_sha256: str) -> None:
    """The keyfile was sealed for this run and exactly this manifest."""
    if record.get("run_id") != reader.run_id:
        raise KeyfileMismatch(f"the keyfile belongs to run {reader.run_id}, but this folder holds run "
                              f"{record.get('run_id')}: use that run's keyfile")
    if reader.manifest_sha256 != manifest_sha256:
        raise KeyfileMismatch("the keyfile was sealed for another version of manifest.csv (the manifest was edited, "
                              "or the run was resumed and its newer keyfile is elsewhere)")


def run_restore(anon_dir: Path, keyfile: Path, unlocker, output: Path | None = None, *,
                weights_dir: str | None = None, progress: bool = True, workers: int = 1) -> RestoreSummary:
    """Restore ``anon_dir`` into ``output`` (a new folder) with the keyfile; images are restored
    in this process or, with ``workers`` > 1, on the process pool (``executors.pool``)."""
    from .keys.keyfile import KeyfileReader, read_header

    started = time.time()
    anon_dir = Path(os.path.abspath(anon_dir))
    output = Path(os.path.abspath(output or default_restore_output(anon_dir)))
    if output.exists():
        raise RunError(f"output folder {output} exists; restore writes a new folder (choose another with -o)")
    if paths_overlap(anon_dir, output):
        raise RunError(f"output {output} and the anonymized folder {anon_dir} overlap; choose another -o")
    record, manifest, manifest_sha256 = read_run_folder(anon_dir)
    workers = max(1, min(workers, len(manifest)))   # no more processes than images
    claimed = read_header(keyfile).get("run_id")  # plain, checked again once authenticated
    if claimed != record.get("run_id"):
        raise KeyfileMismatch(f"the keyfile belongs to run {claimed}, but this folder holds run "
                              f"{record.get('run_id')}: use that run's keyfile")
    reader = KeyfileReader(keyfile, unlocker)
    check_binding(reader, record, manifest_sha256)
    restorer = _restorer(reader.seal, record, weights_dir, load=workers <= 1)
    removed_partial = remove_abandoned(anon_dir)

    removed_partial += remove_dead_same_output(output)
    staging = staging_folder(output)
    rows = []
    staging_record = None
    try:
        with stop_signals_interrupt():
            output.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir(mode=0o700)   # the originals, readable by this user only until renamed
            staging_record = record_staging(anon_dir, staging)
            manifest_rows = manifest.to_dict("records")
            tasks = ((row, _key_material(row, reader)) for row in manifest_rows)   # opened one by one, as the work needs them
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(manifest_rows), unit="img", desc="restoring", dynamic_ncols=True, file=sys.stderr)
            try:
                for out in _restore_all(tasks, anon_dir, staging, restorer,
                                        (reader.seal, record, weights_dir), workers):
                    rows.append(out)
                    if bar is not None:
                        bar.update()
            finally:
                if bar is not None:
                    bar.close()
            order = {row["input"]: i for i, row in enumerate(manifest_rows)}
            rows.sort(key=lambda r: order[r["input"]])
            _write_restore_outputs(staging, rows, record, reader, manifest_sha256, restorer, started)
            os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if staging_record is not None:
            staging_record.close()
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    problems = [(r["input"], r["status"], r["reason"]) for r in rows if r["status"] in ("modified", "missing", "error")]
    return RestoreSummary(counts, problems, output, time.time() - started, restorer.source,
                          capability=restorer.capability, quality_measure=restorer.quality_measure,
                          round_trips=[r["round_trip"] for r in rows if r["status"] == "approximate"
                                       and isinstance(r["round_trip"], float)],
                          removed_partial=removed_partial)


class _Restorer:
    """Turns an anonymized image and its key record back into the original pixels."""

    def __init__(self, source: str, capability: RestoreCapability, method=None, config: dict | None = None,
                 quality_measure: str | None = None):
        self.source, self.capability, self.method, self.config = source, capability, method, config or {}
        self._quality_measure = quality_measure

    @property
    def approximate(self) -> bool:
        return self.capability.kind is RestoreKind.APPROXIMATE

    @property
    def quality_measure(self) -> str | None:
        return self._quality_measure if self.approximate else None

    def restore(self, img, meta: dict, blobs: bytes, keyring, side_images: dict | None = None) -> list[float]:
        """Restores ``img`` in place; returns each face's measured round trip (approximate restores)."""
        from .faces.stage import restore_escrow, restore_faces
        from .keys.escrow import decompress_patch

        faces = meta.get("faces")
        if not isinstance(faces, list):
            raise ValueError("key record has no face list")
        if self.source == "escrow":
            patches, offset = [], 0
            for face in faces:
                desc = face.get("escrow")
                if desc is None:
                    continue
                length = desc["length"]
                patches.append((tuple(desc["box"]), decompress_patch(desc, blobs[offset:offset + length])))
                offset += length
            restore_escrow(img, patches)
            return []
        keys = {f["index"]: keyring.face(meta["input"], meta["input_sha256"], f["index"]) for f in faces}
        done = restore_faces(img, faces, self.method, keys, side_images or {}, measure_quality=self.approximate)
        return [f.quality for f in done if f.quality is not None]


BEFORE_OCCLUSION = {"occluder_ratio": 0.0, "outline_pose": False}
"""What a run sealed before ``--occluder-ratio`` and ``--outline-pose`` existed did: it composited
every face whole, and its fallback outline was the frontal mean."""


def sealed_params(spec, params: dict) -> dict:
    """The method parameters a keyfile's run used, whatever today's defaults (``BEFORE_OCCLUSION``
    for a keyfile from before those flags)."""
    if "occluder_ratio" in params:
        return params
    names = {p.name for p in spec.params}
    return {**params, **{k: v for k, v in BEFORE_OCCLUSION.items() if k in names}}


def _restorer(seal: dict, record: dict, weights_dir: str | None, load: bool = True) -> _Restorer:
    """What restores this run's faces (escrow, or the method's inverse), from the keyfile's seal;
    ``load=False``: its weights checked but its network not loaded (the main process of a pool
    restore, whose workers each load their own)."""
    from .methods import build_method, get_method_spec

    name = seal.get("method")
    capability = run_capability(name, seal.get("params", {}), bool(seal.get("escrow")))
    if seal.get("escrow"):
        return _Restorer("escrow", capability, config=record.get("config"))
    spec = get_method_spec(name)
    from .weights import REGISTRY, resolve_weights

    for w in spec.weights_needed(spec.resolve_params(seal.get("params", {}))):
        resolve_weights(w, weights_dir)  # WeightsMissing names the command that gets it
        if seal.get("method_weights", {}).get(w) not in (None, REGISTRY[w].sha256):
            raise RunError(f"the run used other {w} weights (sha256 {seal['method_weights'][w]}) than the ones "
                           "registered now; model-based restore needs the same network")
    method = build_method(name, sealed_params(spec, seal.get("params", {})), weights_dir) if load else None
    return _Restorer("model", capability, method, record.get("config"), spec.load().restore_quality_measure)


def _side_images(row: dict, anon_dir: Path) -> dict[int, dict]:
    """Face index -> {name: uint8 RGB} of the extra images the run wrote (``FaceMethod.side_images``,
    e.g. flowrot's encrypted latent), each checked against the sha256 in the manifest."""
    import numpy as np
    from PIL import Image

    faces = row.get("faces") or "[]"
    faces = json.loads(faces) if isinstance(faces, str) else faces
    out: dict[int, dict] = {}
    for index, face in enumerate(faces):
        for name, entry in (face.get("side_images") or {}).items():
            path = anon_dir / entry["path"]
            try:
                data = path.read_bytes()
            except OSError:
                raise ValueError(f"{entry['path']} (face {index}'s {name} image, which restore reads) is missing") from None
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError(f"{entry['path']} differs from the one anonymize wrote (sha256)")
            out.setdefault(index, {})[name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return out


@dataclass(frozen=True)
class KeyMaterial:
    """An image's record in the keyfile, opened: the output it was sealed for, its per-face
    values (``meta``), escrowed pixels (``blobs``) and the keyring its face keys derive from.
    Lives in memory only (crosses to a restore worker through a pipe, never a file)."""

    output_sha256: str | None
    meta: dict
    blobs: bytes
    keyring: object


def _key_material(row: dict, reader) -> KeyMaterial | None:
    """The keyfile's record of an anonymized image (None when it holds none, or nothing to restore)."""
    if row["status"] != "ok" or not row.get("output"):
        return None
    sealed_for = reader.output_sha256(row["input"])
    if sealed_for is None:
        return None
    return KeyMaterial(sealed_for, *reader.record(row["input"]))


_POOL_RESTORER: _Restorer | None = None
_POOL_PLACES: tuple[Path, Path] | None = None


def _restore_all(tasks, anon_dir: Path, staging: Path, restorer: _Restorer, restorer_args: tuple,
                 workers: int):
    """Each (row, key material) restored, yielding its restore row as it finishes: here, or on
    ``workers`` pool processes each holding its own restorer (model-based restores one image per
    task). ``tasks`` is consumed lazily: the pool holds at most two batches per worker."""
    from contextlib import closing
    from itertools import islice

    from .executors.pool import pool_results, worker_threads

    if workers <= 1:
        for row, keys in tasks:
            yield _restore_one(row, anon_dir, staging, keys, restorer)
        return
    size = 1 if restorer.source == "model" else 8
    batches = iter(lambda: list(islice(tasks, size)), [])

    initargs = (*restorer_args, anon_dir, staging, worker_threads(workers))
    with closing(pool_results(batches, _restore_batch, workers, _init_restore_worker, initargs)) as finished:
        for outs in finished:
            yield from outs


def _init_restore_worker(seal: dict, record: dict, weights_dir: str | None, anon_dir: Path, staging: Path, threads: int) -> None:
    import signal

    from .pipeline import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C, and stops its workers
    die_with_parent()
    global _POOL_RESTORER, _POOL_PLACES
    _POOL_RESTORER, _POOL_PLACES = _restorer(seal, record, weights_dir), (anon_dir, staging)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def _restore_batch(batch: list) -> list[dict]:
    anon_dir, staging = _POOL_PLACES
    return [_restore_one(row, anon_dir, staging, keys, _POOL_RESTORER) for row, keys in batch]


def _restore_one(row: dict, anon_dir: Path, staging: Path, keys: KeyMaterial | None, restorer: _Restorer) -> dict:
    from .io.images import ImageError, encode_image, load_image

    rel = row["input"]
    out = {"input": rel, "status": "error", "restored_from": "", "n_faces": int(row.get("n_faces") or 0),
           "round_trip": "", "reason": "", "output_sha256": ""}
    if row["status"] not in ("ok", "no_face") or not row.get("output"):
        out["status"], out["reason"] = "not_anonymized", f"the run wrote no output ({row['status']}: {row.get('reason', '')})"
        return out
    path = anon_dir / row["output"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        out["status"], out["reason"] = "missing", f"{row['output']} is not in the anonymized folder"
        return out
    except OSError as e:
        out["reason"] = f"cannot read {row['output']}: {e.strerror or e}"
        return out
    expected = row.get("output_sha256") or ""
    if hashlib.sha256(data).hexdigest() != expected:
        out["status"], out["reason"] = "modified", "the file differs from the one anonymize wrote (sha256); not restored"
        return out
    if row["status"] == "no_face":
        result, out["restored_from"] = data, "copy"
        out["status"] = "copied"
    else:
        if keys is None or keys.output_sha256 != expected:
            out["reason"] = "the keyfile holds no record for this image"
            return out
        meta, blobs, keyring = keys.meta, keys.blobs, keys.keyring
        config = restorer.config
        try:
            img = load_image(data, config.get("max_pixels", 178_956_970), keep_metadata=True)
            side = _side_images(row, anon_dir) if restorer.source == "model" else {}
            round_trips = restorer.restore(img, meta, blobs, keyring, side)
            result = encode_image(img)
        except (ImageError, ValueError, KeyError, TypeError) as e:
            out["reason"] = f"cannot restore: {e}"
            return out
        out["status"] = "approximate" if restorer.approximate else "restored"
        if round_trips:
            out["round_trip"] = round(min(round_trips), 4)
        out["restored_from"] = restorer.source + (" (" + ", ".join(
            sorted({n for images in side.values() for n in images})) + " images)" if side else "")
    write_atomic(staging / rel, result, mode=RESTORED_FILE_MODE)
    out["output_sha256"] = hashlib.sha256(result).hexdigest()
    return out


def _write_restore_outputs(staging: Path, rows: list[dict], record: dict, reader, manifest_sha256: str,
                           restorer: _Restorer, started: float) -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(rows, columns=RESTORE_COLUMNS)
    write_atomic(staging / MANIFEST_NAME, frame.to_csv(index=False).encode())
    doc = {
        "tool": "anoncli", "tool_version": __version__, "restored_run_id": reader.run_id,
        "anonymized_manifest_sha256": manifest_sha256, "restored_from": restorer.source,
        "method": reader.seal.get("method"), "keyfile_protection": reader.header.get("protection"),
        "restore": {"kind": restorer.capability.kind.value, "reason": restorer.capability.reason},
        "counts": {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES},
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "ended": datetime.now(timezone.utc).isoformat(),
    }
    if restorer.approximate:
        values = [r["round_trip"] for r in rows if isinstance(r["round_trip"], float)]
        doc["round_trip"] = {"measure": restorer.quality_measure, "per_image": "the worst face's (manifest.csv column round_trip)",
                             **({"median": float(np.median(values)), "min": min(values), "max": max(values)} if values else {})}
    write_atomic(staging / RESTORE_RECORD_NAME, json.dumps(doc, indent=2).encode())
