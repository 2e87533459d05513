"""FSAP (thesis ch. 5, Algorithm 7; issue 22): the search's steps and stopping against closed
forms, the differentiable SSIM against the metric's, and the method end to end on a small Glow."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from anoncli.latent.fsap import FsapSettings, fsap_search
from anoncli.latent.image_losses import cosine_distance, ssim, ssim_loss
from anoncli.metrics.image_quality import ssim as ssim_numpy

from conftest import EXAMPLES, cli


def test_identity_steps_ascend_by_lambda_and_stop_at_the_first_decode_past_tau():
    """decode = identity, L_I = Σ w: each identity step adds d·λ_I to L_I, so a face starting at
    L_I = s needs ceil((τ − s)/(d·λ_I)) iterations (strictly past τ); one already past τ uses none."""
    d, lam, tau = 4, 0.05, 0.8
    start = torch.tensor([[0.0] * d, [0.1] * d, [0.3] * d])   # L_I = 0, 0.4, 1.2
    result = fsap_search(start, lambda w: w, lambda x, rows: x.sum(1), [], FsapSettings(100, 0, tau, lam, 0.0))
    expected = [math.floor((tau - s) / (d * lam)) + 1 if s <= tau else 0 for s in (0.0, 0.4, 1.2)]
    assert result.iterations == expected == [5, 3, 0]
    assert result.reached == [True, True, True]
    np.testing.assert_allclose(result.identity_loss, [s + n * d * lam for s, n in zip((0.0, 0.4, 1.2), expected)], atol=1e-6)
    np.testing.assert_allclose(result.decoded, start + torch.tensor(expected, dtype=torch.float32)[:, None] * lam, atol=1e-6)


def test_attribute_steps_descend_each_loss_by_its_own_sign():
    """With L_I = w₀ (moves only coordinate 0) and three attribute losses Σ w², the k attribute steps
    pull every other coordinate toward 0 by 3·λ_P each (three sign vectors, eq. 5.8); N is the cap."""
    w0 = torch.tensor([[0.0, 1.0, -1.0]])
    square = lambda x, rows: (x ** 2).sum(1)   # noqa: E731
    result = fsap_search(w0, lambda w: w, lambda x, rows: x[:, 0], [square, square, square], FsapSettings(2, 2, 5.0, 0.1, 0.01))
    assert result.iterations == [2] and result.reached == [False]
    # per iteration: +0.1 on w₀ (then 2 steps of −0.03·sign(w₀)), −0.06 toward 0 on the others
    np.testing.assert_allclose(result.decoded, [[2 * (0.1 - 0.06), 1.0 - 0.12, -1.0 + 0.12]], atol=1e-6)


def test_steps_follow_the_identity_loss_and_stopping_reads_the_identity_test():
    """Steps ascend L_I = Σ w (λ_I·d per iteration) while the test reads 2·Σ w: with τ = 0.8 the test
    passes once Σ w > 0.4, after 3 iterations instead of the 5 that L_I alone would need."""
    d, lam = 4, 0.05
    result = fsap_search(torch.zeros(1, d), lambda w: w, lambda x, rows: x.sum(1), [], FsapSettings(100, 0, 0.8, lam, 0.0),
                         identity_test=lambda x, rows: 2 * x.sum(1))
    assert result.iterations == [3] and result.reached == [True]
    np.testing.assert_allclose(result.identity_loss, [2 * 3 * d * lam], atol=1e-6)


def test_input_diversity_zooms_and_shifts_the_chip_within_its_amount_and_repeats_with_its_seed():
    from anoncli.methods.fsap import diverse_theta, diversity_draws

    theta = torch.tensor([[[0.8, 0.0, 0.1], [0.0, 0.8, -0.2]]]).expand(500, 2, 3)
    draws = diversity_draws(499)
    assert torch.equal(diverse_theta(theta, 0.0, draws), theta)
    out = diverse_theta(theta, 0.1, draws)
    zoom = out[:, 0, 0] / 0.8
    assert torch.allclose(out[:, 1, 1] / 0.8, zoom) and torch.all(out[:, 0, 1] == 0)   # one zoom, no rotation
    assert zoom.min() >= 0.9 and zoom.max() <= 1.1 and zoom.max() - zoom.min() > 0.15
    shift = out[:, :, 2] - theta[:, :, 2]
    assert shift.abs().max() <= 0.1 + 1e-6 and shift.abs().max() > 0.09
    assert torch.equal(draws, diversity_draws(499)) and torch.equal(draws[:10], diversity_draws(9))


def test_faces_searched_together_follow_the_same_steps_as_alone():
    """Five faces on the closed form of the first test, two at a time (a face that stops makes room for the
    next), all at once and one by one: the same iterations and results; the losses see which face each
    row is (here each face has its own weight on L_I) and at which iteration."""
    d, lam, tau = 4, 0.05, 0.8
    start = torch.tensor([[0.0] * d, [0.1] * d, [0.3] * d, [0.06] * d, [0.0] * d])
    weight = torch.tensor([1.0, 1.0, 1.0, 2.0, 0.45])
    seen = []

    def identity_loss(x, rows):
        seen.append((rows.faces.tolist(), rows.steps.tolist()))
        return weight[rows.faces] * x.sum(1)

    settings = FsapSettings(100, 0, tau, lam, 0.0)
    results = []
    for b in (2, 1, None):
        seen.clear()
        results.append(fsap_search(start, lambda w: w, identity_loss, [], settings, batch_size=b))
        if b == 2:
            in_pairs = list(seen)
    alone = [fsap_search(start[i:i + 1], lambda w: w, lambda x, rows, i=i: weight[i] * x.sum(1), [], settings) for i in range(5)]
    expected = [5, 3, 0, 1, 9]    # ceil past τ of L_I = weight·(s + n·d·λ_I)
    for result in results:
        assert result.iterations == expected == [a.iterations[0] for a in alone]
        np.testing.assert_allclose(result.decoded, torch.cat([a.decoded for a in alone]), atol=1e-6)
    # face 2 takes the place of face 1 after its 3 iterations and leaves at once (already past τ); face 3
    # comes in as face 0 stops, face 4 as face 3 stops, and goes on alone
    assert in_pairs[:7] == [([0, 1], [n, n]) for n in range(4)] + [([0, 2], [4, 0]), ([0, 3], [5, 0]), ([3, 4], [1, 0])]
    assert in_pairs[7:] == [([4], [n]) for n in range(1, 10)]


def test_a_confirmed_search_stops_only_where_the_confirmation_passes_and_releases_its_decode():
    """The search's test passes at Σ w = 0.18·n > 0.8 after 5 iterations; the confirmation reads 0.25 less,
    so the face goes on one iteration more and is released as the confirmation's decode (here + 1000)."""
    d, lam = 4, 0.045
    calls = []

    def confirm(w, rows):
        calls.append(rows.steps.tolist())
        return w + 1000.0, w.sum(1) - 0.25

    result = fsap_search(torch.zeros(1, d), lambda w: w, lambda x, rows: x.sum(1), [], FsapSettings(100, 0, 0.8, lam, 0.0),
                         confirm=confirm)
    assert calls == [[5], [6]] and result.iterations == [6] and result.reached == [True]
    np.testing.assert_allclose(result.decoded, [[1000.0 + 6 * lam] * d], atol=1e-4)
    np.testing.assert_allclose(result.identity_loss, [6 * d * lam - 0.25], atol=1e-6)


