"""StyleGAN2 + pSp / e4e latent backbones: the official checkpoint layout, read strictly; shapes and
gradients on small random networks; the CLI's answer while the 1.2 GB files are absent."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from anoncli.latent import get_backbone_spec
from anoncli.latent.stylegan2 import FFHQ_MARGIN, OFFICIAL, StyleGAN2Backbone, StyleGAN2Config, build_networks
from anoncli.weights import PROJECT_WEIGHTS_DIR, REGISTRY
from conftest import EXAMPLES, cli

# 64 px generator (10 styles) pooled to 32 px; IR-SE50's 24 units at a quarter of the official widths or less
SMALL = StyleGAN2Config(size=64, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 16, 32: 8, 64: 8},
                        encoder_widths=(16, 32, 48, 64), resolution=32)
KINDS = {"stylegan2-psp": "GradualStyleEncoder", "stylegan2-e4e": "Encoder4Editing"}


def _randomise(module: torch.nn.Module) -> None:
    """Non-trivial values for what the default init leaves constant (BN statistics, noise strengths)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        for name, p in module.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias"):
                p.normal_(0, 0.1)


def _checkpoint(tmp_path, backbone: str, opts_extra: dict | None = None):
    torch.manual_seed(0)
    encoder, generator = build_networks(KINDS[backbone], SMALL)
    _randomise(encoder)
    _randomise(generator)
    encoder.eval()
    generator.eval()
    latent_avg = torch.randn(SMALL.n_styles, SMALL.style_dim)
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
             **{f"decoder.{k}": v for k, v in generator.state_dict().items()}}
    opts = {"encoder_type": KINDS[backbone], "start_from_latent_avg": True, "stylegan_size": SMALL.size,
            "device": "cuda:0", "checkpoint_path": None, **(opts_extra or {})}
    path = tmp_path / f"{backbone}.pt"
    torch.save({"state_dict": state, "latent_avg": latent_avg, "opts": opts}, path)
    return path, encoder, generator, latent_avg, state


@pytest.mark.parametrize("name", list(KINDS))
def test_an_official_layout_checkpoint_loads_strictly_and_gives_the_same_outputs(tmp_path, name):
    path, encoder, generator, latent_avg, _ = _checkpoint(tmp_path, name)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    w = torch.randn(2, SMALL.n_styles, SMALL.style_dim) + latent_avg
    with torch.no_grad():
        want_codes = encoder(images) + latent_avg
        want_images = F.adaptive_avg_pool2d(generator.synthesis(w), 32)
    backbone = StyleGAN2Backbone(get_backbone_spec(name), checkpoint=path, config=SMALL)
    with torch.no_grad():
        assert torch.equal(backbone.encode(images), want_codes)
        assert torch.equal(backbone.decode(w), want_images)
    assert backbone.spec.latent_shape == (10, 16) and backbone.spec.resolution == 32
    assert backbone.margin == FFHQ_MARGIN


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("decoder.noises.noise_3"), r"missing keys \[decoder\.noises\.noise_3\], unexpected keys \[\]"),
    (lambda s: s.pop("encoder.styles.9.linear.bias"), r"missing keys \[encoder\.styles\.9\.linear\.bias\]"),
    (lambda s: s.__setitem__("encoder.extra.weight", torch.zeros(1)), r"unexpected keys \[encoder\.extra\.weight\]"),
    (lambda s: s.__setitem__("face_pool.weight", torch.zeros(1)), r"unexpected keys \[face_pool\.weight\]"),
    (lambda s: s.__setitem__("decoder.input.input", torch.zeros(1, 32, 4, 4)), r"size mismatch for input\.input"),
])
def test_a_missing_unexpected_or_misshapen_key_is_refused_by_name(tmp_path, change, message):
    path, *_, state = _checkpoint(tmp_path, "stylegan2-psp")
    ckpt = torch.load(path, weights_only=True)
    change(ckpt["state_dict"])
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=message) as info:
        StyleGAN2Backbone(get_backbone_spec("stylegan2-psp"), checkpoint=path, config=SMALL)
    assert str(path) in str(info.value)


def test_the_wrong_encoder_kind_and_pickled_objects_are_refused(tmp_path):
    path, *_ = _checkpoint(tmp_path, "stylegan2-psp")
    with pytest.raises(ValueError, match="holds a GradualStyleEncoder encoder, expected Encoder4Editing"):
        StyleGAN2Backbone(get_backbone_spec("stylegan2-e4e"), checkpoint=path, config=SMALL)
    ckpt = torch.load(path, weights_only=True)
    ckpt["opts"] = argparse.Namespace(**ckpt["opts"])   # any class: torch.load(weights_only=True) will not build it
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        StyleGAN2Backbone(get_backbone_spec("stylegan2-psp"), checkpoint=path, config=SMALL)
    ckpt["opts"] = {"encoder_type": "GradualStyleEncoder"}
    del ckpt["latent_avg"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="'latent_avg' is missing"):
        StyleGAN2Backbone(get_backbone_spec("stylegan2-psp"), checkpoint=path, config=SMALL)


