"""How a keyfile segment's data key is protected: a passphrase, or a recipient's public key.

A protector wraps (``wrap``) when writing; an unlocker opens (``unwrap``) when reading. The
passphrase does both; a recipient's public key can only wrap, its private key only unwrap.
"""
from __future__ import annotations

from .envelope import (Argon2Params, AuthenticationFailed, b64, fingerprint, open_sealed,
                       public_from_private, seal, unb64, unwrap_with_private, wrap_for_recipient)
from .format import KeyfileDamaged, WrongSecret, canonical_json


class Passphrase:
    kind = "passphrase"

    def __init__(self, passphrase: bytes, params: Argon2Params | None = None):
        if not passphrase:
            raise ValueError("the passphrase is empty")
        self._passphrase = passphrase
        self._params = params
        self._keks: dict[tuple, bytes] = {}

    def __repr__(self) -> str:
        return "Passphrase(***)"

    def _kek(self, params: Argon2Params) -> bytes:
        cache_key = (params.salt, params.memory_kib, params.iterations, params.lanes)
        if cache_key not in self._keks:
            self._keks[cache_key] = params.derive(self._passphrase)
        return self._keks[cache_key]

    def header_fields(self) -> dict:
        return {"protection": self.kind}

    def wrap(self, payload: bytes, aad_prefix: bytes) -> tuple[dict, bytes]:
        params = self._params or Argon2Params.new()
        self._params = params
        wrap = params.to_dict()
        return wrap, seal(self._kek(params), payload, aad_prefix + _label_aad(wrap))

    def unwrap(self, header: dict, wrap: dict, sealed: bytes, aad_prefix: bytes, first: bool) -> bytes:
        _require_protection(header, self.kind)
        try:
            params = Argon2Params.from_dict(wrap)
        except ValueError as e:
            raise KeyfileDamaged(f"keyfile key-derivation parameters are invalid ({e}); damaged or edited") from None
        try:
            return open_sealed(self._kek(params), sealed, aad_prefix + _label_aad(wrap))
        except AuthenticationFailed:
            if first:
                raise WrongSecret("wrong passphrase for this keyfile") from None
            raise KeyfileDamaged("a keyfile segment does not open with a passphrase that opens the first: tampered") from None


class Recipient:
    """Wraps for a public key; cannot unwrap (the anonymizing machine need not hold any secret)."""

    kind = "recipient"

    def __init__(self, public_key: bytes):
        self.public_key = public_key
        self.fingerprint = fingerprint(public_key)

    def header_fields(self) -> dict:
        return {"protection": self.kind, "recipient": self.fingerprint}

    def wrap(self, payload: bytes, aad_prefix: bytes) -> tuple[dict, bytes]:
        return _wrap_with_label(self.public_key, payload, aad_prefix)

    def unwrap(self, *args, **kwargs) -> bytes:
        raise WrongSecret("a public key cannot open a keyfile; restore with the private key (--private-key)")


def _wrap_with_label(public_key: bytes, payload: bytes, aad_prefix: bytes) -> tuple[dict, bytes]:
    """The label names the recipient and holds the ephemeral public key, which is bound
    through the key derivation (it salts the HKDF), not through the AAD."""
    wrap = {"kind": "x25519", "recipient": fingerprint(public_key)}
    ephemeral_public, sealed = wrap_for_recipient(public_key, payload, aad_prefix + _label_aad(wrap))
    return {**wrap, "ephemeral": b64(ephemeral_public)}, sealed


class PrivateKey:
    kind = "recipient"

    def __init__(self, private_key: bytes):
        self._private = private_key
        self.fingerprint = fingerprint(public_from_private(private_key))

    def __repr__(self) -> str:
        return f"PrivateKey(fingerprint={self.fingerprint})"

    def unwrap(self, header: dict, wrap: dict, sealed: bytes, aad_prefix: bytes, first: bool) -> bytes:
        _require_protection(header, self.kind)
        if header.get("recipient") != self.fingerprint:
            raise WrongSecret(f"this keyfile was made for public key {header.get('recipient')}; "
                              f"the private key given is for {self.fingerprint}")
        if not isinstance(wrap, dict) or wrap.get("kind") != "x25519" or wrap.get("recipient") != self.fingerprint:
            raise KeyfileDamaged("keyfile segment names another recipient: damaged or edited")
        try:
            ephemeral = unb64(wrap.get("ephemeral"), 32)
        except ValueError:
            raise KeyfileDamaged("keyfile segment has a malformed ephemeral key: damaged or edited") from None
        bound = {k: v for k, v in wrap.items() if k != "ephemeral"}
        try:
            return unwrap_with_private(self._private, ephemeral, sealed, aad_prefix + _label_aad(bound))
        except AuthenticationFailed:
            raise KeyfileDamaged("keyfile segment does not open with the right private key: tampered") from None


def _require_protection(header: dict, kind: str) -> None:
    have = header.get("protection")
    if have != kind:
        need = {"passphrase": "a passphrase", "recipient": "a private key (--private-key)"}.get(have, repr(have))
        raise WrongSecret(f"this keyfile is opened with {need}")


def _label_aad(wrap: dict) -> bytes:
    return canonical_json(wrap)
