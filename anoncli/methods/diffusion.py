"""Diffusion de-identification (thesis ch. 6, §6.5; METHODS.md §10), a dataset-level method: every
face of the run is needed before the fake set is paired to them.

``fit`` (between the two passes of ``anoncli.two_pass``) area-averages each aligned face to the
diffusion autoencoder's side and runs ``anoncli.diffusion.deidentify``'s stages in the plan's work
folder (fake set, pairing, z̄ optimisation with the face's x_T fixed); the plan keeps each face's
result at the autoencoder's side, and the second pass enlarges it to the working crop (``--upsampler``) and
composites it into the photo's face region (68-point outline, colour matched, the photo's finest
detail kept, multi-band blend). The manifest records, per face, the paired fake and the final losses; there is no formal guarantee.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import FaceMethod
from .placed import PlacedOutcomes

AUTOENCODER = "diffae-celeba-utk-64"
ATTRIBUTES = "attributes-celeba-64"
RECOGNIZER = "dlib-resnet"


@dataclass
class DiffusionPlan:
    """Per face (``face_row[(image, face index)]``): its result at the autoencoder's side and its record.
    Results stay small (the plan is saved, and the second pass ships each image's to its worker);
    ``DiffusionDeid.placing`` enlarges them to the working crop."""

    face_row: dict[tuple[str, int], int]
    results: np.ndarray          # (faces, s, s, 3) uint8 at the autoencoder's side
    records: list[dict]          # per face: paired fake, final L_id and L_att
    excluded: dict[tuple[str, int], str] = field(default_factory=dict)

    def replacement(self, key: tuple[str, int]) -> np.ndarray:
        return self.results[self.face_row[key]]

    def guarantee(self, key: tuple[str, int]) -> dict:
        """The face's record, which the second pass writes as its manifest ``outcome``."""
        return self.records[self.face_row[key]]

    def saved(self) -> tuple[dict, np.ndarray]:
        return {"face_row": [[r, i, row] for (r, i), row in self.face_row.items()], "records": self.records}, self.results

    @classmethod
    def from_saved(cls, record: dict, results: np.ndarray) -> "DiffusionPlan":
        return cls({(r, i): row for r, i, row in record["face_row"]}, results, record["records"])


class DiffusionDeid(FaceMethod):
    CROP_MASK_FEATHER = 0.04

    def __init__(self, weights_dir=None, **params):
        """Reads only the networks' metadata: every worker of both passes builds the method, and only
        ``fit`` (once, in the main process) needs the networks themselves (``_networks``)."""
        super().__init__(**params)
        from ..diffusion.autoencoder import autoencoder_crops
        from ..diffusion.deid import SemanticCodeSettings
        from ..diffusion.deidentify import DeidSettings
        from ..faces.compositing import Compositor
        from ..faces.compositing_config import config_from_params
        from ..models.attributes import attribute_net_crops
        from ..weights import resolve_weights

        self._weights_dir = weights_dir
        self._upsample = None
        self._paths = {name: resolve_weights(name, weights_dir).path for name in (AUTOENCODER, ATTRIBUTES)}
        self.side, self.margin = autoencoder_crops(self._paths[AUTOENCODER])
        self.resolution = int(self.params["crop_size"])
        if self.resolution < self.side:
            raise ValueError(f"--crop-size must be at least the autoencoder's {self.side} px, got {self.resolution}")
        attribute_side, attribute_margin = attribute_net_crops(self._paths[ATTRIBUTES])
        if abs(attribute_margin - self.margin) > 1e-6 or attribute_side != self.side:
            raise ValueError("the attribute classifier reads other crops than the diffusion autoencoder makes")
        p = self.params
        self.settings = DeidSettings(
            fake_ratio=float(p["fake_ratio"]), ddim_steps=int(p["ddim_steps"]), batch=int(p["batch"]),
            code=SemanticCodeSettings(int(p["steps"]), float(p["lr"]), float(p["identity_weight"]),
                                      float(p["attribute_weight"])))
        self.compositor = Compositor(config_from_params(self.params), weights_dir)

    def _networks(self):
        """(autoencoder file, de-identification encoders), loaded on first use."""
        if not hasattr(self, "_loaded"):
            from ..diffusion.autoencoder import load_autoencoder
            from ..diffusion.deidentify import deid_encoders
            from ..identity.centres import descriptor_centre
            from ..identity.encoders import load_identity_encoder
            from ..models.attributes import load_attribute_net

            attributes, _, _ = load_attribute_net(self._paths[ATTRIBUTES])
            encoders = deid_encoders(attributes.requires_grad_(False), load_identity_encoder(RECOGNIZER, self._weights_dir),
                                     self.side, self.margin, descriptor_centre(RECOGNIZER))
            self._loaded = (load_autoencoder(self._paths[AUTOENCODER]), encoders)
        return self._loaded

    def blend_mask(self, landmarks_in_crop: np.ndarray) -> np.ndarray:
        from ..faces.blend import face_mask

        shape = self.params["shape"]
        return face_mask(self.resolution, shape, self.CROP_MASK_FEATHER, self.margin,
                         landmarks_in_crop if shape == "hull" else None, self.params["brow_raise"])

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        raise RuntimeError("diffusion de-identification replaces faces in the second pass of a dataset-level run "
                           "(see anoncli.two_pass)")

    def fit(self, rows, crops, labels_info, log, progress: bool = False, work=None) -> tuple[DiffusionPlan, dict]:
        """The plan of these faces (``rows`` and ``crops`` as ``KSame.fit`` gets them); ``work`` keeps the
        stages' results, so that an interrupted plan resumes where it stopped."""
        import cv2

        from ..diffusion.deidentify import deidentify

        side = self.side
        small = np.zeros((len(rows), side, side, 3), np.uint8)   # each aligned face area-averaged to the autoencoder's side
        for row, (_, _, slot, _) in enumerate(rows):
            small[row] = cv2.resize(np.asarray(crops[slot], np.uint8), (side, side), interpolation=cv2.INTER_AREA)
        fakes = self.settings.fake_count(len(rows)) if rows else 0
        log(f"diffusion: {len(rows)} faces, {fakes} fakes from the autoencoder's code prior, "
            f"{self.settings.code.steps} optimisation steps of {self.settings.ddim_steps} DDIM steps each")
        if work is None:
            raise ValueError("diffusion de-identification plans in a work folder (anoncli.two_pass gives one)")
        found = {stage: len(list((work / stage).glob("*.npz"))) for stage in ("fakes", "faces")}
        if any(found.values()):
            log(f"diffusion: resuming with {found['fakes']} fake chunks and {found['faces']} face batches already on disk")
        autoencoder, encoders = self._networks()
        results = deidentify(small, autoencoder, encoders, self.settings, work, _stage_bars(progress)) if rows else []
        images = np.stack([r.image for r in results]) if results else np.zeros((0, side, side, 3), np.uint8)
        records = [{"paired_fake": r.paired_fake, "identity_loss": round(r.identity_loss, 4),
                    "attribute_loss": round(r.attribute_loss, 4), "recognizer": RECOGNIZER} for r in results]
        plan = DiffusionPlan({(rel, index): row for row, (rel, index, _, _) in enumerate(rows)}, images, records)
        summary = {"faces": len(rows), "fakes": fakes, "fake_ratio": self.settings.fake_ratio,
                   "mean_identity_loss": round(float(np.mean([r.identity_loss for r in results])), 4) if results else None,
                   "mean_attribute_loss": round(float(np.mean([r.attribute_loss for r in results])), 4) if results else None,
                   "autoencoder_steps": autoencoder.card.get("steps"),
                   "found_on_disk": {"fake_chunks": found["fakes"], "face_batches": found["faces"]}}
        return plan, summary

    @staticmethod
    def load_plan(record: dict, arrays: np.ndarray) -> DiffusionPlan:
        return DiffusionPlan.from_saved(record, arrays)

    def placing(self, results: list[np.ndarray], records: list[dict]) -> PlacedOutcomes:
        """One image's faces: each result enlarged to the working crop (``--upsampler``), with its record."""
        if self._upsample is None:   # built on first use: only the second pass's workers place faces
            from .upsampling_specs import create_method_upsampler

            self._upsample = create_method_upsampler(self.params, self._weights_dir)
        crops = [self._upsample(np.asarray(r, np.float32), self.resolution) for r in results]
        return PlacedOutcomes(self, crops, records)


def _stage_bars(progress: bool):
    """``deidentify``'s progress callback: one bar per stage on stderr (None when bars are off)."""
    if not progress:
        return None
    import sys

    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, unit="face", desc=f"planning: {stage}", file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()   # a resumed stage opens and closes its bar at once

    return update
