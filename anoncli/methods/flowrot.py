"""FFEM's flow-latent rotation (seed 001, Sec. III; METHODS.md §7) on aligned crops.

Z = f(X), the flow's standard-normal latent of every level, reshaped to m x 3m (m = R);
Z_enc = A·Z with A a Haar-random orthogonal m x m matrix; the fake face is Y = f⁻¹(λ·Z_enc),
decoded at temperature λ. Restore: Z_enc = f(Y)/λ, X = f⁻¹(Aᵀ·Z_enc).

A is drawn per face from a generator keyed by HKDF(face key, "flowrot rotation") and re-derived at
restore, never stored (METHODS.md §7 decision): one leaked (original, fake) pair gives that face's
A by orthogonal Procrustes and nothing about any other face's.
"""
from __future__ import annotations

import numpy as np

from ..flow.rotation import haar_orthogonal, latent_matrix, rotate_latent, split_latents, unrotate_latent
from ..keys.derive import hkdf_sha256, key_rng
from .base import ShapedMaskMethod

ROTATION_INFO = b"anoncli/flowrot/rotation/v1"
LATENT_LEVELS_PER_UNIT = 32.0   # the latent image: pixel = 128 + 32·z, so z in [−4, 3.97] in steps of 1/32


def face_rotation(secret: bytes, m: int) -> np.ndarray:
    """The face's A: Haar-random orthogonal m x m from its key."""
    return haar_orthogonal(key_rng(hkdf_sha256(secret, b"", ROTATION_INFO)), m)


def encrypt_latent(eps: list[np.ndarray], rotation: np.ndarray) -> list[np.ndarray]:
    """Z_enc = A·Z, back in the levels' shapes."""
    return split_latents(rotate_latent(latent_matrix(eps, len(rotation)), rotation), [e.shape for e in eps])


def decrypt_latent(eps_enc: list[np.ndarray], rotation: np.ndarray) -> list[np.ndarray]:
    """Z = Aᵀ·Z_enc, back in the levels' shapes."""
    return split_latents(unrotate_latent(latent_matrix(eps_enc, len(rotation)), rotation), [e.shape for e in eps_enc])


def latent_image(eps_enc: list[np.ndarray], m: int) -> np.ndarray:
    """FFEM's "encrypted latent-variable face": the m x 3m matrix Z_enc shown as an m x m RGB image
    (pixel (i, j) holds Z_enc[i, 3j:3j + 3]), 8 bits at 128 + 32·z."""
    z = latent_matrix(eps_enc, m).reshape(m, m, 3)
    return np.clip(np.rint(128.0 + LATENT_LEVELS_PER_UNIT * z), 0, 255).astype(np.uint8)


def latent_from_image(image: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Z_enc back from ``latent_image`` (to 1/64 where it was not clipped), in the levels' shapes."""
    m = image.shape[0]
    z = (np.asarray(image, np.float64) - 128.0) / LATENT_LEVELS_PER_UNIT
    return split_latents(z.reshape(m, 3 * m), shapes)


class FlowRotation(ShapedMaskMethod):
    """``flow``: anything with the teacher's encode/decode/shapes/resolution/margin (the Glow of
    ``anoncli.flow.model`` or its distilled student, ``anoncli.flow.student``)."""

    def __init__(self, weights_dir=None, flow=None, **params):
        super().__init__(**params)
        if flow is None and self.params["model"] == "student":
            from ..flow.student import FlowStudentModel

            flow = FlowStudentModel(weights_dir)
        elif flow is None:
            from ..flow.model import FlowModel

            flow = FlowModel(weights_dir)
        self.flow = flow
        self.resolution = flow.resolution
        self.margin = flow.margin

    def _rotation(self, key) -> np.ndarray:
        if key is None:
            raise ValueError("flowrot needs the face's key (run with --keyfile)")
        return face_rotation(key.secret, self.resolution)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return self.anonymize_with_side_images(crop, landmarks_in_crop, key)[0]

    def anonymize_with_side_images(self, crop, landmarks_in_crop, key=None):
        encrypted = encrypt_latent(self.flow.encode(crop), self._rotation(key))
        side = {"latent": latent_image(encrypted, self.resolution)} if self.params["output_latent"] else {}
        return self.flow.decode(encrypted, self.params["temperature"]), side

    restore_quality_measure = ("PSNR in dB of the flow's own encode-decode round trip on the restored face, inside the blend "
                               "mask (higher is better); it cannot see detail lost before, so it reads above the restore's "
                               "PSNR against the original (by 5.3 dB on average on 30 held-out CelebA crops, README)")

    def restore_crop(self, crop, landmarks_in_crop, key, face_params):
        """From the encrypted latent image when the run wrote one (``--output-latent``: Z_enc to
        8 bits, FFEM's face-aimed user), else by re-encoding the fake face: Z_enc = f(Y)/λ, which
        the 8-bit image and the warps into and out of the photo perturb, and λ < 1 amplifies.
        `anoncli restore` refuses runs without latent images (``flow_specs._restore_capability``):
        the re-encoding path is FFEM's model-only restore, kept for measuring it."""
        latent = (face_params.get("side_images") or {}).get("latent")
        if latent is not None:
            if latent.shape != (self.resolution, self.resolution, 3):
                raise ValueError(f"the latent image is {latent.shape[:2]}, the flow's latent {self.resolution} x {self.resolution}")
            encrypted = latent_from_image(latent, self.flow.shapes)
        else:
            encrypted = [e / self.params["temperature"] for e in self.flow.encode(crop)]
        return self.flow.decode(decrypt_latent(encrypted, self._rotation(key)), 1.0)

    def restore_quality(self, anonymized, restored, landmarks_in_crop, key, face_params):
        """PSNR of decode(encode(X')) against the restored X' inside the blend mask. The student's
        restore X' is its round trip D(E(X)) of the original X; the same round trip on X' is what
        can be measured without X. X' already lies on what the decoder draws, so this reads higher
        than PSNR(X', X): on 30 held-out CelebA crops 20.8 dB median against 15.1, correlation 0.30
        (benchmarks/eval_restore_quality.py). The Glow's round trip is exact (about 100 dB)."""
        back = self.flow.decode(self.flow.encode(restored), 1.0)
        weights = np.broadcast_to(self.blend_mask(landmarks_in_crop)[..., None], np.shape(restored))
        mse = float((weights * (np.asarray(back, np.float64) - restored) ** 2).sum() / max(weights.sum(), 1e-9))
        return 10.0 * np.log10(255.0 ** 2 / max(mse, 1e-10))
