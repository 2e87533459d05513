"""`anoncli train diffae`: the diffusion autoencoder of `--method diffusion` (thesis ch. 6, §6.4;
Preechakul et al., Diffusion Autoencoders, CVPR 2022).

The semantic encoder and the conditional ε-network train together on DDPM's L_simple,
‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t, Enc(x_0))‖² with t uniform over the T = 1000 steps of the
linear schedule (``anoncli.diffusion.ddim``), as the official code trains its autoencoders, or
(``--loss-weighting truncated-snr``, not in the thesis) with each face's loss weighted by
max(1, 1/SNR_t), which asks for x_0 itself at large t and so for the use of z̄. The
faces are the aligned crops of ``anoncli.train.face_crops`` area-resized to the network's side,
in [−1, 1], every other one mirrored. Adam, gradients clipped to norm 1, and an exponential
moving average of the weights (what is evaluated and exported, as the official ``ema_model``).

Held-out measurement in the log: reconstruction from (z̄, DDIM-inverted x_T) in PSNR and SSIM, and
the reconstruction from z̄ alone (x_T drawn at random), with a grid of both in the work folder.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import write_atomic
from .glow import save_grid
from .lineage import continued_from
from .loop import atomic_torch_save, load_checkpoint, update_average
from .training_faces import ResidentFaces

CHECKPOINT = "diffae-checkpoint.pt"
LOG = "diffae-train-log.jsonl"


@dataclass(frozen=True)
class DiffAETrainSettings:
    steps: int = 100000
    batch_size: int = 16
    lr: float = 1e-4
    ema_decay: float = 0.999
    max_grad_norm: float = 1.0
    evaluation_ddim_steps: int = 20
    checkpoint_every: int = 200
    evaluate_every: int = 1000
    threads: int = 0
    seed: int = 0
    device: str = "cpu"
    margin: float = 0.2
    config: dict = field(default_factory=dict)    # DiffAEConfig overrides of ANONCLI_64
    init_from: str = ""                           # an earlier export to start a new work folder from
    loss_weighting: str = "simple"                # ``diffusion.ddim.loss_weights``: simple (official) or truncated-snr
    prior_faces: int = 2048                       # training faces whose z̄ the exported code prior is fitted to
    prior_shrinkage: float = 0.01                 # that prior's covariance pulled toward its diagonal (deid.fit_code_prior)
    precision: str = "float32"                    # the forward pass in float32 or under bfloat16 autocast (weights stay float32)

    def shape_key(self) -> dict:
        return {"config": self.config, "margin": self.margin}


def network_config(overrides: dict):
    from ..models.diffae import ANONCLI_64, DiffAEConfig

    return DiffAEConfig.from_dict({**ANONCLI_64.to_dict(), **overrides})


class DiffAETrainer:
    def __init__(self, crops, settings: DiffAETrainSettings, work: Path, log=print):
        import torch

        from ..diffusion.ddim import linear_schedule
        from ..models.diffae import DiffAE

        self.torch, self.settings, self.work, self.log = torch, settings, work, log
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.crops = crops
        self.train_idx = crops.split(held_out=False)
        self.eval_idx = crops.split(held_out=True)
        self.config = network_config(settings.config)
        self.schedule = linear_schedule()
        self.device = torch.device(settings.device)
        self.faces = ResidentFaces(crops, self.config.image_size, self.device)
        torch.manual_seed(settings.seed)
        self.model = DiffAE(self.config).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.rng = np.random.default_rng(settings.seed)
        self.step, self.elapsed = 0, 0.0
        self.history: list[dict] = []   # the runs an --init-from export came from, oldest first
        state = load_checkpoint(work / CHECKPOINT, settings.shape_key(), self.device)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            self.history = state.get("history", [])
            self.rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"].cpu())   # map_location moved it to the device
            log(f"resumed at step {self.step}")
        elif settings.init_from:
            self._init_from_export(Path(settings.init_from))

    def _init_from_export(self, path: Path) -> None:
        """Start from an earlier export: its weights (as the network and as its average), step count and
        training time, so that the card counts every step; Adam's moments start afresh."""
        from ..diffusion.autoencoder import load_autoencoder

        exported = load_autoencoder(path, str(self.device))
        if exported.model.config != self.config or exported.margin != self.settings.margin:
            raise ValueError(f"{path} was trained with another network or margin than this run asks for")
        self.model.load_state_dict(exported.model.state_dict())
        self.ema.load_state_dict(exported.model.state_dict())
        self.step, self.elapsed, self.history = continued_from(exported.card)
        self.log(f"started from {path} (step {self.step})")

    def _faces(self, indices: np.ndarray, flips: np.ndarray | None = None):
        """N x 3 x R x R faces in [−1, 1]."""
        return self.faces.batch(indices, flips) * 2 - 1

    def save_checkpoint(self) -> None:
        atomic_torch_save({"shape_key": self.settings.shape_key(), "settings": asdict(self.settings), "step": self.step,
                           "elapsed": self.elapsed, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                           "opt": self.opt.state_dict(), "rng": self.rng.bit_generator.state,
                           "torch_rng": self.torch.get_rng_state(), "history": self.history}, self.work / CHECKPOINT)

    def train_step(self) -> dict:
        from ..diffusion.ddim import denoising_loss, loss_weights

        torch, s = self.torch, self.settings
        idx = self.rng.choice(self.train_idx, s.batch_size)
        x0 = self._faces(idx, self.rng.random(s.batch_size) < 0.5)
        t = torch.randint(0, self.schedule.steps, (s.batch_size,), device=self.device)
        noise = torch.randn_like(x0)
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=s.precision == "bfloat16"):
            per_face = denoising_loss(self.model, self.schedule, x0, self.model.encode(x0), t, noise).float()
        loss = (per_face * loss_weights(self.schedule, t, s.loss_weighting)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
        self.opt.step()
        update_average(self.ema, self.model, s.ema_decay)
        self.step += 1
        return {"eps_mse": float(per_face.detach().mean()), "loss": float(loss.detach())}

    def evaluate(self, n: int = 16) -> dict:
        faces = self._faces(self.eval_idx[:n])
        result = evaluate_autoencoder(self.ema, self.schedule, faces, self.settings.evaluation_ddim_steps)
        save_grid(result.pop("grid"), reconstruction_grid_path(self.work, self.step))
        return result

    def run(self, progress: bool = True) -> None:
        from .loop import run_resumable

        s = self.settings
        run_resumable(self, s.steps, self.work / LOG, checkpoint_every=s.checkpoint_every,
                      evaluate_every=s.evaluate_every, desc="train diffae", progress=progress)

    def code_prior(self):
        """§6.5.2's sampler for new z̄, the simpler one the issue allows: a Gaussian fitted to the EMA
        encoder's codes of up to ``prior_faces`` training faces (the first of a fixed shuffle)."""
        from ..diffusion.deid import fit_code_prior

        s = self.settings
        chosen = np.random.default_rng(s.seed).permutation(self.train_idx)[: s.prior_faces]
        self.ema.eval()
        with self.torch.no_grad():
            codes = self.torch.cat([self.ema.encode(self._faces(chosen[i:i + 128])).float().cpu()
                                    for i in range(0, len(chosen), 128)])
        return fit_code_prior(codes.numpy(), s.prior_shrinkage), len(chosen)

    def export(self, path: Path, card: dict, half: bool = True) -> None:
        """The EMA network as safetensors (fp16 unless ``half`` is False) with its code prior (float32),
        its config and card in the metadata."""
        from safetensors.torch import save

        from ..diffusion.autoencoder import FORMAT, PRIOR_PREFIX

        dtype = self.torch.float16 if half else self.torch.float32
        tensors = {k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
                   for k, v in self.ema.state_dict().items()}
        prior, prior_faces = self.code_prior()
        self.card_extras = {"code_prior": {"faces": prior_faces, "shrinkage": self.settings.prior_shrinkage}}
        tensors[PRIOR_PREFIX + "mean"] = self.torch.as_tensor(prior.mean, dtype=self.torch.float32)
        tensors[PRIOR_PREFIX + "cholesky"] = self.torch.as_tensor(prior.cholesky, dtype=self.torch.float32).contiguous()
        meta = {"format": FORMAT, "config": json.dumps(self.config.to_dict()), "margin": repr(float(self.settings.margin)),
                "card": json.dumps({**card, "steps": self.step, "train_seconds": round(self.elapsed),
                                    "settings": asdict(self.settings), "history": self.history,
                                    **self.card_extras})}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save(tensors, metadata=meta))


