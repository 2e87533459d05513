"""`anoncli train glow`: maximum likelihood training of Glow on aligned faces (Kingma & Dhariwal,
2018; FFEM's teacher, seed 001; METHODS.md §7).

The objective is Glow's: bits per dimension of n_bits-colour faces with uniform dequantisation,
−log p(x) + D·log 2^n_bits over D·log 2 (``Glow.bits_per_dim``). Adam at FFEM's lr 1e-3 after a
linear warm-up (Glow's official code warms up too), gradients clipped to norm 50. The faces are
the aligned crops of ``anoncli.train.face_crops`` (shared with the identity generator),
area-resized when the flow works at a smaller resolution; every other one is mirrored.

Checkpoints and resume as every `anoncli train` command (``anoncli.train.loop``). The held-out
measurement in the log: bits/dim, the largest |decode(encode(x)) − x| in float32, and sample
grids at temperature 0.5 and 1.0 written into the work folder.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..flow.model import FORMAT
from ..io.atomic import write_atomic
from .lineage import continued_from
from .loop import atomic_torch_save, load_checkpoint
from .training_faces import ResidentFaces

CHECKPOINT = "glow-checkpoint.pt"
LOG = "glow-train-log.jsonl"


@dataclass(frozen=True)
class GlowTrainSettings:
    steps: int = 100000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 500
    max_grad_norm: float = 50.0
    checkpoint_every: int = 200
    evaluate_every: int = 1000
    threads: int = 0
    seed: int = 0
    device: str = "cpu"
    margin: float = 0.2                            # of the aligned crops (anoncli.faces.align)
    config: dict = field(default_factory=dict)    # GlowConfig overrides
    init_from: str = ""                           # an earlier export to start a new work folder from
    precision: str = "float32"                    # bfloat16: the coupling networks under autocast (Glow.coupling_precision)

    def shape_key(self) -> dict:
        return {"config": self.config, "margin": self.margin}


class GlowTrainer:
    def __init__(self, crops, settings: GlowTrainSettings, work: Path, log=print):
        import torch

        from ..models.glow import Glow, GlowConfig

        self.torch, self.settings, self.work, self.log = torch, settings, work, log
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.crops = crops
        self.train_idx = crops.split(held_out=False)
        self.eval_idx = crops.split(held_out=True)
        self.config = GlowConfig(**{**GlowConfig().to_dict(), **settings.config})
        self.device = torch.device(settings.device)
        self.faces = ResidentFaces(crops, self.config.resolution, self.device)
        torch.manual_seed(settings.seed)
        self.model = Glow(self.config, seed=settings.seed).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.rng = np.random.default_rng(settings.seed)
        self.step, self.elapsed = 0, 0.0
        self.history: list[dict] = []   # the runs an --init-from export came from, oldest first
        self.warmup_from = 0            # the step this work folder's learning-rate warm-up counts from
        state = load_checkpoint(work / CHECKPOINT, settings.shape_key(), self.device)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            self.history, self.warmup_from = state.get("history", []), state.get("warmup_from", 0)
            self.rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"].cpu())   # map_location moved it to the device
            log(f"resumed at step {self.step}")
        elif settings.init_from:
            self._init_from_export(Path(settings.init_from))
        else:
            self._initialize_actnorm()

    def _init_from_export(self, path: Path) -> None:
        """Start from an earlier export: its weights (actnorm already initialised), step count and training
        time, so that the card counts every step; Adam's moments start afresh, so the learning rate warms up
        again from this step."""
        from ..flow.model import read_flow_file

        exported = read_flow_file(path)
        if exported.config != self.config.to_dict() or exported.margin != self.settings.margin:
            raise ValueError(f"{path} was trained with another network or margin than this run asks for")
        self.model.load_state_dict({k: v.to(self.device) for k, v in exported.tensors.items()}, strict=True)
        self.step, self.elapsed, self.history = continued_from(exported.card)
        self.warmup_from = self.step
        self.log(f"started from {path} (step {self.step})")

    def _images(self, indices: np.ndarray, flips: np.ndarray | None = None):
        return self.faces.batch(indices, flips)

    def _initialize_actnorm(self) -> None:
        """Glow's data-dependent initialisation on one batch (larger than a step's when there are faces for it)."""
        idx = self.rng.choice(self.train_idx, min(len(self.train_idx), max(64, self.settings.batch_size)), replace=False)
        with self.torch.no_grad():
            self.model.encode(self.model.preprocess(self._images(idx)))

    def save_checkpoint(self) -> None:
        atomic_torch_save({"shape_key": self.settings.shape_key(), "settings": asdict(self.settings), "step": self.step,
                           "elapsed": self.elapsed, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                           "rng": self.rng.bit_generator.state, "torch_rng": self.torch.get_rng_state(),
                           "history": self.history, "warmup_from": self.warmup_from},
                          self.work / CHECKPOINT)

    def train_step(self) -> dict:
        s = self.settings
        idx = self.rng.choice(self.train_idx, s.batch_size)
        x = self.model.preprocess(self._images(idx, self.rng.random(s.batch_size) < 0.5))
        for group in self.opt.param_groups:
            group["lr"] = s.lr * min(1.0, (self.step - self.warmup_from + 1) / max(1, s.warmup_steps))
        self.model.train()
        with self.model.coupling_precision(self.torch.bfloat16 if s.precision == "bfloat16" else None):
            loss = self.model.bits_per_dim(x).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
        self.opt.step()
        self.step += 1
        return {"bpd": float(loss.detach())}

    def evaluate(self, n: int = 64) -> dict:
        return evaluate_flow(self.model, self._images(self.eval_idx[:n]), self.work, self.step)

    def run(self, progress: bool = True) -> None:
        from .loop import run_resumable

        s = self.settings
        run_resumable(self, s.steps, self.work / LOG, checkpoint_every=s.checkpoint_every,
                      evaluate_every=s.evaluate_every, desc="train glow", progress=progress)

    def export(self, path: Path, card: dict) -> None:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        meta = {"format": FORMAT, "config": json.dumps(self.config.to_dict()), "margin": repr(float(self.settings.margin)),
                "card": json.dumps({**card, "steps": self.step, "train_seconds": round(self.elapsed),
                                    "settings": asdict(self.settings), "history": self.history})}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save(tensors, metadata=meta))


def evaluate_flow(model, images_01, work: Path | None = None, step: int = 0, batch: int = 16) -> dict:
    """Held-out bits/dim, the float32 round-trip error max |f⁻¹(f(x)) − x| on the continuous faces
    (x in [−0.5, 0.5], as the methods encode them), and sample grids at temperature 0.5 and 1."""
    import torch

    if len(images_01) == 0:
        return {}
    model.eval()
    bpd, err = [], 0.0
    noise = torch.Generator().manual_seed(0)   # the same dequantisation at every evaluation
    with torch.no_grad():
        for start in range(0, len(images_01), batch):
            x = model.preprocess(images_01[start:start + batch], generator=noise)
            bpd += model.bits_per_dim(x).tolist()
            clean = images_01[start:start + batch] - 0.5    # continuous, as the methods encode (anoncli.flow.model)
            eps, _ = model.encode(clean)
            err = max(err, float((model.decode(eps) - clean).abs().max()))
        if work is not None:
            shapes = model.latent_shapes()
            g = torch.Generator().manual_seed(0)
            for t in (0.5, 1.0):
                eps = [torch.randn(16, *s, generator=g).to(images_01.device) for s in shapes]
                save_grid(model.decode(eps, temperature=t) + 0.5, sample_grid_path(work, step, t))
    model.train()
    return {"faces": len(images_01), "bits_per_dim": round(float(np.mean(bpd)), 4), "round_trip_max_abs": err}


def sample_grid_path(work: Path, step: int, temperature: float) -> Path:
    return work / f"glow-samples-step{step:06d}-t{temperature}.png"


def save_grid(images, path: Path, columns: int = 8) -> None:
    import io

    from PIL import Image

    arr = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    n, h, w, _ = arr.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, img in enumerate(arr):
        grid[(i // columns) * h:(i // columns + 1) * h, (i % columns) * w:(i % columns + 1) * w] = img
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    write_atomic(path, buf.getvalue())
