"""`anoncli train attributes`: the CelebA attribute classifier of `--method diffusion` (thesis §6.5-6.6:
pairing real and fake faces in an attribute feature space, and measuring attribute preservation; FaRL's
ViT there, this network offline).

40 independent binary attributes, binary cross-entropy on the logits, Adam, on the aligned crops of
``anoncli.train.face_crops`` area-resized to the network's side, every other one mirrored. Only faces
with attribute labels train (CelebA's ``labels.csv``: image, identity, then the 40 attributes as 1 / −1
in CelebA's order); held-out faces are the crop set's (identity mod 10 = 0), so no evaluated person was
trained on. The held-out measurement: accuracy per attribute, their mean, and the mean of a classifier
that always answers each attribute's majority in the training faces.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io.atomic import write_atomic
from .training_faces import ResidentFaces
from .loop import atomic_torch_save, load_checkpoint

CHECKPOINT = "attributes-checkpoint.pt"
LOG = "attributes-train-log.jsonl"


def attribute_labels(index: list[dict], folders: list[Path]) -> np.ndarray:
    """N x 40 array of 1 / 0 for the crop set's faces, NaN where a face's folder has no attribute labels."""
    import pandas as pd

    from ..models.attributes import CELEBA_ATTRIBUTES

    table = {}
    for folder in folders:
        path = folder / "labels.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if frame.shape[1] < 2 + len(CELEBA_ATTRIBUTES):
            continue
        values = frame.iloc[:, 2:2 + len(CELEBA_ATTRIBUTES)].to_numpy(np.float32)
        for name, row in zip(frame.iloc[:, 0].astype(str), values):
            table[(folder.name, name)] = (row > 0).astype(np.float32)
    out = np.full((len(index), len(CELEBA_ATTRIBUTES)), np.nan, np.float32)
    for i, row in enumerate(index):
        labels = table.get((row["source"], row["image"]))
        if labels is not None:
            out[i] = labels
    return out


def per_attribute_accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of faces whose thresholded logit (> 0) equals the label, per attribute."""
    return ((logits > 0).astype(np.float32) == labels).mean(0)


@dataclass(frozen=True)
class AttributeTrainSettings:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    resolution: int = 64
    margin: float = 0.2
    checkpoint_every: int = 200
    evaluate_every: int = 500
    threads: int = 0
    seed: int = 0
    device: str = "cpu"

    def shape_key(self) -> dict:
        return {"resolution": self.resolution, "margin": self.margin}


class AttributeTrainer:
    def __init__(self, crops, labels: np.ndarray, settings: AttributeTrainSettings, work: Path, log=print):
        import torch

        from ..models.attributes import AttributeNet, AttributeNetConfig

        self.torch, self.settings, self.work, self.log = torch, settings, work, log
        if settings.threads:
            torch.set_num_threads(settings.threads)
        labelled = ~np.isnan(labels).any(1)
        self.crops, self.labels = crops, labels
        self.train_idx = np.intersect1d(crops.split(held_out=False), np.flatnonzero(labelled))
        self.eval_idx = np.intersect1d(crops.split(held_out=True), np.flatnonzero(labelled))
        if len(self.train_idx) < 2 or len(self.eval_idx) < 1:
            raise ValueError("need attribute-labelled faces (a CelebA folder with labels.csv) both to train and to hold out")
        self.config = AttributeNetConfig(resolution=settings.resolution)
        self.device = torch.device(settings.device)
        self.faces = ResidentFaces(crops, settings.resolution, self.device)
        torch.manual_seed(settings.seed)
        self.net = AttributeNet(self.config).to(self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.rng = np.random.default_rng(settings.seed)
        self.step, self.elapsed = 0, 0.0
        state = load_checkpoint(work / CHECKPOINT, settings.shape_key(), self.device)
        if state is not None:
            self.net.load_state_dict(state["net"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            self.rng.bit_generator.state = state["rng"]
            log(f"resumed at step {self.step}")

    def _faces(self, idx: np.ndarray, flips=None):
        return self.faces.batch(idx, flips) * 2 - 1

    def save_checkpoint(self) -> None:
        atomic_torch_save({"shape_key": self.settings.shape_key(), "step": self.step, "elapsed": self.elapsed,
                           "net": self.net.state_dict(), "opt": self.opt.state_dict(),
                           "rng": self.rng.bit_generator.state}, self.work / CHECKPOINT)

    def train_step(self) -> dict:
        import torch.nn.functional as F

        s = self.settings
        idx = self.rng.choice(self.train_idx, s.batch_size)
        x = self._faces(idx, self.rng.random(s.batch_size) < 0.5)
        y = self.torch.from_numpy(self.labels[idx]).to(self.device)
        self.net.train()
        loss = F.binary_cross_entropy_with_logits(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"bce": float(loss.detach())}

    def evaluate(self, n: int | None = None) -> dict:
        from ..models.attributes import CELEBA_ATTRIBUTES

        idx = self.eval_idx if n is None else self.eval_idx[:n]
        self.net.eval()
        with self.torch.no_grad():
            logits = np.concatenate([self.net(self._faces(idx[i:i + 64])).cpu().numpy() for i in range(0, len(idx), 64)])
        accuracy = per_attribute_accuracy(logits, self.labels[idx])
        majority = (self.labels[self.train_idx].mean(0) > 0.5).astype(np.float32)
        baseline = (self.labels[idx] == majority).mean(0)
        return {"faces": int(len(idx)), "mean_accuracy": round(float(accuracy.mean()), 4),
                "majority_mean_accuracy": round(float(baseline.mean()), 4),
                "per_attribute": {name: [round(float(a), 4), round(float(b), 4)]
                                  for name, a, b in zip(CELEBA_ATTRIBUTES, accuracy, baseline)}}

    def run(self, progress: bool = True) -> None:
        from .loop import run_resumable

        s = self.settings
        run_resumable(self, s.steps, self.work / LOG, checkpoint_every=s.checkpoint_every,
                      evaluate_every=s.evaluate_every, desc="train attributes", progress=progress)

    def export(self, path: Path, card: dict, half: bool = True) -> None:
        from safetensors.torch import save

        from ..models.attributes import FORMAT

        dtype = self.torch.float16 if half else self.torch.float32
        tensors = {k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
                   for k, v in self.net.state_dict().items()}
        meta = {"format": FORMAT, "config": json.dumps(self.config.to_dict()), "margin": repr(float(self.settings.margin)),
                "card": json.dumps({**card, "steps": self.step, "train_seconds": round(self.elapsed),
                                    "settings": asdict(self.settings)})}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save(tensors, metadata=meta))
