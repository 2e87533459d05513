"""One batch of items: decode, detect, anonymize, encode, write atomically. Runs in workers."""
from __future__ import annotations

import errno
import hashlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .config import RunConfig
from .faces.confirmation import ConfirmSettings, confirm, unconfirmed_note
from .faces.detectors import create_detector
from .faces.detection import Detection
from .faces.stage import FaceSecret, aligned_crops, anonymize_faces, anonymize_images
from .io.atomic import write_atomic
from .io.images import ImageError, encode_image, encode_png, load_image, rgb8
from .keys.derive import Keyring
from .keys.escrow import compress_patch
from .methods import FaceMethod, build_method
from .records import ImageRecord, KeyRecord


class DiskFull(RuntimeError):
    """No space left for an output; ``done``: the records of the batch's images finished before
    it, so that the run journals them instead of redoing them (picklable: it crosses the pool)."""

    def __init__(self, message: str, done: list[ImageRecord] | None = None):
        super().__init__(message, done or [])
        self.message, self.done = message, done or []

    def __str__(self) -> str:
        return self.message


class WorkerStartError(RuntimeError):
    """The detector or method could not be loaded (missing weights, bad install)."""


def start_worker(config: RunConfig, weights_dir: str | None, threads: int, keys: KeySetup | None = None) -> "Worker":
    try:
        return Worker(config, weights_dir, threads, keys)
    except Exception as e:
        raise WorkerStartError(f"could not load detector {config.detector!r} and method {config.method!r}: "
                               f"{type(e).__name__}: {e}") from None


def new_record(rel: str, config: RunConfig, path: Path | None = None, reason: str = "") -> ImageRecord:
    """A journal record for one input, status error until the work succeeds."""
    rec = ImageRecord(rel, config.method, config.params, config.detector, config.hash, reason=reason)
    if path is not None:
        try:
            st = os.stat(path)
            rec.input_size, rec.input_mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            pass
    return rec


@dataclass(frozen=True)
class KeySetup:
    """What a worker needs when the run has a keyfile: the segment's keyring, and whether to escrow."""

    keyring: Keyring
    escrow: bool = False


