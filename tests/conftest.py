"""Shared helpers: the real-face data set (skipped when absent) and small image builders."""
from __future__ import annotations

import io
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "celeba-wild" / "images"
# A portrait with one large frontal face (detected with score > 0.99 by the bundled detector).
FACE_NAME = "000149.jpg"


def face_file() -> Path:
    """Path of a real face JPEG, or skip the test when the shared data is not here."""
    path = FACES / FACE_NAME
    if not path.is_file():
        pytest.skip(f"real face images not available ({path} is missing; they live in the shared data folder)")
    return path


@pytest.fixture
def face_jpeg() -> Path:
    return face_file()


def smooth_rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with a little texture: compresses well, survives JPEG re-encoding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / w * 200 + 20, y / h * 200 + 20, (x + y) / (h + w) * 150 + 50], axis=2)
    rgb += rng.normal(0, 3, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def gradient_crop_set(n: int = 20):
    """A CropSet of n noisy 32 px colour gradients, one in five held out (the trainers' tests)."""
    from anoncli.train.face_crops import CropSet

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32]
    faces = np.stack([np.clip(np.stack([x * 6, y * 6, (x + y) * 3], -1) + rng.normal(0, 20, (32, 32, 3)), 0, 255)
                      for _ in range(n)]).astype(np.uint8)
    index = [{"source": "s", "image": f"{i}.png", "identity": str(i), "held_out": i % 5 == 0} for i in range(n)]
    return CropSet(faces, index, np.zeros((n, 2, 128), np.float32))


def jpeg_bytes(arr: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def png16(arr: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow and OpenCV cannot write every 16-bit colour type)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + np.ascontiguousarray(arr[y]).astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b""))


def kill_halfway(cmd: list[str], journal: Path, n_inputs: int, env=None, timeout: float = 180) -> int:
    """Start ``cmd``, SIGKILL it once its journal holds a third of ``n_inputs`` rows; returns
    the rows written before the kill."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if journal.exists() and journal.read_bytes().count(b"\n") >= n_inputs // 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "images"
PASSPHRASE = "a passphrase for the tests"
FAST_KDF = ["--kdf-memory", "1", "--kdf-iterations", "1", "--kdf-lanes", "1"]   # keyfiles in milliseconds


def cli(*args, env_extra: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m anoncli ARGS`` as a user runs it (keyfile passphrase in $ANONCLI_PASSPHRASE)."""
    import os
    import sys

    env = {**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def real_faces(n: int) -> list[Path]:
    """The first ``n`` in-the-wild CelebA photos, or skip when the shared data is not here."""
    files = sorted(FACES.glob("*.jpg"))[:n] if FACES.is_dir() else []
    if len(files) < n:
        pytest.skip(f"real face images not available in {FACES}")
    return files