@pytest.mark.parametrize("name", list(KINDS))
def test_shapes_values_gradients_and_single_face_reencoding(tmp_path, name):
    path, *_ = _checkpoint(tmp_path, name)
    backbone = StyleGAN2Backbone(get_backbone_spec(name), checkpoint=path, config=SMALL)
    codes = backbone.encode(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert codes.shape == (3, 10, 16) and torch.isfinite(codes).all()
    w = codes.detach().clone().requires_grad_(True)
    images = backbone.decode(w)
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
    images.square().mean().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and (w.grad.abs().sum(dim=2) > 0).all()
    with torch.no_grad():   # DP-Image's re-encoding, one face at a time
        again = backbone.encode(backbone.decode(codes[:1]))
    assert again.shape == (1, 10, 16) and torch.isfinite(again).all()
    with pytest.raises(ValueError, match="reads 32 x 32 crops"):
        backbone.encode(torch.zeros(1, 3, 64, 64))


def test_dpimage_runs_on_the_backbone_and_states_its_bound_as_assumed(tmp_path):
    """DP-Image re-encodes f_E(f_D(z)) one face at a time on an approximate inverse."""
    import numpy as np

    from anoncli.methods import get_method_spec
    from anoncli.methods.dpimage import DPImage

    path, *_ = _checkpoint(tmp_path, "stylegan2-psp")
    backbone = StyleGAN2Backbone(get_backbone_spec("stylegan2-psp"), checkpoint=path, config=SMALL)
    params = get_method_spec("dpimage").resolve_params({"crop_size": "64", "device": "cpu", "shape": "ellipse",
                                                        "iterations": "2", "clip": "20"})
    method = DPImage(backbone_model=backbone, **params)
    crop = np.float32(np.random.default_rng(1).uniform(40, 215, (64, 64, 3)))
    face = method.anonymize_face(crop, None)
    assert face.crop.shape == crop.shape and np.isfinite(face.crop).all()
    assert method.guarantee()["bound"].startswith("assumed")


def test_the_registry_entries_and_the_official_shapes():
    for name, weights in (("stylegan2-psp", "psp-ffhq-encode"), ("stylegan2-e4e", "e4e-ffhq-encode")):
        spec = get_backbone_spec(name)
        assert (spec.resolution, spec.latent_shape, spec.clip, spec.exact_inverse) == (256, (18, 512), 20.0, False)
        assert spec.weights == (weights,) and spec.latent_size == 18 * 512
        entry = REGISTRY[weights]
        assert len(entry.sha256) == 64 and "NVIDIA Source Code License-NC" in entry.licence
    assert OFFICIAL.n_styles == 18
    # Built without memory on the meta device: the official networks' float32 tensors account for the
    # published 1,201,515,631-byte pSp file to within the pickle's few hundred kB.
    with torch.device("meta"):
        encoder, generator = build_networks("GradualStyleEncoder")
    size = 4 * sum(t.numel() for m in (encoder, generator) for k, t in m.state_dict().items()
                   if not k.endswith("num_batches_tracked"))
    assert 0 < 1_201_515_631 - size < 1_000_000
    assert len(generator.state_dict()) == 171 and len(generator.noises.state_dict()) == 17
    assert 0.1 < FFHQ_MARGIN < 0.2


def _absent(*files: str) -> None:
    for f in files:
        if (PROJECT_WEIGHTS_DIR / f).exists():
            pytest.skip(f"{f} is in the project's weights/ folder")


@pytest.mark.parametrize("method, backbone, weights", [
    ("fsap", "stylegan2-e4e", "e4e-ffhq-encode"),
    ("dpimage", "stylegan2-psp", "psp-ffhq-encode"),
])
def test_the_cli_stops_with_status_3_and_the_fetch_command(tmp_path, method, backbone, weights):
    _absent(REGISTRY[weights].filename)
    out = tmp_path / "out"
    r = cli("anonymize", EXAMPLES, "-o", out, "--method", method, "--backbone", backbone, "-q",
            env_extra={"XDG_CACHE_HOME": str(tmp_path / "cache"), "ANONCLI_WEIGHTS": str(tmp_path / "none")})
    assert r.returncode == 3, r.stderr
    assert f"anoncli weights fetch {weights}" in r.stderr
    assert not out.exists()


def test_weights_list_shows_both_checkpoints_as_missing(tmp_path):
    _absent("psp_ffhq_encode.pt", "e4e_ffhq_encode.pt")
    r = cli("weights", "list", "--json",
            env_extra={"XDG_CACHE_HOME": str(tmp_path / "cache"), "ANONCLI_WEIGHTS": str(tmp_path / "none")})
    assert r.returncode == 0, r.stderr
    entries = {e["name"]: e for e in json.loads(r.stdout)}
    for name, file in (("psp-ffhq-encode", "psp_ffhq_encode.pt"), ("e4e-ffhq-encode", "e4e_ffhq_encode.pt")):
        assert entries[name]["status"] == "missing" and entries[name]["file"] == file
        assert entries[name]["official_copy"].startswith("https://drive.usercontent.google.com/")