class Worker:
    """Holds the loaded detector and method for one process."""

    def __init__(self, config: RunConfig, weights_dir: str | None = None, threads: int = 0,
                 keys: KeySetup | None = None):
        self.config = config
        self.keys = keys
        self.detector = create_detector(config.detector, threshold=config.threshold, max_side=config.detect_size,
                                        nms_iou=config.nms_iou, threads=threads, weights_dir=weights_dir)
        self.method = build_method(config.method, config.params, weights_dir)
        if threads and "torch" in sys.modules:  # the generator methods run torch in each worker process
            import torch

            torch.set_num_threads(threads)

    def _decode(self, rel: str, src: str) -> tuple[ImageRecord, object | None]:
        """The item's record and its decoded image (None when it could not be read: the record says why)."""
        rec = new_record(rel, self.config, Path(src))
        t0 = time.perf_counter()
        try:
            with open(src, "rb") as f:
                data = f.read()
            rec.input_sha256 = hashlib.sha256(data).hexdigest()
            img = load_image(data, self.config.max_pixels, self.config.keep_metadata)
        except ImageError as e:
            rec.reason = str(e)
        except OSError as e:
            rec.reason = f"cannot read file: {e.strerror or e}"
        except Exception as e:  # one bad image must not stop the run
            _internal_error(rec, "decoding", e)
        else:
            rec.notes = list(img.notes)
            rec.jpeg_quality = img.jpeg_quality  # written with the input's own quantisation tables
            rec.timings["decode"] = time.perf_counter() - t0
            return rec, img
        return rec, None

    def _decode_and_detect(self, pairs: list[tuple[str, str]]) -> list[tuple[ImageRecord, object | None, list | None]]:
        """(record, image, detections) per (relative input, input path); image or detections None on failure."""
        decoded = [self._decode(rel, src) for rel, src in pairs]
        loaded = [(rec, img) for rec, img in decoded if img is not None]
        if not loaded:
            return [(rec, img, None) for rec, img in decoded]
        t0 = time.perf_counter()
        found = iter(self._detect(loaded))
        per_image = (time.perf_counter() - t0) / len(loaded)
        results = []
        for rec, img in decoded:
            dets = next(found) if img is not None else None
            if dets is not None:
                rec.timings["detect"] = per_image
                dets = self._confirm_uncertain(rec, img, dets)
            results.append((rec, img, dets))
        return results

    def process(self, batch: list[tuple[str, str, str]], emit: Callable[[ImageRecord], None] | None = None) -> list[ImageRecord]:
        """``batch``: (relative input, input path, output path) triples; one record each, returned,
        and handed to ``emit`` as soon as its image is done (the run journals it then)."""
        results = self._decode_and_detect([(rel, src) for rel, src, _ in batch])
        if self.method.faces_together > 1:
            return self._process_together(results, [dst for _, _, dst in batch], emit)
        finished = []
        for (rec, img, dets), (_, _, dst) in zip(results, batch):
            finish = (lambda: self._finish(rec, img, Path(dst), dets)) if dets is not None else None
            _settle(rec, finish, "anonymizing", finished, emit)
        return finished

    def _process_together(self, results: list, outputs: list[str], emit: Callable[[ImageRecord], None] | None) -> list[ImageRecord]:
        """``process`` for a method that works on several faces at once: the faces of every image of the
        batch go to it together (``anonymize_images``), then each image is written."""
        todo, failed = [], set()
        for position, ((rec, img, dets), dst) in enumerate(zip(results, outputs)):
            faces = self._faces_to_do(rec, dets) if dets is not None else None
            if faces is not None:
                todo.append((position, rec, img, Path(dst), faces))
        with_faces = [item for item in todo if item[4]]
        t0 = time.perf_counter()
        outcomes = anonymize_images([(img, faces, self._face_key(rec)) for _, rec, img, _, faces in with_faces],
                                    self.method, self.keys is not None and self.keys.escrow)
        per_image = (time.perf_counter() - t0) / max(1, len(with_faces))
        secrets = {}
        for (position, rec, *_), outcome in zip(with_faces, outcomes):
            if isinstance(outcome, Exception):
                _internal_error(rec, "anonymizing", outcome)
                failed.add(position)
            else:
                (rec.faces, secrets[position]), rec.status = outcome, "ok"
                rec.timings["anonymize"] = per_image
        finished = []
        writing = {position: (img, dst) for position, _, img, dst, _ in todo if position not in failed}
        for position, (rec, _, _) in enumerate(results):
            write = None
            if position in writing:
                img, dst = writing[position]
                write = lambda: self._write(rec, img, dst, secrets.get(position))  # noqa: E731
            _settle(rec, write, "writing", finished, emit)
        return finished

    def gather(self, batch: list[tuple[str, str]]) -> list[tuple[ImageRecord, list[np.ndarray]]]:
        """First pass of a dataset-level method: the record (detections with exact landmarks)
        and the uint8 aligned crops of every face of each (relative input, input path)."""
        out = []
        for rec, img, dets in self._decode_and_detect(batch):
            crops = []
            if dets is not None:
                try:
                    decoded_notes = len(img.notes)   # what decoding noted; detection's notes travel to the second pass
                    dets = self._keep_large(rec, dets)
                    rec.alignment_notes = rec.notes[decoded_notes:]
                    rec.detections, crops = aligned_crops(img, dets, self.method.resolution, self.method.margin)
                    rec.status = "ok" if dets else "no_face"
                except Exception as e:  # one bad image must not stop the run
                    _internal_error(rec, "aligning", e)
                    crops = []
            out.append((rec, crops))
        return out

    def compose(self, batch: list[tuple[str, str, str, Placement]], emit: Callable[[ImageRecord], None] | None = None) -> list[ImageRecord]:
        """Second pass of a dataset-level method: each face replaced by the crop the plan gave
        it. ``batch``: (relative input, input path, output path, placement). Records as in ``process``."""
        finished = []
        for rel, src, dst, placement in batch:
            rec, img = self._decode(rel, src)
            try:
                self._compose_one(rec, img, dst, placement)
            except DiskFull as e:
                raise DiskFull(e.message, [] if emit else finished) from None
            finished.append(_done(rec, emit))
        return finished

    def _compose_one(self, rec: ImageRecord, img, dst: str, placement: Placement) -> None:
        if img is None:
            return
        if rec.input_sha256 != placement.input_sha256:
            rec.reason = "the input changed since the first pass; run the same command again"
            return
        rec.notes += placement.alignment_notes
        dets = [Detection(np.asarray(d["box"], np.float64), d["score"], np.asarray(d["landmarks_exact"], np.float64))
                for d in placement.detections]
        rec.dataset_plan = placement.plan
        placed = self.method.placing(placement.replacements, placement.guarantees)
        try:
            self._finish(rec, img, Path(dst), dets, method=placed, filter_small=False)
            if not placed.exhausted():
                raise RuntimeError("fewer faces placed than the first pass aligned")
        except DiskFull:
            raise
        except Exception as e:  # one bad image must not stop the run
            _internal_error(rec, "placing faces", e)

    def _detect(self, loaded: list) -> list:
        """Detections per loaded image (None where detection failed: that record says why).

        The batch is detected at once; if that fails, image by image, so only the culprit fails."""
        try:
            return self.detector.detect([rgb8(img.pixels, img.mode) for _, img in loaded])
        except Exception:
            return [self._detect_one(rec, img) for rec, img in loaded]

    def _detect_one(self, rec: dict, img):
        try:
            return self.detector.detect([rgb8(img.pixels, img.mode)])[0]
        except Exception as e:
            _internal_error(rec, "face detection", e)
            return None

    def _confirm_uncertain(self, rec: ImageRecord, img, dets: list) -> list:
        """The detections less the uncertain large ones not found again at the detector's best scale
        (``faces.confirmation``); those are listed in the record's notes."""
        settings = ConfirmSettings(self.config.confirm_below, self.config.confirm_min_side, self.config.threshold)
        if not any(settings.uncertain(d) for d in dets):
            return dets
        t0 = time.perf_counter()
        try:
            kept, dropped = confirm(self.detector, rgb8(img.pixels, img.mode), dets, settings)
        except Exception as e:  # recall first: a failed second look keeps what the first found
            rec.notes.append(f"second look at uncertain detections failed ({type(e).__name__}: {e}); all kept")
            return dets
        rec.timings["detect"] = rec.timings.get("detect", 0.0) + time.perf_counter() - t0
        rec.notes += [unconfirmed_note(d, settings.below) for d in dropped]
        return kept

    def _keep_large(self, rec: ImageRecord, dets: list) -> list:
        small = [d for d in dets if d.size < self.config.min_face]
        if small:
            rec.notes.append(f"{len(small)} detection(s) below --min-face {self.config.min_face}px left untouched")
        return [d for d in dets if d.size >= self.config.min_face]

    def _faces_to_do(self, rec: ImageRecord, dets: list, filter_small: bool = True) -> list | None:
        """The detections to anonymize; [] for an image written without changes (--no-face keep),
        None for one not written (its record says why)."""
        if filter_small:
            dets = self._keep_large(rec, dets)
        if dets:
            return dets
        policy = self.config.no_face
        if policy == "fail":
            rec.status, rec.reason = "error", "no face found (--no-face fail)"
            return None
        rec.status = "no_face"
        rec.reason = "no face found; " + ("written without changes to pixels" if policy == "keep" else "not written (--no-face skip)")
        return None if policy == "skip" else []

    def _face_key(self, rec: ImageRecord):
        """Face i's key of this image (``keys.derive``), or None for a run without a keyfile."""
        if self.keys is None:
            return None
        keyring, input_sha = self.keys.keyring, rec.input_sha256
        return lambda i: keyring.face(rec.input, input_sha, i)

    def _finish(self, rec: ImageRecord, img, dst: Path, dets, method: FaceMethod | None = None, filter_small: bool = True) -> None:
        dets = self._faces_to_do(rec, dets, filter_small)
        if dets is None:
            return
        t0 = time.perf_counter()
        secrets = None
        if dets:
            rec.faces, secrets = anonymize_faces(img, dets, method or self.method, self._face_key(rec),
                                                 self.keys is not None and self.keys.escrow)
            rec.status = "ok"
        rec.timings["anonymize"] = time.perf_counter() - t0
        self._write(rec, img, dst, secrets)

    def _write(self, rec: ImageRecord, img, dst: Path, secrets) -> None:
        """The anonymized image written atomically (side images first), its record completed."""
        t0 = time.perf_counter()
        data = encode_image(img)
        try:
            self._write_side_images(rec, dst)
            write_atomic(dst, data)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"no space left on device while writing {dst}") from None
            rec.status, rec.reason = "error", f"cannot write output: {e.strerror or e}"
            return
        rec.timings["encode_write"] = time.perf_counter() - t0
        rec.output = rec.input
        rec.output_sha256 = hashlib.sha256(data).hexdigest()
        if secrets is not None and self.keys is not None:
            rec.key_record = key_record(rec, secrets)

    @staticmethod
    def _write_side_images(rec: ImageRecord, dst: Path) -> None:
        """Each face's extra images (``FaceMethod.side_images``) as PNG under OUTPUT/<name>s/, the
        input's path with .face<i>.png, before the output itself: a run that stops in between
        redoes the image and writes them again. The face record keeps their relative paths and sha256."""
        rel = Path(rec.input)
        root = dst.parents[len(rel.parts) - 1]
        for index, face in enumerate(rec.faces):
            images, face.side_image_pixels = face.side_image_pixels, None
            for name, rgb in (images or {}).items():
                side_rel = Path(f"{name}s") / rel.parent / f"{rel.stem}.face{index}.png"
                data = encode_png(rgb)
                write_atomic(root / side_rel, data)
                face.side_images = {**(face.side_images or {}), name: {"path": side_rel.as_posix(), "sha256": hashlib.sha256(data).hexdigest()}}


