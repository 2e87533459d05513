"""Writing and reading keyfiles (layout in ``format``).

One keyfile per run. While a run works, records are appended to ``KEYFILE.partial``
(fsynced before the run's journal names the image done); at the end of every invocation the
keyfile is written atomically: the segments, the last record of every image the manifest
lists, and a seal that binds them to the manifest's hash. A resumed run starts from the
partial file, or from the finished keyfile when there is no partial one.

Passphrase keyfiles have one segment: a resumed run re-derives its data key from the
passphrase. Recipient keyfiles get a new segment (a new data key and master secret) for every
invocation, because the machine that writes them cannot read back what it wrote.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..io.atomic import atomic_writer, write_atomic
from .derive import Keyring
from .envelope import AuthenticationFailed, open_sealed, seal
from .format import (Frame, KeyfileDamaged, KeyfileMismatch, ParsedKeyfile, WrongSecret,
                     canonical_json, encode_frame, encode_preamble, labelled_body, parse_keyfile)

FORMAT_NAME = "anoncli-keyfile"
KEY_BYTES = 32
FILE_MODE = 0o600


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def read_header(path: Path) -> dict:
    """The plain header of a finished or partial keyfile (run id, protection); no secret needed."""
    data = Path(path).read_bytes()
    return parse_keyfile(data, sealed=not str(path).endswith(".partial")).header


def _segment_aad(header_bytes: bytes, index: int) -> bytes:
    return header_bytes + b"S" + str(index).encode()


def _frame_aad(header_digest: bytes, kind: bytes, label_bytes: bytes) -> bytes:
    return header_digest + kind + label_bytes


def _unlock_segment(parsed: ParsedKeyfile, frame: Frame, index: int, unlocker) -> tuple[bytes, bytes]:
    if frame.label.get("segment") != index or not isinstance(frame.label.get("wrap"), dict):
        raise KeyfileDamaged("keyfile segment label is malformed: damaged or edited")
    payload = unlocker.unwrap(parsed.header, frame.label["wrap"], frame.sealed,
                              _segment_aad(parsed.header_bytes, index), first=index == 0)
    if len(payload) != 2 * KEY_BYTES:
        raise KeyfileDamaged("keyfile segment holds a key of the wrong length: damaged or edited")
    return payload[:KEY_BYTES], payload[KEY_BYTES:]


def encode_record(meta: dict, blobs: list[bytes]) -> bytes:
    """An image's sealed content: deflated JSON (with each blob's length), then the blobs."""
    meta_bytes = zlib.compress(canonical_json(meta), 9)
    return struct.pack(">I", len(meta_bytes)) + meta_bytes + b"".join(blobs)


def decode_record(plain: bytes) -> tuple[dict, bytes]:
    if len(plain) < 4:
        raise KeyfileDamaged("keyfile record too short")
    (n,) = struct.unpack(">I", plain[:4])
    if 4 + n > len(plain):
        raise KeyfileDamaged("keyfile record overruns itself")
    try:
        meta = json.loads(zlib.decompress(plain[4:4 + n]))
    except (ValueError, zlib.error):
        raise KeyfileDamaged("keyfile record is not valid JSON") from None
    if not isinstance(meta, dict):
        raise KeyfileDamaged("keyfile record is not a JSON object")
    return meta, plain[4 + n:]


@dataclass
class _Entry:
    input: str
    output_sha256: str
    offset: int   # in the partial file
    length: int


class KeyfileWriter:
    """Appends sealed per-image records for one run; ``finish`` writes the keyfile."""

    def __init__(self, path: Path, run_id: str, protector, header: dict, header_bytes: bytes,
                 segments: list[bytes], keyring: Keyring, data_key: bytes, entries: list[_Entry]):
        self.path, self.partial = Path(path), partial_path(Path(path))
        self.run_id, self.protector, self.header, self.header_bytes = run_id, protector, header, header_bytes
        self.header_digest = hashlib.sha256(header_bytes).digest()
        self.segments, self.keyring, self._data_key, self.entries = segments, keyring, data_key, entries
        self._fh = open(self.partial, "ab")

    def __repr__(self) -> str:
        return f"KeyfileWriter({self.path}, run_id={self.run_id!r})"

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, run_id: str, protector) -> "KeyfileWriter":
        """Start a new keyfile, or continue the one this run began (``KeyfileMismatch`` if
        ``path`` belongs to another run; ``WrongSecret`` if the passphrase differs)."""
        path = Path(path)
        partial = partial_path(path)
        if partial.exists():
            data = partial.read_bytes()
            parsed = parse_keyfile(data, sealed=False)
            _check_run(parsed, run_id, partial)
            if parsed.torn_bytes:
                with open(partial, "r+b") as f:
                    f.truncate(len(data) - parsed.torn_bytes)
                    os.fsync(f.fileno())
        elif path.exists():
            parsed = parse_keyfile(path.read_bytes(), sealed=True)
            _check_run(parsed, run_id, path)
            parsed.frames = parsed.frames[:-1]  # drop the seal; a new one is written at the end
            write_atomic(partial, encode_preamble(parsed.header_bytes) + b"".join(f.encode() for f in parsed.frames), FILE_MODE)
        else:
            return cls._create(path, run_id, protector)
        return cls._continue(path, run_id, protector, parsed)

    @classmethod
    def _create(cls, path: Path, run_id: str, protector) -> "KeyfileWriter":
        header = {"format": FORMAT_NAME, "run_id": run_id, "tool_version": __version__,
                  "created": datetime.now(timezone.utc).isoformat(), **protector.header_fields()}
        header_bytes = canonical_json(header)
        preamble = encode_preamble(header_bytes)
        segment, keyring, data_key = _new_segment(header_bytes, 0, run_id, protector)
        write_atomic(partial_path(path), preamble + segment, FILE_MODE)
        return cls(path, run_id, protector, header, header_bytes, [segment], keyring, data_key, [])

    @classmethod
    def _continue(cls, path: Path, run_id: str, protector, parsed: ParsedKeyfile) -> "KeyfileWriter":
        if parsed.header.get("protection") != protector.kind:
            raise KeyfileMismatch(f"this run's keyfile is protected by a {parsed.header.get('protection')}; "
                                  f"resume it the same way")
        if protector.kind == "recipient" and parsed.header.get("recipient") != protector.fingerprint:
            raise KeyfileMismatch(f"this run's keyfile is for public key {parsed.header.get('recipient')}; "
                                  f"the one given is {protector.fingerprint}")
        segments = [f.encode() for f in parsed.of_kind(b"S")]
        entries, offset = [], len(encode_preamble(parsed.header_bytes))
        for f in parsed.frames:
            size = 5 + len(f.body)
            if f.kind == b"R":
                entries.append(_Entry(str(f.label.get("input")), str(f.label.get("output_sha256")), offset, size))
            offset += size
        if protector.kind == "passphrase":
            data_key, master = _unlock_segment(parsed, parsed.frames[0], 0, protector)
            keyring = Keyring(run_id, 0, master)
            writer = cls(path, run_id, protector, parsed.header, parsed.header_bytes, segments, keyring, data_key, entries)
        else:
            index = len(segments)
            segment, keyring, data_key = _new_segment(parsed.header_bytes, index, run_id, protector)
            writer = cls(path, run_id, protector, parsed.header, parsed.header_bytes, segments + [segment],
                         keyring, data_key, entries)
            writer._fh.write(segment)
            writer.flush()
        return writer

    # -- writing -------------------------------------------------------------------------
    def recorded(self) -> dict[str, str]:
        """input -> anonymized file hash of the latest record of each image."""
        return {e.input: e.output_sha256 for e in self.entries}

    def append(self, input_rel: str, output_sha256: str, meta: dict, blobs: list[bytes]) -> int:
        """Seal one image's record and append it (durable after ``flush``); returns its size in bytes."""
        label = {"input": input_rel, "output_sha256": output_sha256, "segment": self.keyring.segment}
        label_bytes = canonical_json(label)
        sealed = seal(self._data_key, encode_record(meta, blobs), _frame_aad(self.header_digest, b"R", label_bytes))
        frame = encode_frame(b"R", labelled_body(label, sealed))
        offset = self._fh.tell()
        self._fh.write(frame)
        self.entries.append(_Entry(input_rel, output_sha256, offset, len(frame)))
        return len(frame)

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def finish(self, manifest_sha256: str, keep: dict[str, str], run_info: dict) -> dict:
        """Write the keyfile: segments, the latest record of every image whose anonymized
        hash ``keep`` lists, and the seal. Returns sizes (bytes) for the run summary."""
        self.flush()
        latest: dict[str, _Entry] = {}
        for e in self.entries:
            if keep.get(e.input) == e.output_sha256:
                latest[e.input] = e
        chosen = sorted(latest.values(), key=lambda e: e.offset)
        digest = hashlib.sha256()
        record_digests = []
        with open(self.partial, "rb") as src, atomic_writer(self.path, FILE_MODE) as dst:
            def put(chunk: bytes) -> None:
                dst.write(chunk)
                digest.update(chunk)

            put(encode_preamble(self.header_bytes))
            for s in self.segments:
                put(s)
            record_bytes = 0
            for e in chosen:
                src.seek(e.offset)
                frame = src.read(e.length)
                record_digests.append(hashlib.sha256(frame).hexdigest())
                record_bytes += len(frame)
                put(frame)
            seal_meta = {**run_info, "run_id": self.run_id, "manifest_sha256": manifest_sha256,
                         "segments": [hashlib.sha256(s).hexdigest() for s in self.segments],
                         "records": record_digests, "sealed": datetime.now(timezone.utc).isoformat()}
            label = {"segment": self.keyring.segment}
            label_bytes = canonical_json(label)
            sealed = seal(self._data_key, canonical_json(seal_meta), _frame_aad(self.header_digest, b"Z", label_bytes))
            put(encode_frame(b"Z", labelled_body(label, sealed)))
            dst.write(digest.digest())
        self.close()
        self.partial.unlink()
        total = self.path.stat().st_size
        return {"bytes": total, "record_bytes": record_bytes, "records": len(chosen)}


