"""Diffusion de-identification of a set of faces (thesis §6.5), the procedure behind `--method diffusion`:

1. the fake set X_F: codes drawn from the autoencoder's code prior, decoded from fresh x_T
   (§6.5.2; ``fake_set``), more fakes than real faces;
2. each real face paired with its nearest fake in the attribute feature space (§6.5.3);
3. z̄_A optimised from the paired fake's code with the real face's DDIM-inverted x_T fixed, on
   w_id·L_id + w_att·L_att (§6.5.4, eq. 6.7-6.8; ``deid``), and decoded.

Every stage keeps its results in a work folder (files written atomically, owner-only) so that an
interrupted run resumes without redoing a finished chunk of fakes or batch of faces; the folder holds
material derived from the real faces and is the caller's to remove.
"""
from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..io.atomic import write_atomic
from .deid import SemanticCodeSettings


@dataclass(frozen=True)
class DeidSettings:
    fake_ratio: float = 2.0        # |X_F| / |X_R|; §6.5.2 asks for more fakes than real faces
    ddim_steps: int = 10           # DDIM steps of every decode and of the inversion
    code: SemanticCodeSettings = field(default_factory=lambda: SemanticCodeSettings(steps=10))
    batch: int = 4                 # faces optimised together (and the unit of resumption)
    fake_chunk: int = 32           # fakes per chunk on disk
    fake_seed: int = 0             # fakes are decoded from the training faces' prior: not a privacy mechanism

    def __post_init__(self):
        if not self.fake_ratio > 1.0:
            raise ValueError(f"the fake set must be larger than the real one (fake ratio > 1), got {self.fake_ratio}")
        if self.ddim_steps < 1 or self.batch < 1 or self.fake_chunk < 1:
            raise ValueError("DDIM steps, batch and fake chunk must be at least 1")

    def fake_count(self, real_faces: int) -> int:
        return max(real_faces + 1, math.ceil(self.fake_ratio * real_faces))


@dataclass(frozen=True)
class DeidEncoders:
    """E_A (identity vectors, differentiable), the pairing features and E_I's patch features, each a
    map of N x 3 x R x R faces in [−1, 1] at the autoencoder's side."""

    identity: Callable
    pairing: Callable
    attributes: Callable


@dataclass(frozen=True)
class DeidentifiedFace:
    image: np.ndarray          # R x R x 3 uint8 at the autoencoder's side
    paired_fake: int           # index of the fake the optimisation started from
    identity_loss: float       # eq. 6.7 at the kept code
    attribute_loss: float      # eq. 6.8 at the kept code


def deid_encoders(attribute_net, identity_net, side: int, margin: float, centre=None) -> DeidEncoders:
    """The offline encoders: dlib's port (or any chip-reading recognizer) through the warp of an aligned
    crop to its 150 px chip, its vectors centred on ``centre`` so that strangers' cosine is near 0 (as
    FSAP's L_I); the attribute classifier's pooled features for pairing and its last feature map as E_I."""
    import torch
    import torch.nn.functional as F

    from ..identity.representation import crop_to_chip_matrix, sampling_theta

    theta = torch.tensor(sampling_theta(crop_to_chip_matrix(side, margin, 150), side, 150), dtype=torch.float32)[None]
    shift = torch.zeros(1) if centre is None else torch.tensor(centre, dtype=torch.float32)[None]

    def identity(faces):
        grid = F.affine_grid(theta.expand(len(faces), 2, 3), (len(faces), 3, 150, 150), align_corners=False)
        chips = F.grid_sample((faces.clamp(-1, 1) + 1) * 127.5, grid, mode="bilinear", padding_mode="border",
                              align_corners=False)
        return identity_net(chips) - shift

    return DeidEncoders(identity, attribute_net.features, attribute_net.blocks)


def deidentify(faces: np.ndarray, autoencoder, encoders: DeidEncoders, settings: DeidSettings, work: Path,
               progress: Callable[[str, int, int], None] | None = None) -> list[DeidentifiedFace]:
    """The de-identified version of each face (N x R x R x 3 uint8 at the autoencoder's side). ``work``
    keeps each stage's results; ``progress(stage, done, total)`` is told after each chunk or batch."""
    import torch

    from .ddim import linear_schedule
    from .fake_set import build_fake_set, decoded_fakes

    if autoencoder.prior is None:
        raise ValueError("this autoencoder file has no code prior (exported before it); export it again with "
                         "`anoncli train diffae --init-from FILE --steps N --export FILE`")
    model, schedule = autoencoder.model, linear_schedule()
    real = _to_tensor(faces)
    count = settings.fake_count(len(faces))
    if progress is not None:
        progress("fake set", 0, count)
    fakes = build_fake_set(work / "fakes", count, settings.fake_chunk,
                           decoded_fakes(model, schedule, autoencoder.prior, settings.ddim_steps, encoders.pairing,
                                         settings.fake_seed),
                           None if progress is None else lambda done: progress("fake set", done, count))
    with torch.no_grad():
        real_features = torch.cat([encoders.pairing(real[i:i + 64]) for i in range(0, len(real), 64)]).numpy()
    from .deid import nearest_fakes

    paired, _ = nearest_fakes(real_features, fakes.features)
    if progress is not None:
        progress("faces", 0, len(faces))
    out: list[DeidentifiedFace] = []
    for start in range(0, len(faces), settings.batch):
        stop = min(start + settings.batch, len(faces))
        path = work / "faces" / f"batch-{start // settings.batch:05d}.npz"
        done = _read_batch(path, stop - start)
        if done is None:
            done = _optimise_batch(model, schedule, real[start:stop], fakes.codes[paired[start:stop]], encoders, settings)
            done["paired"] = paired[start:stop]
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, **done)
            write_atomic(path, buffer.getvalue(), mode=0o600)
        out += [DeidentifiedFace(image, int(p), float(i), float(a))
                for image, p, i, a in zip(done["images"], done["paired"], done["identity_loss"], done["attribute_loss"])]
        if progress is not None:
            progress("faces", stop, len(faces))
    return out


def _optimise_batch(model, schedule, real, start_codes, encoders: DeidEncoders, settings: DeidSettings) -> dict:
    import torch

    from .ddim import ddim_decode, ddim_invert
    from .deid import optimise_semantic_code

    with torch.no_grad():
        x_T = ddim_invert(model, schedule, real, model.encode(real), settings.ddim_steps)
    result = optimise_semantic_code(lambda code: ddim_decode(model, schedule, x_T, code, settings.ddim_steps),
                                    start_codes, encoders.identity, encoders.attributes, real, settings.code)
    with torch.no_grad():
        images = ddim_decode(model, schedule, x_T, torch.as_tensor(result.code), settings.ddim_steps)
    return {"images": ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy(),
            "identity_loss": np.array(result.identity_loss), "attribute_loss": np.array(result.attribute_loss)}


def _read_batch(path: Path, n: int) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            batch = {k: data[k] for k in ("images", "paired", "identity_loss", "attribute_loss")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return batch if all(len(v) == n for v in batch.values()) else None


def _to_tensor(faces: np.ndarray):
    import torch

    return torch.as_tensor(np.ascontiguousarray(faces), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1
