"""The image I/O layer: JPEG quality and tables, metadata removal, orientation, modes, limits."""
from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, JpegImagePlugin

from anoncli.io.images import (ImageError, LoadedImage, encode_image, estimate_jpeg_quality, from_rgb,
                               load_image, rgb8, rgb_view)

from conftest import jpeg_bytes, png16, png_bomb, smooth_rgb

BIG = 178_956_970


def roundtrip(path, keep_metadata: bool = False) -> tuple[LoadedImage, bytes]:
    img = load_image(path, BIG, keep_metadata)
    return img, encode_image(img)


def reopen(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# -- JPEG quality and tables ----------------------------------------------------------------------

@pytest.mark.parametrize("quality", [50, 75, 90, 95])
def test_estimate_jpeg_quality(quality):
    im = reopen(jpeg_bytes(smooth_rgb(), quality=quality))
    assert estimate_jpeg_quality(im.quantization[0]) == quality


@pytest.mark.parametrize("quality, subsampling", [(60, 2), (92, 0), (85, 1)])
def test_output_jpeg_reuses_input_tables_and_subsampling(tmp_path, quality, subsampling):
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(smooth_rgb(), quality=quality, subsampling=subsampling))
    src = Image.open(path)
    img, data = roundtrip(path)
    assert img.jpeg_quality == quality
    out = reopen(data)
    assert out.format == "JPEG"
    assert out.quantization == src.quantization
    assert JpegImagePlugin.get_sampling(out) == JpegImagePlugin.get_sampling(src) == subsampling


def test_custom_quantization_tables_are_kept(tmp_path):
    tables = [[(i % 7) + 2 for i in range(64)], [(i % 5) + 3 for i in range(64)]]
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(smooth_rgb(), qtables=tables))
    _, data = roundtrip(path)
    assert reopen(data).quantization == Image.open(path).quantization


def test_unchanged_jpeg_stays_close_to_input(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(smooth_rgb(96, 128), quality=90))
    _, data = roundtrip(path)
    diff = np.abs(np.array(reopen(data), np.float32) - np.array(Image.open(path), np.float32))
    assert diff.mean() < 1.5


# -- metadata ---------------------------------------------------------------------------------------

_TYPES = {"byte": (1, 1), "ascii": (2, 1), "short": (3, 2), "long": (4, 4), "rational": (5, 8), "undef": (7, 1)}
GPS, EXIF_IFD = 0x8825, 0x8769
MAKERNOTE, BODY_SERIAL, ARTIST, INTEROP = 0x927C, 0xA431, 0x013B, 0xA005


def _pack(kind: str, value) -> bytes:
    if kind == "ascii":
        return value.encode() + b"\0"
    if kind in ("byte", "undef"):
        return bytes(value)
    if kind == "short":
        return struct.pack("<H", value)
    if kind == "long":
        return struct.pack("<I", value)
    return b"".join(struct.pack("<II", n, d) for n, d in value)


