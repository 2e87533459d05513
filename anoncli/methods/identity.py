"""IdentityDP (book ch. 5) and key-personalised identity rotation (book ch. 6) on aligned crops.

Both split the face into r_id (the unit, whitened dlib identity vector,
anoncli.identity.representation) and r_att (the generator's multilevel attribute maps), change
r_id, and rebuild the face with the trained generator h (anoncli.identity.generator). The rebuilt
crop goes back into the photo through ``anoncli.faces.compositing`` (the face's 68-point region,
colour matched, the photo's finest detail kept, multi-band blended); pixels outside the region
are the input's.
"""
from __future__ import annotations

import math

import numpy as np

from ..identity.rotation import level_to_degrees, reference_vector, rotate_identity, unrotate_identity
from ..keys.derive import hkdf_sha256, key_rng
from ..privacy.mechanisms import laplace_noise, laplace_scale
from .base import FaceMethod

REFERENCE_INFO = b"anoncli/idrotate/reference/v1"


def unit_vector_l1_bound(dimension: int) -> float:
    """max ‖a − b‖₁ over unit vectors a, b in R^d: 2√d (attained by a = −b = (1, ..., 1)/√d)."""
    return 2.0 * math.sqrt(dimension)


class _GeneratorMethod(FaceMethod):
    REFINEMENT_FEATHER = 0.02   # soft edge of the crop-space region the identity fit pastes into

    def __init__(self, weights_dir=None, **params):
        super().__init__(**params)
        from ..faces.compositing import Compositor
        from ..faces.compositing_config import config_from_params
        from ..identity.generator import IdentityGenerator

        self.generator = IdentityGenerator(weights_dir)
        self.resolution = self.generator.resolution
        self.margin = self.generator.margin
        self.compositor = Compositor(config_from_params(self.params), weights_dir)

    def blend_mask(self, landmarks_in_crop: np.ndarray) -> np.ndarray:
        """The region in crop space as the identity fit sees it: for --shape landmarks the mean
        68-point outline (the stage composites with the face's own, predicted in the photo)."""
        from ..faces.blend import face_mask

        shape = self.params["shape"]
        return face_mask(self.resolution, shape, self.REFINEMENT_FEATHER, self.margin,
                         landmarks_in_crop if shape == "hull" else None, self.params["brow_raise"])

    def render(self, identity: np.ndarray, attributes: list, crop: np.ndarray, landmarks_in_crop: np.ndarray,
               steps: int | None = None, **fit) -> np.ndarray:
        """The generator's face for ``identity``; ``fit``: the ``Refinement``'s optional start, readout and goal."""
        from ..identity.generator import Refinement

        steps = self.params["refine_steps"] if steps is None else steps
        refinement = Refinement(crop, self.blend_mask(landmarks_in_crop), steps, self.params["refine_lr"], **fit)
        return self.generator.generate(identity, attributes, refinement)


class IdentityDP(_GeneratorMethod):
    """r̃_id = r_id + Lap(Δf/ε)^d (eq. 5.11), X̂ = h(r̃_id / ‖r̃_id‖, g(X)) (eq. 5.13).

    r_id is unit length (METHODS.md §5 decision), so Δf = max ‖r_id(X) − r_id(X')‖₁ ≤ 2√d for
    every pair of faces and the Laplace mechanism is ε-DP for the identity vector (the book's
    proof, ch. 5.3.7). Scaling r̃_id back to unit length before the generator is post-processing.
    The noise comes from the OS's cryptographic generator and is never stored.
    """

    def __init__(self, weights_dir=None, **params):
        super().__init__(weights_dir, **params)
        d = self.generator.dimension
        if self.params["sensitivity"] == "bound":
            self.l1_sensitivity = unit_vector_l1_bound(d)
        else:
            self.l1_sensitivity = self.generator.empirical_l1_sensitivity
        self.scale = laplace_scale(self.l1_sensitivity, self.params["epsilon"])

    def perturb(self, identity: np.ndarray) -> np.ndarray:
        noisy = identity + laplace_noise(self.scale, identity.shape)
        return noisy / np.linalg.norm(noisy)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        identity, attributes = self.generator.encode(crop)
        return self.render(self.perturb(identity), attributes, crop, landmarks_in_crop)

    def guarantee(self) -> dict:
        d = self.generator.dimension
        bound = self.params["sensitivity"] == "bound"
        statement = (f"{self.params['epsilon']:g}-local differential privacy of the {d}-d unit identity vector r_id "
                     "against any other face" if bound else
                     f"{self.params['epsilon']:g}-local differential privacy of r_id only between faces whose identity vectors are "
                     f"within L1 distance {self.l1_sensitivity:.3f} (the generator's training faces' largest); not a worst-case bound")
        return {"mechanism": "Laplace (IdentityDP, book ch. 5)", "epsilon": float(self.params["epsilon"]), "delta": 0.0,
                "dimension": d, "l1_sensitivity": round(self.l1_sensitivity, 6),
                "sensitivity": "2*sqrt(d), proven for unit vectors" if bound else "empirical, largest L1 distance on the training faces",
                "noise_scale": round(self.scale, 6),
                "noise_to_signal_rms": round(self.scale * math.sqrt(2 * d), 6),
                "protects": f"{statement}; the attribute maps (pose, expression, lighting, background) and the pixels outside "
                            "the blend mask are not perturbed, and the rebuilt face is post-processing of the noisy vector and those",
                "noise_source": "os.urandom, never stored"}