def test_a_gradient_that_is_not_finite_moves_nothing():
    # √|x| at 0: the value is finite, its gradient NaN (0 · ∞)
    result = fsap_search(torch.zeros(1, 3), lambda w: w, lambda x, rows: x.abs().sqrt().sum(1), [], FsapSettings(3, 0, 0.8, 0.1, 0.0))
    assert torch.equal(result.latent, torch.zeros(1, 3)) and result.iterations == [3] and result.diverged == [False]


def test_the_settings_refuse_what_algorithm_7_cannot_run():
    with pytest.raises(ValueError):
        FsapSettings(iterations=0)
    with pytest.raises(ValueError):
        FsapSettings(lambda_identity=0.0)


def test_differentiable_ssim_equals_the_metric():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (40, 48, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.float32)
    ta, tb = (torch.from_numpy(v).permute(2, 0, 1)[None] / 127.5 - 1 for v in (a, b))
    assert float(ssim(ta, tb)) == pytest.approx(ssim_numpy(a, b), abs=2e-4)
    assert float(ssim_loss(ta, ta)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))) == pytest.approx(1.0)


def _small_fsap(real_networks: bool = False, **params):
    from anoncli.flow.model import FlowModel
    from anoncli.latent import get_backbone_spec
    from anoncli.latent.glow import GlowBackbone
    from anoncli.methods import get_method_spec
    from anoncli.methods.fsap import FSAP
    from anoncli.models.glow import Glow, GlowConfig

    torch.manual_seed(0)
    glow = Glow(GlowConfig(resolution=16, levels=2, steps=2, hidden=8))
    with torch.no_grad():   # actnorm's data-dependent initialisation, once (else on the first faces searched)
        glow.encode(torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.5)
    backbone = GlowBackbone(get_backbone_spec("glow"), flow=FlowModel.from_network(glow, 0.3))
    recognizer = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 128))

    class Perceptual(torch.nn.Module):
        name = "test mse"

        def forward(self, x, y):
            return ((x - y) ** 2).mean((1, 2, 3))

        def against(self, x):
            return lambda y, rows: self(x[rows], y)

    resolved = get_method_spec("fsap").resolve_params({"crop_size": "64", "device": "cpu", "shape": "ellipse", **params})
    if real_networks:
        return FSAP(backbone_model=backbone, **resolved)
    return FSAP(backbone_model=backbone, recognizer_model=recognizer, perceptual_loss=Perceptual(), **resolved)


