"""DP-Image (thesis ch. 4, Algorithm 6, Theorem 4.4.1; issue 22): the accountant's ε against the
closed form, the chain against its recurrence, the released noise's law, and the CLI's guarantee
and refusals."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from anoncli.latent import dpimage
from anoncli.latent.dpimage import DpImageSettings, dp_image_account, dp_image_chain
from anoncli.privacy.accountant import dp_image_rdp, rdp_to_dp

from conftest import EXAMPLES, cli


def closed_form_epsilon(sigma, iterations, clip, delta, d):
    """ε = ρ + 2√(ρ ln(1/δ)), ρ = Δf²/(2Tσ²), Δf = 2c√d: min over α of αρ + ln(1/δ)/(α − 1)."""
    rho = (2 * clip * math.sqrt(d)) ** 2 / (2 * iterations * sigma ** 2)
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


@pytest.mark.parametrize("sigma,iterations,clip,delta,d", [
    (0.2, 1000, 0.5, 1e-8, 12288), (0.6, 100000, 20.0, 1e-8, 18 * 512), (1.0, 7, 3.0, 1e-5, 100)])
def test_the_account_is_theorem_4_4_1_in_closed_form(sigma, iterations, clip, delta, d):
    account = dp_image_account(DpImageSettings(sigma, iterations, clip, delta), d)
    assert account.epsilon == pytest.approx(closed_form_epsilon(sigma, iterations, clip, delta, d), rel=1e-12)
    assert account.sensitivity == pytest.approx(2 * clip * math.sqrt(d))
    numeric, _ = rdp_to_dp(lambda a: dp_image_rdp(a, account.sensitivity, sigma, iterations), delta)
    assert numeric == pytest.approx(account.epsilon, rel=1e-6)


def test_the_chain_is_clip_then_noise_at_every_step_across_noise_draws(monkeypatch):
    monkeypatch.setattr(dpimage, "NOISE_CHUNK", 6)   # 2 steps of a 3-d latent per draw: T = 5 needs 3 draws
    rng = np.random.default_rng(0)
    draws = []

    def noise(sigma, shape):
        draws.append(rng.normal(0, sigma, shape))
        return draws[-1]

    z0 = np.array([2.0, -0.3, 0.1])
    settings = DpImageSettings(0.7, 5, 0.5, 1e-8)
    got = dp_image_chain(z0, settings, noise=noise)
    steps = np.concatenate(draws)
    assert len(draws) == 3 and steps.shape == (5, 3)
    z = z0.copy()
    for t in range(5):
        z = np.clip(z, -0.5, 0.5) + steps[t]
    np.testing.assert_allclose(got, z)
    reencoded = dp_image_chain(z0, DpImageSettings(0.7, 1, 10.0, 1e-8), reencode=lambda v: v * 0.5, noise=lambda s, shape: np.zeros(shape))
    np.testing.assert_allclose(reencoded, z0 * 0.5)


def test_the_released_noise_is_gaussian_sigma_and_never_repeats():
    """One step from inside the box: z₁ − z₀ must be N(0, σ²) (Kolmogorov-Smirnov), from the OS's generator."""
    sigma, z0 = 0.3, np.linspace(-0.4, 0.4, 20000)
    settings = DpImageSettings(sigma, 1, 0.5, 1e-8)
    first, second = dp_image_chain(z0, settings) - z0, dp_image_chain(z0, settings) - z0
    assert stats.kstest(first / sigma, "norm").pvalue > 1e-3
    assert stats.kstest(second / sigma, "norm").pvalue > 1e-3
    assert not np.allclose(first, second)


def test_the_manifest_states_the_accountants_epsilon_and_epsilon_solves_for_t(tmp_path):
    r = cli("anonymize", EXAMPLES, "-o", tmp_path / "out", "--method", "dpimage", "--epsilon", "500", "-q", "-j", "1")
    if r.returncode == 3:
        pytest.skip(f"weights missing: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    rows = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    guarantees = [f["guarantee"] for faces in rows["faces"] for f in json.loads(faces) if "warp" in f]
    assert guarantees
    g = guarantees[0]
    assert g["bound"].startswith("proved") and g["dimension"] == 12288 and g["clip"] == 0.5 and g["sigma"] == 0.2
    expected = closed_form_epsilon(g["sigma"], g["iterations"], g["clip"], g["delta"], g["dimension"])
    assert g["epsilon"] == pytest.approx(expected, abs=1e-6) and g["epsilon"] <= 500
    assert closed_form_epsilon(g["sigma"], g["iterations"] - 1, g["clip"], g["delta"], g["dimension"]) > 500
    assert "pure" in g["protects"] and "os.urandom" in g["noise_source"]


@pytest.mark.parametrize("flags,message", [
    (["--epsilon", "0"], "--epsilon"), (["--sigma", "-1"], "--sigma"), (["--iterations", "0"], "--iterations"),
    (["--backbone", "stylegan9"], "--backbone"), (["--crop-size", "32"], "below the glow backbone's 64 px"),
    (["--epsilon", "5", "--iterations", "10"], "not both"), (["--epsilon", "0.5"], "T >= 45883009 iterations"),
    (["--device", "tpu"], "--device")])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, flags, message):
    out = tmp_path / "out"
    r = cli("anonymize", EXAMPLES, "-o", out, "--method", "dpimage", *flags, "-q")
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert not out.exists()


def test_the_decoded_glow_face_loses_its_crosshatch_and_goes_through_the_upsampler(monkeypatch):
    """On a squeeze-layer backbone the released face is f_D(z_T) without its period-2 patterns,
    enlarged by --upsampler; other backbones' decodes go to the upsampler as they are."""
    import torch

    from anoncli.faces.upsampling import resize
    from anoncli.flow.enlarge import remove_crosshatch
    from anoncli.flow.model import FlowModel
    from anoncli.latent import get_backbone_spec
    from anoncli.latent.glow import GlowBackbone
    from anoncli.methods import get_method_spec
    from anoncli.methods.dpimage import DPImage
    from anoncli.models.glow import Glow, GlowConfig

    torch.manual_seed(0)
    backbone = GlowBackbone(get_backbone_spec("glow"), flow=FlowModel.from_network(Glow(GlowConfig(resolution=16, levels=2, steps=2, hidden=8)), 0.3))
    assert backbone.spec.squeeze_grid and not get_backbone_spec("stylegan2-psp").squeeze_grid
    params = get_method_spec("dpimage").resolve_params({"crop_size": "64", "shape": "ellipse", "iterations": "1",
                                                        "upsampler": "bicubic"})
    method = DPImage(backbone_model=backbone, **params)
    z = np.random.default_rng(2).normal(0.0, 0.3, 16 * 16 * 3)
    monkeypatch.setattr(method, "release_latent", lambda crop: z)
    with torch.no_grad():
        decoded = method.to_crop(backbone.decode(torch.as_tensor(z, dtype=torch.float32)[None]))
    out = method.anonymize_crop(np.zeros((64, 64, 3), np.float32), None)
    np.testing.assert_allclose(out, resize(remove_crosshatch(decoded, 1.5).clip(0, 255), 64), atol=1e-3)
    assert np.abs(out - resize(decoded, 64)).mean() > 0.01
