"""Detect -> align -> method on the aligned crop -> inverse warp -> feathered blend (METHODS.md common frame)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator

import cv2
import numpy as np

from ..keys.derive import FaceKey
from ..keys.escrow import changed_box
from ..io.images import COLOUR_CHANNELS, LoadedImage, encode_image, from_rgb, load_image, rgb8, rgb_view
from ..methods.base import AnonymizedFace, FaceMethod, FaceRequest
from ..records import FaceResult
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


def _put_back(img: LoadedImage, method: FaceMethod, roi, m: np.ndarray, crop_out: np.ndarray,
              region, restoring: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``crop_out`` (the method's crop) into the image region ``roi``: through the method's
    compositor when it has one, else with its crop-space ``blend_mask``. Returns the float RGB
    to write and the mask (0 exactly where the image keeps its pixels), nothing written yet.
    ``restoring``: ``crop_out`` is a restored face (``Compositor.composite``)."""
    crop_out = crop_out.astype(np.float32, copy=False)
    if method.compositor is not None:
        x0, y0, x1, y1 = roi
        return _composited(rgb_view(img.pixels[y0:y1, x0:x1], img.mode), method, roi, m, crop_out, region, restoring)
    return warp_crop_to_roi(crop_out, m, roi), warp_crop_to_roi(method.blend_mask(region), m, roi)


