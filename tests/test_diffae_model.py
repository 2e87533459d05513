"""anoncli.models.diffae: the official DiffAE layout (phizaz/diffae), strict loading of its Lightning
checkpoints, and the network's forward semantics, on small random networks."""
from __future__ import annotations

import dataclasses
import json
import math
import pickle

import pytest
import torch

from anoncli.models.diffae import (ANONCLI_64, FFHQ256_AUTOENC, DiffAE, DiffAEConfig, ResBlock, load_official,
                                   official_state_dict, read_checkpoint, timestep_embedding)

TINY = DiffAEConfig(image_size=16, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                    attention_resolutions=(8,), num_heads=2, embed_channels=16, enc_out_channels=16,
                    enc_channel_mult=(1, 2, 2), enc_num_res_block=1, dropout=0.0)


def randomized(config: DiffAEConfig, seed: int) -> DiffAE:
    """A network whose every parameter is random (the official init zeroes several convolutions)."""
    model = DiffAE(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def lightning_checkpoint(model: DiffAE, ema: DiffAE, **extra) -> dict:
    """What the official LitModel saves: both networks under prefixes, the x_T buffer, bookkeeping."""
    state = {"x_T": torch.randn(2, 3, 16, 16)}
    state.update({"model." + k: v.clone() for k, v in model.state_dict().items()})
    state.update({"ema_model." + k: v.clone() for k, v in ema.state_dict().items()})
    return {"epoch": 3, "global_step": 1234, "state_dict": state, **extra}


def inputs(config: DiffAEConfig, n: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    return (torch.rand(n, config.in_channels, s, s, generator=g) * 2 - 1,
            torch.randint(0, 1000, (n,), generator=g),
            torch.randn(n, config.enc_out_channels, generator=g))


def test_official_layout_loads_bit_identically(tmp_path):
    model, ema = randomized(TINY, 0), randomized(TINY, 1)
    path = tmp_path / "last.ckpt"
    torch.save(lightning_checkpoint(model, ema), path)
    x, t, cond = inputs(TINY)
    for which, source in (("ema_model", ema), ("model", model)):
        loaded = load_official(path, TINY, which=which)
        assert not loaded.training
        got, want = loaded.state_dict(), source.state_dict()
        assert list(got) == list(want)
        assert all(torch.equal(got[k], want[k]) for k in want)
        with torch.no_grad():
            assert torch.equal(loaded(x, t, cond), source(x, t, cond))
            assert torch.equal(loaded.encode(x), source.encode(x))
    other = load_official(path, TINY, which="model").state_dict()
    assert not torch.equal(other["out.2.weight"], ema.state_dict()["out.2.weight"])


def test_lightning_python_objects_become_inert_placeholders(tmp_path):
    """PL 1.4 keys callback states by class and may pickle other objects: weights_only refuses them,
    the reader stands in inert placeholders and never runs their code."""
    ckpt = lightning_checkpoint(randomized(TINY, 0), randomized(TINY, 1),
                                callbacks={FakeCallback: {"best_model_path": "x"}},
                                hyper_parameters={"conf": Marker()})
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    ran.clear()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    back = read_checkpoint(path)
    assert ran == []
    assert [type(k).__name__ for k in back["callbacks"]] == ["type"]
    assert list(back["callbacks"].values()) == [{"best_model_path": "x"}]
    assert type(back["hyper_parameters"]["conf"]) is not Marker
    loaded = load_official(path, TINY)
    assert torch.equal(loaded.state_dict()["out.2.weight"], ckpt["state_dict"]["ema_model.out.2.weight"])


def test_objects_placeholders_cannot_stand_for_are_refused_with_a_way_out(tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, "odd": Items([1, 2])}, path)
    with pytest.raises(ValueError) as e:
        read_checkpoint(path)
    assert "Items" in str(e.value) and f"torch.load({str(path)!r}" in str(e.value)


class Items(list):
    pass


ran: list[str] = []


class FakeCallback:
    pass


class Marker:
    def __init__(self):
        self.x = 1

    def __setstate__(self, state):   # unpickling the real class would run this
        ran.append("Marker.__setstate__")


@pytest.mark.parametrize("damage, named", [
    (lambda s: s.pop("ema_model.middle_block.1.qkv.weight"), "missing keys [middle_block.1.qkv.weight]"),
    (lambda s: s.__setitem__("ema_model.encoder.extra.weight", torch.zeros(1)), "unexpected keys [encoder.extra.weight]"),
    (lambda s: s.__setitem__("ema_model.out.2.weight", torch.zeros(3, 8, 1, 1)), "out.2.weight (3, 8, 1, 1) != (3, 8, 3, 3)"),
])
def test_each_mismatch_is_refused_by_name(tmp_path, damage, named):
    ckpt = lightning_checkpoint(randomized(TINY, 0), randomized(TINY, 1))
    damage(ckpt["state_dict"])
    with pytest.raises(ValueError) as e:
        load_official(ckpt, TINY)
    assert named in str(e.value)
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=str(path)):
        load_official(path, TINY)


