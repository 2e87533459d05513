"""FFEM's flow-latent rotation (seed 001, Sec. III; METHODS.md §7) on aligned crops.

Z = f(X), the flow's standard-normal latent of every level, reshaped to m x 3m (m = R);
Z_enc = A·Z with A a Haar-random orthogonal m x m matrix; the fake face is Y = f⁻¹(λ·Z_enc),
decoded at temperature λ. Restore: Z_enc = f(Y)/λ, X = f⁻¹(Aᵀ·Z_enc).

``keep_levels`` = k > 0 (not FFEM's; issue 20) rotates only the levels after the k finest: their
ε are reshaped to m x (D'/m) and turned by A, the k finest keep the original's ε and are decoded
at temperature 1. The fake face goes back into the photo through ``anoncli.faces.compositing``
(the face's 68-point region, colour matched, the photo's finest detail kept, multi-band blended).

A is drawn per face from a generator keyed by HKDF(face key, "flowrot rotation") and re-derived at
restore, never stored (METHODS.md §7 decision): one leaked (original, fake) pair gives that face's
A by orthogonal Procrustes and nothing about any other face's.
"""
from __future__ import annotations

import numpy as np

from ..flow.rotation import haar_orthogonal, latent_matrix, rotate_latent, split_latents, unrotate_latent
from ..keys.derive import hkdf_sha256, key_rng
from .base import AnonymizedFace, FaceMethod

ROTATION_INFO = b"anoncli/flowrot/rotation/v1"
LATENT_LEVELS_PER_UNIT = 32.0   # the latent image: pixel = 128 + 32·z, so z in [−4, 3.97] in steps of 1/32


def face_rotation(secret: bytes, m: int) -> np.ndarray:
    """The face's A: Haar-random orthogonal m x m from its key."""
    return haar_orthogonal(key_rng(hkdf_sha256(secret, b"", ROTATION_INFO)), m)


def encrypt_latent(eps: list[np.ndarray], rotation: np.ndarray, keep_levels: int = 0) -> list[np.ndarray]:
    """Z_enc = A·Z, back in the levels' shapes; the ``keep_levels`` finest levels are not turned."""
    kept, turned = eps[:keep_levels], eps[keep_levels:]
    return list(kept) + split_latents(rotate_latent(latent_matrix(turned, len(rotation)), rotation), [e.shape for e in turned])


def decrypt_latent(eps_enc: list[np.ndarray], rotation: np.ndarray, keep_levels: int = 0) -> list[np.ndarray]:
    """Z = Aᵀ·Z_enc, back in the levels' shapes; the ``keep_levels`` finest levels were not turned."""
    kept, turned = eps_enc[:keep_levels], eps_enc[keep_levels:]
    return list(kept) + split_latents(unrotate_latent(latent_matrix(turned, len(rotation)), rotation), [e.shape for e in turned])


def level_temperatures(levels: int, keep_levels: int, temperature: float) -> list[float]:
    """The temperature of every level, finest first: 1 for the kept levels (the original's own ε),
    λ for the rotated ones."""
    return [1.0] * keep_levels + [temperature] * (levels - keep_levels)


def check_keep_levels(shapes: list[tuple[int, ...]], keep_levels: int, m: int) -> None:
    """A clear error when the rotated levels cannot be turned by an m x m matrix."""
    if not 0 <= keep_levels < len(shapes):
        raise ValueError(f"--keep-levels must be below the flow's {len(shapes)} levels, got {keep_levels}")
    size = sum(int(np.prod(s)) for s in shapes[keep_levels:])
    if size % m:
        raise ValueError(f"the {len(shapes) - keep_levels} rotated levels hold {size} numbers, not rows of {m}")


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