def _composited(base: np.ndarray, method: FaceMethod, roi, m: np.ndarray, crop_out: np.ndarray,
                region, restoring: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``_put_back`` through the method's compositor onto ``base``, the roi's float RGB."""
    match_colour = not restoring or method.restore_matches_colour
    out, support = method.compositor.composite(base, crop_out.astype(np.float32, copy=False), m, roi, region, match_colour)
    return out, (support > 0).astype(np.float32)


def _locate(img: LoadedImage, method: FaceMethod, roi, m: np.ndarray, landmarks: np.ndarray, landmarks_in_crop: np.ndarray):
    """The region the compositor replaces (a ``FaceRegion``), or, for a method without one, the
    crop-space landmarks its ``blend_mask`` takes."""
    if method.compositor is None:
        return landmarks_in_crop
    x0, y0, x1, y1 = roi
    return method.compositor.locate(rgb8(img.pixels[y0:y1, x0:x1], img.mode), roi, landmarks, m,
                                    method.resolution, method.margin)


def _placement(method: FaceMethod, img: LoadedImage, roi, region, m: np.ndarray, restoring: bool = False) -> dict:
    """Where the compositor will put the method's crop, handed to the method so its fit sees it:
    ``region_in_crop`` (the region's crop-space mask), ``blend_in_crop`` (its ``CropBlend``) and
    ``read_back`` (``_read_back``, for a method that ``reads_back``); empty for a method without a compositor."""
    if method.compositor is None:
        return {}
    return {"region_in_crop": region.crop_mask(m, method.resolution, method.region_feather),
            "blend_in_crop": method.compositor.crop_blend(region, m, method.resolution),
            "read_back": _read_back(img, method, roi, m, region, restoring) if method.reads_back else None}


BLOCK_GRID = 16   # a JPEG's blocks (and WebP's macroblocks) repeat every 16 px with chroma subsampled by 2
ENCODER_OPTIONS = ("qtables", "quality", "subsampling", "lossless")


def _read_back(img: LoadedImage, method: FaceMethod, roi, m: np.ndarray, region, restoring: bool = False):
    """What a reader (restore, a recognizer) will find in the crop once the stage has put a crop of
    this face into the photo and the run has written it: a function of the method's crop (float RGB
    0-255) that does exactly that to a copy of the photo around the face: the compositing, rounding
    to the image's samples, the file's lossy encoding (a JPEG with the input's tables and
    subsampling, or a lossy WebP, of a part of the image aligned to its block grid, so that every
    block holds what the file's will) and the crop's extraction. For a method that fits its face
    to what the written photo will show."""
    x0, y0, x1, y1 = roi
    lossy = img.format == "JPEG" or (img.format == "WEBP" and not img.save_options.get("lossless"))
    pad = 2 * BLOCK_GRID if lossy else 0
    ax0, ay0 = max(0, (x0 - pad) // BLOCK_GRID * BLOCK_GRID), max(0, (y0 - pad) // BLOCK_GRID * BLOCK_GRID)
    ax1, ay1 = min(img.width, x1 + pad), min(img.height, y1 + pad)
    around = img.pixels[ay0:ay1, ax0:ax1].copy()
    inner = (x0 - ax0, y0 - ay0, x1 - ax0, y1 - ay0)
    base = rgb_view(around[inner[1]:inner[3], inner[0]:inner[2]], img.mode)
    options = {k: v for k, v in img.save_options.items() if k in ENCODER_OPTIONS}

    def read_back(crop_out: np.ndarray) -> np.ndarray:
        part = LoadedImage(around.copy(), img.mode, img.format, options)
        out, mask = _composited(base, method, roi, m, crop_out, region, restoring)
        _composite_into(part, inner, out, mask)
        if lossy:
            part = load_image(encode_image(part), part.pixels.size)
        return extract_crop(part, _shift(m, ax0, ay0), method.resolution, inner)

    return read_back


def _composite_into(img: LoadedImage, roi, rgb_roi: np.ndarray, mask_roi: np.ndarray) -> None:
    """Blend float RGB ``rgb_roi`` into the image's colour channels inside ``roi`` (in place)."""
    x0, y0, x1, y1 = roi
    n_colour = COLOUR_CHANNELS[img.mode]
    top = 65535 if img.pixels.dtype == np.uint16 else 255
    base = img.pixels[y0:y1, x0:x1, :n_colour].astype(np.float32)
    out = composite(base, from_rgb(rgb_roi, img.mode, img.pixels.dtype), mask_roi)
    img.pixels[y0:y1, x0:x1, :n_colour] = np.clip(np.rint(out), 0, top).astype(img.pixels.dtype)


def aligned_crops(img: LoadedImage, detections: list[Detection], resolution: int,
                  margin: float) -> tuple[list[dict], list[np.ndarray]]:
    """Each face's detection record (with its exact landmarks, which the second pass of a
    dataset-level method warps with) and the uint8 aligned crops of those inside the image."""
    records, crops = [], []
    for det in detections:
        m = alignment_matrix(det.landmarks, resolution, margin)
        roi = crop_bounds_in_image(m, resolution, img.height, img.width)
        record = {**det.to_record(), "landmarks_exact": np.asarray(det.landmarks, np.float64).tolist(),
                  "aligned": roi is not None}
        if roi is not None:
            crops.append(np.clip(np.rint(extract_crop(img, m, resolution, roi)), 0, 255).astype(np.uint8))
        records.append(record)
    return records, crops


@dataclass
class FaceSecret:
    """What the keyfile keeps for one face: the method's per-face values, its exact warp and
    landmarks, and (with escrow) the original pixels of the region the face stage changed."""

    index: int
    params: dict
    warp: list            # image -> crop matrix, full precision (the manifest's is rounded)
    landmarks: list       # detected landmarks in the image
    escrow_box: tuple[int, int, int, int] | None = None   # x0, y0, x1, y1 in the image
    escrow_pixels: np.ndarray | None = None
    landmarks68: list | None = None   # the dense landmarks of the compositor's region (restore composes with the same)
    brow_raises: list | None = None   # the region's per-brow-point raises, where read from the photo


FaceResults = tuple[list[FaceResult], list[FaceSecret]]


def anonymize_faces(img: LoadedImage, detections: list[Detection], method: FaceMethod,
                    face_key: Callable[[int], FaceKey] | None = None,
                    escrow: bool = False) -> FaceResults:
    """Replace every detected face in ``img.pixels`` (in place); one record per face, and
    one secret per face when the run has a keyfile (``face_key`` gives face i's key).

    Faces are done one after another on the updated image, so a crop that overlaps a face
    already done carries that face anonymized, never its original pixels; escrowed regions
    are therefore restored in reverse order.
    """
    steps = _face_steps(img, detections, method, face_key, escrow)
    try:
        request = next(steps)
        while True:
            face = method.anonymize_many([request])[0]
            if isinstance(face, Exception):
                raise face
            request = steps.send(face)
    except StopIteration as done:
        return done.value


def anonymize_images(images: list[tuple[LoadedImage, list[Detection], Callable[[int], FaceKey] | None]],
                     method: FaceMethod, escrow: bool = False) -> list[FaceResults | Exception]:
    """``anonymize_faces`` of several images, with the faces of different images handed to the
    method together (``FaceMethod.anonymize_many``): the first face of every image, then the second of
    those that have one, and so on, so that within an image faces are still done one after another.
    Each image's result, or the exception that stopped it (the other images go on)."""
    results: list[FaceResults | Exception | None] = [None] * len(images)
    pending: dict[int, FaceRequest] = {}

    def advance(i: int, steps, face=None) -> None:
        try:
            pending[i] = next(steps) if face is None else steps.send(face)
        except StopIteration as done:
            results[i] = done.value
        except Exception as e:  # one bad image must not stop the others
            results[i] = e

    all_steps = [_face_steps(img, dets, method, face_key, escrow) for img, dets, face_key in images]
    for i, steps in enumerate(all_steps):
        advance(i, steps)
    while pending:
        order = list(pending)
        requests = [pending.pop(i) for i in order]
        try:
            faces: list = method.anonymize_many(requests)
        except Exception:   # find the culprit: face by face, so only its image fails
            faces = []
            for request in requests:
                try:
                    faces.append(method.anonymize_many([request])[0])
                except Exception as e:
                    faces.append(e)
        for i, face in zip(order, faces):
            if isinstance(face, Exception):
                all_steps[i].close()
                results[i] = face
            else:
                advance(i, all_steps[i], face)
    return results


def _others(placed: dict, index: int) -> list:
    """The five landmarks of every face the stage composites in the photo but face ``index`` (the
    faces ``Compositor.less_nearer_faces`` weighs, the same when anonymizing and restoring)."""
    return [landmarks for i, landmarks in placed.items() if i != index]


def _face_steps(img: LoadedImage, detections: list[Detection], method: FaceMethod,
                face_key: Callable[[int], FaceKey] | None, escrow: bool) -> Generator[FaceRequest, AnonymizedFace, FaceResults]:
    """``anonymize_faces`` as a generator: it yields each face's ``FaceRequest`` and is sent the
    method's ``AnonymizedFace`` for it; returns the records and secrets."""
    res = method.resolution
    records, secrets = [], []
    warps = [alignment_matrix(det.landmarks, res, method.margin) for det in detections]
    rois = [crop_bounds_in_image(m, res, img.height, img.width) for m in warps]
    placed = {i: det.landmarks for i, (det, roi) in enumerate(zip(detections, rois)) if roi is not None}
    for index, (det, m, roi) in enumerate(zip(detections, warps, rois)):
        record = FaceResult(**det.to_record(), warp=[[round(float(v), 6) for v in row] for row in m])
        if roi is None:
            record.skipped = "crop outside the image"
            records.append(record)
            continue
        key = face_key(index) if face_key is not None else None
        landmarks_in_crop = apply_affine(m, det.landmarks)
        crop = extract_crop(img, m, res, roi)
        region = _locate(img, method, roi, m, det.landmarks, landmarks_in_crop)
        if method.compositor is not None:
            record.region = region.source
            region = method.compositor.less_nearer_faces(region, det.landmarks, _others(placed, index))
        face = yield FaceRequest(crop, landmarks_in_crop, key, **_placement(method, img, roi, region, m))
        anon = face.crop
        if face.side_images:
            record.side_image_pixels = face.side_images
        record.outcome = face.outcome
        anon_roi, mask_roi = _put_back(img, method, roi, m, anon, region)
        x0, y0, x1, y1 = roi
        if key is not None:
            secret = FaceSecret(index, {**method.key_params(key), **(face.key_record or {})}, m.tolist(),
                                np.asarray(det.landmarks).tolist())
            if getattr(region, "landmarks68", None) is not None:
                secret.landmarks68 = region.landmarks68.tolist()
            if getattr(region, "brow_raises", None) is not None:
                secret.brow_raises = [float(r) for r in region.brow_raises]
            box = changed_box(mask_roi) if escrow else None
            if box is not None:
                bx0, by0, bx1, by1 = box
                secret.escrow_box = (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)
                secret.escrow_pixels = img.pixels[y0 + by0:y0 + by1, x0 + bx0:x0 + bx1].copy()
            secrets.append(secret)
        _composite_into(img, roi, anon_roi, mask_roi)
        record.abs_params = {k: round(float(v), 3) for k, v in method.absolute_params(affine_scale(m)).items()}
        record.guarantee = method.guarantee()
        records.append(record)
    return records, secrets


def restore_escrow(img: LoadedImage, patches: list[tuple[tuple[int, int, int, int], np.ndarray]]) -> None:
    """Put escrowed original regions back (in place), last face first."""
    for (x0, y0, x1, y1), pixels in reversed(patches):
        if not (0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height) or pixels.shape != (y1 - y0, x1 - x0, img.pixels.shape[2]):
            raise ValueError("escrowed region does not fit this image")
        if pixels.dtype != img.pixels.dtype:
            raise ValueError("escrowed region has another sample depth than this image")
        img.pixels[y0:y1, x0:x1] = pixels


RESTORED_RANGE_SLACK = 32.0   # grey levels a restored value may overshoot 0..255 by (interpolation, a decoder's tails)
OUT_OF_RANGE_SHARE = 0.05     # share of a restored face's values allowed beyond that (the crop's resampled edge)
BLACK_SHARE = 0.5             # a restored face this much pure black, where the anonymized one was not, is a failed inverse


class RestoreFailed(ValueError):
    """A method's inverse gave a face that must not be written (non-finite, out of range, black)."""


def check_restored_crop(restored: np.ndarray, anonymized: np.ndarray, mask: np.ndarray, edge_px: float = 0.0) -> None:
    """Refuse a restored crop that is not a picture, inside its face region (mask > 0): any NaN or
    infinite value, more than ``OUT_OF_RANGE_SHARE`` of its values more than
    ``RESTORED_RANGE_SLACK`` outside 0..255 (an inverse that diverged; a thin band at the crop's
    edge, where the warp mixed in pixels the method did not change, may overshoot), or more than
    ``BLACK_SHARE`` pure black where the anonymized crop was not (a saturated decoder).
    ``edge_px``: the range check leaves out the crop's outer band this wide (crop pixels), where
    resampling mixed photo pixels the method never changed into the crop (about two photo pixels)."""
    inside = np.asarray(mask) > 0
    if not inside.any():
        return
    if edge_px > 0:
        padded = np.pad(inside.astype(np.uint8), 1)
        interior = (cv2.distanceTransform(padded, cv2.DIST_L2, 3) > edge_px)[1:-1, 1:-1]
        inside = interior if interior.any() else inside
    values = np.asarray(restored, np.float64)[inside]
    if not np.isfinite(values).all():
        raise RestoreFailed(f"the inverse gave {int((~np.isfinite(values)).sum())} non-finite values (NaN or infinity)")
    outside = float(((values < -RESTORED_RANGE_SLACK) | (values > 255.0 + RESTORED_RANGE_SLACK)).mean())
    if outside > OUT_OF_RANGE_SHARE:
        raise RestoreFailed(f"the inverse gave {outside:.0%} of the face's values outside the pixel range 0..255 "
                            f"(from {values.min():.0f} to {values.max():.0f})")

    def black_share(crop):
        return float((np.asarray(crop, np.float64)[inside].max(axis=-1) <= 0.5).mean())

    if black_share(restored) > BLACK_SHARE >= black_share(anonymized):
        raise RestoreFailed(f"the inverse gave a face {black_share(restored):.0%} pure black")


@dataclass(frozen=True)
class RestoredFace:
    index: int
    quality: float | None = None   # the method's ``restore_quality`` when measured


def restore_faces(img: LoadedImage, faces: list[dict], method: FaceMethod, keys: dict[int, FaceKey],
                  side_images: dict[int, dict] | None = None, measure_quality: bool = False) -> list[RestoredFace]:
    """Undo a reversible method without escrow (in place), last face first: the same warp,
    the method's ``restore_crop`` with the face's key, the same blend. ``faces``: the keyfile's
    per-face entries (index, warp, landmarks, params); ``side_images``: face index -> the extra
    images the run wrote for it, handed to ``restore_crop`` as ``params["side_images"]``.
    Every restored crop passes ``check_restored_crop`` first: a failed face raises
    ``RestoreFailed`` (and the caller writes nothing). With ``measure_quality`` each face also
    gets the method's ``restore_quality``. Returns the faces restored."""
    side_images = side_images or {}
    res = method.resolution
    done: list[RestoredFace] = []
    placed = {f["index"]: f["landmarks"] for f in faces
              if crop_bounds_in_image(np.asarray(f["warp"], np.float64), res, img.height, img.width) is not None}
    for face in sorted(faces, key=lambda f: f["index"], reverse=True):
        m = np.asarray(face["warp"], np.float64)
        roi = crop_bounds_in_image(m, res, img.height, img.width)
        if roi is None:
            continue
        landmarks_in_crop = apply_affine(m, np.asarray(face["landmarks"], np.float64))
        crop = extract_crop(img, m, res, roi)
        params = face.get("params", {})
        if face["index"] in side_images:
            params = {**params, "side_images": side_images[face["index"]]}
        region = landmarks_in_crop if method.compositor is None else method.compositor.region_from_record(
            face.get("landmarks68"), np.asarray(face["landmarks"], np.float64), m, res, method.margin, face.get("brow_raises"))
        if method.compositor is not None:
            region = method.compositor.less_nearer_faces(region, face["landmarks"], _others(placed, face["index"]))
        placement = _placement(method, img, roi, region, m, restoring=True)
        restored = method.restore_crop(crop, landmarks_in_crop, keys[face["index"]], params, **placement)
        mask = method.blend_mask(landmarks_in_crop)
        try:
            check_restored_crop(restored, crop, mask, edge_px=2.0 * np.sqrt(abs(np.linalg.det(m[:, :2]))))
        except RestoreFailed as e:
            raise RestoreFailed(f"face {face['index']}: {e}") from None
        quality = (float(method.restore_quality(crop, restored, landmarks_in_crop, keys[face["index"]], params, **placement))
                   if measure_quality else None)
        restored_roi, mask_roi = _put_back(img, method, roi, m, restored, region, restoring=True)
        _composite_into(img, roi, restored_roi, mask_roi)
        done.append(RestoredFace(face["index"], quality))
    return done