@dataclass(frozen=True)
class Placement:
    """What the second pass of a dataset-level method needs for one image: the first pass's
    detections (with exact landmarks) and alignment notes, the plan's replacement crop and
    guarantee per aligned face, and the plan's digest; ``input_sha256`` checks the input is unchanged."""

    input_sha256: str
    detections: list[dict]
    alignment_notes: list[str]
    replacements: list
    guarantees: list
    plan: str


def key_record(rec: ImageRecord, secrets: list[FaceSecret]) -> KeyRecord:
    """The keyfile content for one image: per-face values, warps and escrowed pixels (compressed
    here, in the worker, so that the parent only encrypts)."""
    faces, blobs = [], []
    for s in secrets:
        face = {"index": s.index, "params": s.params, "warp": s.warp, "landmarks": s.landmarks}
        if s.landmarks68 is not None:
            face["landmarks68"] = s.landmarks68
        if s.brow_raises is not None:
            face["brow_raises"] = s.brow_raises
        if s.escrow_pixels is not None:
            desc, blob = compress_patch(s.escrow_pixels, level=3)
            face["escrow"] = {"box": list(s.escrow_box), **desc}
            blobs.append(blob)
        faces.append(face)
    meta = {"input": rec.input, "input_sha256": rec.input_sha256, "faces": faces}  # face ids are re-derived
    return KeyRecord(meta, blobs)


