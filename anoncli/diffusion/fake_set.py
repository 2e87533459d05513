"""The fake set X_F of diffusion de-identification (thesis §6.5.2), built in chunks on disk so that an
interrupted run keeps what it finished: each chunk is one .npz file written atomically, named by its
index, and drawn from its own seeds, so that a resumed build ends with the same arrays as one
that never stopped."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..io.atomic import write_atomic


@dataclass(frozen=True)
class FakeChunk:
    codes: np.ndarray      # n x d, the semantic codes z̄
    images: np.ndarray     # n x R x R x 3 uint8, their decodes
    features: np.ndarray   # n x f, the pairing features of the decodes

    def __post_init__(self):
        if not len(self.codes) == len(self.images) == len(self.features):
            raise ValueError("a fake chunk needs as many codes, images and features")


def chunk_path(folder: Path, index: int) -> Path:
    return folder / f"fakes-{index:05d}.npz"


def build_fake_set(folder: Path, count: int, chunk_size: int, make_chunk: Callable[[int, int], FakeChunk],
                   progress: Callable[[int], None] | None = None) -> FakeChunk:
    """``count`` fakes in chunks of ``chunk_size``: ``make_chunk(index, n)`` makes chunk ``index`` of n fakes
    (it must seed itself from ``index``); chunks already on disk are read, not made again. ``progress``
    is called with the number of fakes finished after each chunk."""
    if count < 1 or chunk_size < 1:
        raise ValueError("a fake set needs count >= 1 and chunk_size >= 1")
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, start in enumerate(range(0, count, chunk_size)):
        n = min(chunk_size, count - start)
        path = chunk_path(folder, index)
        chunk = _read(path, n)
        if chunk is None:
            chunk = make_chunk(index, n)
            if len(chunk.codes) != n:
                raise ValueError(f"chunk {index} was asked for {n} fakes and made {len(chunk.codes)}")
            buffer = io.BytesIO()
            np.savez(buffer, codes=chunk.codes, images=chunk.images, features=chunk.features)
            write_atomic(path, buffer.getvalue(), mode=0o600)
        parts.append(chunk)
        if progress is not None:
            progress(start + n)
    return FakeChunk(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("codes", "images", "features")))


def _read(path: Path, n: int) -> FakeChunk | None:
    """The chunk at ``path`` if it is there, complete and of the size asked; None otherwise."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            chunk = FakeChunk(data["codes"], data["images"], data["features"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return chunk if len(chunk.codes) == n else None


def decoded_fakes(model, schedule, prior, ddim_steps: int, features_of: Callable, seed: int = 0) -> Callable[[int, int], FakeChunk]:
    """§6.5.2's chunk maker for ``build_fake_set``: n codes from the fitted ``prior`` (``deid.CodePrior``) and
    n stochastic codes x_T ~ N(0, I), both drawn from a generator seeded by (seed, chunk index), decoded
    by DDIM in ``ddim_steps`` steps; ``features_of`` maps the decoded faces (N x 3 x R x R in [−1, 1]) to
    the pairing features."""

    def make(index: int, n: int) -> FakeChunk:
        import torch

        from .ddim import ddim_decode

        rng = np.random.default_rng([seed, index])
        codes = prior.sample(n, rng)
        side = model.config.image_size
        x_T = torch.as_tensor(rng.standard_normal((n, 3, side, side)), dtype=torch.float32)
        with torch.no_grad():
            faces = ddim_decode(model, schedule, x_T, torch.as_tensor(codes), ddim_steps)
            features = features_of(faces).float().numpy()
        images = ((faces.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        return FakeChunk(codes, images, features)

    return make
