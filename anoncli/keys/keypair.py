"""Recipient key pairs on disk: ``NAME.pub`` (one line of text) and ``NAME`` (the private key,
mode 0600, encrypted with a passphrase through Argon2id unless asked not to be)."""
from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import write_atomic
from .envelope import Argon2Params, AuthenticationFailed, b64, fingerprint, generate_keypair, open_sealed, seal, unb64
from .format import WrongSecret

PUBLIC_PREFIX = "anoncli-public-key-v1 "
PRIVATE_FORMAT = "anoncli-private-key"
_AAD = b"anoncli-private-key-v1"


class KeyMaterialError(Exception):
    """A key file that cannot be read or is not what it claims to be."""


def write_keypair(private_path: Path, passphrase: bytes | None) -> tuple[Path, str]:
    """Create a key pair; returns (public key path, fingerprint). Refuses to overwrite."""
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise KeyMaterialError(f"{p} exists; choose another name or remove it first")
    private, public = generate_keypair()
    if passphrase is None:
        protection, key = None, b64(private)
    else:
        params = Argon2Params.new()
        protection, key = params.to_dict(), b64(seal(params.derive(passphrase), private, _AAD + public))
    doc = {"format": PRIVATE_FORMAT, "version": 1, "public": b64(public), "fingerprint": fingerprint(public),
           "protection": protection, "key": key}
    write_atomic(private_path, json.dumps(doc, indent=1).encode() + b"\n", mode=0o600)
    write_atomic(public_path, (PUBLIC_PREFIX + b64(public) + "\n").encode())
    return public_path, fingerprint(public)


def read_public_key(path: Path) -> bytes:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise KeyMaterialError(f"cannot read public key {path}: {getattr(e, 'strerror', None) or e}") from None
    if not text.startswith(PUBLIC_PREFIX):
        raise KeyMaterialError(f"{path} is not an anoncli public key (made by `anoncli keygen`)")
    try:
        return unb64(text[len(PUBLIC_PREFIX):], 32)
    except ValueError:
        raise KeyMaterialError(f"{path} holds a malformed public key") from None


def private_key_is_protected(path: Path) -> bool:
    return _load_private_doc(path).get("protection") is not None


def _load_private_doc(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise KeyMaterialError(f"cannot read private key {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(doc, dict) or doc.get("format") != PRIVATE_FORMAT:
        raise KeyMaterialError(f"{path} is not an anoncli private key (made by `anoncli keygen`)")
    return doc


def read_private_key(path: Path, passphrase: bytes | None) -> bytes:
    doc = _load_private_doc(path)
    try:
        public = unb64(doc.get("public"), 32)
        if doc.get("protection") is None:
            private = unb64(doc.get("key"), 32)
        else:
            if passphrase is None:
                raise KeyMaterialError(f"private key {path} is protected by a passphrase")
            params = Argon2Params.from_dict(doc["protection"])
            private = open_sealed(params.derive(passphrase), unb64(doc.get("key")), _AAD + public)
    except AuthenticationFailed:
        raise WrongSecret(f"wrong passphrase for private key {path}") from None
    except (ValueError, KeyError, TypeError):
        raise KeyMaterialError(f"private key {path} is malformed") from None
    from .envelope import public_from_private

    if public_from_private(private) != public:
        raise KeyMaterialError(f"private key {path} does not match its own public key")
    return private
