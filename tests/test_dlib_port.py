"""The PyTorch port of dlib's face recognition ResNet (anoncli/models/dlib_resnet.py), the reader of
dlib's serialization it is built from (anoncli/models/dlib_serialized.py), and the identity encoder
registry that loads it (anoncli/identity/encoders.py)."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from anoncli.models.dlib_resnet import DlibFaceResNet, DlibPool, add_zero_extended, chips_to_tensor
from anoncli.models.dlib_serialized import DlibLayer, DlibStream, parse_dlib_network
from anoncli.weights import WeightsMissing, resolve_weights

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHOTOS = DATA / "celeba-crops" / "images"
N_FACES = 24
TOLERANCE = 1e-4


# ----------------------------------------------------------------------------------------
# Hand-built bytes in dlib's encodings (dlib/serialize.h, float_details.h, dnn/tensor.h)


def enc_int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_float(value: float) -> bytes:
    mantissa, exponent = float(value).as_integer_ratio()
    shift = exponent.bit_length() - 1  # exponent is a power of two
    return enc_int(mantissa) + enc_int(-shift)


def enc_tensor(array: np.ndarray) -> bytes:
    shape = array.shape if array.ndim == 4 else (array.size, 1, 1, 1)
    return enc_int(2) + b"".join(enc_int(d) for d in shape) + np.asarray(array, "<f4").tobytes()


def enc_alias(*shape: int) -> bytes:
    return enc_int(1) + b"".join(enc_int(d) for d in shape)


def layer_state() -> bytes:
    """add_layer's three bools and three empty tensors after the details."""
    return b"110" + enc_tensor(np.zeros((0, 0, 0, 0))) * 3


MULTIPLIERS = enc_float(1.0) * 3 + enc_float(0.0)


def tiny_network(conv_w: np.ndarray, conv_b: np.ndarray, fc_w: np.ndarray) -> bytes:
    """loss_metric<fc_no_bias<2, add_prev1<relu<tag1<con<2,1,1,1,1, input_rgb_image_sized<2>>>>>>>."""
    loss = enc_int(1) + enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6)
    wrappers = enc_int(2) + enc_int(2) + enc_int(2) + enc_int(1)  # fc, add_prev, relu, tag1
    bottom = (enc_int(2) + enc_str("input_rgb_image_sized") + enc_float(122.5) + enc_float(117.0)
              + enc_float(104.25) + enc_int(2) + enc_int(2))
    con = (enc_str("con_4") + enc_tensor(np.concatenate([conv_w.ravel(), conv_b])) + enc_int(2) + enc_int(1)
           + enc_int(1) + enc_int(1) + enc_int(1) + enc_int(0) + enc_int(0) + enc_alias(2, 3, 1, 1)
           + enc_alias(1, 2, 1, 1) + MULTIPLIERS)
    fc = (enc_str("fc_2") + enc_int(2) + enc_int(8) + enc_tensor(fc_w.reshape(8, 2, 1, 1)) + enc_alias(8, 2, 1, 1)
          + enc_alias(0, 0, 0, 0) + enc_int(1) + MULTIPLIERS)
    return (loss + wrappers + bottom + con + layer_state() + enc_str("relu_") + layer_state()
            + enc_str("add_prev_") + layer_state() + fc + layer_state())


# ----------------------------------------------------------------------------------------
# (a) the reader


@pytest.mark.parametrize(("data", "value"), [
    (b"\x01\x05", 5), (b"\x81\x1c", -28), (b"\x02\x80\x12", 0x1280), (b"\x01\x00", 0),
    (b"\x88" + (2**63 - 1).to_bytes(8, "little"), -(2**63 - 1)),
])
def test_integer_encoding(data, value):
    stream = DlibStream(data)
    assert stream.read_int() == value
    assert stream.at_end()


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x09" + b"\0" * 9, b"\x11\x01", b"\x02\x01"])
def test_bad_integers_raise_value_error(data):
    with pytest.raises(ValueError, match=r"not a dlib network: at offset \d"):
        DlibStream(data).read_int()


def test_float_details_encoding():
    stream = DlibStream(bytes([0x03, 0x0A, 0xD7, 0xA3, 0x81, 0x1C]))
    value = stream.read_float()
    assert value == 10737418 * 2.0**-28
    assert np.float32(value) == np.float32(0.04)
    assert DlibStream(enc_int(0) + enc_int(32000)).read_float() == math.inf
    assert DlibStream(enc_int(0) + enc_int(32001)).read_float() == -math.inf
    assert math.isnan(DlibStream(enc_int(0) + enc_int(32002)).read_float())
    assert DlibStream(enc_float(-122.78199768066406)).read_float() == -122.78199768066406


