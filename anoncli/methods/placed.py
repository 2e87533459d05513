"""One image's faces as a dataset-level method's plan made them (``anoncli.two_pass``): the second
pass hands each aligned face its precomputed replacement, in face order."""
from __future__ import annotations

import numpy as np

from .base import AnonymizedFace, FaceMethod


class PlacedFaces(FaceMethod):
    """One image's precomputed replacements, handed out in face order (faces whose crop lies
    outside the image are skipped in both passes alike)."""

    def __init__(self, base: FaceMethod, replacements: list[np.ndarray], guarantees: list[dict]):
        super().__init__(**base.params)
        self.resolution, self.margin, self._base = base.resolution, base.margin, base
        self.compositor = base.compositor
        self._queue = list(zip(replacements, guarantees))
        self._current: dict | None = None

    def blend_mask(self, landmarks_in_crop):
        return self._base.blend_mask(landmarks_in_crop)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        if not self._queue:
            raise RuntimeError("more faces to place than the first pass aligned")
        replacement, self._current = self._queue.pop(0)
        return replacement

    def guarantee(self) -> dict | None:
        return self._current

    def exhausted(self) -> bool:
        return not self._queue


class PlacedOutcomes(PlacedFaces):
    """As ``PlacedFaces`` for a method whose plan holds per-face figures (the manifest's ``outcome``)
    rather than a formal guarantee."""

    def anonymize_face(self, crop, landmarks_in_crop, key=None) -> AnonymizedFace:
        replacement = self.anonymize_crop(crop, landmarks_in_crop, key)
        return AnonymizedFace(replacement, outcome=self._current)

    def guarantee(self) -> dict | None:
        return None