def _done(rec: ImageRecord, emit: Callable[[ImageRecord], None] | None) -> ImageRecord:
    """A finished image's record, timings rounded, handed to ``emit`` at once."""
    rec.timings = {k: round(v, 5) for k, v in rec.timings.items()}
    if emit is not None:
        emit(rec)
    return rec


def _settle(rec: ImageRecord, action: Callable[[], None] | None, stage: str, finished: list[ImageRecord],
            emit: Callable[[ImageRecord], None] | None) -> None:
    """``action`` (the image's remaining work, if any), then its record into ``finished`` and to ``emit``.
    A full disk stops the batch with the images finished before; any other error fails this image alone."""
    if action is not None:
        try:
            action()
        except DiskFull as e:
            raise DiskFull(e.message, [] if emit else finished) from None
        except Exception as e:  # one bad image must not stop the run
            _internal_error(rec, stage, e)
    finished.append(_done(rec, emit))


def _internal_error(rec: ImageRecord, stage: str, e: Exception) -> None:
    """Record an unexpected failure of one image (the traceback goes to the journal, not the user)."""
    rec.status, rec.reason = "error", f"internal error in {stage}: {type(e).__name__}: {e}"
    rec.traceback = "".join(traceback.format_exception(e, limit=5))


_WORKER: Worker | None = None
_START_ERROR: str = ""
_RESULTS = None   # the results queue of a pool worker (streamed tasks)


STREAMED_TASKS = ("process", "compose")   # tasks whose records are sent back one image at a time


@dataclass(frozen=True)
class Streamed:
    """What a streamed task returns through the pool: the inputs whose records it sent, one by one,
    on the results queue (the run journals each as it arrives)."""

    inputs: tuple[str, ...]


def init_worker(config_dict: dict, weights_dir: str | None, threads: int, keys: KeySetup | None = None,
                results=None) -> None:
    """Pool initializer; a failure is kept and reported by the first task, not printed as a traceback.
    ``results``: the queue streamed tasks send each finished image's record on."""
    global _WORKER, _START_ERROR, _RESULTS
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, and stops its workers
    die_with_parent()
    _RESULTS = results
    try:
        _WORKER = start_worker(RunConfig(**config_dict), weights_dir, threads, keys)
    except WorkerStartError as e:
        _START_ERROR = str(e)


def die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when its parent dies, however it dies (SIGKILL
    included), so that no worker outlives the run."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:   # the parent died before prctl
        os._exit(1)


def process_in_worker(batch, task: str = "process"):
    """Run ``task`` (process, gather or compose) on a batch in this worker process; a streamed
    task sends each record on the results queue and returns ``Streamed``."""
    if _WORKER is None:
        raise WorkerStartError(_START_ERROR)
    if task in STREAMED_TASKS and _RESULTS is not None:
        records = getattr(_WORKER, task)(batch, emit=_RESULTS.put)
        return Streamed(tuple(r.input for r in records))
    return getattr(_WORKER, task)(batch)