def test_the_offline_perceptual_term_reads_the_dlib_recognizer_the_method_already_holds():
    method = _small_fsap(real_networks=True, perceptual="offline")
    assert method.perceptual.name == "dlib-perceptual"
    assert method.perceptual.net.representation.encoder is method.recognizer   # one dlib network per worker


def test_the_released_crop_is_the_original_plus_the_decoded_perturbation():
    method = _small_fsap(iterations="3", tau="2")
    crop = np.float32(np.random.default_rng(1).uniform(40, 215, (64, 64, 3)))
    face = method.anonymize_face(crop, None)
    assert face.crop.shape == crop.shape and face.outcome["iterations"] == 3 and face.outcome["tau_reached"] is False
    change = face.crop - crop
    assert np.abs(change).mean() > 0.1
    # the perturbation is made at the backbone's 16 px and enlarged: no detail finer than that
    small = torch.nn.functional.interpolate(torch.from_numpy(change).permute(2, 0, 1)[None], size=(16, 16), mode="area")
    back = torch.nn.functional.interpolate(small, size=(64, 64), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(back - change).mean() < 0.35 * np.abs(change).mean()


def test_the_released_change_keeps_within_the_perturbation_limits():
    """--max-change bounds every pixel's change (before the bicubic enlargement, whose kernel can overshoot);
    with every limit off the search is free to go further."""
    crop = np.float32(np.random.default_rng(1).uniform(40, 215, (64, 64, 3)))
    common = {"iterations": "3", "tau": "2", "input_diversity": "0"}
    bounded = _small_fsap(**common, max_change="0.005").anonymize_face(crop, None).crop - crop
    free = _small_fsap(**common, max_change="0", low_sigma="0").anonymize_face(crop, None).crop - crop
    from anoncli.models.bicubic import phase_taps

    overshoot = float(phase_taps(4).abs().sum(1).max()) ** 2   # the enlargement's largest gain (16 px -> 64 px)
    assert np.abs(bounded).max() <= 0.005 * 127.5 * overshoot
    assert np.abs(free).max() > 2 * np.abs(bounded).max()


def test_input_diversity_changes_the_search_and_repeats_for_the_same_photo():
    crop = np.float32(np.random.default_rng(1).uniform(40, 215, (64, 64, 3)))
    plain = _small_fsap(iterations="3", tau="2").anonymize_face(crop, None).crop
    diverse = _small_fsap(iterations="3", tau="2", input_diversity="0.2")
    first, again = diverse.anonymize_face(crop, None).crop, diverse.anonymize_face(crop, None).crop
    assert np.array_equal(first, again) and not np.array_equal(first, plain)


def test_fsap_runs_end_to_end_and_records_each_faces_search(tmp_path):
    r = cli("anonymize", EXAMPLES, "-o", tmp_path / "out", "--method", "fsap", "--iterations", "2", "-q", "-j", "1")
    if r.returncode == 3:
        pytest.skip(f"weights missing: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    import pandas as pd

    rows = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    outcomes = [f["outcome"] for faces in rows["faces"] for f in json.loads(faces) if "warp" in f]
    assert outcomes and all(set(o) == {"iterations", "identity_loss", "tau_reached", "diverged", "perceptual", "precision"} for o in outcomes)
    assert all(0 <= o["iterations"] <= 2 for o in outcomes)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["method"]["evaluators"] == ["dlib"]    # white-box against the recognizer it optimised


def test_faces_searched_together_come_out_as_when_searched_alone():
    """--faces-together 2 on three crops against one face at a time, float32: each face's iterations and
    released crop are its own (up to float rounding of batched convolutions)."""
    from anoncli.methods.base import FaceRequest

    rng = np.random.default_rng(3)
    crops = [np.float32(rng.uniform(40, 215, (64, 64, 3))) for _ in range(3)]
    common = {"iterations": "8", "tau": "0.2", "precision": "float32", "lambda_identity": "0.5", "max_change": "0", "low_sigma": "0"}
    together = _small_fsap(**common, faces_together="2").anonymize_many([FaceRequest(c, None) for c in crops])
    alone = [_small_fsap(**common, faces_together="1").anonymize_face(c, None) for c in crops]
    assert [f.outcome["iterations"] for f in together] == [f.outcome["iterations"] for f in alone]
    assert len({f.outcome["iterations"] for f in alone}) > 1   # the faces stop at different iterations
    for a, b in zip(together, alone):
        assert np.abs(a.crop - b.crop).max() < 0.5 and a.outcome["precision"] == "float32"


def test_a_bfloat16_search_releases_a_float32_decode_that_passed_tau():
    method = _small_fsap(iterations="6", tau="0.05", precision="bfloat16")
    crop = np.float32(np.random.default_rng(1).uniform(40, 215, (64, 64, 3)))
    face = method.anonymize_face(crop, None)
    assert face.outcome["precision"] == "bfloat16" and np.isfinite(face.crop).all()
    # the recorded loss is the float32 one of the released crop
    crop_t = method.crop_tensor(crop)
    with torch.no_grad():
        released = method.crop_tensor(face.crop)
        loss = float(cosine_distance(method.embed(crop_t), method.embed(released)))
    assert face.outcome["tau_reached"] == (face.outcome["identity_loss"] > 0.05)
    assert loss == pytest.approx(face.outcome["identity_loss"], abs=0.02)


def test_a_face_whose_decode_stops_being_finite_is_released_as_its_last_finite_decode():
    """decode(w) = w while Σ w ≤ 0.5, NaN past it (an inverse flow exploding off its data): with λ_I = 0.1 on
    two coordinates Σ w goes 0, 0.2, 0.4, 0.6; the face stops at iteration 2 with that decode, τ not reached."""
    def decode(w):
        return torch.where(w.sum(1, keepdim=True) > 0.5, torch.full_like(w, float("nan")), w)

    result = fsap_search(torch.zeros(2, 2), decode, lambda x, rows: x.sum(1), [], FsapSettings(100, 0, 0.8, 0.1, 0.0),
                         batch_size=1)
    assert result.iterations == [2, 2] and result.diverged == [True, True] and result.reached == [False, False]
    np.testing.assert_allclose(result.decoded, [[0.2, 0.2]] * 2, atol=1e-6)
    np.testing.assert_allclose(result.latent, [[0.2, 0.2]] * 2, atol=1e-6)
    np.testing.assert_allclose(result.identity_loss, [0.4, 0.4], atol=1e-6)