class FlowRotation(FaceMethod):
    """``flow``: anything with the teacher's encode/decode/shapes/resolution/margin (the Glow of
    ``anoncli.flow.model`` or its distilled student, ``anoncli.flow.student``)."""

    CROP_MASK_FEATHER = 0.02   # soft edge of ``blend_mask``, the region as seen from the crop (restore's quality figure)

    def __init__(self, weights_dir=None, flow=None, **params):
        super().__init__(**params)
        if flow is None and self.params["model"] == "student":
            from ..flow.student import FlowStudentModel

            flow = FlowStudentModel(weights_dir)
        elif flow is None:
            from ..flow.model import FlowModel

            flow = FlowModel(weights_dir)
        self.flow = flow
        self.resolution = int(self.params.get("crop_size") or flow.resolution)
        if self.resolution < flow.resolution:
            raise ValueError(f"--crop-size must be at least the flow's {flow.resolution} px, got {self.resolution}")
        self.margin = flow.margin
        self.keep_levels = int(self.params.get("keep_levels", 0))
        check_keep_levels(flow.shapes, self.keep_levels, flow.resolution)
        self.temperatures = level_temperatures(len(flow.shapes), self.keep_levels, self.params["temperature"])
        from ..faces.compositing import Compositor
        from ..faces.compositing_config import config_from_params

        self._weights_dir = weights_dir
        self._upsample = None   # loaded when a fake face is first made: restore never needs it
        self.compositor = Compositor(config_from_params(self.params), weights_dir)

    def blend_mask(self, landmarks_in_crop: np.ndarray) -> np.ndarray:
        """The region in crop space as the crop alone shows it: for --shape landmarks the mean 68-point
        outline (the stage composites with the face's own, predicted in the photo)."""
        from ..faces.blend import face_mask

        shape = self.params["shape"]
        return face_mask(self.resolution, shape, self.CROP_MASK_FEATHER, self.margin,
                         landmarks_in_crop if shape == "hull" else None, self.params["brow_raise"])

    def _to_flow(self, crop: np.ndarray) -> np.ndarray:
        """The working crop as the flow sees it: area-averaged to its resolution."""
        import cv2

        r = self.flow.resolution
        crop = np.asarray(crop, np.float32)
        return crop if crop.shape[0] == r else cv2.resize(crop, (r, r), interpolation=cv2.INTER_AREA)

    @staticmethod
    def _from_flow(crop: np.ndarray, size: int) -> np.ndarray:
        """The flow's output enlarged to the working crop's ``size`` (bicubic, on ``_to_flow``'s grid): the
        restored face, which the fake face's crosshatch removal, upsampler and sharpening must not alter."""
        from ..faces.upsampling import resize

        return resize(crop, size)

    @property
    def upsample(self):
        """The fake face's upsampler (``--upsampler``)."""
        if self._upsample is None:
            from .upsampling_specs import create_method_upsampler

            self._upsample = create_method_upsampler(self.params, self._weights_dir)
        return self._upsample

    def _decode(self, eps: list[np.ndarray]) -> np.ndarray:
        """f⁻¹ with every level at its own temperature (z = μ + T·σ·ε is f⁻¹ of T·ε at temperature 1)."""
        return self.flow.decode([t * e for t, e in zip(self.temperatures, eps)], 1.0)

    def _rotation(self, key) -> np.ndarray:
        if key is None:
            raise ValueError("flowrot needs the face's key (run with --keyfile)")
        return face_rotation(key.secret, self.flow.resolution)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return self.anonymize_face(crop, landmarks_in_crop, key).crop

    def anonymize_face(self, crop, landmarks_in_crop, key=None):
        encrypted = encrypt_latent(self.flow.encode(self._to_flow(crop)), self._rotation(key), self.keep_levels)
        side = {"latent": latent_image(encrypted, self.flow.resolution)} if self.params["output_latent"] else {}
        from ..flow.enlarge import enlarge_fake

        fake = enlarge_fake(self._decode(encrypted), np.shape(crop)[0], self.params["crosshatch_sigma"],
                            self.params["sharpen"], self.params["sharpen_sigma"], self.upsample)
        return AnonymizedFace(fake, side)

    restore_quality_measure = ("PSNR in dB of the flow's own encode-decode round trip on the restored face, inside the blend "
                               "mask (higher is better); it cannot see detail lost before, so it reads above the restore's "
                               "PSNR against the original (by 5.3 dB on average on 30 held-out CelebA crops, README)")

    def restore_crop(self, crop, landmarks_in_crop, key, face_params, *, region_in_crop=None, blend_in_crop=None,
                     read_back=None):
        """From the encrypted latent image when the run wrote one (``--output-latent``: Z_enc to
        8 bits, FFEM's face-aimed user), else by re-encoding the fake face: Z_enc = f(Y)/λ, which
        the 8-bit image and the warps into and out of the photo perturb, and λ < 1 amplifies.
        `anoncli restore` refuses runs without latent images (``flow_specs._restore_capability``):
        the re-encoding path is FFEM's model-only restore, kept for measuring it."""
        latent = (face_params.get("side_images") or {}).get("latent")
        m = self.flow.resolution
        if latent is not None:
            if latent.shape != (m, m, 3):
                raise ValueError(f"the latent image is {latent.shape[:2]}, the flow's latent {m} x {m}")
            encrypted = latent_from_image(latent, self.flow.shapes)
        else:
            encrypted = [e / t for e, t in zip(self.flow.encode(self._to_flow(crop)), self.temperatures)]
        original = self.flow.decode(decrypt_latent(encrypted, self._rotation(key), self.keep_levels), 1.0)
        return self._from_flow(original, np.shape(crop)[0])

    def restore_quality(self, anonymized, restored, landmarks_in_crop, key, face_params, *, region_in_crop=None,
                        blend_in_crop=None, read_back=None):
        """PSNR of decode(encode(X')) against the restored X' inside the blend mask. The student's
        restore X' is its round trip D(E(X)) of the original X; the same round trip on X' is what
        can be measured without X. X' already lies on what the decoder draws, so this reads higher
        than PSNR(X', X): on 30 held-out CelebA crops 20.8 dB median against 15.1, correlation 0.30
        (benchmarks/eval_restore_quality.py). The Glow's round trip is exact (about 100 dB)."""
        import cv2

        restored = self._to_flow(restored)
        mask = self.blend_mask(landmarks_in_crop)
        if mask.shape[0] != restored.shape[0]:
            mask = cv2.resize(mask, restored.shape[:2][::-1], interpolation=cv2.INTER_AREA)
        back = self.flow.decode(self.flow.encode(restored), 1.0)
        weights = np.broadcast_to(mask[..., None], np.shape(restored))
        mse = float((weights * (np.asarray(back, np.float64) - restored) ** 2).sum() / max(weights.sum(), 1e-9))
        return 10.0 * np.log10(255.0 ** 2 / max(mse, 1e-10))