class IdRotate(_GeneratorMethod):
    """z_new = M(z̄, z_r, g(d)) (eq. 6.16-6.17), output G(z_new, z_attr) (eq. 6.18); restore:
    ẑ = M⁻¹(E_id(X̂), z_r, g(d)) (eq. 6.19-6.20), output G(ẑ, E_attr(X̂)) (eq. 6.21).

    z_r is a uniform unit vector drawn from a generator keyed by HKDF(face key, "idrotate
    reference"), so each face has its own reference and one leaked pair says nothing of another's.
    """

    def __init__(self, weights_dir=None, **params):
        super().__init__(weights_dir, **params)
        self.degrees = level_to_degrees(self.params["level"])

    def reference(self, key) -> np.ndarray:
        if key is None:
            raise ValueError("idrotate needs the face's key (run with --keyfile)")
        seed = hkdf_sha256(key.secret, b"", REFERENCE_INFO)
        return reference_vector(key_rng(seed), self.generator.dimension)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        """The face for z_new, fitted so that the key's inverse rotation of its r_id is z̄ (what
        restore computes, eq. 6.19-6.20), starting from z̄ turned past θ by ``refine_overturn``:
        the generator renders only part of a requested turn (model card: turned identities at
        cosine ≈ 0.6), so the fit starts nearer the input that shows θ."""
        import torch

        from ..identity.rotation import unrotate_identity_tensor

        identity, attributes = self.generator.encode(crop)
        reference = self.reference(key)
        start_degrees = min(self.degrees + self.params["refine_overturn"], 180.0)
        start = rotate_identity(identity, reference, start_degrees)
        reference_t = torch.as_tensor(reference, dtype=torch.float32)[None]
        return self.render(rotate_identity(identity, reference, self.degrees), attributes, crop, landmarks_in_crop,
                           start=start / np.linalg.norm(start), goal=identity,
                           readout=lambda shown: unrotate_identity_tensor(shown, reference_t, self.degrees))

    def restore_crop(self, crop, landmarks_in_crop, key, face_params):
        rotated, attributes = self.generator.encode(crop)
        return self.render(unrotate_identity(rotated, self.reference(key), self.degrees), attributes, crop, landmarks_in_crop,
                           self.params["restore_refine_steps"])

    restore_quality_measure = ("cosine between the identity vector r_id of the restored face, pasted into its crop, and "
                               "the identity restore read back from the protected face (eq. 6.20): how faithfully the "
                               "generator rendered it (1 at best; higher is better)")

    def restore_quality(self, anonymized, restored, landmarks_in_crop, key, face_params):
        rotated, _ = self.generator.encode(anonymized)
        target = unrotate_identity(rotated, self.reference(key), self.degrees)
        mask = self.blend_mask(landmarks_in_crop)[..., None]
        shown, _ = self.generator.encode(np.float32(mask * restored + (1.0 - mask) * anonymized))
        return float(np.dot(shown, target) / (np.linalg.norm(shown) * np.linalg.norm(target)))

    def key_params(self, key) -> dict:
        return {"theta_degrees": self.degrees}
