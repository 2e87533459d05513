"""Diffusion de-identification's procedures (thesis §6.5) against closed forms and brute force, and its
fake set's resumable build."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anoncli.diffusion.deid import (SemanticCodeSettings, attribute_loss, fit_code_prior, identity_loss,  # noqa: E402
                                    nearest_fakes, optimise_semantic_code)
from anoncli.diffusion.fake_set import FakeChunk, build_fake_set, decoded_fakes  # noqa: E402


def test_code_prior_recovers_the_gaussian_it_was_fitted_to():
    rng = np.random.default_rng(0)
    mean = np.array([1.0, -2.0, 0.5, 3.0])
    mixing = rng.normal(size=(4, 4))
    cov = mixing @ mixing.T + 0.5 * np.eye(4)
    codes = rng.multivariate_normal(mean, cov, size=50000)
    prior = fit_code_prior(codes, shrinkage=0.0)
    np.testing.assert_allclose(prior.mean, mean, atol=0.05)
    np.testing.assert_allclose(prior.cholesky @ prior.cholesky.T, cov, rtol=0.05, atol=0.05)
    drawn = prior.sample(50000, np.random.default_rng(1))
    assert drawn.dtype == np.float32 and drawn.shape == (50000, 4)
    np.testing.assert_allclose(drawn.mean(0), mean, atol=0.06)
    np.testing.assert_allclose(np.cov(drawn, rowvar=False), cov, rtol=0.06, atol=0.08)


def test_shrinkage_keeps_the_prior_defined_with_fewer_codes_than_dimensions():
    codes = np.random.default_rng(0).normal(size=(5, 16))   # a rank-4 sample covariance in 16 dimensions
    prior = fit_code_prior(codes, shrinkage=0.1)
    assert np.all(np.diag(prior.cholesky) > 0)
    assert np.linalg.eigvalsh(prior.cholesky @ prior.cholesky.T).min() > 0.05 * np.trace(np.cov(codes, rowvar=False)) / 16
    with pytest.raises(ValueError):
        fit_code_prior(codes[:1])


def test_pairing_finds_the_brute_force_nearest_fake():
    rng = np.random.default_rng(0)
    real, fakes = rng.normal(size=(17, 8)), rng.normal(size=(40, 8))
    index, distance = nearest_fakes(real, fakes, chunk=3)
    brute = np.linalg.norm(real[:, None] - fakes[None], axis=2)
    np.testing.assert_array_equal(index, brute.argmin(axis=1))
    np.testing.assert_allclose(distance, brute.min(axis=1), atol=1e-9)
    index, distance = nearest_fakes(fakes[[4, 9]], fakes)
    assert index.tolist() == [4, 9] and np.allclose(distance, 0.0, atol=1e-6)
    with pytest.raises(ValueError):
        nearest_fakes(real, fakes[:, :4])


def test_losses_are_equations_6_7_and_6_8():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [-2.0, -2.0], [1.0, 1.0]])
    torch.testing.assert_close(identity_loss(a, b), torch.tensor([0.0, 1.0, 2 ** -0.5]))
    f_a, f_b = torch.arange(24.0).view(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    torch.testing.assert_close(attribute_loss(f_a, f_b), torch.tensor([5.5, 17.5]))


def test_the_semantic_code_moves_away_from_the_identity_and_keeps_the_attributes():
    """A linear 'decoder' whose first two outputs are the identity and last two the attributes:
    the optimum keeps the attribute outputs and turns the identity outputs orthogonal to the real face's."""
    torch.manual_seed(0)
    mixing = torch.randn(6, 4)
    decode = lambda code: code @ mixing                    # noqa: E731
    identity_of = lambda faces: faces[:, :2]               # noqa: E731
    attributes_of = lambda faces: faces[:, 2:]             # noqa: E731
    real_code = torch.randn(3, 6)
    real = decode(real_code)
    start = real_code + 0.05 * torch.randn(3, 6)           # a paired fake very like the real face
    settings = SemanticCodeSettings(steps=300, lr=0.05, identity_weight=1.0, attribute_weight=1.0)
    result = optimise_semantic_code(decode, start.numpy(), identity_of, attributes_of, real, settings)
    before = identity_loss(identity_of(decode(start)), identity_of(real))
    assert before.min() > 0.9
    assert max(result.identity_loss) < 0.05 and max(result.attribute_loss) < 0.1
    code = torch.as_tensor(result.code)
    torch.testing.assert_close(identity_loss(identity_of(decode(code)), identity_of(real)),
                               torch.tensor(result.identity_loss), atol=1e-5, rtol=0)
    none = optimise_semantic_code(decode, start.numpy(), identity_of, attributes_of, real, SemanticCodeSettings(steps=0))
    np.testing.assert_array_equal(none.code, start.numpy())
    with pytest.raises(ValueError):
        SemanticCodeSettings(lr=0)


def _counting_maker(calls):
    def make(index, n):
        calls.append(index)
        rng = np.random.default_rng([7, index])
        return FakeChunk(rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 255, (n, 2, 2, 3), dtype=np.uint8),
                         rng.normal(size=(n, 3)).astype(np.float32))
    return make


def test_an_interrupted_fake_set_resumes_without_making_a_chunk_again(tmp_path):
    whole = build_fake_set(tmp_path / "once", 10, 4, _counting_maker([]))
    assert [len(whole.codes), len(whole.images), len(whole.features)] == [10, 10, 10]

    calls = []
    def stop_at_chunk_2(index, n):
        if index == 2:
            raise KeyboardInterrupt
        return _counting_maker(calls)(index, n)
    with pytest.raises(KeyboardInterrupt):
        build_fake_set(tmp_path / "run", 10, 4, stop_at_chunk_2)
    assert calls == [0, 1] and sorted(p.name for p in (tmp_path / "run").iterdir()) == ["fakes-00000.npz", "fakes-00001.npz"]
    damaged = (tmp_path / "run" / "fakes-00001.npz").read_bytes()
    (tmp_path / "run" / "fakes-00001.npz").write_bytes(damaged[: len(damaged) // 2])   # a damaged chunk is made again
    calls.clear()
    finished = []
    resumed = build_fake_set(tmp_path / "run", 10, 4, _counting_maker(calls), progress=finished.append)
    assert calls == [1, 2] and finished == [4, 8, 10]
    for name in ("codes", "images", "features"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    assert oct((tmp_path / "run" / "fakes-00000.npz").stat().st_mode & 0o777) == "0o600"


def test_decoded_fakes_are_seeded_by_chunk():
    from anoncli.diffusion.ddim import linear_schedule
    from anoncli.models.diffae import DiffAE, DiffAEConfig

    torch.manual_seed(0)
    model = DiffAE(DiffAEConfig(image_size=16, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                attention_resolutions=(8,), num_heads=2, embed_channels=16, enc_out_channels=16,
                                enc_channel_mult=(1, 2, 2), enc_num_res_block=1, dropout=0.0)).eval()
    prior = fit_code_prior(np.random.default_rng(0).normal(size=(64, 16)), shrinkage=0.1)
    make = decoded_fakes(model, linear_schedule(), prior, 5, lambda faces: faces.mean((2, 3)), seed=3)
    first, again, other = make(0, 3), make(0, 3), make(1, 3)
    assert first.images.shape == (3, 16, 16, 3) and first.images.dtype == np.uint8 and first.features.shape == (3, 3)
    np.testing.assert_array_equal(first.codes, again.codes)
    np.testing.assert_array_equal(first.images, again.images)
    assert not np.array_equal(first.codes, other.codes)