def _ifd(entries: list, start: int, next_ifd: int) -> bytes:
    """One little-endian TIFF IFD placed at ``start``; values over 4 bytes follow the entries."""
    data_at = start + 2 + 12 * len(entries) + 4
    head, data = struct.pack("<H", len(entries)), b""
    for tag, kind, value in sorted(entries):
        code, size = _TYPES[kind]
        raw = _pack(kind, value)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\0")
        else:
            field = struct.pack("<I", data_at + len(data))
            data += raw + b"\0" * (len(raw) % 2)
        head += struct.pack("<HHI", tag, code, len(raw) // size) + field
    return head + struct.pack("<I", next_ifd) + data


def exif_with_everything(orientation: int = 1) -> tuple[bytes, bytes]:
    """APP1 EXIF payload with IFD0 (camera, owner), Exif (maker note, serial), GPS and an IFD1
    thumbnail; returns (payload, thumbnail JPEG)."""
    thumb = jpeg_bytes(smooth_rgb(16, 16), quality=50)
    ifd0 = [(0x010F, "ascii", "Canon"), (0x0110, "ascii", "EOS Test"), (0x0132, "ascii", "2021:05:06 07:08:09"),
            (0x0112, "short", orientation), (ARTIST, "ascii", "Jane Doe"), (EXIF_IFD, "long", 0), (GPS, "long", 0)]
    sub = [(0x9003, "ascii", "2021:05:06 07:08:09"), (MAKERNOTE, "undef", b"SECRET-MAKER-NOTE" * 4),
           (BODY_SERIAL, "ascii", "SN-0123456789"), (0x829A, "rational", [(1, 125)]), (INTEROP, "long", 0)]
    interop = [(0x0001, "ascii", "R98")]
    gps = [(0x0000, "byte", b"\x02\x03\x00\x00"), (0x0001, "ascii", "N"),
           (0x0002, "rational", [(48, 1), (51, 1), (2950, 100)])]
    ifd1 = [(0x0103, "short", 6), (0x0201, "long", 0), (0x0202, "long", len(thumb))]
    sizes = [len(_ifd(e, 0, 0)) for e in (ifd0, sub, interop, gps, ifd1)]
    at_ifd0 = 8
    at_sub = at_ifd0 + sizes[0]
    at_interop = at_sub + sizes[1]
    at_gps = at_interop + sizes[2]
    at_ifd1 = at_gps + sizes[3]
    at_thumb = at_ifd1 + sizes[4]
    ifd0 = [(t, k, at_sub if t == EXIF_IFD else at_gps if t == GPS else v) for t, k, v in ifd0]
    sub = [(t, k, at_interop if t == INTEROP else v) for t, k, v in sub]
    ifd1 = [(t, k, at_thumb if t == 0x0201 else v) for t, k, v in ifd1]
    tiff = (b"II*\0" + struct.pack("<I", at_ifd0) + _ifd(ifd0, at_ifd0, at_ifd1) + _ifd(sub, at_sub, 0)
            + _ifd(interop, at_interop, 0) + _ifd(gps, at_gps, 0) + _ifd(ifd1, at_ifd1, 0) + thumb)
    return b"Exif\0\0" + tiff, thumb


def app_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every JPEG segment before the scan data."""
    assert data[:2] == b"\xff\xd8"
    pos, out = 2, []
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan
            break
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        out.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
    return out


def exif_segments(data: bytes) -> list[bytes]:
    return [p for m, p in app_segments(data) if m == 0xE1 and p.startswith(b"Exif")]


@pytest.fixture
def tagged_jpeg(tmp_path):
    payload, _ = exif_with_everything()
    path = tmp_path / "tagged.jpg"
    path.write_bytes(jpeg_bytes(smooth_rgb(), quality=90, exif=payload, icc_profile=b"\0" * 128))
    # The fixture really carries what must go: GPS, maker note, serial, owner, thumbnail.
    exif = Image.open(path).getexif()
    assert exif[0x010F] == "Canon" and GPS in exif and exif[ARTIST] == "Jane Doe"
    assert MAKERNOTE in exif.get_ifd(EXIF_IFD) and BODY_SERIAL in exif.get_ifd(EXIF_IFD)
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[2] == (48.0, 51.0, 29.5)
    assert exif.get_ifd(INTEROP) == {1: "R98"}
    assert b"\xff\xd8" in exif_segments(path.read_bytes())[0]
    return path


def test_default_output_has_no_metadata_at_all(tagged_jpeg):
    _, data = roundtrip(tagged_jpeg)
    out = reopen(data)
    assert len(out.getexif()) == 0
    assert exif_segments(data) == []
    assert "icc_profile" not in out.info
    assert not [m for m, _ in app_segments(data) if 0xE1 <= m <= 0xEF]  # no APP1..APP15 at all
    for secret in (b"Canon", b"Jane Doe", b"SN-0123456789", b"SECRET-MAKER-NOTE"):
        assert secret not in data


def test_keep_metadata_keeps_camera_fields_only(tagged_jpeg):
    _, data = roundtrip(tagged_jpeg, keep_metadata=True)
    out = reopen(data)
    exif = out.getexif()
    assert exif[0x010F] == "Canon" and exif[0x0110] == "EOS Test" and exif[0x0132] == "2021:05:06 07:08:09"
    assert exif.get_ifd(EXIF_IFD)[0x9003] == "2021:05:06 07:08:09"
    assert exif.get_ifd(EXIF_IFD)[0x829A] == 1 / 125
    assert exif.get_ifd(INTEROP) == {1: "R98"}
    assert GPS not in exif and exif.get_ifd(GPS) == {}
    assert ARTIST not in exif
    assert MAKERNOTE not in exif.get_ifd(EXIF_IFD) and BODY_SERIAL not in exif.get_ifd(EXIF_IFD)
    assert out.info.get("icc_profile") == b"\0" * 128
    segments = exif_segments(data)
    assert len(segments) == 1
    assert b"\xff\xd8" not in segments[0]  # no embedded thumbnail
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {}
    for secret in (b"Jane Doe", b"SN-0123456789", b"SECRET-MAKER-NOTE"):
        assert secret not in data


def test_keep_metadata_gps_is_gone_even_after_it_was_read(tagged_jpeg, monkeypatch):
    # Pillow re-serialises any sub-IFD it has parsed; reading GPS first must not bring it back.
    real_getexif = Image.Image.getexif

    def getexif_and_read_gps(self):
        exif = real_getexif(self)
        exif.get_ifd(GPS)
        return exif

    monkeypatch.setattr(Image.Image, "getexif", getexif_and_read_gps)
    _, data = roundtrip(tagged_jpeg, keep_metadata=True)
    assert GPS not in reopen(data).getexif()


def test_malformed_exif_is_dropped_not_fatal(tmp_path):
    # XResolution stored as text: Pillow reads it, but cannot write it back as a rational.
    tiff = b"II*\0" + struct.pack("<I", 8) + _ifd([(0x010F, "ascii", "Canon"), (0x011A, "ascii", "72 dpi")], 8, 0)
    path = tmp_path / "odd.jpg"
    path.write_bytes(jpeg_bytes(smooth_rgb(), exif=b"Exif\0\0" + tiff))
    img, data = roundtrip(path, keep_metadata=True)
    assert any("EXIF" in n for n in img.notes), img.notes
    assert exif_segments(data) == [] and b"Canon" not in data


def test_png_metadata_is_dropped_by_default(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    path = tmp_path / "a.png"
    payload, _ = exif_with_everything()
    Image.fromarray(smooth_rgb()).save(path, pnginfo=info, exif=payload)
    _, data = roundtrip(path)
    out = reopen(data)
    assert b"Jane Doe" not in data and len(out.getexif()) == 0 and "Author" not in out.info


# -- orientation ----------------------------------------------------------------------------------

def _stored_for_orientation_6(upright: np.ndarray) -> np.ndarray:
    """The stored pixels a camera writes with orientation 6 (display = rotate 90° clockwise)."""
    return np.ascontiguousarray(np.rot90(upright, 1))


@pytest.mark.parametrize("keep_metadata", [False, True])
def test_orientation_is_applied_to_pixels(tmp_path, keep_metadata):
    upright = smooth_rgb(40, 72)
    upright[:8, :8] = (255, 0, 0)  # a red top-left corner to find again
    payload, _ = exif_with_everything(orientation=6)
    path = tmp_path / "rot.jpg"
    path.write_bytes(jpeg_bytes(_stored_for_orientation_6(upright), quality=95, exif=payload))
    assert Image.open(path).size == (40, 72)
    img, data = roundtrip(path, keep_metadata)
    assert img.pixels.shape[:2] == (40, 72)
    out = reopen(data)
    assert out.size == (72, 40)
    assert np.array(out)[2:6, 2:6, 0].min() > 200 and np.array(out)[2:6, 2:6, 1].max() < 60
    assert out.getexif().get(0x0112, 1) == 1  # a viewer must not rotate it again


def test_orientation_6_face_is_still_found(tmp_path, face_jpeg):
    from anoncli.config import RunConfig
    from anoncli.io.journal import read_manifest
    from anoncli.run import run_anonymize

    upright = np.array(Image.open(face_jpeg).convert("RGB"))
    src = tmp_path / "in"
    src.mkdir()
    payload, _ = exif_with_everything(orientation=6)
    (src / "rot.jpg").write_bytes(jpeg_bytes(_stored_for_orientation_6(upright), quality=95, exif=payload))
    out = tmp_path / "out"
    summary = run_anonymize(src, out, RunConfig(method="blur", keep_metadata=True), workers=1, batch_size=1,
                            progress=False, log=lambda m: None)
    assert summary.exit_code == 0, summary.failed
    row = read_manifest(out / "manifest.csv").iloc[0]
    assert row["status"] == "ok" and row["n_faces"] >= 1
    result = np.array(Image.open(out / "rot.jpg"), np.float32)
    assert result.shape == upright.shape
    diff = np.abs(result - upright).mean(axis=2)
    assert np.median(diff) < 4  # upright: most of the picture matches the upright original
    assert diff.max() > 40      # and the face was changed
    assert Image.open(out / "rot.jpg").getexif().get(0x0112, 1) == 1


# -- modes and colour conversions -----------------------------------------------------------------

@pytest.mark.parametrize("mode, dtype", [("L", np.uint8), ("RGB", np.uint8), ("L", np.uint16), ("RGB", np.uint16),
                                         ("LA", np.uint8), ("RGBA", np.uint16)])
def test_rgb_view_from_rgb_round_trip(mode, dtype):
    rng = np.random.default_rng(1)
    top = 65535 if dtype == np.uint16 else 255
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, top + 1, (6, 7, channels)).astype(dtype)
    rgb = rgb_view(pixels, mode)
    assert rgb.shape == (6, 7, 3) and rgb.dtype == np.float32
    assert 0 <= rgb.min() and rgb.max() <= 255.0001
    colour = 1 if mode in ("L", "LA") else 3
    back = from_rgb(rgb, mode, dtype)
    assert np.abs(back - pixels[..., :colour]).max() < 1e-2 * (257 if dtype == np.uint16 else 1)


def test_cmyk_round_trip_and_matches_pillow():
    rng = np.random.default_rng(2)
    rgb = rng.uniform(0, 255, (5, 6, 3)).astype(np.float32)
    cmyk = from_rgb(rgb, "CMYK", np.uint8)
    assert cmyk.shape == (5, 6, 4) and np.all(cmyk[..., 3] == 0)
    assert np.allclose(rgb_view(cmyk, "CMYK"), rgb, atol=1e-3)
    # With black ink too, the colours the detector and methods see are the ones Pillow shows.
    stored = rng.integers(0, 256, (5, 6, 4)).astype(np.uint8)
    pillow = np.array(Image.fromarray(stored, "CMYK").convert("RGB"), np.float32)
    assert np.abs(rgb_view(stored, "CMYK") - pillow).max() <= 1.0
    assert np.abs(rgb8(stored, "CMYK").astype(np.float32) - pillow).max() <= 1.0


def test_grey_view_is_grey_and_16bit_scales():
    px = np.array([[[0], [257 * 100], [65535]]], np.uint16)
    rgb = rgb_view(px, "L")
    assert np.allclose(rgb[0, :, 0], [0, 100, 255]) and np.allclose(rgb[..., 0], rgb[..., 2])
    assert rgb8(px, "L").dtype == np.uint8 and rgb8(px, "L")[0, 1, 1] == 100


_MODE_MAKERS = {
    "L": lambda: Image.fromarray(smooth_rgb()[..., 0]),
    "RGB": lambda: Image.fromarray(smooth_rgb()),
    "CMYK": lambda: Image.fromarray(smooth_rgb()).convert("CMYK"),
    "LA": lambda: Image.fromarray(smooth_rgb()).convert("LA"),
    "RGBA": lambda: Image.fromarray(smooth_rgb()).convert("RGBA"),
}
_WRITABLE = {"PNG": ("L", "RGB", "LA", "RGBA"), "TIFF": ("L", "RGB", "CMYK", "LA", "RGBA"),
             "JPEG": ("L", "RGB", "CMYK"), "WEBP": ("L", "RGB", "LA", "RGBA"), "BMP": ("L", "RGB", "RGBA")}


@pytest.mark.parametrize("fmt, mode", [(f, m) for f, modes in _WRITABLE.items() for m in modes])
def test_formats_and_modes_round_trip(tmp_path, fmt, mode):
    path = tmp_path / f"a.{fmt.lower()}"
    _MODE_MAKERS[mode]().save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    stored = Image.open(path)
    img, data = roundtrip(path)
    out = reopen(data)
    assert (out.format, out.mode) == (stored.format, stored.mode)
    before, after = np.array(stored), np.array(out)
    if fmt == "JPEG":
        assert np.abs(after.astype(np.float32) - before).mean() < 1.5
    else:
        assert np.array_equal(after, before)


def test_16bit_colour_tiff_stays_16bit(tmp_path):
    rng = np.random.default_rng(3)
    px = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    path = tmp_path / "a.tif"
    assert cv2.imwrite(str(path), px[..., ::-1])
    img, data = roundtrip(path)
    assert img.pixels.dtype == np.uint16 and img.mode == "RGB"
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back[..., ::-1], px)


def png16_roundtrip(tmp_path, channels: int, colour_type: int, seed: int):
    """A random 16-bit PNG written by hand, decoded and re-encoded: (pixels, image, re-decoded)."""
    px = np.random.default_rng(seed).integers(0, 65536, (20, 30, channels), dtype=np.uint16)
    path = tmp_path / "a.png"
    path.write_bytes(png16(px, colour_type))
    img, data = roundtrip(path)
    return px, img, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_16bit_rgba_png_keeps_alpha(tmp_path):
    px, img, back = png16_roundtrip(tmp_path, 4, 6, seed=4)
    assert (img.mode, img.pixels.dtype) == ("RGBA", np.uint16)
    assert np.array_equal(back[..., [2, 1, 0, 3]], px)


def test_16bit_grey_alpha_png_is_noted(tmp_path):
    px, img, back = png16_roundtrip(tmp_path, 2, 4, seed=5)
    assert img.pixels.dtype == np.uint16
    assert back.dtype == np.uint16
    assert np.array_equal(back[..., 0], px[..., 0]) and np.array_equal(back[..., -1], px[..., 1])
    if img.mode != "LA":
        assert any("greyscale" in n for n in img.notes), img.notes


def test_16bit_grey_png_round_trip(tmp_path):
    px = np.random.default_rng(6).integers(0, 65536, (20, 30), dtype=np.uint16)
    path = tmp_path / "a.png"
    Image.fromarray(px).save(path)
    img, data = roundtrip(path)
    assert (img.mode, img.pixels.dtype) == ("L", np.uint16)
    out = reopen(data)
    assert out.mode == "I;16" and np.array_equal(np.array(out), px)


def test_palette_without_transparency_becomes_rgb(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(smooth_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path)
    img, data = roundtrip(path)
    assert img.mode == "RGB" and any("palette" in n for n in img.notes)
    assert np.array_equal(np.array(reopen(data)), np.array(Image.open(path).convert("RGB")))


# -- refusals ----------------------------------------------------------------------------------------

def test_max_pixels_refuses_before_decoding(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(48, 64)).save(path)
    assert load_image(path, 48 * 64).pixels.shape == (48, 64, 3)
    for limit in (48 * 64 - 1, 2000, 100):  # just over, and far over (Pillow's own 2x limit)
        with pytest.raises(ImageError, match=rf"64x48 = 3072 pixels exceeds --max-pixels {limit}\b"):
            load_image(path, limit)


def test_max_pixels_leaves_pillow_settings_alone(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(48, 64)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    load_image(path, 100_000)
    with pytest.raises(ImageError):
        load_image(path, 10)
    assert Image.MAX_IMAGE_PIXELS == before


def test_bomb_header_is_refused_with_the_users_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(100_000, 100_000))
    with pytest.raises(ImageError, match=r"100000x100000 = 10000000000 pixels exceeds --max-pixels 178956970"):
        load_image(path, BIG)


@pytest.mark.parametrize("data, words", [
    (b"", "empty file"),
    (b"GIF89a" + b"\0" * 10, "corrupt or truncated|not an image"),
    (b"hello", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not an image|corrupt"),
])
def test_garbage_is_an_image_error(tmp_path, data, words):
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=words):
        load_image(path, BIG)


def test_truncated_jpeg_is_an_image_error(tmp_path):
    data = jpeg_bytes(smooth_rgb(200, 200), quality=90)
    path = tmp_path / "t.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(path, BIG)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read file"):
        load_image(tmp_path / "nope.jpg", BIG)
