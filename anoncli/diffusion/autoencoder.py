"""The project's own diffusion-autoencoder files (``anoncli train diffae --export``): safetensors with
format ``anoncli-diffae-v1``, the network's configuration, margin and model card in the metadata, and
(exports since the code prior) the Gaussian prior over z̄ fitted to training faces' codes, from which
`--method diffusion` draws its fake set (thesis §6.5.2; ``deid.CodePrior``), as ``code_prior.*``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FORMAT = "anoncli-diffae-v1"


@dataclass(frozen=True)
class AutoencoderFile:
    model: object       # models.diffae.DiffAE in eval mode, float32
    margin: float       # border of the aligned crops it was trained on (train.face_crops)
    card: dict          # what the export recorded: steps, training time, settings, held-out figures
    prior: object = None  # deid.CodePrior of the training faces' z̄, or None in files written before it


PRIOR_PREFIX = "code_prior."


def _metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an anoncli diffusion autoencoder (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def autoencoder_crops(path: str | Path) -> tuple[int, float]:
    """(image side, crop margin) of an export, from its metadata alone (no network is built)."""
    meta = _metadata(path)
    return int(json.loads(meta["config"])["image_size"]), float(meta["margin"])


def load_autoencoder(path: str | Path, device: str = "cpu") -> AutoencoderFile:
    """Read an export strictly; refuses files of another format or with missing or extra tensors."""
    from safetensors.torch import load_file

    from ..models.diffae import DiffAE, DiffAEConfig
    from .deid import CodePrior

    meta = _metadata(path)

    tensors = load_file(str(path))
    prior_tensors = {k[len(PRIOR_PREFIX):]: tensors.pop(k).double().numpy() for k in list(tensors) if k.startswith(PRIOR_PREFIX)}
    model = DiffAE(DiffAEConfig.from_dict(json.loads(meta["config"])))
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    prior = CodePrior(prior_tensors["mean"], prior_tensors["cholesky"]) if prior_tensors else None
    return AutoencoderFile(model.to(device).eval(), float(meta["margin"]), json.loads(meta.get("card", "{}")), prior)
