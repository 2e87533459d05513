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
from typing import Callable

import numpy as np

from ..identity.rotation import haar_orthogonal, level_to_degrees, reference_vector, rotate_identity, unrotate_identity
from ..keys.derive import hkdf_sha256, key_rng
from ..keys.envelope import b64, unb64
from ..privacy.mechanisms import laplace_noise, laplace_scale
from .base import AnonymizedFace, FaceMethod

REFERENCE_INFO = b"anoncli/idrotate/reference/v1"
RENDERING_ERROR = "rendering_error"   # idrotate's keyfile entry: r_id as written minus z_new, float32 (``IdRotate.key_record``)
ORTHOGONAL_INFO = b"anoncli/idrotate/orthogonal/v1"


def unit_vector_l1_bound(dimension: int) -> float:
    """max ‖a − b‖₁ over unit vectors a, b in R^d: 2√d (attained by a = −b = (1, ..., 1)/√d)."""
    return 2.0 * math.sqrt(dimension)


class _GeneratorMethod(FaceMethod):
    REFINEMENT_FEATHER = 0.02   # soft edge of the crop-space region the identity fit pastes into
    region_feather = REFINEMENT_FEATHER
    reads_back = True

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
        """The region in crop space as the identity fit sees it when the stage hands over none
        (restore, a crop anonymized on its own): for --shape landmarks the mean 68-point outline."""
        from ..faces.blend import face_mask

        shape = self.params["shape"]
        return face_mask(self.resolution, shape, self.REFINEMENT_FEATHER, self.margin,
                         landmarks_in_crop if shape == "hull" else None, self.params["brow_raise"])

    @property
    def faces_together(self) -> int:
        return self.params["faces_together"]

    def low_precision(self):
        """Autocast to ``--precision``'s dtype for the identity fit, or None for float32."""
        import torch

        from ..devices import search_dtype

        dtype = search_dtype(self.params["precision"], "cpu")
        return None if dtype is None else (lambda: torch.autocast("cpu", dtype=dtype))

    def refinement(self, crop: np.ndarray, landmarks_in_crop: np.ndarray, steps: int | None = None,
                   restoring: bool = False, region_in_crop: np.ndarray | None = None, blend_in_crop=None,
                   read_back=None, **fit):
        """The ``Refinement`` of one face; ``fit``: its optional start, readout and goal. The fit sees
        the face as the compositing will put it into the photo: in its region (``region_in_crop``, the
        stage's; without it ``blend_mask``), band by band as the stage will blend it (``blend_in_crop``,
        a ``CropBlend``, when the stage hands one over), with the photo's detail finer than
        ``--detail-sigma`` and its colour (``Compositor.colour_in_crop``), the colour except when
        ``restoring`` for a method whose restore composites without it, and, with the stage's ``read_back``, as the
        written file will show it. Restore's fit moves one code per generator input whatever ``--refine-inputs``
        says: it aims at the original's identity as closely as the generator can draw it."""
        from ..identity.generator import Refinement

        steps = self.params["refine_steps"] if steps is None else steps
        mask = self.blend_mask(landmarks_in_crop) if region_in_crop is None else region_in_crop
        composited = {}
        if self.compositor is not None:
            composited = {"detail_sigma": self.compositor.config.detail_sigma, "blend": blend_in_crop}
            if not restoring or self.restore_matches_colour:
                composited["colour"] = self._colour_in_crop(crop, mask, blend_in_crop)
        return Refinement(crop, mask, steps, self.params["refine_lr"], schedule=self.params["refine_schedule"],
                          inputs="per-block" if restoring else self.params["refine_inputs"],
                          read_back=read_back, **composited, **fit)

    def _colour_in_crop(self, crop: np.ndarray, mask: np.ndarray, blend_in_crop) -> Callable[[np.ndarray], np.ndarray]:
        """The compositing's colour correction of a face for this crop (``Compositor.colour_in_crop``),
        over the blend's region, or without one over the mask's."""
        if blend_in_crop is not None:
            region, width, transition = blend_in_crop.region, blend_in_crop.width, blend_in_crop.transition
        else:
            region = mask > 0.5
            columns = np.flatnonzero(region.any(0))
            width = float(columns[-1] - columns[0] + 1) if len(columns) else float(self.resolution)
            transition = None
        return lambda face: self.compositor.colour_in_crop(face, crop, region, width, transition)

    def render(self, identity: np.ndarray, attributes: list, crop: np.ndarray, landmarks_in_crop: np.ndarray,
               steps: int | None = None, restoring: bool = False, **fit) -> np.ndarray:
        """The generator's face for ``identity``; ``fit``: the ``Refinement``'s optional start, readout and goal."""
        refinement = self.refinement(crop, landmarks_in_crop, steps, restoring, **fit)
        return self.generator.generate_many(np.asarray(identity)[None], attributes, [refinement], self.low_precision())[0]

    def request(self, identity: np.ndarray, key) -> tuple[np.ndarray, dict]:
        """The identity one face is rebuilt with, and its fit's start, readout and goal."""
        raise NotImplementedError

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        identity, attributes = self.generator.encode(crop)
        target, fit = self.request(identity, key)
        return self.render(target, attributes, crop, landmarks_in_crop, **fit)

    def anonymize_many(self, requests):
        """``anonymize_crop`` of each request, ``--faces-together`` of them in each pass through the
        generator and dlib's network (each face's fit is its own: ``refine_identity_inputs_many``)."""
        faces: list = [None] * len(requests)
        for first in range(0, len(requests), self.faces_together):
            chunk = range(first, min(first + self.faces_together, len(requests)))
            identities, attributes = self.generator.encode_many([requests[i].crop for i in chunk])
            targets, refinements, rows = [], [], []
            for row, i in enumerate(chunk):
                try:
                    target, fit = self.request(identities[row], requests[i].key)
                except ValueError as error:   # this face alone fails (the stage fails its image with this reason)
                    faces[i] = error
                    continue
                targets.append(target)
                refinements.append(self.refinement(requests[i].crop, requests[i].landmarks_in_crop,
                                                   region_in_crop=requests[i].region_in_crop,
                                                   blend_in_crop=requests[i].blend_in_crop,
                                                   read_back=requests[i].read_back, **fit))
                rows.append(row)
            if not rows:
                continue
            kept = [a[rows] for a in attributes]
            crops = self.generator.generate_many(np.stack(targets), kept, refinements, self.low_precision())
            for row, crop, target in zip(rows, crops, targets):
                faces[chunk[row]] = AnonymizedFace(crop, key_record=self.key_record(crop, target, requests[chunk[row]]))
        return faces

    def key_record(self, face: np.ndarray, target: np.ndarray, request) -> dict | None:
        """What the keyfile keeps of this face besides ``key_params`` (``AnonymizedFace.key_record``)."""
        return None


