"""The trained disentangling generator with its identity representation, ready for the methods:
``encode`` gives r_id and r_att of aligned crops, ``generate`` gives h(r_id, r_att) (book eq. 5.9,
5.13, 6.18, 6.21). Loads the project's safetensors export (``anoncli.train.aei.export_generator``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

GENERATOR_WEIGHTS = "aei-celeba-utk-128"


@dataclass
class GeneratorFile:
    tensors: dict
    config: dict
    margin: float
    empirical_l1_sensitivity: float
    card: dict


def read_generator_file(path) -> GeneratorFile:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "anoncli-aei/1":
        raise ValueError(f"{path} is not an anoncli AEI generator export (format {meta.get('format')!r})")
    return GeneratorFile(load_file(str(path)), json.loads(meta["config"]), float(meta["margin"]),
                         float(meta["empirical_l1_sensitivity"]), json.loads(meta.get("card", "{}")))


class IdentityGenerator:
    """AEINet + r_id, both frozen, in eval mode; crops are float RGB 0..255, H x W x 3."""

    def __init__(self, weights_dir=None):
        import torch

        from ..models.aei import AEIConfig, AEINet
        from ..weights import resolve_weights
        from .encoders import load_identity_encoder
        from .representation import build_representation

        self.torch = torch
        resolved = resolve_weights(GENERATOR_WEIGHTS, weights_dir)
        file = read_generator_file(resolved.path)
        self.config = AEIConfig.from_dict(file.config)
        self.net = AEINet(self.config)
        self.net.load_state_dict({k[len("net."):]: v for k, v in file.tensors.items() if k.startswith("net.")}, strict=True)
        self.net.eval().requires_grad_(False)
        self.mu = file.tensors["identity.mu"].numpy()
        self.w = file.tensors["identity.w"].numpy()
        self.margin = file.margin
        self.resolution = self.config.resolution
        self.dimension = self.config.id_dim
        self.empirical_l1_sensitivity = file.empirical_l1_sensitivity
        self.card = file.card
        self.rep = build_representation(load_identity_encoder("dlib-resnet", weights_dir), self.resolution, self.margin, self.mu, self.w)

    def _tensor(self, crop: np.ndarray):
        from ..models.tensors import to_tensor

        if crop.shape[:2] != (self.resolution, self.resolution):
            raise ValueError(f"the generator works on {self.resolution} px crops, got {crop.shape[:2]}")
        return to_tensor(crop[None])

    def encode(self, crop: np.ndarray) -> tuple[np.ndarray, list]:
        """(r_id as a float64 unit vector, the attribute maps) of one crop."""
        with self.torch.no_grad():
            x = self._tensor(crop)
            return self.rep(x)[0].double().numpy(), self.net.encoder(x)

    def generate(self, identity: np.ndarray, attributes: list, refinement: Refinement | None = None) -> np.ndarray:
        """h(identity, attributes) as a crop; with ``refinement`` (and its steps > 0), the
        generator's identity inputs are first fitted so that the face pasted into the crop
        shows ``identity`` (``refine_identity_inputs``), or, with the refinement's ``readout``
        and ``goal``, an identity whose readout is ``goal``; the fit (and a zero-step render)
        starts from the refinement's ``start`` when it has one."""
        from ..models.tensors import to_images

        torch = self.torch
        target = torch.as_tensor(np.asarray(identity, np.float32))[None]
        start = target if refinement is None or refinement.start is None else \
            torch.as_tensor(np.asarray(refinement.start, np.float32))[None]
        if refinement is not None and refinement.steps > 0:
            inputs = refine_identity_inputs(self.net.generator, self.rep, target, attributes, refinement, start)
        else:
            inputs = start
        with torch.no_grad():
            return to_images(self.net.generator(inputs, attributes))[0]


@dataclass(frozen=True)
class Refinement:
    """What ``refine_identity_inputs`` needs besides the target: the crop the face is pasted
    into (float RGB 0..255), the blend mask (R x R in [0, 1]), steps and Adam's learning rate.
    Optional: ``start``, the unit vector the fit starts from (default the target); ``readout``,
    a differentiable map of the shown r_id (N x d tensors) and ``goal``, the vector its output
    should point to (default: the shown r_id itself and the target)."""

    crop: np.ndarray
    mask: np.ndarray
    steps: int
    lr: float = 0.1
    start: np.ndarray | None = None
    readout: Callable | None = None
    goal: np.ndarray | None = None


def refine_identity_inputs(generator, representation, target, attributes, refinement: Refinement, start=None):
    """Per-input identity codes w (one for the stem and one per AAD block, each started at
    ``start``, default the target, and kept unit length) minimising
    1 − cos(readout(r_id(M·h(w, r_att) + (1 − M)·X)), goal), by default 1 − cos(r_id(...), target).

    Not in the book: the trained generator renders identities only approximately (cosine 0.55-0.8
    to the requested vector, model card), and idrotate's restore divides that error by
    |cos θ − A sin θ|. Fitting the generator's inputs, not its pixels, keeps the face on what the
    generator can draw (the extended latent space of Abdal et al., Image2StyleGAN, ICCV 2019).
    The fit reads the target, the attribute maps and the pasted crop: it adds nothing about the
    original identity beyond what the crop outside the mask and the attribute maps already hold.
    idrotate fits through its key's inverse rotation (readout M⁻¹, goal z̄, ``IdRotate``): the
    optimum is the same face (r_id = z_new), but the error is weighed as restore will amplify it.
    """
    import torch
    import torch.nn.functional as F

    from ..models.tensors import to_tensor

    crop = to_tensor(np.asarray(refinement.crop, np.float32)[None])
    mask = torch.as_tensor(np.asarray(refinement.mask, np.float32))[None, None]
    readout = refinement.readout or (lambda codes: codes)
    goal = target if refinement.goal is None else torch.as_tensor(np.asarray(refinement.goal, np.float32))[None]
    start = target if start is None else start
    w = start[:, None].repeat(1, generator.identity_inputs, 1).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([w], lr=refinement.lr)
    with torch.enable_grad():
        for _ in range(refinement.steps):
            face = generator(F.normalize(w, dim=-1), attributes)
            shown = representation(mask * face + (1 - mask) * crop)
            loss = 1.0 - F.cosine_similarity(readout(shown), goal, dim=1).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return F.normalize(w.detach(), dim=-1)


BOOK_PROTECTION = 0.908   # IdentityDP at ε = 6, book Table 5.1


def generator_warning(weights_dir=None) -> str | None:
    """A warning when the generator's own held-out measurement (in its file's model card) says
    that faces rebuilt with a random identity mostly stay recognisable; reads only the metadata."""
    from ..weights import held_out_shortfall

    short = held_out_shortfall(GENERATOR_WEIGHTS, "random_identity_protection_dlib", BOOK_PROTECTION, weights_dir)
    if short is None:
        return None
    path, card, measured = short
    return (f"the generator ({path.name}, {card.get('steps')} training steps) rebuilds only {measured:.0%} of held-out "
            f"faces as another person by dlib when given a random identity (the book reaches {BOOK_PROTECTION:.0%}): "
            "identity still leaks through its attribute maps, so most faces stay recognisable. The formal guarantee "
            "covers the identity vector only. See the model card next to the weights; measure with `anoncli report`.")
