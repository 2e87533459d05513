"""Decode images into arrays and encode them back in the same format.

Pixels are held in their storage form (uint8 or uint16, channels last) so that what the
face stage does not touch is written back unchanged; ``rgb_view`` and ``from_rgb`` convert
the colour channels to and from the float RGB (0-255) the methods work in.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

cv2.setNumThreads(1)


class ImageError(Exception):
    """A file that cannot be anonymized; the message becomes the manifest reason."""


SUPPORTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "MPO": ".jpg"}
COLOUR_CHANNELS = {"L": 1, "LA": 1, "RGB": 3, "RGBA": 3, "CMYK": 4}

# EXIF tags that identify a person, place, device or moment beyond the picture itself.
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_INTEROP_IFD = 0xA005
_DROP_IFD0 = {0x013B, 0x8298, 0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F, 0x02BC, 0x83BB, 0x8773, 0xC4A5}
_DROP_EXIF = {0x927C, 0x9286, 0xA420, 0xA430, 0xA431, 0xA435, 0xA433, 0xA434}


@dataclass
class LoadedImage:
    pixels: np.ndarray         # (H, W, C) uint8 or uint16, in ``mode``
    mode: str                  # L, LA, RGB, RGBA, CMYK
    format: str                # PIL format name of the input
    save_options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    jpeg_quality: int | None = None

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]


def estimate_jpeg_quality(luma_table) -> int:
    """IJG quality (1-100) whose scaled standard luminance table is closest to ``luma_table``."""
    std = np.array(_STD_LUMA, np.float64)
    observed = float(np.sum(luma_table))
    best, best_err = 95, float("inf")
    for q in range(1, 101):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        table = np.clip((std * scale + 50) // 100, 1, 255)
        err = abs(float(table.sum()) - observed)
        if err < best_err:
            best, best_err = q, err
    return best


_STD_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
             14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]


def _clean_exif(exif: Image.Exif) -> bytes:
    """EXIF bytes without GPS, maker notes, owner/serial fields or the embedded thumbnail.

    Built as a new block: ``exif`` itself (which the orientation is read from) is not changed.
    """
    clean = Image.Exif()
    for tag, value in exif.items():
        if tag not in _DROP_IFD0 and tag not in (_GPS_IFD, _EXIF_IFD):
            clean[tag] = value
    sub = {tag: value for tag, value in exif.get_ifd(_EXIF_IFD).items() if tag not in _DROP_EXIF}
    if _INTEROP_IFD in sub:
        sub[_INTEROP_IFD] = exif.get_ifd(_INTEROP_IFD)
    if sub:
        clean[_EXIF_IFD] = sub
    clean[0x0112] = 1  # orientation is applied to the pixels
    # Only IFD0 and its sub-IFDs are written; IFD1 (the thumbnail) is not.
    return clean.tobytes()


def _raw_mode(im: Image.Image) -> str:
    """The decoder's raw mode (e.g. ``RGB;16B``); only known until ``load()`` clears the tiles."""
    tile = getattr(im, "tile", None)
    if not tile or len(tile[0]) < 4:
        return ""
    args = tile[0][3]
    return str(args[0] if isinstance(args, tuple) else args)


