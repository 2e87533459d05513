"""The typed records of a run: what each anonymized face was (``FaceResult``) and what happened
to each input (``ImageRecord``). Workers fill them, the journal stores them as JSON lines
(``to_dict``/``from_dict``), the manifest is built from them. What must never be journaled (the
keyfile's content, a face's side images before they are written) lives in fields that
``to_dict`` leaves out."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

STATUSES = ("ok", "no_face", "error")


@dataclass
class FaceResult:
    """One detected face: where it was, the exact warp into the method's crop, what was done."""

    box: list[float]
    score: float
    landmarks: list[list[float]]
    warp: list[list[float]] | None = None
    skipped: str | None = None            # why the face was left untouched (its crop outside the image)
    region: str | None = None             # how the compositor found the face region (68 points, fallback)
    abs_params: dict[str, float] | None = None   # the method's sizes in photo pixels (e.g. blur sigma)
    guarantee: dict[str, Any] | None = None      # the formal guarantee the method states for this face
    side_images: dict[str, dict] | None = None   # name -> {path, sha256} of extra images written (flowrot latents)
    outcome: dict[str, Any] | None = None        # figures the method measured on this face (FSAP: iterations, final L_I)
    side_image_pixels: dict[str, Any] | None = field(default=None, repr=False)   # before they are written; never journaled

    JOURNALED = ("box", "score", "landmarks", "warp", "skipped", "region", "abs_params", "guarantee", "side_images",
                 "outcome")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.JOURNALED if getattr(self, name) is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "FaceResult":
        unknown = set(d) - set(cls.JOURNALED)
        if unknown:
            raise ValueError(f"unknown face record fields {sorted(unknown)}")
        return cls(**d)


@dataclass
class KeyRecord:
    """The keyfile's content for one image, carried from the worker to the run in memory only."""

    meta: dict
    blobs: list[bytes]


@dataclass
class ImageRecord:
    """One input's outcome; ``status`` stays "error" until the work succeeds."""

    input: str
    method: str
    params: dict
    detector: str
    config_hash: str
    status: str = "error"
    reason: str = ""
    faces: list[FaceResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    input_size: int | None = None
    input_mtime_ns: int | None = None
    input_sha256: str | None = None
    jpeg_quality: int | None = None
    output: str | None = None             # relative path of the written output (None: nothing written)
    output_sha256: str | None = None
    traceback: str | None = None          # an internal error's, for the journal (never shown to the user)
    alignment_notes: list[str] | None = None   # dataset-level first pass: notes of the alignment
    detections: list[dict] | None = None       # dataset-level first pass: detections with exact landmarks
    dataset_plan: str | None = None            # digest of the dataset-level plan the output was written under
    key_record: KeyRecord | None = field(default=None, repr=False)   # never journaled

    NOT_JOURNALED = ("key_record",)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            if f.name in self.NOT_JOURNALED:
                continue
            value = getattr(self, f.name)
            out[f.name] = [face.to_dict() for face in value] if f.name == "faces" else value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ImageRecord":
        known = {f.name for f in fields(cls)} - set(cls.NOT_JOURNALED)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown image record fields {sorted(unknown)}")
        return cls(**{**d, "faces": [FaceResult.from_dict(face) for face in d.get("faces", [])]})

    @property
    def done(self) -> bool:
        return self.status in ("ok", "no_face")
