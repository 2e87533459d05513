"""Diffusion de-identification's procedures (thesis ch. 6, §6.5; METHODS.md §10), for any
diffusion autoencoder and any encoders, which come in as functions:

- §6.5.2 fake set: new semantic codes z̄ from a prior fitted to the training faces' codes
  (``CodePrior``; the thesis trains a latent DDIM on the normalised codes instead), each decoded
  from a fresh x_T ~ N(0, I) (``diffusion.fake_set``, built in resumable chunks);
- §6.5.3 pairing: each real face's nearest fake by Euclidean distance in an attribute feature
  space (``nearest_fakes``; the thesis uses FaRL's ViT class token and a 1-NN classifier);
- §6.5.4 anonymization: z̄_A, started at the paired fake's code with the real face's inverted x_T
  fixed, minimises w_id·L_id + w_att·L_att (``optimise_semantic_code``), where
  L_id = |cos(E_A(x_A), E_A(x_R))| (eq. 6.7) and L_att = ‖E_I(x_A) − E_I(x_R)‖₁ (eq. 6.8).

The thesis leaves the optimiser, its steps and learning rate, the loss weights and the DDIM steps
unspecified: they are ``SemanticCodeSettings`` fields, chosen by measurement where the method is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class CodePrior:
    """A Gaussian N(mean, L Lᵀ) over semantic codes, fitted to the codes of training faces."""

    mean: np.ndarray        # d
    cholesky: np.ndarray    # d x d, lower triangular

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n codes, n x d (float32). Fakes are not a privacy mechanism: a seeded generator is fine."""
        normal = rng.standard_normal((n, len(self.mean)))
        return (self.mean + normal @ self.cholesky.T).astype(np.float32)


def fit_code_prior(codes: np.ndarray, shrinkage: float = 1e-3) -> CodePrior:
    """Mean and covariance of ``codes`` (n x d), the covariance pulled toward its diagonal's mean by
    ``shrinkage`` (a share in [0, 1]) so that it stays positive definite when n is not much larger than d."""
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 2 or len(codes) < 2:
        raise ValueError("fitting a code prior needs an n x d array of at least two codes")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    mean = codes.mean(axis=0)
    cov = np.cov(codes, rowvar=False)
    target = np.eye(len(mean)) * np.trace(cov) / len(mean)
    cov = (1.0 - shrinkage) * cov + shrinkage * target
    return CodePrior(mean, np.linalg.cholesky(cov))


def nearest_fakes(real: np.ndarray, fakes: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest fake, its Euclidean distance) for every row of ``real`` (n x f), over
    ``fakes`` (m x f), in chunks of real rows so that the n x m distances are never all in memory."""
    real, fakes = np.asarray(real, np.float64), np.asarray(fakes, np.float64)
    if real.ndim != 2 or fakes.ndim != 2 or real.shape[1] != fakes.shape[1] or not len(fakes):
        raise ValueError(f"pairing needs n x f real and m x f fake features, got {real.shape} and {fakes.shape}")
    fake_sq = (fakes ** 2).sum(axis=1)
    index = np.empty(len(real), np.int64)
    distance = np.empty(len(real))
    for start in range(0, len(real), chunk):
        block = real[start:start + chunk]
        sq = (block ** 2).sum(axis=1)[:, None] - 2.0 * block @ fakes.T + fake_sq[None]
        best = sq.argmin(axis=1)
        index[start:start + chunk] = best
        distance[start:start + chunk] = np.sqrt(np.maximum(sq[np.arange(len(block)), best], 0.0))
    return index, distance


def identity_loss(anonymized, real):
    """Eq. 6.7: |cos(E_A(x_A), E_A(x_R))| per face, for N x d identity vectors (torch)."""
    import torch.nn.functional as F

    return F.cosine_similarity(anonymized, real, dim=1).abs()


def attribute_loss(anonymized, real):
    """Eq. 6.8: ‖E_I(x_A) − E_I(x_R)‖₁ per face, over the flattened feature maps (torch), divided by
    the number of features so that its weight does not depend on the encoder's size."""
    return (anonymized - real).abs().flatten(1).mean(1)


@dataclass(frozen=True)
class SemanticCodeSettings:
    steps: int = 50               # Adam steps on z̄_A
    lr: float = 0.05              # Adam's learning rate
    identity_weight: float = 1.0  # w_id
    attribute_weight: float = 1.0  # w_att

    def __post_init__(self):
        if self.steps < 0 or self.lr <= 0 or self.identity_weight < 0 or self.attribute_weight < 0:
            raise ValueError("the z̄ optimisation needs steps >= 0, lr > 0 and non-negative loss weights")


@dataclass(frozen=True)
class SemanticCodeResult:
    code: np.ndarray                 # z̄_A, N x d, the code with the lowest total loss seen
    identity_loss: list[float]       # its L_id per face
    attribute_loss: list[float]      # its L_att per face


def optimise_semantic_code(decode: Callable, start, identity_of: Callable, attributes_of: Callable, real_faces,
                           settings: SemanticCodeSettings = SemanticCodeSettings()) -> SemanticCodeResult:
    """§6.5.4: z̄_A from ``start`` (N x d, the paired fakes' codes) by Adam on
    w_id·L_id(x_A, x_R) + w_att·L_att(x_A, x_R), x_A = ``decode``(z̄_A) (differentiable; the real
    faces' x_T fixed inside it). ``identity_of`` / ``attributes_of`` map faces to E_A / E_I
    features. Each face keeps the code of its lowest total loss (the last step is not always it)."""
    import torch

    from ..adam import adam_start, adam_step

    with torch.no_grad():
        id_real, att_real = identity_of(real_faces), attributes_of(real_faces)
    code = torch.as_tensor(np.asarray(start), dtype=torch.float32).clone().requires_grad_(True)
    moments = adam_start(code)
    best = code.detach().clone()
    best_total = torch.full((len(best),), float("inf"))
    best_id, best_att = torch.zeros(len(best)), torch.zeros(len(best))
    for step in range(settings.steps + 1):
        with torch.enable_grad():
            faces = decode(code)
            l_id, l_att = identity_loss(identity_of(faces), id_real), attribute_loss(attributes_of(faces), att_real)
            total = settings.identity_weight * l_id + settings.attribute_weight * l_att
        better = total.detach() < best_total
        best[better] = code.detach()[better]
        best_total = torch.where(better, total.detach(), best_total)
        best_id = torch.where(better, l_id.detach(), best_id)
        best_att = torch.where(better, l_att.detach(), best_att)
        if step == settings.steps:
            break
        gradient, = torch.autograd.grad(total.sum(), code)
        code, moments = adam_step(code.detach(), gradient, moments, settings.lr)
        code.requires_grad_(True)
    return SemanticCodeResult(best.numpy(), [float(v) for v in best_id], [float(v) for v in best_att])
