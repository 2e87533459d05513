"""The attribute classifier of `--method diffusion` (anoncli.models.attributes, anoncli.train.attributes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anoncli.models.attributes import CELEBA_ATTRIBUTES, AttributeNet, AttributeNetConfig, load_attribute_net
from anoncli.train.attributes import AttributeTrainer, AttributeTrainSettings, attribute_labels, per_attribute_accuracy
from anoncli.train.face_crops import CropSet

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "attributes_celeba_64.safetensors"


def test_labels_come_from_labels_csv_in_celeba_order_and_unlabelled_faces_are_nan(tmp_path):
    folder = tmp_path / "celeba"
    folder.mkdir()
    row = ["1" if i % 3 == 0 else "-1" for i in range(40)]
    (folder / "labels.csv").write_text("image,identity," + ",".join(f"c{i}" for i in range(40)) + "\n"
                                       + "a.jpg,7," + ",".join(row) + "\n")
    index = [{"source": "celeba", "image": "a.jpg"}, {"source": "utk", "image": "b.jpg"}]
    labels = attribute_labels(index, [folder, tmp_path / "utk"])
    assert labels[0].tolist() == [1.0 if i % 3 == 0 else 0.0 for i in range(40)]
    assert np.isnan(labels[1]).all()
    assert len(CELEBA_ATTRIBUTES) == 40 and CELEBA_ATTRIBUTES[20] == "Male" and CELEBA_ATTRIBUTES[31] == "Smiling"


def test_per_attribute_accuracy_thresholds_logits_at_zero():
    logits = np.array([[2.0, -1.0], [-0.5, 3.0], [0.1, 0.2]])
    labels = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    assert per_attribute_accuracy(logits, labels).tolist() == pytest.approx([1 / 3, 1.0])


def test_a_learnable_attribute_is_learned_and_the_export_reloads_strictly(tmp_path):
    """Attribute 0 is 'the face is bright': a few hundred steps learn it far above the majority answer."""
    rng = np.random.default_rng(0)
    n = 64
    bright = rng.random(n) < 0.5
    crops = np.where(bright[:, None, None, None], 200, 50).astype(np.uint8) + rng.integers(0, 40, (n, 32, 32, 3), dtype=np.uint8)
    index = [{"source": "s", "image": f"{i}", "identity": str(i), "held_out": i % 4 == 0} for i in range(n)]
    labels = np.zeros((n, 40), np.float32)
    labels[:, 0] = bright
    (tmp_path / "w").mkdir()
    settings = AttributeTrainSettings(steps=60, batch_size=16, resolution=16, checkpoint_every=30, evaluate_every=1000)
    trainer = AttributeTrainer(CropSet(crops, index, np.zeros((n, 2, 128), np.float32)), labels, settings, tmp_path / "w",
                               log=lambda m: None)
    trainer.run(progress=False)
    result = trainer.evaluate()
    assert result["per_attribute"]["5_o_Clock_Shadow"][0] == 1.0
    trainer.export(tmp_path / "a.safetensors", {"command": "test"}, half=False)
    net, margin, card = load_attribute_net(tmp_path / "a.safetensors")
    assert margin == pytest.approx(0.2) and card["steps"] == 60
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    trainer.net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), trainer.net(x), atol=1e-5)
        assert net.features(x).shape == (2, 256)


def test_a_resolution_the_network_cannot_take_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        AttributeNetConfig(resolution=40)
    assert AttributeNet(AttributeNetConfig(resolution=32))(torch.zeros(1, 3, 32, 32)).shape == (1, 40)


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="the committed attribute classifier is absent")
def test_committed_classifier_loads_and_states_its_held_out_accuracy():
    net, margin, card = load_attribute_net(WEIGHTS)
    ev = card["held_out_eval"]
    assert ev["mean_accuracy"] > ev["majority_mean_accuracy"]
    assert net.config.resolution == 64 and margin == pytest.approx(0.2)