def _new_segment(header_bytes: bytes, index: int, run_id: str, protector) -> tuple[bytes, Keyring, bytes]:
    data_key, master = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
    wrap, sealed = protector.wrap(data_key + master, _segment_aad(header_bytes, index))
    frame = encode_frame(b"S", labelled_body({"segment": index, "wrap": wrap}, sealed))
    return frame, Keyring(run_id, index, master), data_key


def _check_run(parsed: ParsedKeyfile, run_id: str, where: Path) -> None:
    if parsed.header.get("format") != FORMAT_NAME:
        raise KeyfileDamaged(f"{where} is not an anoncli keyfile")
    if parsed.header.get("run_id") != run_id:
        raise KeyfileMismatch(f"{where} belongs to another run (run id {parsed.header.get('run_id')}, "
                              f"this output folder's run is {run_id}); choose another --keyfile path")


class KeyfileReader:
    """A finished keyfile, opened and checked: checksum, data keys, seal, frame digests."""

    def __init__(self, path: Path, unlocker):
        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise KeyfileDamaged(f"cannot read keyfile {path}: {e.strerror or e}") from None
        self._parsed = parsed = parse_keyfile(data, sealed=True)
        if parsed.header.get("format") != FORMAT_NAME or not isinstance(parsed.header.get("run_id"), str):
            raise KeyfileDamaged("keyfile header is not an anoncli keyfile header: damaged or edited")
        self.header = parsed.header
        self.run_id = parsed.header["run_id"]
        segments = parsed.of_kind(b"S")
        self._keys: list[tuple[bytes, bytes]] = [_unlock_segment(parsed, f, i, unlocker) for i, f in enumerate(segments)]
        seal_frame = parsed.frames[-1]
        self.seal = self._open_seal(seal_frame)
        records = parsed.of_kind(b"R")
        if (self.seal.get("segments") != [f.digest for f in segments]
                or self.seal.get("records") != [f.digest for f in records]
                or self.seal.get("run_id") != self.run_id):
            raise KeyfileDamaged("keyfile frames do not match its seal: frames were added, removed or edited")
        self.records: dict[str, Frame] = {}
        for f in records:
            name = f.label.get("input")
            if not isinstance(name, str) or name in self.records:
                raise KeyfileDamaged("keyfile record labels are malformed: damaged or edited")
            self.records[name] = f

    def _open_seal(self, frame: Frame) -> dict:
        index = frame.label.get("segment")
        if type(index) is not int or not 0 <= index < len(self._keys):
            raise KeyfileDamaged("keyfile seal names no segment: damaged or edited")
        try:
            plain = open_sealed(self._keys[index][0], frame.sealed,
                                _frame_aad(self._parsed.header_digest, b"Z", frame.label_bytes))
            meta = json.loads(plain)
        except (AuthenticationFailed, ValueError):
            raise KeyfileDamaged("keyfile seal does not verify: the keyfile was tampered with") from None
        if not isinstance(meta, dict):
            raise KeyfileDamaged("keyfile seal is malformed")
        return meta

    @property
    def manifest_sha256(self) -> str:
        return str(self.seal.get("manifest_sha256"))

    def keyring(self, segment: int) -> Keyring:
        return Keyring(self.run_id, segment, self._keys[segment][1])

    def record(self, input_rel: str) -> tuple[dict, bytes, Keyring] | None:
        """The image's (metadata, blobs, keyring of its segment), or None if the keyfile has none."""
        frame = self.records.get(input_rel)
        if frame is None:
            return None
        index = frame.label.get("segment")
        if type(index) is not int or not 0 <= index < len(self._keys):
            raise KeyfileDamaged(f"keyfile record for {input_rel} names no segment: damaged or edited")
        try:
            plain = open_sealed(self._keys[index][0], frame.sealed,
                                _frame_aad(self._parsed.header_digest, b"R", frame.label_bytes))
        except AuthenticationFailed:
            raise KeyfileDamaged(f"keyfile record for {input_rel} does not verify: tampered") from None
        meta, blobs = decode_record(plain)
        return meta, blobs, self.keyring(index)

    def output_sha256(self, input_rel: str) -> str | None:
        frame = self.records.get(input_rel)
        return None if frame is None else frame.label.get("output_sha256")


__all__ = ["KeyfileWriter", "KeyfileReader", "KeyfileDamaged", "KeyfileMismatch", "WrongSecret",
           "partial_path", "read_header"]
