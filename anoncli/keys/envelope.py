"""Envelope encryption: AEAD sealing, Argon2id passphrase keys, X25519 recipient keys.

A keyfile segment's data key is wrapped either under a key derived from a passphrase
(Argon2id, RFC 9106 §4 second recommended setting by default) or for a recipient's X25519
public key (ephemeral-static ECDH, then HKDF), so that a machine holding only the public key
can write keyfiles it cannot itself open.
"""
from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from .derive import hkdf_sha256

NONCE_BYTES = 12
TAG_BYTES = 16
X25519_WRAP_INFO = b"anoncli/x25519-wrap/v1"

# Argon2id defaults: RFC 9106 §4, second recommended option (64 MiB, 3 passes, 4 lanes).
DEFAULT_MEMORY_KIB = 64 * 1024
DEFAULT_ITERATIONS = 3
DEFAULT_LANES = 4
# What a keyfile may ask for: an edited header must not make us allocate terabytes.
MAX_MEMORY_KIB = 4 * 1024 * 1024
MAX_ITERATIONS = 64
MAX_LANES = 64


class AuthenticationFailed(Exception):
    """An AEAD tag did not verify: wrong key, or the data was changed."""


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce || ChaCha20-Poly1305(key, nonce, plaintext, aad); the nonce is random (96 bits)."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise AuthenticationFailed("sealed data too short")
    try:
        return ChaCha20Poly1305(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise AuthenticationFailed("authentication tag does not verify") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, length: int | None = None) -> bytes:
    """Strict base64; raises ValueError on bad text or a wrong length."""
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if length is not None and len(data) != length:
        raise ValueError(f"expected {length} bytes, got {len(data)}")
    return data


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost and salt, stored in the keyfile so the same key can be derived again."""

    salt: bytes
    memory_kib: int = DEFAULT_MEMORY_KIB
    iterations: int = DEFAULT_ITERATIONS
    lanes: int = DEFAULT_LANES

    @classmethod
    def new(cls, memory_kib: int = DEFAULT_MEMORY_KIB, iterations: int = DEFAULT_ITERATIONS,
            lanes: int = DEFAULT_LANES) -> "Argon2Params":
        params = cls(os.urandom(16), memory_kib, iterations, lanes)
        params.check()
        return params

    def check(self) -> None:
        if not 16 <= len(self.salt) <= 64:
            raise ValueError("Argon2id salt must be 16 to 64 bytes")
        if not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"Argon2id lanes must be 1 to {MAX_LANES}")
        if not 8 * self.lanes <= self.memory_kib <= MAX_MEMORY_KIB:
            raise ValueError(f"Argon2id memory must be {8 * self.lanes} KiB to {MAX_MEMORY_KIB} KiB")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise ValueError(f"Argon2id iterations must be 1 to {MAX_ITERATIONS}")

    def to_dict(self) -> dict:
        return {"kind": "argon2id", "salt": b64(self.salt), "memory_kib": self.memory_kib,
                "iterations": self.iterations, "lanes": self.lanes}

    @classmethod
    def from_dict(cls, d: dict) -> "Argon2Params":
        """Validated; raises ValueError for anything out of range or of the wrong type."""
        if not isinstance(d, dict) or d.get("kind") != "argon2id":
            raise ValueError("not Argon2id parameters")
        values = [d.get(k) for k in ("memory_kib", "iterations", "lanes")]
        if not all(type(v) is int for v in values):
            raise ValueError("Argon2id parameters must be integers")
        params = cls(unb64(d.get("salt")), *values)
        params.check()
        return params

    def derive(self, passphrase: bytes) -> bytes:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        return Argon2id(salt=self.salt, length=32, iterations=self.iterations, lanes=self.lanes,
                        memory_cost=self.memory_kib).derive(passphrase)


def fingerprint(public_key: bytes) -> str:
    """A short name for a public key (the first 128 bits of its SHA-256, hex)."""
    return hashlib.sha256(b"anoncli-x25519:" + public_key).hexdigest()[:32]


def generate_keypair() -> tuple[bytes, bytes]:
    """(private, public) raw 32-byte X25519 keys."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    private = X25519PrivateKey.generate()
    return _raw_private(private), _raw_public(private)


def public_from_private(private_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return _raw_public(X25519PrivateKey.from_private_bytes(private_key))


def _raw_private(key) -> bytes:
    from cryptography.hazmat.primitives import serialization as s

    return key.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())


def _raw_public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization as s

    return key.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)


def _recipient_kek(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return hkdf_sha256(shared, ephemeral_public + recipient_public, X25519_WRAP_INFO)


def wrap_for_recipient(recipient_public: bytes, payload: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(ephemeral public key, sealed payload) readable only with the recipient's private key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    ephemeral_public = _raw_public(ephemeral)
    return ephemeral_public, seal(_recipient_kek(shared, ephemeral_public, recipient_public), payload, aad)


def unwrap_with_private(private_key: bytes, ephemeral_public: bytes, sealed: bytes, aad: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    private = X25519PrivateKey.from_private_bytes(private_key)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:  # an all-zero shared secret: the ephemeral key was tampered with
        raise AuthenticationFailed("invalid ephemeral key") from None
    return open_sealed(_recipient_kek(shared, ephemeral_public, _raw_public(private)), sealed, aad)
