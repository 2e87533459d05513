"""The disentangling generator (book ch. 5, Table 8.3): shapes, losses in closed form, training
that resumes exactly from its checkpoint, the safetensors export, and the identity methods built
on a tiny generator."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anoncli.models.aei import AADLayer, AEIConfig, AEINet, MultiScaleDiscriminator  # noqa: E402
from anoncli.train import aei_losses  # noqa: E402

TINY = dict(resolution=32, base_channels=4, max_channels=8, generator_channels=(8, 8, 4, 4), disc_channels=4, disc_layers=2)


def test_default_network_has_the_books_layout_and_fits_25_mb():
    c = AEIConfig()
    assert c.levels == 7                                    # 2, 4, ..., 128: one attribute level per octave
    net = AEINet(c)
    x = torch.zeros(2, 3, 128, 128)
    out, maps = net(torch.nn.functional.normalize(torch.randn(2, 128), dim=1), x)
    assert out.shape == x.shape and out.abs().max() <= 1
    assert [m.shape[-1] for m in maps] == [2, 4, 8, 16, 32, 64, 128]
    assert [m.shape[1] for m in maps] == c.attribute_channels()
    assert len(net.generator.blocks) == c.levels            # one AAD ResBlk per level
    n_bytes = 4 * sum(p.numel() for p in net.parameters())
    assert n_bytes < 25 * 2 ** 20
    assert [o.shape[-1] for o in MultiScaleDiscriminator(c)(x)] == [14, 6]


def test_encoder_layers_are_conv4x4_stride2_bn_leakyrelu_01():
    net = AEINet(AEIConfig())
    conv, bn, act = net.encoder.down[0]
    assert conv.kernel_size == (4, 4) and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert isinstance(bn, torch.nn.BatchNorm2d) and act.negative_slope == 0.1
    convt = net.encoder.up[0][0]
    assert isinstance(convt, torch.nn.ConvTranspose2d) and convt.kernel_size == (4, 4) and convt.stride == (2, 2)


def test_config_checks_its_shape():
    with pytest.raises(ValueError):
        AEIConfig(resolution=100).check()
    with pytest.raises(ValueError):
        AEIConfig(generator_channels=(8, 8)).check()


def test_losses_have_their_closed_forms():
    zero = [torch.zeros(3, 2, 4, 4)]
    assert float(aei_losses.discriminator_loss(zero * 2, zero * 2)) == pytest.approx(4 * math.log(2), rel=1e-6)
    assert float(aei_losses.generator_adversarial_loss(zero)) == pytest.approx(math.log(2), rel=1e-6)
    a = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    assert float(aei_losses.identity_loss(a, a)) == pytest.approx(0, abs=1e-6)
    assert float(aei_losses.identity_loss(a, -a)) == pytest.approx(2, abs=1e-6)
    maps = [torch.ones(2, 3, 4, 4), torch.zeros(2, 1, 8, 8)]
    shifted = [m + 2 for m in maps]
    assert float(aei_losses.attribute_loss(shifted, maps)) == pytest.approx(0.5 * (4 + 4))
    x, y = torch.zeros(4, 3, 2, 2), torch.ones(4, 3, 2, 2)
    y[1] = 3.0
    same = torch.tensor([True, True, False, False])
    assert float(aei_losses.reconstruction_loss(x, y, same)) == pytest.approx((0.5 + 4.5) / 2)
    assert float(aei_losses.reconstruction_loss(x, y, torch.zeros(4, dtype=torch.bool))) == 0.0


def _crop_set(n=12, res=32):
    from anoncli.train.face_crops import CropSet

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)
    index = [{"source": "s", "image": f"{i}.png", "identity": str(i), "held_out": i % 4 == 0} for i in range(n)]
    return CropSet(crops, index, rng.standard_normal((n, 2, 128)).astype(np.float32))


def _settings(steps, **kw):
    from anoncli.train.aei import AEITrainSettings

    return AEITrainSettings(steps=steps, batch_size=3, checkpoint_every=2, evaluate_every=20, threads=1, config=TINY, **kw)


@pytest.fixture
def dlib_encoder_present():
    from anoncli.weights import weights_available

    ok, why = weights_available(["dlib-face-recognition-resnet"])
    if not ok:
        pytest.skip(why)


def _params(trainer, network="net"):
    return torch.cat([p.detach().flatten() for p in getattr(trainer, network).parameters()])


def test_training_resumes_exactly_where_it_stopped(tmp_path, dlib_encoder_present):
    from anoncli.train.aei import AEITrainer

    crops = _crop_set()
    straight = AEITrainer(crops, _settings(5), tmp_path / "a", log=lambda m: None)
    (tmp_path / "a").mkdir()
    straight.run(progress=False)
    (tmp_path / "b").mkdir()
    first = AEITrainer(crops, _settings(3), tmp_path / "b", log=lambda m: None)
    first.run(progress=False)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    resumed = AEITrainer(crops, _settings(5), tmp_path / "b", log=lambda m: None)
    assert resumed.step == 3
    resumed.run(progress=False)
    assert resumed.step == straight.step == 5
    torch.testing.assert_close(_params(resumed), _params(straight), rtol=1e-5, atol=1e-6)
    assert not torch.equal(_params(first), _params(resumed))
    with pytest.raises(ValueError, match="other settings"):
        AEITrainer(crops, _settings(5, margin=0.3), tmp_path / "b", log=lambda m: None)


@pytest.fixture
def tiny_generator(tmp_path, monkeypatch, dlib_encoder_present):
    """A trained-for-two-steps tiny generator, exported and registered under the real name."""
    from anoncli import weights
    from anoncli.identity.generator import GENERATOR_WEIGHTS
    from anoncli.train.aei import AEITrainer

    (tmp_path / "work").mkdir()
    trainer = AEITrainer(_crop_set(), _settings(2), tmp_path / "work", log=lambda m: None)
    trainer.run(progress=False)
    folder = tmp_path / "weights"
    entry = weights.REGISTRY[GENERATOR_WEIGHTS]
    trainer.export(folder / entry.filename, {"data": ["synthetic"]})
    monkeypatch.setitem(weights.REGISTRY, GENERATOR_WEIGHTS,
                        dataclasses.replace(entry, sha256=weights.sha256_of(folder / entry.filename)))
    return folder, trainer


def test_export_round_trips(tiny_generator):
    from anoncli.identity.generator import IdentityGenerator, read_generator_file

    folder, trainer = tiny_generator
    gen = IdentityGenerator(folder)
    assert gen.resolution == 32 and gen.margin == trainer.settings.margin
    for (k, v), (k2, v2) in zip(trainer.net.state_dict().items(), gen.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    np.testing.assert_array_equal(gen.mu, trainer.mu)
    f = read_generator_file(folder / "aei_celeba_utk_128.safetensors")
    assert f.card["steps"] == 2 and f.card["data"] == ["synthetic"]
    assert 0 < f.empirical_l1_sensitivity <= 2 * math.sqrt(128)


def test_identitydp_noise_is_fresh_and_the_guarantee_is_recorded(tiny_generator):
    from anoncli.methods import build_method

    folder, _ = tiny_generator
    method = build_method("identitydp", {"epsilon": 6}, weights_dir=folder)
    crop = np.full((32, 32, 3), 120, np.float32)
    a, b = (method.anonymize_crop(crop, None) for _ in range(2))
    assert a.shape == crop.shape and not np.array_equal(a, b)
    g = method.guarantee()
    assert g["epsilon"] == 6 and g["dimension"] == 128 and g["delta"] == 0
    assert g["l1_sensitivity"] == pytest.approx(2 * math.sqrt(128), abs=1e-6)
    assert g["noise_scale"] == pytest.approx(2 * math.sqrt(128) / 6, abs=1e-6)
    assert g["noise_to_signal_rms"] == pytest.approx(g["noise_scale"] * math.sqrt(256), abs=1e-5)
    emp = build_method("identitydp", {"epsilon": 6, "sensitivity": "empirical"}, weights_dir=folder).guarantee()
    assert emp["l1_sensitivity"] < g["l1_sensitivity"] and "not a worst-case" in emp["protects"]
    v = np.zeros(128)
    v[0] = 1
    noisy = [method.perturb(v) for _ in range(200)]
    assert all(abs(np.linalg.norm(n) - 1) < 1e-9 for n in noisy)
    assert abs(np.mean([n[0] for n in noisy])) < 0.5          # at ε = 6 on 128-d the noise dominates


def test_identitydp_draws_from_the_secure_generator(monkeypatch, tiny_generator):
    from anoncli.methods import build_method, identity

    calls = []
    real = identity.laplace_noise

    def spy(scale, shape):
        calls.append((scale, shape))
        return real(scale, shape)

    monkeypatch.setattr(identity, "laplace_noise", spy)
    method = build_method("identitydp", {"epsilon": 2}, weights_dir=tiny_generator[0])
    method.anonymize_crop(np.zeros((32, 32, 3), np.float32), None)
    assert calls == [(pytest.approx(2 * math.sqrt(128) / 2), (128,))]
    from anoncli.privacy import mechanisms

    assert real is mechanisms.laplace_noise


def test_identitydp_gives_the_generator_a_face_shaped_vector_unless_asked_for_the_books(tiny_generator):
    from anoncli.identity.representation import face_code_covariance
    from anoncli.methods import build_method

    folder, _ = tiny_generator
    shaped = build_method("identitydp", {"epsilon": 6}, weights_dir=folder)
    unit = build_method("identitydp", {"epsilon": 6, "noisy_identity": "unit"}, weights_dir=folder)
    vals, vecs = np.linalg.eigh(face_code_covariance(shaped.generator.w, shaped.generator.whitening_shrinkage))
    unused = vecs[:, vals < 1e-3 * vals.max()]
    v = np.zeros(128)
    v[0] = 1
    outside = {name: np.mean([np.linalg.norm(unused.T @ m.perturb(v)) ** 2 for _ in range(50)])
               for name, m in (("face-shaped", shaped), ("unit", unit))}
    assert outside["face-shaped"] < 1e-3
    assert outside["unit"] == pytest.approx(unused.shape[1] / 128, abs=0.1)
    assert all(abs(np.linalg.norm(m.perturb(v)) - 1) < 1e-9 for m in (shaped, unit))
    assert "post-processing" in shaped.guarantee()["protects"]


def test_idrotate_needs_a_key_and_is_keyed(tiny_generator):
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method

    method = build_method("idrotate", {"level": 9, "rotation": "plane"}, weights_dir=tiny_generator[0])
    crop = np.full((32, 32, 3), 90, np.float32)
    with pytest.raises(ValueError, match="keyfile"):
        method.anonymize_crop(crop, None, None)
    k1, k2 = FaceKey("a", b"\x01" * 32), FaceKey("a", b"\x02" * 32)
    np.testing.assert_array_equal(method.reference(k1), method.reference(k1))
    assert abs(method.reference(k1) @ method.reference(k2)) < 0.5
    out = method.anonymize_crop(crop, None, k1)
    np.testing.assert_array_equal(out, method.anonymize_crop(crop, None, k1))   # deterministic given the key
    assert method.restore_crop(out, None, k1, {}).shape == crop.shape
    assert method.key_params(k1) == {"theta_degrees": 120.0}


def test_idrotate_restore_fits_with_its_own_number_of_steps_and_one_code_per_input(tiny_generator, monkeypatch):
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method

    method = build_method("idrotate", {"level": 9, "refine_steps": 7, "restore_refine_steps": 2}, weights_dir=tiny_generator[0])
    assert method.params["refine_inputs"] == "shared"
    seen = []
    real = method.generator.generate_many
    monkeypatch.setattr(method.generator, "generate_many",
                        lambda z, a, refinements, precision: seen.append((refinements[0].steps, refinements[0].inputs))
                        or real(z, a, refinements, precision))
    key = FaceKey("a", b"\x01" * 32)
    out = method.anonymize_crop(np.full((32, 32, 3), 90, np.float32), None, key)
    method.restore_crop(out, None, key, {})
    assert seen == [(7, "shared"), (2, "per-block")]


def test_missing_generator_names_the_commands_that_get_it():
    from anoncli.identity.generator import GENERATOR_WEIGHTS
    from anoncli.weights import REGISTRY, WeightsMissing, fetch, missing_message

    text = missing_message(REGISTRY[GENERATOR_WEIGHTS], [])
    assert "git checkout -- weights/aei_celeba_utk_128.safetensors" in text and "anoncli train aei" in text
    with pytest.raises(WeightsMissing, match="anoncli train aei"):
        fetch(GENERATOR_WEIGHTS)


def test_model_card_states_data_steps_and_measurements(tiny_generator):
    from anoncli.train.model_card import write_aei_model_card
    from anoncli.weights import sha256_of

    folder, trainer = tiny_generator
    weights = folder / "aei_celeba_utk_128.safetensors"
    ev = trainer.evaluate(3)
    card = write_aei_model_card(weights, {"data": ["synthetic"], "held_out_eval": ev, "steps": trainer.step,
                                          "train_seconds": trainer.elapsed, "settings": dataclasses.asdict(trainer.settings),
                                          "notes": ["first note", "second note"]})
    text = card.read_text()
    assert sha256_of(weights) in text and "steps: 2 at batch 3" in text and "synthetic" in text
    assert f"| {ev['rec_psnr']} dB | {ev['rec_ssim']} |" in text and "first note\n\nsecond note" in text
    assert set(ev) >= {"rec_psnr", "rec_ssim", "swap_id_cos", "swap_same_person_dlib", "random_identity_protection_dlib"}
    assert "perceptual" not in text
    settings = {**dataclasses.asdict(trainer.settings), "lambda_perceptual": 2.0}
    text = write_aei_model_card(weights, {"data": ["synthetic"], "held_out_eval": ev, "settings": settings}).read_text()
    assert "L_rec x 10.0 + perceptual (dlib ResNet's first blocks, same-face samples) x 2.0;" in text
    assert "eyes and mouth" not in text
    text = write_aei_model_card(weights, {"data": ["synthetic"], "held_out_eval": ev,
                                          "settings": {**settings, "component_weight": 3.0}}).read_text()
    assert "x 2.0; eyes and mouth weighed 1 + 3.0 in L_rec and the perceptual term;" in text


def test_train_commands_refuse_bad_input_without_a_traceback(tmp_path):
    import subprocess
    import sys

    for command in ("aei", "glow"):
        r = subprocess.run([sys.executable, "-m", "anoncli", "train", command, "--data", str(tmp_path / "nowhere"),
                            "--work", str(tmp_path / "w")], capture_output=True, text=True)
        assert r.returncode == 2 and "is not a folder" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "anoncli", "train", "glow", "--data", str(tmp_path), "--work", str(tmp_path / "w"),
                        "--resolution", "100"], capture_output=True, text=True)
    assert r.returncode == 2 and "not divisible" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "anoncli", "train", "aei", "--data", str(tmp_path), "--work", str(tmp_path / "w"),
                        "--resolution", "100"], capture_output=True, text=True)
    assert r.returncode == 2 and "power of two" in r.stderr and "Traceback" not in r.stderr


def test_a_generator_that_leaves_faces_recognisable_is_announced(tiny_generator, monkeypatch):
    from anoncli import weights
    from anoncli.identity.generator import GENERATOR_WEIGHTS, generator_warning
    from anoncli.train.aei import export_generator

    folder, trainer = tiny_generator
    path = folder / weights.REGISTRY[GENERATOR_WEIGHTS].filename
    for measured, warned in ((0.12, True), (0.95, False)):
        export_generator(trainer.net, trainer.mu, trainer.w, trainer.settings.margin, path,
                         {"steps": 2, "held_out_eval": {"random_identity_protection_dlib": measured}}, 1.0)
        monkeypatch.setitem(weights.REGISTRY, GENERATOR_WEIGHTS,
                            dataclasses.replace(weights.REGISTRY[GENERATOR_WEIGHTS], sha256=weights.sha256_of(path)))
        text = generator_warning(folder)
        assert (text is not None) == warned
        if warned:
            assert "12%" in text and "stay recognisable" in text


def test_identity_methods_announce_their_generator_before_a_run(tiny_generator):
    from anoncli.methods import get_method_spec

    spec = get_method_spec("identitydp")
    assert spec.advisory is not None and spec.advisory(tiny_generator[0], {}) is None   # no card figure: no warning
    idrotate = get_method_spec("idrotate")
    assert idrotate.advisory(tiny_generator[0], idrotate.resolve_params({})) is None   # orthogonal: nothing to link
    linkage = idrotate.advisory(tiny_generator[0], idrotate.resolve_params({"rotation": "plane"}))   # whatever the generator
    assert "linkable" in linkage and "farthest first" in linkage and "Also:" not in linkage
    assert get_method_spec("blur").advisory is None


def test_one_identity_for_every_generator_input_is_the_shared_identity():
    net = AEINet(AEIConfig(**TINY)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.nn.functional.normalize(torch.randn(2, 128), dim=1)
    with torch.no_grad():
        attributes = net.encoder(x)
        shared = net.generator(z, attributes)
        per_input = net.generator(z[:, None].repeat(1, net.generator.identity_inputs, 1), attributes)
        other = z[:, None].repeat(1, net.generator.identity_inputs, 1).clone()
        other[:, -1] = torch.nn.functional.normalize(torch.randn(2, 128), dim=1)
        changed = net.generator(other, attributes)
    torch.testing.assert_close(per_input, shared)
    assert not torch.allclose(changed, shared)


def test_the_attributes_modulations_render_the_same_face_as_the_attribute_maps():
    net = AEINet(AEIConfig(**TINY)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.nn.functional.normalize(torch.randn(2, net.generator.identity_inputs, 128), dim=-1)
    with torch.no_grad():
        attributes = net.encoder(x)
        modulations = net.generator.modulations(attributes)
        torch.testing.assert_close(net.generator(z, modulations), net.generator(z, attributes), rtol=0, atol=1e-6)
        again = net.generator.modulations(modulations)   # modulations pass through, as the fit is handed them
        assert all(a is b for a, b in zip(again, modulations))
    # every AAD layer has its own pair, the shortcut's included
    assert sum(len(block) for block in modulations) == sum(isinstance(m, AADLayer) for m in net.generator.modules())


def test_refinement_brings_the_pasted_face_closer_to_the_requested_identity():
    from anoncli.faces.blend import face_mask
    from anoncli.identity.generator import Refinement, refine_identity_inputs, refine_identity_inputs_many
    from anoncli.models.tensors import to_tensor

    torch.manual_seed(0)
    net = AEINet(AEIConfig(**TINY)).eval().requires_grad_(False)
    projection = torch.randn(192, 128)

    def representation(crops):   # a stand-in r_id: any differentiable map to unit vectors
        return torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(crops, 4).flatten(1) @ projection, dim=1)

    rng = np.random.default_rng(3)
    crop = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    mask = torch.as_tensor(face_mask(32, "ellipse", 0.02, 0.2))
    x = to_tensor(crop[None])
    target = torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
    with torch.no_grad():
        attributes = net.encoder(x)

    def shown_cosine(inputs):
        with torch.no_grad():
            return float(representation(mask * net.generator(inputs, attributes) + (1 - mask) * x) @ target[0])

    refined = refine_identity_inputs(net.generator, representation, target, attributes, Refinement(crop, mask.numpy(), 20, 0.1))
    assert refined.shape == (1, net.generator.identity_inputs, 128)
    torch.testing.assert_close(refined.norm(dim=-1), torch.ones(1, net.generator.identity_inputs))
    assert shown_cosine(refined) > shown_cosine(target) + 0.1
    assert not torch.allclose(refined[0, 0], refined[0, 1])          # per-block: each input its own code

    shared = refine_identity_inputs(net.generator, representation, target, attributes,
                                    Refinement(crop, mask.numpy(), 20, 0.1, inputs="shared"))
    assert shared.shape == refined.shape
    torch.testing.assert_close(shared, shared[:, :1].expand_as(shared))   # one code for every input
    torch.testing.assert_close(shared.norm(dim=-1), torch.ones(1, net.generator.identity_inputs))
    assert shown_cosine(shared) > shown_cosine(target) + 0.1
    with pytest.raises(ValueError, match="inputs"):
        refine_identity_inputs_many(net.generator, representation, torch.cat([target, target]), attributes,
                                    [Refinement(crop, mask.numpy(), 2, 0.1), Refinement(crop, mask.numpy(), 2, 0.1, inputs="shared")],
                                    torch.cat([target, target]))


def test_old_configurations_load_without_the_full_resolution_branch():
    old = {k: v for k, v in AEIConfig().to_dict().items() if k != "full_res_channels"}   # a file written before the flag
    assert AEIConfig.from_dict(old).full_res_channels == 0
    assert AEIConfig.from_dict(old).attribute_channels() == AEIConfig().attribute_channels()


def test_full_resolution_branch_joins_the_finest_attribute_map():
    c = AEIConfig(**{**TINY, "full_res_channels": 5})
    net = AEINet(c)
    maps = net.encoder(torch.zeros(2, 3, 32, 32))
    assert maps[-1].shape == (2, c.attribute_channels()[-1], 32, 32)
    assert c.attribute_channels()[-1] == AEIConfig(**TINY).attribute_channels()[-1] + 5


@pytest.mark.parametrize("grown", [dict(full_res_channels=6), dict(generator_channels=(8, 8, 6, 6)),
                                   dict(generator_channels=(10, 10, 6, 6), full_res_channels=3)])
def test_a_grown_network_starts_as_the_exported_one(grown):
    from anoncli.train.aei_init import grow_from

    torch.manual_seed(1)
    small = AEINet(AEIConfig(**TINY))
    for p in small.parameters():   # not the initial weights: every tensor matters
        p.data.add_(0.05 * torch.randn_like(p))
    big = AEINet(AEIConfig(**{**TINY, **grown}))
    report = grow_from(small.state_dict(), small.config, big)
    assert report.max_output_difference < 1e-5 and report.grown > 0
    assert report.fresh == (6 if "full_res_channels" in grown else 0)   # the branch's conv weight and batch norm (2 weights, 3 buffers)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z = torch.nn.functional.normalize(torch.randn(3, 128), dim=1)
    small.eval(), big.eval()
    with torch.no_grad():
        torch.testing.assert_close(big(z, x)[0], small(z, x)[0], rtol=1e-5, atol=1e-5)
    big.train()
    out, _ = big(z, x)
    out.mean().backward()   # the new channels learn: their weights get gradients
    new_rows = big.generator.blocks[-1].conv1.weight.grad
    assert new_rows is not None and float(new_rows.abs().sum()) > 0


def test_a_network_cannot_grow_from_a_larger_one():
    from anoncli.train.aei_init import grow_from

    big = AEINet(AEIConfig(**{**TINY, "generator_channels": (16, 8, 4, 4)}))
    with pytest.raises(ValueError, match="can only grow"):
        grow_from(big.state_dict(), big.config, AEINet(AEIConfig(**TINY)))


def test_half_precision_export_loads_and_computes_in_float32(tiny_generator, tmp_path):
    from anoncli.identity.generator import read_generator_file

    folder, trainer = tiny_generator
    path = tmp_path / "half.safetensors"
    trainer.export(path, {"data": ["synthetic"]}, half=True)
    f = read_generator_file(path)
    assert f.tensors["net.generator.stem.weight"].dtype == torch.float16 and f.tensors["identity.w"].dtype == torch.float32
    assert f.card["weights_dtype"] == "float16"
    assert path.stat().st_size < 0.7 * (folder / "aei_celeba_utk_128.safetensors").stat().st_size
    net = AEINet(AEIConfig.from_dict(f.config))
    net.load_state_dict({k[4:]: v for k, v in f.tensors.items() if k.startswith("net.")})
    assert net.generator.stem.weight.dtype == torch.float32
    torch.testing.assert_close(net.generator.stem.weight, trainer.net.generator.stem.weight, rtol=1e-3, atol=1e-3)


def test_training_can_start_from_an_export_grown_wider(tiny_generator, tmp_path):
    from anoncli.train.aei import AEITrainer

    folder, trainer = tiny_generator
    settings = dataclasses.replace(_settings(4), config={**TINY, "full_res_channels": 4},
                                   init_from=str(folder / "aei_celeba_utk_128.safetensors"))
    (tmp_path / "grown").mkdir()
    messages = []
    grown = AEITrainer(trainer.crops, settings, tmp_path / "grown", log=messages.append)
    assert grown.step == 2 and messages[-1].startswith("started from") and "largest output difference to the export 0.00e+00" in messages[-1]
    np.testing.assert_array_equal(grown.mu, trainer.mu)
    grown.run(progress=False)
    assert grown.step == 4
    resumed = AEITrainer(trainer.crops, settings, tmp_path / "grown", log=messages.append)   # the checkpoint wins over --init-from
    assert resumed.step == 4 and messages[-1] == "resumed at step 4"


def test_an_export_carries_the_discriminator_that_init_from_restores(tiny_generator, tmp_path):
    from anoncli.identity.generator import read_generator_file
    from anoncli.train.aei import AEITrainer

    folder, trainer = tiny_generator
    path = tmp_path / "with-disc.safetensors"
    trainer.export(path, {"data": ["synthetic"]})
    assert any(k.startswith("disc.") for k in read_generator_file(path).tensors)
    messages = []
    (tmp_path / "next").mkdir()
    follow = AEITrainer(trainer.crops, dataclasses.replace(_settings(4), init_from=str(path)), tmp_path / "next",
                        log=messages.append)
    assert messages[-1].endswith("its discriminator restored")
    for a, b in zip(follow.disc.state_dict().values(), trainer.disc.state_dict().values()):
        assert torch.equal(a, b)
    fresh = AEITrainer(trainer.crops, dataclasses.replace(_settings(4), config={**TINY, "disc_channels": 8}, init_from=str(path)),
                       tmp_path / "other", log=messages.append)
    assert messages[-1].endswith("another shape: it starts afresh") and fresh.step == follow.step


def test_refinement_can_fit_through_a_readout_from_a_start():
    from anoncli.faces.blend import face_mask
    from anoncli.identity.generator import Refinement, refine_identity_inputs
    from anoncli.models.tensors import to_tensor

    torch.manual_seed(0)
    net = AEINet(AEIConfig(**TINY)).eval().requires_grad_(False)
    projection = torch.randn(192, 128)

    def representation(crops):
        return torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(crops, 4).flatten(1) @ projection, dim=1)

    turn = torch.linalg.qr(torch.randn(128, 128))[0]            # a readout: any differentiable map of the shown identity
    crop = np.random.default_rng(3).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    mask = face_mask(32, "ellipse", 0.02, 0.2)
    x = to_tensor(crop[None])
    target = torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
    goal = torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
    start = torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
    with torch.no_grad():
        attributes = net.encoder(x)

    def goal_cosine(inputs):
        with torch.no_grad():
            shown = representation(torch.as_tensor(mask) * net.generator(inputs, attributes) + (1 - torch.as_tensor(mask)) * x)
            return float((shown @ turn.T) @ goal[0])

    refinement = Refinement(crop, mask, 20, 0.1, start=start.numpy()[0], readout=lambda s: s @ turn.T, goal=goal.numpy()[0])
    refined = refine_identity_inputs(net.generator, representation, target, attributes, refinement, start)
    assert goal_cosine(refined) > goal_cosine(start) + 0.1


def test_idrotate_fits_from_past_the_angle_towards_the_keys_inverse(tiny_generator, monkeypatch):
    from anoncli.identity.rotation import rotate_identity
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method

    method = build_method("idrotate", {"level": 9, "rotation": "plane", "refine_steps": 3, "refine_overturn": 30, "refine_goal": "inverse"},
                         weights_dir=tiny_generator[0])
    seen = []
    real = method.generator.generate_many
    monkeypatch.setattr(method.generator, "generate_many",
                        lambda z, a, refinements, precision: seen.append((z[0], refinements[0])) or real(z, a, refinements, precision))
    key = FaceKey("a", b"\x01" * 32)
    crop = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    method.anonymize_crop(crop, None, key)
    (requested, refinement), = seen
    z_bar, _ = method.generator.encode(crop)
    reference = method.reference(key)
    np.testing.assert_allclose(requested, rotate_identity(z_bar, reference, 120.0))
    expected_start = rotate_identity(z_bar, reference, 150.0)
    np.testing.assert_allclose(refinement.start, expected_start / np.linalg.norm(expected_start), atol=1e-12)
    np.testing.assert_allclose(refinement.goal, z_bar)
    shown = torch.as_tensor(requested, dtype=torch.float32)[None]       # a face that shows z_new reads back as z̄
    torch.testing.assert_close(refinement.readout(shown), torch.as_tensor(z_bar, dtype=torch.float32)[None], atol=1e-5, rtol=0)


def test_identity_on_composite_measures_the_pasted_face(tmp_path, dlib_encoder_present, monkeypatch):
    from anoncli.train.aei import AEITrainer, composite_mask

    mask = composite_mask(32, 0.2)
    assert mask.shape == (1, 1, 32, 32) and float(mask[0, 0, 16, 16]) == pytest.approx(1.0) and float(mask[0, 0, 0, 0]) == 0.0
    (tmp_path / "w").mkdir()
    trainer = AEITrainer(_crop_set(), _settings(1, identity_on_composite=True), tmp_path / "w", log=lambda m: None)
    seen = []
    real = trainer.rep.forward
    monkeypatch.setattr(trainer.rep, "forward", lambda crops: seen.append(crops.detach().clone()) or real(crops))
    pasted = []
    real_paste = trainer.paste
    monkeypatch.setattr(trainer, "paste", lambda fake, x: pasted.append((fake.detach(), x)) or real_paste(fake, x))
    trainer.train_step()
    (fake, x), = pasted
    torch.testing.assert_close(seen[0], mask * fake + (1 - mask) * x)
    result = trainer.evaluate(3)
    assert {"turned_id_cos_pasted", "random_id_cos_pasted"} <= set(result)


def test_idrotate_fits_z_new_by_default_and_the_inverse_on_request(tiny_generator, monkeypatch):
    from anoncli.identity.rotation import rotate_identity
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method

    key = FaceKey("a", b"\x01" * 32)
    crop = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    for goal, readout in (("z-new", False), ("inverse", True)):
        method = build_method("idrotate", {"level": 9, "rotation": "plane", "refine_goal": goal}, weights_dir=tiny_generator[0])
        z_bar, _ = method.generator.encode(crop)
        target, fit = method.request(z_bar, key)
        np.testing.assert_allclose(target, rotate_identity(z_bar, method.reference(key), 120.0))
        assert ("readout" in fit) is readout and ("goal" in fit) is readout


def test_idrotate_orthogonal_keeps_nothing_of_the_owner_and_its_key_restores_exactly(tiny_generator):
    """--rotation orthogonal: z_new = A z̄ with the key's orthogonal A; restore's Aᵀ gives z̄ back
    exactly from z_new, a wrong key does not, and z_new has no fixed relation to z̄ (eq. 6.16's
    rotation keeps cos θ = -0.5 at level 9 for every key)."""
    from anoncli.identity.rotation import rotate_identity
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method

    method = build_method("idrotate", {}, weights_dir=tiny_generator[0])   # orthogonal by default
    plane = build_method("idrotate", {"level": 9, "rotation": "plane"}, weights_dir=tiny_generator[0])
    crop = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    z_bar, _ = method.generator.encode(crop)
    z_bar = z_bar / np.linalg.norm(z_bar)
    keys = [FaceKey(str(i), bytes([i + 1]) * 32) for i in range(40)]
    target, fit = method.request(z_bar, keys[0])
    np.testing.assert_allclose(np.linalg.norm(target), 1.0, atol=1e-6)
    np.testing.assert_allclose(method.recovered_identity(target, keys[0]), z_bar, atol=1e-6)
    assert method.recovered_identity(target, keys[1]) @ z_bar < 0.9
    assert method.key_params(keys[0]) == {"rotation": "orthogonal"}
    # a face's keyfile record decides how restore turns it back, whatever the run's flag says
    assert (plane.rotation_of(method.key_params(keys[0])), method.rotation_of(plane.key_params(keys[0]))) == ("orthogonal", "plane")
    kept = [method.request(z_bar, k)[0] @ z_bar for k in keys]
    assert abs(np.mean(kept)) < 3 / np.sqrt(len(z_bar) * len(keys)) + 0.05 and np.std(kept) > 0.03
    turned = [rotate_identity(z_bar, plane.reference(k), 120.0) @ z_bar for k in keys[:5]]
    np.testing.assert_allclose(turned, -0.5, atol=1e-6)


def test_idrotate_keeps_its_rendering_error_and_restore_turns_back_exactly(tiny_generator):
    """The keyfile keeps r_id of the face as the file shows it minus z_new; restore subtracts it before
    Aᵀ (or eq. 6.19-6.20), so ẑ is z̄ for the right key whatever the generator rendered, and with a wrong
    key it is still another identity. No record without a read-back (nothing to measure it on)."""
    from anoncli.keys.derive import FaceKey
    from anoncli.keys.envelope import b64
    from anoncli.methods import build_method
    from anoncli.methods.base import FaceRequest

    rng = np.random.default_rng(5)
    crop = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    key, wrong = FaceKey("a", b"\x01" * 32), FaceKey("a", b"\x07" * 32)
    shift = rng.normal(0, 3, crop.shape).astype(np.float32)   # what the file does to the face (compositing, encoding)
    for rotation in ("orthogonal", "plane"):
        method = build_method("idrotate", {"rotation": rotation, "refine_steps": 0}, weights_dir=tiny_generator[0])
        z_bar = method.generator.identity_of(crop)
        face = method.anonymize_many([FaceRequest(crop, None, key, read_back=lambda f: f + shift)])[0]
        target, _ = method.request(z_bar, key)
        shown = method.generator.identity_of(face.crop + shift)
        error = method.rendering_error(face.key_record)
        np.testing.assert_allclose(error, shown - target, atol=1e-7)   # kept in float32
        assert np.linalg.norm(error) > 1e-3   # an untrained generator does not show z_new
        params = {**method.key_params(key), **face.key_record}
        np.testing.assert_allclose(method.recovered_identity(shown, key, rotation, method.rendering_error(params)),
                                   z_bar / np.linalg.norm(z_bar), atol=1e-6)
        assert method.recovered_identity(shown, wrong, rotation, method.rendering_error(params)) @ z_bar < 0.9
        assert method.anonymize_many([FaceRequest(crop, None, key)])[0].key_record is None
        assert method.rendering_error(method.key_params(key)) is None   # a keyfile from before: the book's restore
        with pytest.raises(ValueError, match="rendering_error"):
            method.rendering_error({"rendering_error": "AAAA"})
        with pytest.raises(ValueError, match="finite"):
            method.rendering_error({"rendering_error": b64(np.full(128, np.nan, "<f4").tobytes())})


def test_the_fit_sees_the_compositing_and_restore_its_bands_and_low_pass(tiny_generator):
    from anoncli.methods import build_method

    method = build_method("identitydp", {"epsilon": 6, "detail_sigma": 0.75}, weights_dir=tiny_generator[0])
    crop = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    fit = method.refinement(crop, None)
    assert fit.detail_sigma == 0.75 and fit.colour is not None
    recoloured = fit.colour(np.full_like(crop, 40.0))
    assert abs(float(recoloured.mean()) - float(crop.mean())) < abs(40.0 - float(crop.mean()))   # towards the photo's colour
    plain = method.refinement(crop, None, restoring=True)   # restore's compositing low-passes too, without colour match
    assert plain.detail_sigma == 0.75 and plain.colour is None and plain.blend is None
    blend = object()   # and adds its change band by band
    banded = method.refinement(crop, None, restoring=True, blend_in_crop=blend)
    assert banded.blend is blend and banded.detail_sigma == 0.75 and banded.colour is None
    rendered = build_method("idrotate", {}, weights_dir=tiny_generator[0])   # a rendered restore is colour-matched like the anonymized face
    assert rendered.restore_matches_colour and rendered.refinement(crop, None, restoring=True).colour is not None
    region = np.zeros((32, 32), np.float32)
    region[8:24, 10:22] = 1.0
    np.testing.assert_array_equal(method.refinement(crop, None, region_in_crop=region).mask, region)   # the stage's region


def test_idrotate_faces_together_as_one_by_one_and_a_keyless_face_fails_alone(tiny_generator):
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method
    from anoncli.methods.base import FaceRequest

    # no fit steps: Adam's first steps move by about lr·sign(gradient), so a batch's float rounding can flip the
    # near-zero entries of an untrained network's gradient (the fit itself is compared in test_identity_fit.py)
    method = build_method("idrotate", {"level": 9, "refine_steps": 0, "precision": "float32", "faces_together": 3},
                          weights_dir=tiny_generator[0])
    rng = np.random.default_rng(2)
    crops = [rng.uniform(0, 255, (32, 32, 3)).astype(np.float32) for _ in range(4)]
    keys = [FaceKey(str(i), bytes([i + 1]) * 32) for i in range(3)] + [None]
    faces = method.anonymize_many([FaceRequest(c, None, k) for c, k in zip(crops, keys)])
    assert isinstance(faces[3], ValueError) and "keyfile" in str(faces[3])
    for crop, key, face in zip(crops[:3], keys, faces):
        np.testing.assert_allclose(face.crop, method.anonymize_crop(crop, None, key), atol=1e-3)


def test_discriminator_warm_up_moves_only_the_discriminator_and_happens_once(tiny_generator, tmp_path):
    from anoncli.train.aei import AEITrainer

    folder, trainer = tiny_generator
    settings = dataclasses.replace(_settings(4), discriminator_warmup=3, init_from=str(folder / "aei_celeba_utk_128.safetensors"))
    (tmp_path / "warm").mkdir()
    messages = []
    warm = AEITrainer(trainer.crops, settings, tmp_path / "warm", log=messages.append)
    generator_before = {k: v.clone() for k, v in warm.net.state_dict().items()}
    disc_before = _params(warm, "disc")
    warm.warm_up_discriminator(progress=False)
    assert all(torch.equal(v, generator_before[k]) for k, v in warm.net.state_dict().items()) and warm.step == 2
    assert warm.net.training
    assert not torch.equal(_params(warm, "disc"), disc_before)
    assert messages[-1].startswith("discriminator warmed up for 3 steps")
    warm.run(progress=False)
    assert warm.step == 4
    resumed = AEITrainer(trainer.crops, settings, tmp_path / "warm", log=messages.append)
    disc_resumed = _params(resumed, "disc")
    resumed.warm_up_discriminator(progress=False)   # already done in this work folder: nothing moves
    assert torch.equal(_params(resumed, "disc"), disc_resumed)


def test_perceptual_term_weighs_in_on_the_same_face_samples_only(tmp_path, dlib_encoder_present, monkeypatch):
    from anoncli.train.aei import AEITrainer

    crops = _crop_set()
    plain = AEITrainer(crops, _settings(1), tmp_path / "a", log=lambda m: None)
    weighted = AEITrainer(crops, _settings(1, lambda_perceptual=2.0), tmp_path / "b", log=lambda m: None)
    x, codes, _ = plain._batch()
    same = torch.tensor([True, False, True])
    for trainer in (plain, weighted):
        monkeypatch.setattr(trainer, "_batch", lambda: (x, codes, same))
    a, b = plain.train_step(), weighted.train_step()
    assert "perc" not in a and b["perc"] > 0
    assert b["g"] == pytest.approx(a["g"] + 2.0 * b["perc"], rel=1e-4)

    other = torch.rand_like(x) * 2 - 1
    per_row = weighted.perceptual(x / 2, other / 2)
    assert float(weighted.perceptual_loss(other, x, same)) == pytest.approx(float(per_row[[0, 2]].mean()), rel=1e-5)
    assert float(weighted.perceptual_loss(other, x, torch.zeros(3, dtype=torch.bool))) == 0.0
    assert float(weighted.perceptual_loss(x, x, same)) == pytest.approx(0.0, abs=1e-6)


def test_component_weights_peak_on_the_templates_eyes_and_mouth():
    from anoncli.faces.align import template_points

    weights = aei_losses.component_weights(128, 0.2, 3.0)[0, 0]
    assert weights.shape == (128, 128)
    points = template_points(128, 0.2)
    mouth = (points[3] + points[4]) / 2
    for x, y in (points[0], points[1], mouth):
        assert float(weights[int(y), int(x)]) == pytest.approx(4.0, abs=0.05)   # 1 + weight on each centre
    assert float(weights[int(points[2][1]), int(points[2][0])]) < 2.0           # the nose tip, between them
    assert float(weights[0, 0]) == pytest.approx(1.0, abs=1e-6) and float(weights.min()) >= 1.0
    assert torch.equal(aei_losses.component_weights(64, 0.2, 0.0), torch.ones(1, 1, 64, 64))


def test_component_weights_weigh_the_pixel_and_perceptual_terms_where_the_error_is(tmp_path, dlib_encoder_present):
    from anoncli.faces.align import template_points
    from anoncli.train.aei import AEITrainer

    x = torch.zeros(2, 3, 16, 16)
    error = torch.zeros_like(x)
    error[..., 4, 4] = 1.0
    weights = torch.ones(1, 1, 16, 16)
    weights[..., 4, 4] = 5.0
    same = torch.tensor([True, True])
    assert float(aei_losses.reconstruction_loss(error, x, same, torch.ones(1, 1, 16, 16))) == \
        pytest.approx(float(aei_losses.reconstruction_loss(error, x, same)))
    assert float(aei_losses.reconstruction_loss(error, x, same, weights)) == \
        pytest.approx(5 * float(aei_losses.reconstruction_loss(error, x, same)))

    crops = _crop_set()
    trainer = AEITrainer(crops, _settings(1, lambda_perceptual=1.0, component_weight=2.0), tmp_path / "w", log=lambda m: None)
    assert trainer.components.shape[-1] == trainer.config.resolution
    faces, _, _ = trainer._batch()
    other = torch.rand_like(faces) * 2 - 1
    reference = trainer.perceptual.reference_features(faces / 2)
    plain = trainer.perceptual.distance_to(reference, other / 2)
    assert torch.allclose(trainer.perceptual.distance_to(reference, other / 2, torch.ones_like(trainer.components)), plain, rtol=1e-5)
    weighted = trainer.perceptual.distance_to(reference, other / 2, trainer.components)
    assert bool((weighted > plain).all()) and bool((weighted < 3 * plain).all())

    def ratio(window):   # weighted over plain distance of the same noise put in one window of the face
        changed = faces.clone()
        changed[..., window[0]:window[0] + 8, window[1]:window[1] + 8] = other[..., :8, :8]
        return trainer.perceptual.distance_to(reference, changed / 2, trainer.components) / trainer.perceptual.distance_to(reference, changed / 2)

    eye = template_points(32, trainer.settings.margin)[0]
    assert bool((ratio((int(eye[1]) - 4, int(eye[0]) - 4)) > ratio((24, 24)) + 0.2).all())


def test_update_average_is_the_exponential_moving_average_and_copies_buffers():
    from anoncli.train.loop import update_average

    model, average = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        average.weight.fill_(1.0)
        model.running_mean.fill_(5.0)
    update_average(average, model, 0.9)
    torch.testing.assert_close(average.weight, torch.full((3,), 0.9 * 1.0 + 0.1 * 2.0))
    torch.testing.assert_close(average.running_mean, torch.full((3,), 5.0))


def test_the_weights_average_trains_resumes_and_is_what_is_exported(tiny_generator, tmp_path):
    from anoncli.identity.generator import read_generator_file
    from anoncli.train.aei import AEITrainer

    folder, trainer = tiny_generator
    settings = dataclasses.replace(_settings(4), ema_decay=0.5, init_from=str(folder / "aei_celeba_utk_128.safetensors"))
    (tmp_path / "avg").mkdir()
    averaged = AEITrainer(trainer.crops, settings, tmp_path / "avg", log=lambda m: None)
    start = _params(averaged)
    torch.testing.assert_close(_params(averaged, "average"), start)   # it starts as the generator it continues
    averaged.run(progress=False)
    net, mean = _params(averaged), _params(averaged, "average")
    assert not torch.equal(mean, net) and not torch.equal(mean, start)
    assert averaged.generator is averaged.average

    straight = AEITrainer(trainer.crops, dataclasses.replace(settings, steps=6), tmp_path / "avg2", log=lambda m: None)
    (tmp_path / "avg2").mkdir(exist_ok=True)
    straight.run(progress=False)
    resumed = AEITrainer(trainer.crops, dataclasses.replace(settings, steps=6), tmp_path / "avg", log=lambda m: None)
    torch.testing.assert_close(_params(resumed, "average"), mean)   # the checkpoint keeps the average
    resumed.run(progress=False)
    torch.testing.assert_close(_params(resumed, "average"), _params(straight, "average"), rtol=1e-5, atol=1e-6)

    path = tmp_path / "avg.safetensors"
    resumed.export(path, {"data": ["synthetic"]})
    exported = read_generator_file(path)
    for name, value in resumed.average.state_dict().items():
        torch.testing.assert_close(exported.tensors[f"net.{name}"], value)
    assert exported.card["settings"]["ema_decay"] == 0.5

    plain = AEITrainer(trainer.crops, _settings(2), tmp_path / "plain", log=lambda m: None)
    assert plain.average is None and plain.generator is plain.net