def test_string_and_bool_encoding():
    stream = DlibStream(b"\x01\x05relu_10")
    assert stream.read_string() == "relu_"
    assert stream.read_bool() is True and stream.read_bool() is False
    with pytest.raises(ValueError, match="'0' or '1'"):
        DlibStream(b"x").read_bool()
    with pytest.raises(ValueError, match="bytes remain"):
        DlibStream(b"\x01\x09relu_").read_string()


def test_tensor_encodings():
    values = np.array([0.5, -1.25, 3.0, 1e-3], dtype=np.float32)
    raw = enc_int(2) + enc_int(1) + enc_int(2) + enc_int(1) + enc_int(2) + struct.pack("<4f", *values)
    tensor = DlibStream(raw).read_tensor()
    assert tensor.shape == (1, 2, 1, 2) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor.ravel(), values)
    old = enc_int(1) + enc_int(2) + enc_int(1) + enc_int(1) + enc_int(1) + enc_float(0.5) + enc_float(-1.25)
    np.testing.assert_array_equal(DlibStream(old).read_tensor().ravel(), [0.5, -1.25])
    assert DlibStream(enc_alias(3, 4, 5, 6)).read_alias_tensor() == (3, 4, 5, 6)
    with pytest.raises(ValueError, match="float32 values"):
        DlibStream(raw[:-1]).read_tensor()


def test_tiny_hand_built_network_parses_and_runs():
    rng = np.random.default_rng(0)
    conv_w, conv_b, fc_w = rng.normal(size=(2, 3, 1, 1)), rng.normal(size=2), rng.normal(size=(8, 2))
    net = parse_dlib_network(tiny_network(conv_w, conv_b, fc_w))
    assert net.input.mean_rgb == (122.5, 117.0, 104.25) and (net.input.rows, net.input.cols) == (2, 2)
    assert net.loss.kind == "loss_metric"
    assert net.loss.settings == pytest.approx({"margin": 0.04, "distance_threshold": 0.6})
    assert [layer.kind for layer in net.layers] == ["con", "tag", "relu", "add_prev", "fc"]
    assert net.layers[3].settings == {"tag": 1}
    assert not net.layers[4].settings["has_bias"]
    np.testing.assert_array_equal(net.layers[0].params["weight"], conv_w.astype(np.float32))
    np.testing.assert_array_equal(net.layers[4].params["weight"], fc_w.astype(np.float32))

    pixels = rng.integers(0, 256, size=(1, 3, 2, 2)).astype(np.float32)
    x = (pixels - np.array([122.5, 117.0, 104.25], np.float32).reshape(1, 3, 1, 1)) / 256
    conv = np.einsum("oi,nihw->nohw", conv_w[:, :, 0, 0], x) + conv_b.reshape(1, 2, 1, 1)
    expected = (np.maximum(conv, 0) + conv).reshape(1, 8) @ fc_w
    out = DlibFaceResNet(net)(torch.from_numpy(pixels)).detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("data", [b"", b"hello, not a network", b"\x01\x01\x01\x05relu_"])
def test_non_networks_raise_value_error(data):
    with pytest.raises(ValueError, match="not a dlib network: at offset"):
        parse_dlib_network(data)


@pytest.fixture(scope="module")
def resnet_bytes() -> bytes:
    try:
        return resolve_weights("dlib-face-recognition-resnet").read_bytes()
    except WeightsMissing as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("cut", [3, 400, 5000, 1_000_000, -7])
def test_truncated_real_file_raises_value_error(resnet_bytes, cut):
    with pytest.raises(ValueError, match="offset"):
        parse_dlib_network(resnet_bytes[:cut])


def test_trailing_bytes_raise_value_error(resnet_bytes):
    with pytest.raises(ValueError, match="end of the file"):
        parse_dlib_network(resnet_bytes + b"\x01\x00")


def test_real_file_structure(resnet_bytes):
    net = parse_dlib_network(resnet_bytes)
    assert (net.input.rows, net.input.cols) == (150, 150)
    assert net.input.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert {kind: net.count(kind) for kind in ("con", "affine", "relu", "add_prev", "tag", "skip", "fc")} == \
        {"con": 29, "affine": 29, "relu": 29, "add_prev": 14, "tag": 18, "skip": 4, "fc": 1}
    assert net.layers[-1].params["weight"].shape == (256, 128)


# ----------------------------------------------------------------------------------------
# Semantics that the real network exercises only partly


