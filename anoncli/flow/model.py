"""The trained flow, ready for the methods: ``encode`` gives every level's standard-normal ε of an
aligned crop, ``decode`` maps ε back at a temperature (FFEM's f and f⁻¹, seed 001; METHODS.md §7).
Loads the project's safetensors export (``anoncli.train.glow``, format ``anoncli-glow/1``).

Crops go in continuous: x = crop/255 − 0.5, not floored to the n_bits colours the likelihood was
trained on. Training adds uniform noise over each colour bin, so the model's density covers
continuous values, and the floor would posterise every output (5 bits: 32 levels per channel).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

FLOW_WEIGHTS = "glow-celeba-utk-64"
FORMAT = "anoncli-glow/1"


@dataclass
class FlowFile:
    tensors: dict
    config: dict
    margin: float
    card: dict


def read_flow_file(path) -> FlowFile:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an anoncli Glow export (format {meta.get('format')!r})")
    return FlowFile(load_file(str(path)), json.loads(meta["config"]), float(meta["margin"]), json.loads(meta.get("card", "{}")))


class FlowModel:
    """Glow, frozen, in float32; crops are float RGB 0..255, R x R x 3."""

    def __init__(self, weights_dir=None, name: str = FLOW_WEIGHTS):
        import torch

        from ..models.glow import Glow, GlowConfig
        from ..weights import resolve_weights

        self.torch = torch
        resolved = resolve_weights(name, weights_dir)
        self.sha256 = resolved.entry.sha256
        file = read_flow_file(resolved.path)
        self.config = GlowConfig(**file.config)
        self.net = Glow(self.config)
        self.net.load_state_dict(file.tensors, strict=True)
        self.net.freeze()
        self.resolution = self.config.resolution
        self.margin = file.margin
        self.card = file.card
        self.shapes = self.net.latent_shapes()

    @classmethod
    def from_network(cls, net, margin: float) -> "FlowModel":
        """A model around an in-memory network (tests, the trainer's evaluation)."""
        import torch

        model = cls.__new__(cls)
        model.torch, model.net, model.config = torch, net.freeze(), net.config
        model.resolution, model.margin, model.card, model.sha256 = net.config.resolution, margin, {}, ""
        model.shapes = net.latent_shapes()
        return model

    def _input(self, crop: np.ndarray):
        if crop.shape[:2] != (self.resolution, self.resolution):
            raise ValueError(f"the flow works on {self.resolution} px crops, got {crop.shape[:2]}")
        x = self.torch.from_numpy(np.ascontiguousarray(crop, np.float32)).permute(2, 0, 1)[None]
        return x / 255.0 - 0.5

    def encode(self, crop: np.ndarray) -> list[np.ndarray]:
        """ε of every level (float64, the level's C x H x W) of one crop."""
        with self.torch.no_grad():
            eps, _ = self.net.encode(self._input(crop))
        return [e[0].double().numpy() for e in eps]

    def decode(self, eps: list[np.ndarray], temperature: float = 1.0) -> np.ndarray:
        """f⁻¹ of ε at ``temperature`` (z = μ + T·σ·ε at every level) as a float crop, 0..255."""
        with self.torch.no_grad():
            x = self.net.decode([self.torch.as_tensor(np.asarray(e, np.float32))[None] for e in eps], temperature)
        return ((x[0].permute(1, 2, 0).numpy().astype(np.float64) + 0.5) * 255.0).clip(0.0, 255.0)
