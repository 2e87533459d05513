"""The keyfile's byte layout, parsed strictly: any damage is a ``KeyfileDamaged``, never a traceback.

    magic (16) | version u16 | header length u32 | header (JSON)
    frame*     where frame = kind (1 byte) | length u32 | body
    checksum   SHA-256 of everything before it (sealed files only)

Frame kinds: ``S`` a segment (how its data key is wrapped, and the wrapped data key and
master secret), ``R`` one image's record (a plain label naming the image, then the sealed
per-face data), ``Z`` the seal (sealed: run id, manifest hash, digests of every other frame).
A file being written has no seal and no checksum, and may end in a torn frame.
Integers are big-endian. The checksum only tells damage from a wrong passphrase; integrity
against a deliberate edit comes from the AEAD tags and the digests inside the seal.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

MAGIC = b"ANONCLI-KEYFILE\n"
VERSION = 1
MAX_HEADER = 64 * 1024
MAX_LABEL = 64 * 1024
CHECKSUM_BYTES = 32
FRAME_KINDS = (b"S", b"R", b"Z")


class KeyfileError(Exception):
    """A keyfile problem the user must act on; ``exit_code`` is the CLI's exit status."""

    exit_code = 5


class KeyfileDamaged(KeyfileError):
    """Not a keyfile, truncated, or edited."""

    exit_code = 5


class WrongSecret(KeyfileError):
    """The passphrase or private key does not open this keyfile."""

    exit_code = 4


class KeyfileMismatch(KeyfileError):
    """The keyfile is sound but belongs to another run or another manifest."""

    exit_code = 6


@dataclass
class Frame:
    kind: bytes
    body: bytes
    label: dict = field(default_factory=dict)   # the plain JSON part (authenticated as AAD)
    sealed: bytes = b""                          # the AEAD part
    label_bytes: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.kind, self.body)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()


@dataclass
class ParsedKeyfile:
    header: dict
    header_bytes: bytes
    frames: list[Frame]
    sealed: bool
    torn_bytes: int = 0   # bytes of an incomplete last frame (partial files only)

    @property
    def header_digest(self) -> bytes:
        return hashlib.sha256(self.header_bytes).digest()

    def of_kind(self, kind: bytes) -> list[Frame]:
        return [f for f in self.frames if f.kind == kind]


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode_preamble(header_bytes: bytes) -> bytes:
    if len(header_bytes) > MAX_HEADER:
        raise ValueError("keyfile header too large")
    return MAGIC + struct.pack(">HI", VERSION, len(header_bytes)) + header_bytes


def encode_frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body)) + body


def labelled_body(label: dict, sealed: bytes) -> bytes:
    label_bytes = canonical_json(label)
    return struct.pack(">I", len(label_bytes)) + label_bytes + sealed


def _json_object(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeyfileDamaged(f"keyfile {what} is not valid JSON (damaged or edited)") from None
    if not isinstance(obj, dict):
        raise KeyfileDamaged(f"keyfile {what} is not a JSON object (damaged or edited)")
    return obj


def _split_label(kind: bytes, body: bytes) -> Frame:
    if len(body) < 4:
        raise KeyfileDamaged("keyfile frame too short (damaged or edited)")
    (n,) = struct.unpack(">I", body[:4])
    if n > MAX_LABEL or 4 + n > len(body):
        raise KeyfileDamaged("keyfile frame label overruns its frame (damaged or edited)")
    label_bytes = body[4:4 + n]
    return Frame(kind, body, _json_object(label_bytes, "frame label"), body[4 + n:], label_bytes)


def parse_keyfile(data: bytes, *, sealed: bool) -> ParsedKeyfile:
    """Parse ``data``. ``sealed``: a finished keyfile (checksum and one final seal frame
    required); otherwise a file being written (no seal; a torn last frame is reported in
    ``torn_bytes`` rather than refused)."""
    if not isinstance(data, (bytes, bytearray)):
        raise KeyfileDamaged("keyfile must be bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) + 6 or not data.startswith(MAGIC):
        raise KeyfileDamaged("not an anoncli keyfile (wrong magic bytes or too short)")
    if sealed:
        if len(data) < len(MAGIC) + 6 + CHECKSUM_BYTES:
            raise KeyfileDamaged("truncated")
        body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if hashlib.sha256(body).digest() != checksum:
            raise KeyfileDamaged("its checksum does not match: the file was truncated, damaged or edited")
        data = body
    version, header_len = struct.unpack(">HI", data[len(MAGIC):len(MAGIC) + 6])
    if version != VERSION:
        raise KeyfileDamaged(f"keyfile version {version} is not supported (this anoncli reads version {VERSION})")
    start = len(MAGIC) + 6
    if header_len > MAX_HEADER or start + header_len > len(data):
        raise KeyfileDamaged("keyfile header overruns the file (truncated or edited)")
    header_bytes = data[start:start + header_len]
    header = _json_object(header_bytes, "header")
    frames: list[Frame] = []
    pos, torn = start + header_len, 0
    while pos < len(data):
        if pos + 5 > len(data) or pos + 5 + struct.unpack(">I", data[pos + 1:pos + 5])[0] > len(data):
            if sealed:
                raise KeyfileDamaged("keyfile frame overruns the file (truncated or edited)")
            torn = len(data) - pos
            break
        kind = data[pos:pos + 1]
        (length,) = struct.unpack(">I", data[pos + 1:pos + 5])
        if kind not in FRAME_KINDS:
            raise KeyfileDamaged("unknown keyfile frame kind (damaged or edited)")
        frames.append(_split_label(kind, data[pos + 5:pos + 5 + length]))
        pos += 5 + length
    seals = [i for i, f in enumerate(frames) if f.kind == b"Z"]
    if sealed and seals != [len(frames) - 1]:
        raise KeyfileDamaged("keyfile has no final seal (it was not finished, or was edited)")
    if not sealed and seals:
        raise KeyfileDamaged("keyfile being written holds a seal (damaged or edited)")
    if not frames or frames[0].kind != b"S":
        if sealed or frames:
            raise KeyfileDamaged("keyfile does not start with a key segment (damaged or edited)")
    return ParsedKeyfile(header, header_bytes, frames, sealed, torn)


def finish(body_without_checksum: bytes) -> bytes:
    return body_without_checksum + hashlib.sha256(body_without_checksum).digest()