def _is_16bit(mode: str, raw_mode: str) -> bool:
    return mode.startswith("I;16") or mode == "I" or ";16" in raw_mode


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` (header only) and refuse it before decoding if it has over ``max_pixels``."""
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # ours, below, names the real limit
    try:
        im = Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    if im.width * im.height > max_pixels:
        raise ImageError(f"{im.width}x{im.height} = {im.width * im.height} pixels exceeds --max-pixels {max_pixels} "
                         "(possible decompression bomb)")
    return im


def load_image(source, max_pixels: int, keep_metadata: bool = False) -> LoadedImage:
    """Decode ``source`` (a path, or the file's bytes already read) with EXIF orientation
    applied; raises ImageError with a reason."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageError(f"cannot read file: {e.strerror or e}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        im = _open_checked(data, max_pixels)
        fmt = im.format
        if fmt not in SUPPORTED_FORMATS:
            raise ImageError(f"unsupported image format {fmt}")
        frames = getattr(im, "n_frames", 1)
        if frames > 1 and fmt != "MPO":
            raise ImageError(f"animated or multi-page image with {frames} frames is not supported "
                             "(faces in later frames would be missed)")
        raw_mode = _raw_mode(im)
        im.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"decompression bomb refused: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image, or an image format that cannot be read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"corrupt or truncated image: {e}") from None

    notes: list[str] = []
    options: dict = {}
    quality = None
    exif = im.getexif()
    if fmt in ("JPEG", "MPO"):
        fmt = "JPEG"
        if getattr(im, "quantization", None):
            options["qtables"] = im.quantization
            quality = estimate_jpeg_quality(im.quantization[0])
        else:
            options["quality"] = 95  # the input's quality cannot be read
        sampling = JpegImagePlugin.get_sampling(im)
        if sampling in (0, 1, 2):
            options["subsampling"] = sampling
    if keep_metadata:
        if im.info.get("icc_profile"):
            options["icc_profile"] = im.info["icc_profile"]
        if len(exif) and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            try:
                options["exif"] = _clean_exif(exif)
            except Exception:  # a malformed tag must not lose the image; its EXIF is dropped instead
                notes.append("EXIF could not be re-written (malformed tags); dropped")
    if fmt == "TIFF":
        comp = im.info.get("compression", "raw")
        options["compression"] = comp if comp in ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits") else "tiff_lzw"
    if fmt == "WEBP":
        options["quality"] = 95
        options["lossless"] = bool(im.info.get("lossless", False)) or _webp_is_lossless(data)

    if _is_16bit(im.mode, raw_mode) and fmt in ("PNG", "TIFF") and im.mode not in ("I;16", "I;16B", "I;16L", "I"):
        pixels, mode = _decode_16bit_colour(data)
        if raw_mode.startswith("LA"):
            notes.append("16-bit greyscale+alpha image written as 16-bit RGBA")
        orientation = exif.get(0x0112, 1)
        if orientation != 1:
            notes.append("EXIF orientation not applied to a 16-bit colour image")
        return LoadedImage(pixels, mode, fmt, options, notes, quality)

    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed orientation tag must not lose the image
        notes.append("EXIF orientation tag unreadable; not applied")
    pixels, mode = _to_storage(im, notes)
    return LoadedImage(pixels, mode, fmt, options, notes, quality)


def _webp_is_lossless(data: bytes) -> bool:
    return b"VP8L" in data[:64]


def _decode_16bit_colour(data: bytes) -> tuple[np.ndarray, str]:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3:
        raise ImageError("cannot decode 16-bit colour image")
    if arr.shape[2] == 4:
        return np.ascontiguousarray(arr[..., [2, 1, 0, 3]]), "RGBA"
    return np.ascontiguousarray(arr[..., ::-1]), "RGB"


def _to_storage(im: Image.Image, notes: list[str]) -> tuple[np.ndarray, str]:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.array(im)
        if arr.dtype != np.uint16:
            if arr.min() < 0 or arr.max() > 65535:
                raise ImageError(f"{mode} image with values outside 0-65535 is not supported")
            arr = arr.astype(np.uint16)
        return arr[..., None], "L"
    if mode == "1":
        im, mode = im.convert("L"), "L"
        notes.append("1-bit image written as 8-bit greyscale")
    elif mode in ("P", "PA"):
        target = "RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB"
        im, mode = im.convert(target), target
        notes.append(f"palette image written as {target}")
    elif mode in ("RGBX", "YCbCr", "LAB", "HSV"):
        im, mode = im.convert("RGB"), "RGB"
        notes.append(f"{im.mode} image written as RGB")
    elif mode == "F":
        raise ImageError("32-bit float images are not supported")
    elif mode == "La":
        im, mode = im.convert("LA"), "LA"
    elif mode == "RGBa":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode not in COLOUR_CHANNELS:
        raise ImageError(f"image mode {mode} is not supported")
    arr = np.array(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.ascontiguousarray(arr), mode


def rgb_view(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Float32 RGB on the 0-255 scale of the colour channels."""
    scale = 257.0 if pixels.dtype == np.uint16 else 1.0
    p = pixels.astype(np.float32)
    if scale != 1.0:
        p /= scale
    if mode in ("L", "LA"):
        return np.repeat(p[..., :1], 3, axis=2)
    if mode == "CMYK":  # as Pillow's CMYK -> RGB: (255 - C) * (255 - K) / 255
        return (255.0 - p[..., :3]) * ((255.0 - p[..., 3:4]) / 255.0)
    return p[..., :3].copy()


def from_rgb(rgb: np.ndarray, mode: str, dtype) -> np.ndarray:
    """Colour channels in storage form (float, not rounded) for RGB input on the 0-255 scale."""
    if mode in ("L", "LA"):
        out = (rgb[..., 0:1] * 299 + rgb[..., 1:2] * 587 + rgb[..., 2:3] * 114) / 1000.0
    elif mode == "CMYK":  # Pillow's RGB -> CMYK: K = 0
        out = np.concatenate([255.0 - rgb, np.zeros_like(rgb[..., :1])], axis=2)
    else:
        out = rgb
    return out * 257.0 if dtype == np.uint16 else out


def rgb8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """uint8 RGB for the detector."""
    if pixels.dtype == np.uint8 and mode == "RGB":
        return pixels
    if pixels.dtype == np.uint8 and mode in ("RGBA",):
        return np.ascontiguousarray(pixels[..., :3])
    if pixels.dtype == np.uint8 and mode in ("L", "LA"):
        return np.ascontiguousarray(np.repeat(pixels[..., :1], 3, axis=2))
    return np.clip(np.rint(rgb_view(pixels, mode)), 0, 255).astype(np.uint8)


def encode_image(img: LoadedImage) -> bytes:
    """Encode in the input's format (JPEG with the input's quantisation tables)."""
    px, mode, fmt = img.pixels, img.mode, img.format
    if px.dtype == np.uint16 and mode != "L":
        ext = ".png" if fmt == "PNG" else ".tif"
        bgr = px[..., [2, 1, 0, 3]] if mode == "RGBA" else px[..., ::-1]
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
        if not ok:
            raise ImageError("could not encode 16-bit colour image")
        return buf.tobytes()
    if px.dtype == np.uint16:
        pil = Image.fromarray(np.ascontiguousarray(px[..., 0], dtype="<u2"))  # mode I;16
    else:
        pil = Image.fromarray(px[..., 0] if mode == "L" else px, mode)
    buf = io.BytesIO()
    options = dict(img.save_options)
    if fmt == "JPEG" and "qtables" in options:
        options.pop("quality", None)
    pil.save(buf, format=fmt, **options)
    return buf.getvalue()


def encode_png(rgb: np.ndarray) -> bytes:
    """A uint8 RGB array as a PNG, without metadata."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()