def test_add_prev_zero_extends_the_smaller_input():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 2, 2), 2.0)
    out = add_zero_extended(a, b)
    assert out.shape == (1, 2, 3, 3)
    assert torch.all(out[0, 0, :2, :2] == 3) and out.sum() == 18 + 8


def test_pooling_ignores_padded_cells():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    settings = {"rows": 3, "cols": 3, "stride_y": 1, "stride_x": 1, "padding_y": 1, "padding_x": 1}
    avg = DlibPool(DlibLayer("avg_pool", settings))(x)
    assert avg.shape == (1, 1, 2, 2) and torch.all(avg == 2.5)
    assert torch.all(DlibPool(DlibLayer("max_pool", settings))(-x) == -1)
    everything = DlibPool(DlibLayer("avg_pool", dict(settings, rows=0, cols=0, padding_y=0, padding_x=0)))(x)
    assert everything.shape == (1, 1, 1, 1) and everything.item() == 2.5


# ----------------------------------------------------------------------------------------
# (b)-(d) the port against dlib on real faces


@pytest.fixture(scope="module")
def dlib_reference():
    dlib = pytest.importorskip("dlib", reason="dlib is the reference: pip install 'anoncli[eval]'")
    if not PHOTOS.is_dir():
        pytest.skip(f"real face photos not available ({PHOTOS} is missing; they live in the shared data folder)")
    from PIL import Image, ImageOps

    try:
        predictor = resolve_weights("dlib-shape-predictor-5").path
        encoder = resolve_weights("dlib-face-recognition-resnet").path
    except WeightsMissing as e:
        pytest.skip(str(e))
    detector, shapes = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor))
    facerec = dlib.face_recognition_model_v1(str(encoder))
    chips = []
    for photo in sorted(PHOTOS.glob("*.jpg")):
        rgb = np.asarray(ImageOps.exif_transpose(Image.open(photo)).convert("RGB"))
        faces = detector(rgb, 1)
        if faces:
            largest = max(faces, key=lambda r: r.area())
            chips.append(dlib.get_face_chip(rgb, shapes(rgb, largest), size=150, padding=0.25))
        if len(chips) == N_FACES:
            break
    descriptors = np.array([np.array(facerec.compute_face_descriptor(chip)) for chip in chips])
    return np.stack(chips), descriptors


@pytest.fixture(scope="module")
def port():
    try:
        from anoncli.identity.encoders import load_identity_encoder

        return load_identity_encoder("dlib-resnet")
    except WeightsMissing as e:
        pytest.skip(str(e))


def test_port_matches_dlib_on_real_faces(dlib_reference, port):
    chips, expected = dlib_reference
    assert len(chips) == N_FACES
    with torch.no_grad():
        got = port(chips_to_tensor(chips)).double().numpy()
    assert got.shape == (N_FACES, 128)
    assert np.abs(got - expected).max() < TOLERANCE


def test_gradients_reach_the_input_chip(dlib_reference, port):
    chip = chips_to_tensor(dlib_reference[0][:1]).requires_grad_(True)
    descriptor = port(chip)
    (descriptor * torch.linspace(-1, 1, 128)).sum().backward()
    assert chip.grad is not None and torch.isfinite(chip.grad).all()
    assert chip.grad.abs().max() > 0


def test_batch_equals_one_by_one(dlib_reference, port):
    chips = chips_to_tensor(dlib_reference[0][:4])
    with torch.no_grad():
        batch = port(chips)
        single = torch.cat([port(chips[i:i + 1]) for i in range(len(chips))])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-5)


def test_port_is_frozen_and_registered_and_arcface_names_its_weights(port, tmp_path, monkeypatch):
    from anoncli.identity import encoders

    assert not any(p.requires_grad for p in port.parameters()) and not port.training
    assert set(encoders.ENCODERS) >= {"dlib-resnet", "arcface-ir-se50"}
    assert encoders.get_encoder_spec("dlib-resnet").dimension == port(torch.zeros(1, 3, 150, 150)).shape[1]
    with pytest.raises(ValueError, match="unknown identity encoder 'nope'; known: dlib-resnet"):
        encoders.get_encoder_spec("nope")
    available, why = encoders.encoder_available("arcface-ir-se50", tmp_path)
    if not available:  # the usual case: its weights exist only online
        assert "anoncli weights fetch facexlib-arcface-ir-se50" in why
        with pytest.raises(WeightsMissing, match="anoncli weights fetch facexlib-arcface-ir-se50"):
            encoders.load_identity_encoder("arcface-ir-se50", tmp_path)
