"""The run configuration and its hash: what decides the output bytes, nothing else."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from . import __version__

NO_FACE_POLICIES = ("keep", "skip", "fail")
# Options added after runs were already made: at these values (their defaults, which do what the
# tool did before them) they are left out of the hash, so an interrupted run of an earlier version resumes.
ADDED_LATER = {"confirm_below": 0.0, "confirm_min_side": 96.0}


@dataclass(frozen=True)
class RunConfig:
    method: str
    params: dict = field(default_factory=dict)
    detector: str = "retinaface-onnx"
    detector_weights_sha256: str = ""
    threshold: float = 0.3
    detect_size: int = 640
    nms_iou: float = 0.4
    min_face: float = 0.0
    confirm_below: float = 0.0   # off: recall first (faces.confirmation)
    confirm_min_side: float = 96.0
    no_face: str = "keep"
    keep_metadata: bool = False
    max_pixels: int = 178_956_970
    tool_version: str = __version__

    def to_dict(self) -> dict:
        return asdict(self)

    def decisive(self) -> dict:
        """``to_dict`` less the ``ADDED_LATER`` options at their defaults: what the hash covers."""
        return {k: v for k, v in self.to_dict().items() if k not in ADDED_LATER or v != ADDED_LATER[k]}

    @property
    def hash(self) -> str:
        blob = json.dumps(self.decisive(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def differences(self, other: dict) -> list[str]:
        mine = self.to_dict()
        other = {**{k: v for k, v in ADDED_LATER.items() if k in mine}, **other}
        keys = sorted(set(mine) | set(other))
        return [f"{k}: {other.get(k)!r} -> {mine.get(k)!r}" for k in keys if mine.get(k) != other.get(k)]