def reconstruction_grid_path(work: Path, step: int) -> Path:
    return work / f"diffae-reconstruction-step{step:06d}.png"


def evaluate_autoencoder(model, schedule, faces, ddim_steps: int, seed: int = 0) -> dict:
    """PSNR and SSIM of the decoding of (z̄, DDIM-inverted x_T) and of (z̄, random x_T) against the
    faces (in [−1, 1]), and a grid: originals, reconstructions, semantic-only decodings."""
    import torch

    from ..diffusion.ddim import ddim_decode, ddim_invert
    from ..metrics.image_quality import psnr, ssim

    model.eval()
    with torch.no_grad():
        cond = model.encode(faces)
        x_T = ddim_invert(model, schedule, faces, cond, ddim_steps)
        recon = ddim_decode(model, schedule, x_T, cond, ddim_steps)
        noise = torch.randn(faces.shape, generator=torch.Generator().manual_seed(seed)).to(faces)
        semantic = ddim_decode(model, schedule, noise, cond, ddim_steps)

    def uint8(x):
        return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    real = uint8(faces)
    scores = {}
    for name, images in (("inverted", recon), ("semantic_only", semantic)):
        arr = uint8(images)
        scores[f"{name}_psnr"] = round(float(np.mean([psnr(a, b) for a, b in zip(arr, real)])), 2)
        scores[f"{name}_ssim"] = round(float(np.mean([ssim(a, b) for a, b in zip(arr, real)])), 4)
    grid = torch.cat([faces[:8], recon[:8], semantic[:8]]).add(1).div(2)
    return {"faces": len(faces), "ddim_steps": ddim_steps, **scores, "grid": grid}
