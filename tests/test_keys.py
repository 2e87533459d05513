"""Key derivation against fixed vectors, envelope encryption, the keyfile format under fuzzing,
the escrow codec and key-pair files."""
from __future__ import annotations

import hashlib
import hmac
import os
import random
import stat

import numpy as np
import pytest

from anoncli.keys.derive import FaceKey, Keyring, face_id, face_key, hkdf_sha256, key_rng
from anoncli.keys.envelope import Argon2Params, AuthenticationFailed, generate_keypair, open_sealed, seal
from anoncli.keys.escrow import changed_box, compress_patch, decompress_patch
from anoncli.keys.format import KeyfileDamaged, KeyfileError, KeyfileMismatch, WrongSecret, parse_keyfile
from anoncli.keys.keyfile import KeyfileReader, KeyfileWriter, partial_path
from anoncli.keys.keypair import KeyMaterialError, read_private_key, read_public_key, write_keypair
from anoncli.keys.protect import Passphrase, PrivateKey, Recipient

FAST = Argon2Params(b"s" * 16, memory_kib=64, iterations=1, lanes=1)


def fast_passphrase(secret: bytes = b"correct horse battery") -> Passphrase:
    return Passphrase(secret, Argon2Params.new(64, 1, 1))


# -- derivation ------------------------------------------------------------------------------

