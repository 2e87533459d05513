"""Detect -> align -> method on the aligned crop -> inverse warp -> feathered blend (METHODS.md common frame)."""
from __future__ import annotations

import cv2
import numpy as np

from ..io.images import COLOUR_CHANNELS, LoadedImage, from_rgb, rgb_view
from ..methods.base import FaceMethod
from .align import affine_scale, alignment_matrix, apply_affine
from .blend import composite, crop_bounds_in_image, warp_crop_to_roi
from .detection import Detection


def _shift(m: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The image->crop matrix for coordinates measured from (x0, y0)."""
    return np.hstack([m[:, :2], (m[:, :2] @ np.array([x0, y0], np.float64) + m[:, 2])[:, None]])


def extract_crop(img: LoadedImage, m_image_to_crop: np.ndarray, resolution: int, roi) -> np.ndarray:
    x0, y0, x1, y1 = roi
    rgb = rgb_view(img.pixels[y0:y1, x0:x1], img.mode)
    return cv2.warpAffine(rgb, _shift(m_image_to_crop, x0, y0), (resolution, resolution),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def anonymize_faces(img: LoadedImage, detections: list[Detection], method: FaceMethod) -> list[dict]:
    """Replace every detected face in ``img.pixels`` (in place); one record per face.

    Faces are done one after another on the updated image, so a crop that overlaps a face
    already done carries that face anonymized, never its original pixels.
    """
    res = method.resolution
    n_colour = COLOUR_CHANNELS[img.mode]
    top = 65535 if img.pixels.dtype == np.uint16 else 255
    records = []
    for det in detections:
        m = alignment_matrix(det.landmarks, res, method.margin)
        roi = crop_bounds_in_image(m, res, img.height, img.width)
        record = det.to_record()
        record["warp"] = [[round(float(v), 6) for v in row] for row in m]
        if roi is None:
            record["skipped"] = "crop outside the image"
            records.append(record)
            continue
        landmarks_in_crop = apply_affine(m, det.landmarks)
        crop = extract_crop(img, m, res, roi)
        anon = method.anonymize_crop(crop, landmarks_in_crop).astype(np.float32, copy=False)
        mask = method.blend_mask(landmarks_in_crop)
        anon_roi = warp_crop_to_roi(anon, m, roi)
        mask_roi = warp_crop_to_roi(mask, m, roi)
        x0, y0, x1, y1 = roi
        base = img.pixels[y0:y1, x0:x1, :n_colour].astype(np.float32)
        out = composite(base, from_rgb(anon_roi, img.mode, img.pixels.dtype), mask_roi)
        img.pixels[y0:y1, x0:x1, :n_colour] = np.clip(np.rint(out), 0, top).astype(img.pixels.dtype)
        record["abs_params"] = {k: round(float(v), 3) for k, v in method.absolute_params(affine_scale(m)).items()}
        records.append(record)
    return records
