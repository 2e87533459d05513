"""Escrow: the original pixels of a face region, losslessly compressed, for exact restore.

The codec is the PNG "up" filter (each row minus the row above, modulo the sample range)
followed by zlib; it works for any channel count and for 8- and 16-bit samples.
"""
from __future__ import annotations

import zlib

import numpy as np

CODEC = "up-zlib"
DTYPES = {"uint8": np.uint8, "uint16": np.uint16}
MAX_PATCH_PIXELS = 1 << 28


def compress_patch(pixels: np.ndarray, level: int = 6) -> tuple[dict, bytes]:
    """(description, compressed bytes) of an (H, W, C) uint8/uint16 array."""
    if pixels.ndim != 3 or pixels.dtype.name not in DTYPES:
        raise ValueError("escrow patches are (H, W, C) uint8 or uint16 arrays")
    filtered = pixels.copy()
    filtered[1:] = pixels[1:] - pixels[:-1]  # unsigned arithmetic wraps: exact modulo 2^bits
    data = zlib.compress(np.ascontiguousarray(filtered).astype(filtered.dtype.newbyteorder("<")).tobytes(), level)
    return {"codec": CODEC, "dtype": pixels.dtype.name, "shape": list(pixels.shape), "length": len(data)}, data


def decompress_patch(desc: dict, data: bytes) -> np.ndarray:
    """Inverse of ``compress_patch``; ValueError if the description and data disagree."""
    if desc.get("codec") != CODEC or desc.get("dtype") not in DTYPES:
        raise ValueError("unknown escrow codec")
    shape = desc.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and v > 0 for v in shape)):
        raise ValueError("bad escrow patch shape")
    if shape[0] * shape[1] * shape[2] > MAX_PATCH_PIXELS:
        raise ValueError("escrow patch too large")
    dtype = np.dtype(DTYPES[desc["dtype"]]).newbyteorder("<")
    expected = shape[0] * shape[1] * shape[2] * dtype.itemsize
    try:
        raw = zlib.decompressobj().decompress(data, expected + 1)
    except zlib.error:
        raise ValueError("escrow patch does not decompress") from None
    if len(raw) != expected:
        raise ValueError("escrow patch has the wrong size")
    filtered = np.frombuffer(raw, dtype).reshape(shape).astype(DTYPES[desc["dtype"]])
    return np.cumsum(filtered, axis=0, dtype=filtered.dtype)


def changed_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels where ``mask`` > 0, half-open; None if there are none."""
    ys, xs = np.nonzero(mask > 0)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
