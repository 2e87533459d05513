"""`anoncli train glow`: a tiny flow trains, resumes exactly from its checkpoint, and exports."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anoncli.train.face_crops import CropSet  # noqa: E402
from anoncli.train.glow import GlowTrainer, GlowTrainSettings, evaluate_flow  # noqa: E402

TINY = {"resolution": 16, "levels": 2, "steps": 2, "hidden": 8, "n_bits": 5}


def _crops(n=20):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32]
    faces = np.stack([np.clip(np.stack([x * 6, y * 6, (x + y) * 3], -1) + rng.normal(0, 20, (32, 32, 3)), 0, 255)
                      for _ in range(n)]).astype(np.uint8)
    index = [{"source": "s", "image": f"{i}.png", "identity": str(i), "held_out": i % 5 == 0} for i in range(n)]
    return CropSet(faces, index, np.zeros((n, 2, 128), np.float32))


def _settings(steps):
    return GlowTrainSettings(steps=steps, batch_size=4, warmup_steps=2, checkpoint_every=2, evaluate_every=20, threads=1, config=TINY)


def _flat(t):
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def test_glow_training_lowers_bpd_resumes_exactly_and_exports(tmp_path):
    crops = _crops()
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    straight = GlowTrainer(crops, _settings(6), tmp_path / "a", log=lambda m: None)
    before = straight.evaluate()["bits_per_dim"]
    straight.run(progress=False)
    first = GlowTrainer(crops, _settings(3), tmp_path / "b", log=lambda m: None)
    first.run(progress=False)
    resumed = GlowTrainer(crops, _settings(6), tmp_path / "b", log=lambda m: None)
    assert resumed.step == 3
    resumed.run(progress=False)
    torch.testing.assert_close(_flat(resumed), _flat(straight), rtol=1e-5, atol=1e-6)
    after = straight.evaluate()
    assert after["bits_per_dim"] < before
    assert after["round_trip_max_abs"] < 1e-4
    assert list(tmp_path.glob("a/glow-samples-*-t0.5.png"))
    straight.export(tmp_path / "glow.safetensors", {"data": ["synthetic"]})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "glow.safetensors"), framework="pt") as fh:
        assert fh.metadata()["format"] == "anoncli-glow/1"


def test_evaluate_flow_of_nothing_is_empty():
    from anoncli.models.glow import Glow, GlowConfig

    assert evaluate_flow(Glow(GlowConfig(**TINY)), torch.zeros(0, 3, 16, 16)) == {}