def test_hkdf_matches_rfc5869_test_cases():
    # RFC 5869 appendix A.1 and A.3.
    ikm = bytes.fromhex("0b" * 22)
    okm = hkdf_sha256(ikm, bytes.fromhex("000102030405060708090a0b0c"), bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")
    okm = hkdf_sha256(ikm, b"", b"", 42)
    assert okm.hex() == ("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                         "9d201395faa4b61a96c8")


def _reference_face_key(master: bytes, run_id: str, fid: str) -> bytes:
    """HKDF written out from RFC 5869 with hmac, independent of the code under test."""
    prk = hmac.new(run_id.encode(), master, hashlib.sha256).digest()
    return hmac.new(prk, b"anoncli/face-key/v1\x00" + fid.encode() + b"\x01", hashlib.sha256).digest()


def test_face_key_fixed_vector():
    master = bytes(range(32))
    run_id = "00112233445566778899aabbccddeeff"
    fid = face_id("group/three-faces.png", "ab" * 32, 1)
    key = face_key(master, run_id, fid)
    assert key == _reference_face_key(master, run_id, fid)
    assert key.hex() == FACE_KEY_VECTOR


FACE_KEY_VECTOR = "43290fdcfc4174bf54711536bf2e0dac20ef8ca89a59f1e8e874dbb6639530f5"


def test_two_faces_of_one_image_get_unrelated_keys():
    ring = Keyring("run", 0, os.urandom(32))
    a, b = ring.face("x.jpg", "00" * 32, 0), ring.face("x.jpg", "00" * 32, 1)
    assert a.secret != b.secret and len(a.secret) == 32
    # Knowing one face's key (a leaked pair) gives nothing about the other: they differ in about
    # half their bits, as independent keys do.
    differing = bin(int.from_bytes(a.secret, "big") ^ int.from_bytes(b.secret, "big")).count("1")
    assert 80 < differing < 176
    assert ring.face("x.jpg", "00" * 32, 0).secret == a.secret  # deterministic
    assert Keyring("run", 0, os.urandom(32)).face("x.jpg", "00" * 32, 0).secret != a.secret
    assert Keyring("other-run", 0, ring.master).face("x.jpg", "00" * 32, 0).secret != a.secret


def test_key_rng_is_deterministic_per_key_and_repr_hides_secret():
    key = bytes(32)
    assert np.array_equal(key_rng(key).random(4), key_rng(key).random(4))
    assert not np.array_equal(key_rng(key).random(4), key_rng(b"\x01" + bytes(31)).random(4))
    fk = FaceKey("f", b"\xaa" * 32)
    assert "aa" not in repr(fk).lower().replace("face", "")
    assert "master" not in repr(Keyring("r", 0, b"\xbb" * 32)) and "bb" not in repr(Keyring("r", 0, b"\xbb" * 32))


# -- envelope --------------------------------------------------------------------------------

def test_seal_roundtrip_and_every_tamper_is_detected():
    key = os.urandom(32)
    blob = seal(key, b"secret pixels", b"aad")
    assert open_sealed(key, blob, b"aad") == b"secret pixels"
    with pytest.raises(AuthenticationFailed):
        open_sealed(key, blob, b"other aad")
    with pytest.raises(AuthenticationFailed):
        open_sealed(os.urandom(32), blob, b"aad")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x40
        with pytest.raises(AuthenticationFailed):
            open_sealed(key, bytes(bad), b"aad")
    assert seal(key, b"x", b"") != seal(key, b"x", b"")  # fresh nonce every time


def test_argon2_parameters_are_bounded():
    Argon2Params(b"s" * 16, 64 * 1024, 3, 4).check()
    for bad in ({"memory_kib": 2 ** 40}, {"iterations": 0}, {"lanes": 0}, {"memory_kib": 7, "lanes": 1}):
        d = {**Argon2Params(b"s" * 16, 64, 1, 1).to_dict(), **bad}
        with pytest.raises(ValueError):
            Argon2Params.from_dict(d)
    with pytest.raises(ValueError):
        Argon2Params.from_dict({**FAST.to_dict(), "iterations": "3"})


# -- keyfile writer and reader ---------------------------------------------------------------

def write_keyfile(path, protector, run_id="run-1", images=3, faces=2):
    w = KeyfileWriter.open(path, run_id, protector)
    keep = {}
    for i in range(images):
        rel, out_sha = f"img{i}.png", hashlib.sha256(str(i).encode()).hexdigest()
        meta = {"input": rel, "faces": [{"index": j, "face_id": face_id(rel, "00", j), "params": {}} for j in range(faces)]}
        w.append(rel, out_sha, meta, [b"blob-%d" % i])
        keep[rel] = out_sha
    w.flush()
    sizes = w.finish("m" * 64, keep, {"method": "blur", "escrow": False})
    return w, keep, sizes


def test_keyfile_roundtrip_passphrase(tmp_path):
    path = tmp_path / "k.key"
    writer, keep, sizes = write_keyfile(path, fast_passphrase())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not partial_path(path).exists()
    reader = KeyfileReader(path, Passphrase(b"correct horse battery"))
    assert reader.run_id == "run-1" and reader.manifest_sha256 == "m" * 64 and reader.seal["method"] == "blur"
    meta, blobs, ring = reader.record("img1.png")
    assert blobs == b"blob-1" and meta["input"] == "img1.png"
    assert ring.master == writer.keyring.master
    assert reader.output_sha256("img2.png") == keep["img2.png"]
    assert reader.record("nope.png") is None
    data = path.read_bytes()
    assert writer.keyring.master not in data and b"blob-1" not in data  # nothing in the clear


def test_wrong_passphrase_is_wrong_secret_not_damage(tmp_path):
    path = tmp_path / "k.key"
    write_keyfile(path, fast_passphrase())
    with pytest.raises(WrongSecret):
        KeyfileReader(path, Passphrase(b"not the passphrase"))


def test_recipient_keyfile_opens_only_with_the_private_key(tmp_path):
    private, public = generate_keypair()
    path = tmp_path / "k.key"
    write_keyfile(path, Recipient(public))
    assert KeyfileReader(path, PrivateKey(private)).record("img0.png")[1] == b"blob-0"
    other, _ = generate_keypair()
    with pytest.raises(WrongSecret):
        KeyfileReader(path, PrivateKey(other))
    with pytest.raises(WrongSecret):
        KeyfileReader(path, Passphrase(b"whatever passphrase"))


def test_resume_appends_and_drops_stale_records(tmp_path):
    path = tmp_path / "k.key"
    protector = fast_passphrase()
    write_keyfile(path, protector, images=2)
    w = KeyfileWriter.open(path, "run-1", Passphrase(b"correct horse battery"))
    assert set(w.recorded()) == {"img0.png", "img1.png"}
    w.append("img2.png", "c" * 64, {"faces": []}, [])
    w.append("img1.png", "stale", {"faces": []}, [])   # redone later, with another output
    w.append("img1.png", "d" * 64, {"faces": []}, [b"new"])
    keep = {"img0.png": hashlib.sha256(b"0").hexdigest(), "img1.png": "d" * 64, "img2.png": "c" * 64}
    w.finish("n" * 64, keep, {})
    reader = KeyfileReader(path, Passphrase(b"correct horse battery"))
    assert sorted(reader.records) == ["img0.png", "img1.png", "img2.png"]
    assert reader.record("img1.png")[1] == b"new" and reader.manifest_sha256 == "n" * 64
    # A passphrase keyfile keeps one segment (one master secret) across resumes.
    assert len(parse_keyfile(path.read_bytes(), sealed=True).of_kind(b"S")) == 1
    with pytest.raises(WrongSecret):
        KeyfileWriter.open(path, "run-1", Passphrase(b"another passphrase"))
    with pytest.raises(KeyfileMismatch):
        KeyfileWriter.open(path, "run-2", Passphrase(b"correct horse battery"))


def test_recipient_resume_adds_a_segment_and_reads_both(tmp_path):
    private, public = generate_keypair()
    path = tmp_path / "k.key"
    write_keyfile(path, Recipient(public), images=1)
    w = KeyfileWriter.open(path, "run-1", Recipient(public))
    w.append("late.png", "e" * 64, {"faces": []}, [b"late"])
    w.finish("z" * 64, {"img0.png": hashlib.sha256(b"0").hexdigest(), "late.png": "e" * 64}, {})
    reader = KeyfileReader(path, PrivateKey(private))
    assert reader.record("img0.png")[2].segment == 0 and reader.record("late.png")[2].segment == 1
    assert reader.record("late.png")[1] == b"late"
    _, other_public = generate_keypair()
    with pytest.raises(KeyfileMismatch):
        KeyfileWriter.open(path, "run-1", Recipient(other_public))


def test_torn_partial_is_trimmed_on_resume(tmp_path):
    path = tmp_path / "k.key"
    w = KeyfileWriter.open(path, "run-1", fast_passphrase())
    w.append("a.png", "a" * 64, {"faces": []}, [])
    w.flush()
    w.close()
    with open(partial_path(path), "ab") as f:
        f.write(b"R\x00\x00\x10\x00half a frame")
    w = KeyfileWriter.open(path, "run-1", Passphrase(b"correct horse battery"))
    assert w.recorded() == {"a.png": "a" * 64}
    w.finish("m" * 64, {"a.png": "a" * 64}, {})
    assert KeyfileReader(path, Passphrase(b"correct horse battery")).record("a.png") is not None


def test_every_single_byte_edit_is_refused_as_damaged(tmp_path):
    path = tmp_path / "k.key"
    write_keyfile(path, fast_passphrase(), images=1, faces=1)
    data = path.read_bytes()
    secret = Passphrase(b"correct horse battery")
    for i in range(0, len(data), max(1, len(data) // 200)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(KeyfileDamaged):
            KeyfileReader(path, secret)


def test_edit_with_recomputed_checksum_is_caught_by_the_aead(tmp_path):
    """A deliberate editor can fix the plain checksum; the tags and the seal still refuse."""
    path = tmp_path / "k.key"
    write_keyfile(path, fast_passphrase(), images=2, faces=1)
    data = path.read_bytes()[:-32]
    parsed = parse_keyfile(path.read_bytes(), sealed=True)
    record_start = data.index(parsed.of_kind(b"R")[0].encode())
    targets = {"header": 30, "segment": data.index(parsed.frames[0].encode()) + 40,
               "record label": record_start + 15, "record body": record_start + 150, "seal": len(data) - 10}
    for where, i in targets.items():
        bad = bytearray(data)
        bad[i] ^= 0x01
        path.write_bytes(bytes(bad) + hashlib.sha256(bytes(bad)).digest())
        with pytest.raises(KeyfileError) as err:
            KeyfileReader(path, Passphrase(b"correct horse battery"))
        assert isinstance(err.value, (KeyfileDamaged, WrongSecret)), where
    # Dropping a whole record (and fixing the checksum) is caught by the seal's digest list.
    frame = parsed.of_kind(b"R")[1].encode()
    cut = data.replace(frame, b"")
    path.write_bytes(cut + hashlib.sha256(cut).digest())
    with pytest.raises(KeyfileDamaged, match="seal"):
        KeyfileReader(path, Passphrase(b"correct horse battery"))


def test_parser_survives_10000_fuzzed_inputs(tmp_path):
    path = tmp_path / "k.key"
    write_keyfile(path, fast_passphrase(), images=2, faces=2)
    sealed = path.read_bytes()
    w = KeyfileWriter.open(tmp_path / "p.key", "run-p", fast_passphrase())
    w.append("a.png", "a" * 64, {"faces": []}, [b"x"])
    w.flush()
    partial = partial_path(tmp_path / "p.key").read_bytes()
    rng = random.Random(20261123)
    outcomes = {"parsed": 0, "refused": 0}
    for n in range(10_000):
        base = sealed if n % 2 == 0 else partial
        data = bytearray(base)
        action = rng.choice(("truncate", "flip", "flips", "insert", "splice"))
        if action == "truncate":
            data = data[:rng.randrange(len(data))]
        elif action == "flip":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif action == "flips":
            for _ in range(rng.randrange(2, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif action == "insert":
            i = rng.randrange(len(data))
            data[i:i] = os.urandom(rng.randrange(1, 16))
        else:
            i, j = sorted(rng.randrange(len(data)) for _ in range(2))
            data = data[:i] + data[j:]
        for is_sealed in (True, False):
            try:
                parse_keyfile(bytes(data), sealed=is_sealed)
                outcomes["parsed"] += 1
            except KeyfileDamaged:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 10_000  # every damaged sealed file, and most partial ones


def test_reader_on_fuzzed_sealed_files_never_raises_anything_else(tmp_path):
    path = tmp_path / "k.key"
    write_keyfile(path, fast_passphrase(), images=1, faces=1)
    good = path.read_bytes()
    rng = random.Random(7)
    secret = Passphrase(b"correct horse battery")
    for _ in range(300):
        data = bytearray(good)
        if rng.random() < 0.5:
            data = data[:rng.randrange(len(data))]
        else:
            data[rng.randrange(len(data))] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(KeyfileError):
            KeyfileReader(path, secret)


# -- escrow codec ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,channels", [(np.uint8, 1), (np.uint8, 2), (np.uint8, 3), (np.uint8, 4),
                                            (np.uint16, 1), (np.uint16, 3), (np.uint16, 4)])
def test_escrow_codec_is_lossless(dtype, channels):
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    arr = rng.integers(0, top + 1, (37, 23, channels), dtype=np.int64).astype(dtype)
    arr[5:9] = top  # wrap-around in the up filter
    desc, data = compress_patch(arr)
    back = decompress_patch(desc, data)
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_escrow_codec_refuses_inconsistent_descriptions():
    desc, data = compress_patch(np.zeros((4, 4, 3), np.uint8))
    for bad in ({**desc, "shape": [4, 5, 3]}, {**desc, "codec": "png"}, {**desc, "dtype": "float32"},
                {**desc, "shape": [-1, 4, 3]}, {**desc, "shape": [1 << 15, 1 << 15, 4]}):
        with pytest.raises(ValueError):
            decompress_patch(bad, data)
    with pytest.raises(ValueError):
        decompress_patch(desc, b"not zlib")


def test_changed_box_closed_form():
    mask = np.zeros((10, 12), np.float32)
    assert changed_box(mask) is None
    mask[2:5, 3:9] = 0.1
    assert changed_box(mask) == (3, 2, 9, 5)


# -- key pairs -------------------------------------------------------------------------------

def test_keypair_files(tmp_path):
    priv_path = tmp_path / "owner"
    pub_path, fp = write_keypair(priv_path, b"private key passphrase")
    assert stat.S_IMODE(priv_path.stat().st_mode) == 0o600
    public = read_public_key(pub_path)
    private = read_private_key(priv_path, b"private key passphrase")
    assert PrivateKey(private).fingerprint == Recipient(public).fingerprint == fp
    assert private.hex() not in priv_path.read_text()
    with pytest.raises(WrongSecret):
        read_private_key(priv_path, b"wrong")
    with pytest.raises(KeyMaterialError):
        write_keypair(priv_path, None)  # never overwrites
    with pytest.raises(KeyMaterialError):
        read_public_key(priv_path)
