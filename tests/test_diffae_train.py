"""`anoncli train diffae`'s trainer: steps, checkpoint and resume, export and strict reload, --init-from."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anoncli.diffusion.autoencoder import load_autoencoder
from anoncli.train.diffae import DiffAETrainer, DiffAETrainSettings
from anoncli.train.face_crops import CropSet

TINY = {"image_size": 16, "model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [8],
        "embed_channels": 64, "enc_out_channels": 64, "enc_channel_mult": [1, 2, 2]}
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "diffae_celeba_utk_64.safetensors"


def crop_set(n: int = 12) -> CropSet:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    index = [{"source": "s", "image": f"{i}.jpg", "identity": None, "held_out": i % 4 == 0} for i in range(n)]
    return CropSet(crops, index, np.zeros((n, 2, 128), np.float32))


def settings(**kw) -> DiffAETrainSettings:
    return DiffAETrainSettings(batch_size=4, checkpoint_every=1, evaluate_every=1000, evaluation_ddim_steps=5,
                               config=TINY, **kw)


def test_training_resumes_and_exports_what_it_trained(tmp_path):
    crops = crop_set()
    trainer = DiffAETrainer(crops, settings(steps=2), tmp_path / "w", log=lambda m: None)
    (tmp_path / "w").mkdir()
    trainer.run(progress=False)
    assert trainer.step == 2
    resumed = DiffAETrainer(crops, settings(steps=3), tmp_path / "w", log=lambda m: None)
    assert resumed.step == 2
    for a, b in zip(resumed.ema.state_dict().values(), trainer.ema.state_dict().values()):
        assert torch.equal(a, b)
    resumed.run(progress=False)
    assert resumed.step == 3
    resumed.export(tmp_path / "d.safetensors", {"machine": "test", "command": "c"}, half=False)
    loaded = load_autoencoder(tmp_path / "d.safetensors")
    assert loaded.card["steps"] == 3 and loaded.margin == pytest.approx(0.2)
    assert loaded.card["code_prior"] == {"faces": 9, "shrinkage": 0.01}
    assert loaded.prior.mean.shape == (64,) and np.allclose(loaded.prior.cholesky, np.tril(loaded.prior.cholesky))
    with torch.no_grad():
        codes = resumed.ema.encode(resumed._faces(resumed.train_idx)).numpy()
    assert np.allclose(loaded.prior.mean, codes.mean(0), atol=1e-5)
    for k, v in resumed.ema.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v.float())


def test_a_bfloat16_step_computes_the_float32_loss_and_trains_float32_weights(tmp_path):
    crops = crop_set()
    losses = {}
    for precision in ("float32", "bfloat16"):
        trainer = DiffAETrainer(crops, settings(steps=1, precision=precision), tmp_path / precision, log=lambda m: None)
        before = [p.detach().clone() for p in trainer.ema.parameters()]
        losses[precision] = trainer.train_step()["loss"]
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.ema.parameters()))
    assert np.isfinite(losses["bfloat16"])
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.05)


def test_init_from_an_export_keeps_weights_steps_and_history(tmp_path):
    crops = crop_set()
    first = DiffAETrainer(crops, settings(steps=1), tmp_path / "a", log=lambda m: None)
    (tmp_path / "a").mkdir()
    first.run(progress=False)
    first.export(tmp_path / "a.safetensors", {"machine": "gpu", "command": "first"}, half=False)
    second = DiffAETrainer(crops, settings(steps=2, init_from=str(tmp_path / "a.safetensors")), tmp_path / "b", log=lambda m: None)
    assert second.step == 1
    assert second.history == [{"steps": 1, "batch_size": 4, "train_seconds": round(first.elapsed), "machine": "gpu",
                               "command": "first"}]
    for a, b in zip(second.model.state_dict().values(), first.ema.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="another network"):
        DiffAETrainer(crops, settings(steps=2, init_from=str(tmp_path / "a.safetensors"), margin=0.3), tmp_path / "c",
                      log=lambda m: None)


def test_a_file_of_another_format_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"), metadata={"format": "other"})
    with pytest.raises(ValueError, match="not an anoncli diffusion autoencoder"):
        load_autoencoder(tmp_path / "x.safetensors")


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="the committed diffusion autoencoder is absent")
def test_committed_autoencoder_inverts_and_reconstructs_a_face():
    """The committed (not final) weights: DDIM inversion then decoding returns a smooth image close to it."""
    from anoncli.diffusion.ddim import ddim_decode, ddim_invert, linear_schedule

    auto = load_autoencoder(WEIGHTS)
    assert auto.model.config.image_size == 64
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    face = torch.stack([0.6 - xx ** 2 - yy ** 2, 0.3 * xx, 0.3 * yy])[None].clamp(-1, 1)
    with torch.no_grad():
        cond = auto.model.encode(face)
        x_T = ddim_invert(auto.model, linear_schedule(), face, cond, 20)
        again = ddim_decode(auto.model, linear_schedule(), x_T, cond, 20)
    mse = float((again - face).pow(2).mean())
    assert 10 * np.log10(4 / mse) > 20   # PSNR on the [-1, 1] range


@pytest.mark.parametrize("args, says", [
    (["--evaluation-ddim-steps", "7"], "DDIM steps must divide"),
    (["--width", "48"], "multiple of 32"),
    (["--device", "tpu"], "--device must be"),
    (["--precision", "float16"], "--precision must be one of"),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, args, says):
    from conftest import cli

    data = tmp_path / "faces"
    data.mkdir()
    r = cli("train", "diffae", "--data", data, "--work", tmp_path / "w", *args)
    assert r.returncode == 2, r.stderr
    assert says in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()
