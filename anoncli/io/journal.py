"""Append-only journals in JSON lines (a run's, the first pass's face store's) and the manifest built from a run's.

A record is appended only after its output file is durable, so after a crash every
journal line names a complete file; a torn last line is dropped on reopening.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..records import ImageRecord

MANIFEST_COLUMNS = ["input", "input_sha256", "output", "output_sha256", "status", "reason", "n_faces", "faces",
                    "method", "params", "detector", "jpeg_quality", "notes", "timings", "config_hash"]


def json_default(o):
    """JSON for numpy scalars and arrays."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def load(self) -> dict[str, dict]:
        """Latest record per input; trims a torn trailing line left by a kill."""
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
        for line in data[:good_end].splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[rec["input"]] = rec
        return records

    def append(self, record: dict) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")
        self._fh.write(json.dumps(record, default=json_default, separators=(",", ":")).encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:   # the bytes of an append that failed (disk full): a torn line, dropped on
                pass          # reopening, and that image is redone on resume
            self._fh = None

    def reset(self) -> None:
        self.close()
        if self.path.exists():
            self.path.unlink()


class RunJournal(Journal):
    """A run's journal: one ``ImageRecord`` per line. A line this version cannot read as one is
    skipped, and its image redone."""

    def load(self) -> dict[str, ImageRecord]:
        records = {}
        for rel, d in super().load().items():
            try:
                records[rel] = ImageRecord.from_dict(d)
            except (ValueError, TypeError):
                continue
        return records

    def append(self, record: ImageRecord) -> None:
        super().append(record.to_dict())


def manifest_frame(records: list[ImageRecord]):
    import pandas as pd

    rows = []
    for r in records:
        rows.append({
            "input": r.input,
            "input_sha256": r.input_sha256,
            "output": r.output,
            "output_sha256": r.output_sha256,
            "status": r.status,
            "reason": r.reason,
            "n_faces": len(r.faces),
            "faces": json.dumps([f.to_dict() for f in r.faces], default=json_default, separators=(",", ":")),
            "method": r.method,
            "params": json.dumps(r.params, sort_keys=True),
            "detector": r.detector,
            "jpeg_quality": r.jpeg_quality,
            "notes": "; ".join(r.notes),
            "timings": json.dumps(r.timings, sort_keys=True),
            "config_hash": r.config_hash,
        })
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def manifest_parquet(frame) -> bytes:
    """The manifest table as Parquet (pyarrow), for datasets of millions of rows: the same columns
    as manifest.csv, JSON columns kept as strings."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def read_manifest(path: Path):
    """The manifest table as written by a run (empty strings kept as such)."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False)
