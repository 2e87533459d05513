"""The first pass's cache for dataset-level methods: every aligned face crop of the dataset.

Crops of one fixed shape (uint8) are appended to ``crops.bin``; one JSON line per image in
``images.jsonl`` names the slots of its faces. A line is appended only after its crops are on
disk, so after a kill every line points at complete crops; bytes past the last slot a line
names are cut on reopening. The cache belongs to one fingerprint (detector, alignment and
crop settings): another fingerprint empties it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .journal import Journal


class FaceStore:
    def __init__(self, root: Path, crop_shape: tuple[int, ...], fingerprint: str):
        self.root = Path(root)
        self.crop_shape = tuple(int(s) for s in crop_shape)
        self.crop_bytes = int(np.prod(self.crop_shape))
        self.fingerprint = fingerprint
        self._journal = Journal(self.root / "images.jsonl")
        self._crops = self.root / "crops.bin"
        self._open()

    def _open(self) -> None:
        header_path = self.root / "header.json"
        wanted = {"fingerprint": self.fingerprint, "crop_shape": list(self.crop_shape)}
        try:
            current = json.loads(header_path.read_text())
        except (OSError, ValueError):
            current = None
        if current != wanted:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)  # it holds the ORIGINAL aligned faces
            write_atomic(header_path, json.dumps(wanted).encode())
        self._records = self._journal.load()
        used = self._slots_named()
        size = self._crops.stat().st_size if self._crops.exists() else 0
        if size != used * self.crop_bytes:
            with open(self._crops, "ab") as f:
                f.truncate(used * self.crop_bytes)
                os.fsync(f.fileno())
        self._slots = used

    def _slots_named(self) -> int:
        """One past the highest slot any line names (superseded lines included: their crops stay)."""
        top = 0
        for line in self._all_lines():
            top = max(top, line.get("slot_end", 0))
        return top

    def _all_lines(self):
        path = self._journal.path
        if not path.exists():
            return
        for raw in path.read_bytes().splitlines():
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue

    def records(self) -> dict[str, dict]:
        """The latest record per input (relative path)."""
        return dict(self._records)

    def append(self, record: dict, crops: list[np.ndarray]) -> dict:
        """Store ``crops`` (in face order) and then ``record``; ``record["slots"]`` gets their slots."""
        for crop in crops:
            if crop.shape != self.crop_shape or crop.dtype != np.uint8:
                raise ValueError(f"crop of shape {crop.shape} {crop.dtype}; this store holds {self.crop_shape} uint8")
        first = self._slots
        if crops:
            with open(self._crops, "ab") as f:
                for crop in crops:
                    f.write(np.ascontiguousarray(crop).tobytes())
                f.flush()
                os.fsync(f.fileno())
        self._slots = first + len(crops)
        record = {**record, "slots": list(range(first, self._slots)), "slot_end": self._slots}
        self._journal.append(record)
        self._records[record["input"]] = record
        return record

    def crops(self) -> np.ndarray:
        """Every stored crop, (slots, *crop_shape) uint8, memory-mapped read-only."""
        if self._slots == 0:
            return np.zeros((0, *self.crop_shape), np.uint8)
        return np.memmap(self._crops, np.uint8, "r", shape=(self._slots, *self.crop_shape))

    def close(self) -> None:
        self._journal.close()
