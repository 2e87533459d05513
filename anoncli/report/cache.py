"""Features of images cached by the sha256 of the image file, so a second report is fast.

One JSON file per image content holds every feature measured on it (embeddings per
evaluator and face, detections, landmarks, image-quality numbers against another image),
each under a key that names what it depends on. The cache holds face embeddings of the
originals, which are biometric templates: it lives in the user's cache folder, or where
``--cache-dir`` says, and ``--no-cache`` keeps nothing.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

FORMAT = "features-v1"


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("anoncli")) / "report"


def face_key(face: dict) -> str:
    """Short stable key of a face's box and five landmarks (what the evaluators' crops depend on)."""
    numbers = [round(float(v), 1) for v in face["box"]]
    numbers += [round(float(v), 1) for point in face.get("landmarks") or [] for v in point]
    return hashlib.sha1(json.dumps(numbers).encode()).hexdigest()[:16]


class FeatureCache:
    """Read a content's record with :meth:`load`, add features, :meth:`save` if it changed."""

    def __init__(self, root: Path | None):
        self.root = None if root is None else Path(root) / FORMAT

    def _path(self, sha: str) -> Path:
        return self.root / sha[:2] / f"{sha}.json"

    def load(self, sha: str) -> dict:
        if self.root is None:
            return {}
        try:
            record = json.loads(self._path(sha).read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def save(self, sha: str, record: dict) -> None:
        if self.root is None:
            return
        from ..io.atomic import write_atomic

        try:
            write_atomic(self._path(sha), json.dumps(record, separators=(",", ":")).encode(), mode=0o600)
        except OSError:
            pass  # a read-only or full cache costs only speed