def test_other_config_and_other_sources_are_refused(tmp_path):
    ckpt = lightning_checkpoint(randomized(TINY, 0), randomized(TINY, 1))
    with pytest.raises(ValueError, match="mis-shaped keys"):
        load_official(ckpt, dataclasses.replace(TINY, embed_channels=24, enc_out_channels=24))
    with pytest.raises(ValueError, match="48-channel feature map"):
        DiffAE(dataclasses.replace(TINY, model_channels=16))
    only_model = {"state_dict": {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("ema_model.")}}
    with pytest.raises(ValueError, match=r"no ema_model\.\* keys"):
        load_official(only_model, TINY)
    with pytest.raises(ValueError, match="which must be"):
        official_state_dict(ckpt, which="ema")
    # an unprefixed state dict (the project's own saves) is taken as it is
    bare = randomized(TINY, 5).state_dict()
    assert official_state_dict(bare) == bare
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt: not readable"):
        load_official(junk, TINY)


def test_ffhq256_has_the_official_names_shapes_and_size():
    with torch.device("meta"):
        model = DiffAE(FFHQ256_AUTOENC)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # an independent load of the official ema_model reports 168,492,291 parameters
    n = sum(p.numel() for p in model.parameters())
    assert n == 168_492_291
    # the registry's file: model + ema_model + Adam's two moments in float32, and x_T (32 x 3 x 256 x 256)
    assert 0 < 2_722_085_968 - (16 * n + 4 * 32 * 3 * 256 * 256) < 2_000_000
    expected = {
        "time_embed.time_embed.0.weight": (512, 128),          # TimeStyleSeperateEmbed on the 128-d sinusoid
        "time_embed.time_embed.2.weight": (512, 512),
        "input_blocks.0.0.weight": (128, 3, 3, 3),
        "input_blocks.1.0.in_layers.0.weight": (128,),
        "input_blocks.1.0.emb_layers.1.weight": (256, 512),     # time: scale and shift
        "input_blocks.1.0.cond_emb_layers.1.weight": (128, 512),  # z_sem: scale only
        "input_blocks.1.0.out_layers.3.weight": (128, 128, 3, 3),
        "input_blocks.3.0.in_layers.2.weight": (128, 128, 3, 3),   # the downsampling ResBlock of 256 px
        "input_blocks.7.0.skip_connection.weight": (256, 128, 1, 1),
        "input_blocks.13.1.qkv.weight": (1536, 512, 1),          # attention at 16 px
        "input_blocks.17.0.in_layers.2.weight": (512, 512, 3, 3),
        "middle_block.0.emb_layers.1.weight": (1024, 512),
        "middle_block.1.proj_out.weight": (512, 512, 1),
        "output_blocks.0.0.in_layers.0.weight": (1024,),         # 512 + the 512-wide skip
        "output_blocks.2.1.in_layers.2.weight": (512, 512, 3, 3),  # the upsampling ResBlock of 8 px
        "output_blocks.3.1.qkv.weight": (1536, 512, 1),
        "output_blocks.17.0.skip_connection.weight": (128, 256, 1, 1),
        "out.0.weight": (128,),
        "out.2.weight": (3, 128, 3, 3),
        "encoder.input_blocks.0.0.weight": (128, 3, 3, 3),
        "encoder.input_blocks.13.1.qkv.weight": (1536, 512, 1),
        "encoder.input_blocks.20.0.in_layers.2.weight": (512, 512, 3, 3),
        "encoder.middle_block.1.qkv.weight": (1536, 512, 1),
        "encoder.out.0.weight": (512,),
        "encoder.out.3.weight": (512, 512, 1, 1),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert len(model.input_blocks) == 18 and len(model.output_blocks) == 18
    assert not any(k.startswith("encoder.input_blocks.21.") for k in shapes)
    # the encoder's ResBlocks are unconditioned: one convolution, no out_layers, no embeddings
    assert not any(".out_layers." in k or "emb_layers" in k for k in shapes if k.startswith("encoder."))


@pytest.mark.parametrize("config", [
    TINY,
    dataclasses.replace(TINY, resblock_updown=False, num_head_channels=4, use_new_attention_order=True),
    dataclasses.replace(TINY, num_input_res_blocks=2, num_res_blocks=2),
])
def test_forward_and_encode_shapes(config):
    model = randomized(config, 3)
    x, t, cond = inputs(config, n=3)
    with torch.no_grad():
        assert model.encode(x).shape == (3, config.enc_out_channels)
        eps = model(x, t, cond)
        assert eps.shape == x.shape and torch.isfinite(eps).all()
        assert torch.equal(model(x, torch.tensor(7), cond), model(x, torch.full((3,), 7), cond))
    if not config.resblock_updown:
        assert "input_blocks.2.0.op.weight" in model.state_dict()


def test_anoncli_64_is_small_and_runs():
    model = DiffAE(ANONCLI_64)
    assert sum(p.numel() for p in model.parameters()) < 20_000_000
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    cond = model.encode(x)
    assert cond.shape == (2, 512)
    eps = model(x, torch.tensor([0, 999]), cond)
    assert eps.shape == (2, 3, 64, 64)
    eps.square().mean().backward()
    assert model.encoder.out[3].weight.grad is not None


def test_time_and_code_both_condition_the_output():
    model = randomized(TINY, 4)
    x, t, cond = inputs(TINY)
    with torch.no_grad():
        base = model(x, t, cond)
        assert not torch.allclose(base, model(x, t + 100, cond))
        assert not torch.allclose(base, model(x, t, cond + 1))
        assert not torch.allclose(base[:1], model(x[:1], t[:1], cond[1:]))


def test_skip_connections_pair_as_the_official_forward():
    """Input blocks 0 (conv), 1 at 16 px and 2 (down), 3 at 8 px; the output side takes each level's
    outputs last-in first-out, deepest level first: output blocks 0..3 get input blocks 3, 2, 1, 0."""
    model = randomized(TINY, 6)
    outs, laterals = {}, {}
    for i, block in enumerate(model.input_blocks):
        block.register_forward_hook(lambda m, a, out, i=i: outs.__setitem__(i, out))
    for k, block in enumerate(model.output_blocks):
        block.register_forward_pre_hook(lambda m, a, k=k: laterals.__setitem__(k, a[3]))
    with torch.no_grad():
        model(*inputs(TINY))
    assert [next(i for i, o in outs.items() if o is laterals[k]) for k in range(4)] == [3, 2, 1, 0]


def test_resblock_applies_adagn_time_then_code():
    """out_layers(GroupNorm(h)·(1 + t_s) + t_b, then ·(1 + z_s)) + skip: model/blocks.py apply_conditions."""
    torch.manual_seed(0)
    block = ResBlock(8, 16, emb_channels=12, cond_channels=10).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
        x, emb, cond = torch.randn(2, 8, 5, 5), torch.randn(2, 12), torch.randn(2, 10)
        h = block.in_layers(x)
        t_s, t_b = block.emb_layers(emb)[..., None, None].chunk(2, dim=1)
        z_s = block.cond_emb_layers(cond)[..., None, None]
        h = torch.nn.functional.group_norm(h, 16, block.out_layers[0].weight, block.out_layers[0].bias)
        h = (h * (1 + t_s) + t_b) * (1 + z_s)
        want = block.out_layers[3](torch.nn.functional.silu(h)) + block.skip_connection(x)
        torch.testing.assert_close(block(x, emb, cond), want)


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 1]), 4)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(emb[1], torch.tensor([math.cos(1), math.cos(0.01), math.sin(1), math.sin(0.01)]))
    assert timestep_embedding(torch.tensor([3.5]), 5).shape == (1, 5)


def test_config_round_trips_and_is_checked():
    for config in (FFHQ256_AUTOENC, ANONCLI_64, TINY):
        d = json.loads(json.dumps(config.to_dict()))
        assert DiffAEConfig.from_dict(d) == config
        assert hash(DiffAEConfig.from_dict(d)) == hash(config)
    with pytest.raises(ValueError, match="unknown DiffAEConfig fields: widths"):
        DiffAEConfig.from_dict({**TINY.to_dict(), "widths": [1]})
    with pytest.raises(ValueError, match="adaptivenonzero"):
        dataclasses.replace(TINY, enc_pool="depthconv")
    with pytest.raises(ValueError, match="16-wide code .* encoder writes 32"):
        dataclasses.replace(TINY, enc_out_channels=32)
    assert dataclasses.replace(TINY, enc_out_channels=32, resnet_cond_channels=32).cond_channels == 32
    with pytest.raises(ValueError, match="not divisible"):
        dataclasses.replace(TINY, image_size=18)
