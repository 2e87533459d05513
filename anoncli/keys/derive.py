"""Per-face keys: HKDF-SHA256 (RFC 5869) over the run's master secret and the face's id.

Every face gets its own 256-bit key, so one leaked pair (an original face and its
anonymized version) says nothing about any other face's key (METHODS.md §7: with one
shared rotation, orthogonal Procrustes on a single pair recovers it). Methods get their
randomness from ``FaceKey.rng`` and never from a global seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACE_KEY_INFO = b"anoncli/face-key/v1"
KEY_BYTES = 32


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """RFC 5869 extract-then-expand with SHA-256 (an empty salt means 32 zero bytes, as in the RFC)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), length, salt or None, info).derive(ikm)


def face_id(input_rel: str, input_sha256: str, index: int) -> str:
    """Names one face of one input file: its path in the dataset, its content hash, its detection order."""
    return f"{input_rel}\x00{input_sha256}\x00{index}"


def face_key(master: bytes, run_id: str, face: str) -> bytes:
    """The face's 32-byte key: HKDF(master, salt = run id, info = label || face id)."""
    return hkdf_sha256(master, run_id.encode(), FACE_KEY_INFO + b"\x00" + face.encode("utf-8"))


def key_rng(key: bytes) -> np.random.Generator:
    """A deterministic generator keyed by the first 128 bits of ``key`` (Philox counter mode)."""
    return np.random.Generator(np.random.Philox(key=int.from_bytes(key[:16], "little")))


@dataclass(frozen=True)
class FaceKey:
    face_id: str
    secret: bytes

    def rng(self) -> np.random.Generator:
        return key_rng(self.secret)

    def __repr__(self) -> str:  # never print the secret
        return f"FaceKey(face_id={self.face_id!r})"


@dataclass(frozen=True)
class Keyring:
    """What a worker needs to derive any face's key in one run segment."""

    run_id: str
    segment: int
    master: bytes

    def face(self, input_rel: str, input_sha256: str, index: int) -> FaceKey:
        fid = face_id(input_rel, input_sha256, index)
        return FaceKey(fid, face_key(self.master, self.run_id, fid))

    def __repr__(self) -> str:
        return f"Keyring(run_id={self.run_id!r}, segment={self.segment})"
