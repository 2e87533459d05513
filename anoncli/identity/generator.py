"""The trained disentangling generator with its identity representation, ready for the methods:
``encode`` gives r_id and r_att of aligned crops, ``generate`` gives h(r_id, r_att) (book eq. 5.9,
5.13, 6.18, 6.21). Loads the project's safetensors export (``anoncli.train.aei.export_generator``).
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

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
        self.whitening_shrinkage = float(file.card.get("settings", {}).get("whitening_shrinkage", 0.1))
        self.rep = build_representation(load_identity_encoder("dlib-resnet", weights_dir), self.resolution, self.margin, self.mu, self.w)

    @functools.cached_property
    def face_code_root(self) -> np.ndarray:
        """C^(1/2) of real faces' whitened descriptors (``face_code_covariance``), for ``shaped_like_faces``."""
        from .representation import face_code_covariance, symmetric_root

        return symmetric_root(face_code_covariance(self.w, self.whitening_shrinkage))

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

    def identity_of(self, crop: np.ndarray) -> np.ndarray:
        """``encode``'s r_id alone."""
        with self.torch.no_grad():
            return self.rep(self._tensor(crop))[0].double().numpy()

    def encode_many(self, crops: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """``encode`` of several crops in one pass: (N x d r_id, the attribute maps batched)."""
        with self.torch.no_grad():
            x = self.torch.cat([self._tensor(c) for c in crops])
            return self.rep(x).double().numpy(), self.net.encoder(x)

    def generate_many(self, identities: np.ndarray, attributes: list, refinements: list[Refinement] | None = None,
                      low_precision=None) -> list[np.ndarray]:
        """h(identity, attributes) of N faces in one batch as crops (``identities`` N x d, ``attributes``
        batched as ``encode_many`` gives them). With ``refinements`` (one per face, all with the same
        steps, rate and schedule; steps > 0), the generator's identity inputs are first fitted so that
        the face, pasted into its crop, shows its identity (``refine_identity_inputs_many``), or, with
        a refinement's ``readout`` and ``goal``, an identity whose readout is ``goal``; the fit (and a
        zero-step render) starts from each refinement's ``start`` when it has one. Each face's fit is
        its own (Adam is elementwise and the faces' losses add up).
        ``low_precision``: a context manager (autocast) the fit's passes run under; the fitted
        inputs are rendered in float32."""
        from ..models.tensors import to_images

        torch = self.torch
        targets = torch.as_tensor(np.asarray(identities, np.float32))
        starts = targets if refinements is None else torch.stack([
            target if r.start is None else torch.as_tensor(np.asarray(r.start, np.float32))
            for target, r in zip(targets, refinements)])
        with torch.no_grad():   # the attributes' share of the generator, computed once for the fit and the render
            modulations = self.net.generator.modulations(attributes)
        if refinements is not None and refinements[0].steps > 0:
            inputs = refine_identity_inputs_many(self.net.generator, self.rep, targets, modulations, refinements, starts,
                                                 low_precision)
        else:
            inputs = starts
        with torch.no_grad():
            return list(to_images(self.net.generator(inputs, modulations)))


SCHEDULES = ("constant", "cosine")


def learning_rate(base: float, step: int, steps: int, schedule: str) -> float:
    """Adam's rate at ``step`` (0-based) of ``steps``: constant, or cosine-annealed from ``base``
    towards 0 (Loshchilov & Hutter, SGDR, ICLR 2017, without restarts)."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1.0 + math.cos(math.pi * step / steps))
    raise ValueError(f"unknown schedule {schedule!r}; one of {', '.join(SCHEDULES)}")


@dataclass(frozen=True)
class Refinement:
    """What ``refine_identity_inputs`` needs besides the target: the crop the face is pasted
    into (float RGB 0..255), the blend mask (R x R in [0, 1]), steps and Adam's learning rate
    with its schedule (``learning_rate``). Optional: ``start``, the unit vector the fit starts
    from (default the target); ``readout``, a differentiable map of the shown r_id (N x d
    tensors) and ``goal``, the vector its output should point to (default: the shown r_id
    itself and the target); ``detail_sigma``, ``colour`` and ``blend`` (a
    ``faces.compositing.CropBlend``), what the compositing will do to the face (``paste``);
    ``read_back``, a function of the face (float RGB crop) giving the crop a reader will find in the
    written photo, exactly (``FaceRequest.read_back``): the fit then adds its difference from
    ``paste``'s model to what it reads. ``inputs``: what the fit moves (``REFINE_INPUTS``): one code
    given to every generator input (shared), or one code per input (per-block)."""

    crop: np.ndarray
    mask: np.ndarray
    steps: int
    lr: float = 0.1
    start: np.ndarray | None = None
    readout: Callable | None = None
    goal: np.ndarray | None = None
    schedule: str = "constant"
    detail_sigma: float = 0.0
    colour: Callable[[np.ndarray], np.ndarray] | None = None
    blend: Any = None
    read_back: Callable[[np.ndarray], np.ndarray] | None = None
    inputs: str = "per-block"


REFINE_INPUTS = ("shared", "per-block")
COLOUR_REFRESH = 10   # steps between re-measurements of the compositing's colour correction (and read-back) in the fit


def paste(faces, crops, masks, detail_sigma: float, colour_shift=None, blends=None):
    """The crop as the compositing will leave it, in crop space: X + M·G_σ * (h + c − X), where the
    change is low-passed at ``detail_sigma`` (the photo keeps its own finer detail; 0: none) and
    ``colour_shift`` c is the colour correction the compositing applies to h (held fixed: it is
    mostly the photo's low-frequency colour and varies little with h). Without either, M·h + (1 − M)·X.
    ``blends``: per face None or its ``faces.compositing.CropBlend``: that face's change is then added
    band by band, X + T_s(Σ_k M_k·B_k) with B_k the Gaussian-stack bands of G_σ * (h + c − X) and M_k
    the blend's band masks, as ``Compositor.composite`` adds it (in place of M), and T_s its trip into
    the photo at the blend's ``scale`` crop px per photo px and back into the crop (``photo_round_trip``)."""
    import torch

    from ..latent.perturbation import gaussian_blur

    change = faces - crops if colour_shift is None else faces + colour_shift - crops
    if detail_sigma > 0:
        change = gaussian_blur(change, detail_sigma)
    if blends is None or all(b is None for b in blends):
        return crops + masks * change
    return crops + torch.cat([masks[i:i + 1] * change[i:i + 1] if b is None else
                              photo_round_trip(banded(change[i:i + 1], b.band_sigmas, torch.as_tensor(b.band_masks)[:, None]),
                                               b.scale)
                              for i, b in enumerate(blends)])


def banded(change, sigmas, masks):
    """Σ_k M_k·B_k of one change (1 x 3 x R x R) split into its Gaussian-stack bands at ``sigmas``."""
    from ..latent.perturbation import gaussian_blur

    out, previous = 0.0, change
    for mask, sigma in zip(masks, sigmas):
        low = gaussian_blur(change, sigma)
        out = out + mask * (previous - low)
        previous = low
    return out + masks[-1] * previous


def photo_round_trip(change, scale: float):
    """A crop-space change (N x C x R x R) as a reader finds it in the crop again after the compositing
    put it into the photo at ``scale`` crop px per photo px: enlarged to the photo's R / scale pixels
    (bicubic, ``Compositor.composite``'s warp), then brought back as
    ``faces.compositing.resample_into_crop`` brings the photo (area-averaged to about twice the crop
    where the photo is more than twice finer, then bilinear). Where the photo is coarser than the crop
    (scale > 1) the warp aliases the change's finest detail into noise whose pattern depends on where
    the photo's pixels fall; the model removes that detail instead (antialiased), so that the fit
    neither counts on it nor on one sampling's aliases. The warp's rotation and offset are left out:
    they move the samples, not how much of each frequency survives. A photo more than four times
    finer than the crop is modelled at four times (what comes back barely differs, and the
    enlargement's cost grows with its area). Identity at scale 1."""
    import torch.nn.functional as F

    size = change.shape[-1]
    photo = min(max(2, round(size / scale)), 4 * size)
    if photo == size:
        return change
    out = F.interpolate(change, size=(photo, photo), mode="bicubic", align_corners=False, antialias=photo < size)
    if photo > 2 * size:
        out = F.interpolate(out, size=(2 * size, 2 * size), mode="area")
    return F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)


def refine_identity_inputs(generator, representation, target, attributes, refinement: Refinement, start=None):
    """``refine_identity_inputs_many`` of one face (``target`` and ``start``: 1 x d)."""
    return refine_identity_inputs_many(generator, representation, target, attributes, [refinement],
                                       target if start is None else start)


def refine_identity_inputs_many(generator, representation, targets, attributes, refinements: list[Refinement], starts,
                                low_precision=None):
    """Identity codes w of each face (with the refinements' ``inputs`` per-block, one for the stem
    and one per AAD block; shared, one for all of them; started at the face's row of ``starts``
    and kept unit length) minimising
    1 − cos(readout(r_id(paste(h(w, r_att), X))), goal), by default 1 − cos(r_id(...), target),
    ``paste`` the compositing's effect in crop space (plainly M·h + (1 − M)·X); ``attributes``: the
    attribute maps or their ``generator.modulations``. Adam: ``anoncli.adam``.

    Not in the book: the trained generator renders identities only approximately (cosine 0.55-0.8
    to the requested vector, model card), and idrotate's restore divides that error by
    |cos θ − A sin θ|. Fitting the generator's inputs, not its pixels, keeps the face on what the
    generator can draw (the extended latent space of Abdal et al., Image2StyleGAN, ICCV 2019).
    The fit reads the target, the attribute maps and the pasted crop: it adds nothing about the
    original identity beyond what the crop outside the mask and the attribute maps already hold.
    idrotate can fit through its key's inverse rotation (readout M⁻¹, goal z̄, ``--refine-goal
    inverse``): the optimum is the same face (r_id = z_new), but the error is weighed as restore
    will amplify it.
    The faces' losses add up and Adam's update is elementwise, so a face's fit does not depend
    on the others in its batch.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    from ..adam import adam_start, adam_step
    from ..models.tensors import to_images, to_tensor

    first = refinements[0]
    if any((r.steps, r.lr, r.schedule, r.detail_sigma, r.inputs) != (first.steps, first.lr, first.schedule, first.detail_sigma, first.inputs)
           for r in refinements):
        raise ValueError("the faces fitted together need the same steps, learning rate, schedule, inputs and detail_sigma")
    crops = to_tensor(np.stack([np.asarray(r.crop, np.float32) for r in refinements]))
    masks = torch.as_tensor(np.stack([np.asarray(r.mask, np.float32) for r in refinements]))[:, None]
    goals = torch.stack([target if r.goal is None else torch.as_tensor(np.asarray(r.goal, np.float32)).reshape(-1)
                         for target, r in zip(targets.reshape(len(refinements), -1), refinements)])

    blends = [r.blend for r in refinements]
    with torch.no_grad():   # the attributes' share of the generator, the same at every step (passed through if given)
        modulations = generator.modulations(attributes)

    def readout(shown):
        if all(r.readout is None for r in refinements):
            return shown
        return torch.cat([shown[i:i + 1] if r.readout is None else r.readout(shown[i:i + 1])
                          for i, r in enumerate(refinements)])

    def measured(rendered):
        """Each face's colour correction by its ``colour`` (the compositing's), and the difference of
        what its ``read_back`` finds in the written photo from what ``paste`` models (both on the
        2/255 scale, None where no face has one) for the faces the step rendered, held fixed until the
        next re-measurement."""
        if all(r.colour is None and r.read_back is None for r in refinements):
            return None, None
        with torch.no_grad():
            faces = to_images(rendered.detach().float())
            shift = None
            if any(r.colour is not None for r in refinements):
                shift = to_tensor(np.stack([face if r.colour is None else r.colour(face)
                                            for face, r in zip(faces, refinements)])) - to_tensor(faces)
            if all(r.read_back is None for r in refinements):
                return shift, None
            modelled = paste(to_tensor(faces), crops, masks, first.detail_sigma, shift, blends)
            residual = torch.zeros_like(modelled)
            for i, (face, r) in enumerate(zip(faces, refinements)):
                if r.read_back is not None:
                    residual[i] = to_tensor(r.read_back(face)[None])[0] - modelled[i]
            return shift, residual

    codes = 1 if first.inputs == "shared" else generator.identity_inputs
    w = starts.reshape(len(refinements), 1, -1).repeat(1, codes, 1).clone()
    moments = adam_start(w)
    context = low_precision or contextlib.nullcontext
    shift = residual = None
    with torch.enable_grad():
        for step in range(first.steps):
            w.requires_grad_(True)
            with context():
                face = generator(F.normalize(w, dim=-1).expand(-1, generator.identity_inputs, -1), modulations)
            if step % COLOUR_REFRESH == 0:
                shift, residual = measured(face)
            with context():
                pasted = paste(face, crops, masks, first.detail_sigma, shift, blends)
                shown = representation(pasted if residual is None else pasted + residual)
            loss = (1.0 - F.cosine_similarity(readout(shown.float()), goals, dim=1)).sum()
            gradient, = torch.autograd.grad(loss, w)
            w, moments = adam_step(w.detach(), gradient, moments, learning_rate(first.lr, step, first.steps, first.schedule))
    return F.normalize(w.detach(), dim=-1).expand(-1, generator.identity_inputs, -1).contiguous()


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