class IdentityDP(_GeneratorMethod):
    """r̃_id = r_id + Lap(Δf/ε)^d (eq. 5.11), X̂ = h(r̃_id / ‖r̃_id‖, g(X)) (eq. 5.13), or by default
    (--noisy-identity face-shaped, not in the book) X̂ = h(C^(1/2) r̃_id / ‖C^(1/2) r̃_id‖, g(X)), with C
    the training faces' covariance in the whitened space (``face_code_covariance``).

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
        from ..identity.representation import shaped_like_faces

        noisy = identity + laplace_noise(self.scale, identity.shape)
        if self.params["noisy_identity"] == "face-shaped":
            return shaped_like_faces(noisy, self.generator.face_code_root)
        return noisy / np.linalg.norm(noisy)

    def request(self, identity, key):
        return self.perturb(identity), {}

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
                            "the blend mask are not perturbed, and the rebuilt face is post-processing of the noisy vector and those"
                            + (" (the vector shaped like real faces' by a fixed public map first)"
                               if self.params["noisy_identity"] == "face-shaped" else ""),
                "noise_source": "os.urandom, never stored"}


class IdRotate(_GeneratorMethod):
    """z_new = M(z̄, z_r, g(d)) (eq. 6.16-6.17), output G(z_new, z_attr) (eq. 6.18); restore:
    ẑ = M⁻¹(E_id(X̂) − e, z_r, g(d)) (eq. 6.19-6.20), output G(ẑ, E_attr(X̂)) (eq. 6.21), with e the
    face's rendering error kept in the keyfile (``key_record``; not in the book, whose restore reads
    E_id(X̂) alone and so recovers z̄ only as well as the generator rendered z_new).

    z_r is a uniform unit vector drawn from a generator keyed by HKDF(face key, "idrotate
    reference"), so each face has its own reference and one leaked pair says nothing of another's.

    ``--rotation orthogonal`` (not in the book) turns r_id by a Haar orthogonal matrix A drawn from
    HKDF(face key, "idrotate orthogonal"), FFEM's keyed encryption (seed 001, Sec. 3.2) applied to the
    identity vector: z_new = A z̄, restore ẑ = Aᵀ E_id(X̂). Eq. 6.16 keeps cos θ of z̄ in every face,
    which links it to its owner for anyone who knows θ (README); A z̄ keeps nothing of z̄ without
    the key, and restore divides nothing.
    """

    restore_matches_colour = True   # its restore is a rendering: the generator's colour cast (pink, grey) would stay

    def __init__(self, weights_dir=None, **params):
        super().__init__(weights_dir, **params)
        self.degrees = level_to_degrees(self.params["level"])

    def reference(self, key) -> np.ndarray:
        if key is None:
            raise ValueError("idrotate needs the face's key (run with --keyfile)")
        seed = hkdf_sha256(key.secret, b"", REFERENCE_INFO)
        return reference_vector(key_rng(seed), self.generator.dimension)

    def request(self, identity, key):
        """z_new, fitted from z̄ turned past θ by ``refine_overturn`` (the generator renders only part
        of a requested turn: model card, turned identities at cosine ≈ 0.6) so that the face shows
        z_new, or with ``--refine-goal inverse`` so that the key's inverse rotation of its r_id
        (eq. 6.19-6.20, what restore computes) is z̄; the latter also brings z̄ back with a wrong key
        (README, identity methods)."""
        import torch

        from ..identity.rotation import unrotate_identity_tensor

        if self.params["rotation"] == "orthogonal":
            matrix = self.orthogonal(key)
            turn = torch.as_tensor(matrix, dtype=torch.float32)
            target = matrix @ (identity / np.linalg.norm(identity))
            fit = {"start": target}
            if self.params["refine_goal"] == "inverse":
                fit.update(goal=identity, readout=lambda shown: shown @ turn)
            return target, fit
        reference = self.reference(key)
        start = rotate_identity(identity, reference, min(self.degrees + self.params["refine_overturn"], 180.0))
        reference_t = torch.as_tensor(reference, dtype=torch.float32)[None]
        fit = {"start": start / np.linalg.norm(start)}
        if self.params["refine_goal"] == "inverse":
            fit.update(goal=identity, readout=lambda shown: unrotate_identity_tensor(shown, reference_t, self.degrees))
        return rotate_identity(identity, reference, self.degrees), fit

    def orthogonal(self, key) -> np.ndarray:
        """The face's keyed orthogonal matrix A of ``--rotation orthogonal``."""
        if key is None:
            raise ValueError("idrotate needs the face's key (run with --keyfile)")
        return haar_orthogonal(key_rng(hkdf_sha256(key.secret, b"", ORTHOGONAL_INFO)), self.generator.dimension)

    def rotation_of(self, face_params: dict | None) -> str:
        """How a face was turned: its keyfile record says so (``key_params``), else the run's flag."""
        face_params = face_params or {}
        if face_params.get("rotation") == "orthogonal":
            return "orthogonal"
        return "plane" if "theta_degrees" in face_params else self.params["rotation"]

    def key_record(self, face, target, request):
        """The face's rendering error (not in the book): r_id of the face as the written file will show
        it (the stage's ``read_back``: the compositing, the file's encoding, the crop's extraction, all
        that restore will read through) minus the z_new it was rendered for. The generator renders an
        identity only approximately (model card), and eq. 6.19-6.20 pass that error on to ẑ; restore
        subtracts it before turning back, so ẑ is z̄ whatever the fit reached. It is sealed in the
        keyfile record like the master secret (it holds what the face shows besides z_new, the owner's
        identity that the attribute maps carry included), never in the manifest. None without a key
        or a read-back (a crop anonymized outside the stage)."""
        if request.key is None or request.read_back is None:
            return None
        shown = self.generator.identity_of(np.float32(request.read_back(np.float32(face))))
        return {RENDERING_ERROR: b64(np.asarray(shown - np.asarray(target, np.float64), "<f4").tobytes())}

    def rendering_error(self, face_params: dict | None) -> np.ndarray | None:
        """The keyfile's ``key_record`` of a face, checked, or None where it has none (runs before it)."""
        text = (face_params or {}).get(RENDERING_ERROR)
        if text is None:
            return None
        dimension = self.generator.dimension
        try:
            error = np.frombuffer(unb64(text, 4 * dimension), "<f4").astype(np.float64)
        except (TypeError, ValueError):
            error = None
        if error is None or not np.isfinite(error).all():
            raise ValueError(f"the keyfile's {RENDERING_ERROR} of this face is not {dimension} finite float32 numbers")
        return error

    def recovered_identity(self, rotated: np.ndarray, key, rotation: str | None = None,
                           rendering_error: np.ndarray | None = None) -> np.ndarray:
        """ẑ from the identity read back from a protected face: eq. 6.19-6.20, or Aᵀ·r_id; with the
        face's ``rendering_error`` (``key_record``) subtracted from r_id first."""
        if rendering_error is not None:
            rotated = np.asarray(rotated, np.float64) - rendering_error
        if (rotation or self.params["rotation"]) == "orthogonal":
            recovered = self.orthogonal(key).T @ np.asarray(rotated, np.float64)
            return recovered / np.linalg.norm(recovered)
        return unrotate_identity(rotated, self.reference(key), self.degrees)

    def restore_crop(self, crop, landmarks_in_crop, key, face_params, *, region_in_crop=None, blend_in_crop=None,
                     read_back=None):
        rotated, attributes = self.generator.encode(crop)
        recovered = self.recovered_identity(rotated, key, self.rotation_of(face_params), self.rendering_error(face_params))
        return self.render(recovered, attributes, crop, landmarks_in_crop,
                           self.params["restore_refine_steps"], restoring=True, region_in_crop=region_in_crop,
                           blend_in_crop=blend_in_crop, read_back=read_back)

    restore_quality_measure = ("cosine between the identity vector r_id of the restored face, as the restored file shows it "
                               "(composited as restore composites it, then encoded as the file is), and "
                               "the identity restore recovered from the protected face (eq. 6.20, the face's kept rendering "
                               "error taken off): how faithfully the generator rendered it (1 at best; higher is better)")

    def restore_quality(self, anonymized, restored, landmarks_in_crop, key, face_params, *, region_in_crop=None,
                        blend_in_crop=None, read_back=None):
        import torch

        from ..identity.generator import paste
        from ..models.tensors import to_tensor

        rotated = self.generator.identity_of(anonymized)
        target = self.recovered_identity(rotated, key, self.rotation_of(face_params), self.rendering_error(face_params))
        if read_back is not None:
            composited = to_tensor(np.float32(read_back(np.float32(restored)))[None])
        else:
            mask = self.blend_mask(landmarks_in_crop) if region_in_crop is None else region_in_crop
            detail_sigma = 0.0 if self.compositor is None else self.compositor.config.detail_sigma
            composited = paste(to_tensor(np.float32(restored)[None]), to_tensor(np.float32(anonymized)[None]),
                               torch.as_tensor(mask, dtype=torch.float32)[None, None], detail_sigma, None, [blend_in_crop])
        with torch.no_grad():
            shown = self.generator.rep(composited)[0].double().numpy()
        return float(np.dot(shown, target) / (np.linalg.norm(shown) * np.linalg.norm(target)))

    def key_params(self, key) -> dict:
        return {"rotation": "orthogonal"} if self.params["rotation"] == "orthogonal" else {"theta_degrees": self.degrees}
