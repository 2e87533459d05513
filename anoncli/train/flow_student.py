"""`anoncli train student`: mutually collaborative knowledge distillation of a Glow teacher into a
tiny CNN encoder and decoder (seed 000, MCKD, Sec. 4; METHODS.md §7).

Each step trains the two halves, separately and each against the other half of the teacher:

    decoder:  L_dec = ‖x − D_s(E_t(x))‖₁ + λ·P(x, D_s(E_t(x))) + μ·‖D_t(z) − D_s(z)‖₁    x: real aligned faces
    encoder:  L_enc = ‖γ·z − E_s(D_t(z))‖²                                                z ~ N(0, τ²I)

P is the offline perceptual distance of ``anoncli.models.perceptual`` (seed 000 uses LPIPS, whose
weights cannot be fetched here). The seed's q(z) is the teacher's prior N(0, I); τ is drawn per
sample from [τ_min, τ_max] (default 0.4-1.0) because the method decodes its fake faces at λ = 0.5
and restore must encode those. ‖·‖₁ and ‖·‖² are means over the dimensions.

The μ term is not in seed 000: real faces' latents E_t(x) lie near the teacher's temperature 1,
while the fake faces are decoded from λ·A·z at λ = 0.5, where a decoder that saw only real latents
has never been. The same teacher samples the encoder learns from show the decoder that region
(μ = 0 is the seed's loss).

Checkpoints and resume as every `anoncli train` command. The held-out measurement: PSNR of the
student's round trip D_s(E_s(x)) and of the decoder alone D_s(E_t(x)), the relative error of the
encoder E_s(x)/γ against E_t(x), and the teacher's round trip for reference.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import write_atomic
from .training_faces import ResidentFaces
from .loop import atomic_torch_save, load_checkpoint

CHECKPOINT = "student-checkpoint.pt"
LOG = "student-train-log.jsonl"
FORMAT = "anoncli-flow-student/1"


@dataclass(frozen=True)
class StudentTrainSettings:
    steps: int = 20000
    batch_size: int = 16
    lr: float = 2e-4
    lambda_percept: float = 1.0
    lambda_samples: float = 1.0
    gamma: float = 1.0
    temperature_min: float = 0.4
    temperature_max: float = 1.0
    checkpoint_every: int = 200
    evaluate_every: int = 1000
    threads: int = 0
    seed: int = 0
    device: str = "cpu"
    teacher_sha256: str = ""
    widths: list = field(default_factory=list)     # StudentConfig widths; empty: StudentConfig.for_teacher's
    init_from: str = ""                            # an earlier export to continue from in a new work folder

    def shape_key(self) -> dict:
        return {"teacher_sha256": self.teacher_sha256, "widths": list(self.widths), "gamma": self.gamma}


def psnr_01(a, b) -> float:
    """PSNR of images in a unit range (the flow's [−0.5, 0.5])."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


class StudentTrainer:
    def __init__(self, crops, teacher, settings: StudentTrainSettings, work: Path, margin: float, log=print):
        import torch

        from ..identity.encoders import load_identity_encoder
        from ..models.flow_student import FlowStudent, StudentConfig
        from ..models.perceptual import DlibPerceptual

        self.torch, self.settings, self.work, self.log = torch, settings, work, log
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.crops, self.margin = crops, margin
        self.train_idx = crops.split(held_out=False)
        self.eval_idx = crops.split(held_out=True)
        self.device = torch.device(settings.device)
        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.config = StudentConfig.for_teacher(teacher, tuple(settings.widths) or None)
        self.faces = ResidentFaces(crops, self.config.resolution, self.device)
        torch.manual_seed(settings.seed)
        self.student = FlowStudent(self.config).to(self.device)
        self.perceptual = DlibPerceptual(load_identity_encoder("dlib-resnet"), self.config.resolution, margin).to(self.device)
        self.opt_dec = torch.optim.Adam(self.student.decoder.parameters(), lr=settings.lr, betas=(0.9, 0.999))
        self.opt_enc = torch.optim.Adam(self.student.encoder.parameters(), lr=settings.lr, betas=(0.9, 0.999))
        self.rng = np.random.default_rng(settings.seed)
        self.step, self.elapsed = 0, 0.0
        state = load_checkpoint(work / CHECKPOINT, settings.shape_key(), self.device)
        if state is not None:
            self.student.load_state_dict(state["student"])
            self.opt_dec.load_state_dict(state["opt_dec"])
            self.opt_enc.load_state_dict(state["opt_enc"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            self.rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"].cpu())   # map_location moved it to the device
            log(f"resumed at step {self.step}")
        elif settings.init_from:
            self._init_from_export(Path(settings.init_from))
            log(f"continuing {settings.init_from} from its step {self.step} (fresh Adam moments)")

    def _init_from_export(self, path: Path) -> None:
        """Start a new work folder from an export of the same shape: its weights, step count and
        training time carry over (so the card counts every step); the optimiser's moments do not."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.is_file():
            raise ValueError(f"--init-from {path}: no such file")
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"--init-from {path} is not an anoncli flow student export")
        if meta.get("teacher_sha256") != self.settings.teacher_sha256:
            raise ValueError(f"--init-from {path} was distilled from another teacher (sha256 {meta.get('teacher_sha256', '')[:12]}…)")
        if json.loads(meta["config"]) != self.config.to_dict() or float(meta["gamma"]) != self.settings.gamma:
            raise ValueError(f"--init-from {path} has another network shape or γ than these settings")
        self.student.load_state_dict(load_file(str(path), device=str(self.device)), strict=True)
        card = json.loads(meta.get("card", "{}"))
        self.step, self.elapsed = int(card.get("steps", 0)), float(card.get("train_seconds", 0.0))

    def _faces(self, indices, flips=None):
        return self.faces.batch(indices, flips) - 0.5

    def _latent_samples(self, n: int) -> list:
        torch = self.torch
        s = self.settings
        tau = torch.from_numpy(self.rng.uniform(s.temperature_min, s.temperature_max, n).astype(np.float32)).to(self.device)
        return [torch.randn(n, *shape, device=self.device) * tau.view(-1, 1, 1, 1) for shape in self.teacher.latent_shapes()]

    def save_checkpoint(self) -> None:
        atomic_torch_save({"shape_key": self.settings.shape_key(), "settings": asdict(self.settings), "step": self.step,
                           "elapsed": self.elapsed, "student": self.student.state_dict(), "opt_dec": self.opt_dec.state_dict(),
                           "opt_enc": self.opt_enc.state_dict(), "rng": self.rng.bit_generator.state,
                           "torch_rng": self.torch.get_rng_state()}, self.work / CHECKPOINT)

    def train_step(self) -> dict:
        torch, s = self.torch, self.settings
        idx = self.rng.choice(self.train_idx, s.batch_size)
        x = self._faces(idx, self.rng.random(s.batch_size) < 0.5)
        with torch.no_grad():
            z_real, _ = self.teacher.encode(x)
            z = self._latent_samples(s.batch_size)
            x_teacher = self.teacher.decode(z)
            # a sample at τ near 1 now and then leaves the flow's stable range (inf/NaN pixels): drop it
            keep = torch.isfinite(x_teacher).flatten(1).all(1)
            z = [e[keep] for e in z]
            x_teacher = x_teacher[keep].clamp(-0.5, 0.5)
        self.student.train()
        y = self.student.decoder(z_real)
        pixel = (x - y).abs().mean()
        percept = self.perceptual(x, y).mean()
        loss_dec = pixel + s.lambda_percept * percept
        samples = torch.zeros(())
        if s.lambda_samples > 0 and len(x_teacher):
            samples = (x_teacher - self.student.decoder(z)).abs().mean()
            loss_dec = loss_dec + s.lambda_samples * samples
        self.opt_dec.zero_grad(set_to_none=True)
        loss_dec.backward()
        self.opt_dec.step()
        loss_enc = torch.zeros(())
        if len(x_teacher):
            e = self.student.encoder(x_teacher)
            loss_enc = sum(((s.gamma * a - b) ** 2).sum() for a, b in zip(z, e)) / sum(a.numel() for a in z)
            self.opt_enc.zero_grad(set_to_none=True)
            loss_enc.backward()
            self.opt_enc.step()
        self.step += 1
        return {"pixel": float(pixel.detach()), "percept": float(percept.detach()), "samples": float(samples.detach()),
                "latent": float(loss_enc.detach())}

    def evaluate(self, n: int = 64) -> dict:
        return evaluate_student(self.teacher, self.student, self._faces(self.eval_idx[:n]), self.settings.gamma)

    def run(self, progress: bool = True) -> None:
        from .loop import run_resumable

        s = self.settings
        run_resumable(self, s.steps, self.work / LOG, checkpoint_every=s.checkpoint_every,
                      evaluate_every=s.evaluate_every, desc="train student", progress=progress)

    def export(self, path: Path, card: dict) -> None:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.student.state_dict().items()}
        meta = {"format": FORMAT, "config": json.dumps(self.config.to_dict()), "margin": repr(float(self.margin)),
                "gamma": repr(float(self.settings.gamma)), "teacher_sha256": self.settings.teacher_sha256,
                "card": json.dumps({**card, "steps": self.step, "train_seconds": round(self.elapsed), "settings": asdict(self.settings)})}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save(tensors, metadata=meta))


def evaluate_student(teacher, student, x, gamma: float, batch: int = 16) -> dict:
    """Held-out PSNR (dB, on [−0.5, 0.5] faces) of the student's and the teacher's round trips and
    of the decoder alone, the decoder against the teacher's on samples at λ = 0.5 (the fake faces'
    regime), and the encoder's relative squared error ‖E_s(x)/γ − E_t(x)‖² / ‖E_t(x)‖²."""
    import torch

    if len(x) == 0:
        return {}
    student.eval()
    sums = {"student_round_trip": [], "decoder_on_teacher_latent": [], "teacher_round_trip": []}
    err, ref = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            z_t, _ = teacher.encode(xb)
            z_s = [e / gamma for e in student.encoder(xb)]
            err += sum(float(((a - b) ** 2).sum()) for a, b in zip(z_s, z_t))
            ref += sum(float((a ** 2).sum()) for a in z_t)
            for key, y in (("student_round_trip", student.decoder(z_s)), ("decoder_on_teacher_latent", student.decoder(z_t)),
                           ("teacher_round_trip", teacher.decode(z_t).clamp(-0.5, 0.5))):
                sums[key] += [psnr_01(a, b) for a, b in zip(xb, y)]
        # the fake faces' regime: fixed samples at λ = 0.5 through both decoders
        g = torch.Generator().manual_seed(0)
        z = [torch.randn(len(x), *shape, generator=g).to(x.device) * 0.5 for shape in teacher.latent_shapes()]
        for start in range(0, len(x), batch):
            zb = [e[start:start + batch] for e in z]
            sums.setdefault("decoder_on_samples_t05", []).extend(
                psnr_01(a, b) for a, b in zip(teacher.decode(zb).clamp(-0.5, 0.5), student.decoder(zb)))
    student.train()
    # an exact copy (inf dB) counts as 100 dB; a NaN output makes the mean NaN
    out = {"faces": len(x), **{f"psnr_{k}": round(float(np.mean(np.minimum(vals, 100.0))), 3) for k, vals in sums.items()}}
    out["encoder_relative_error"] = round(err / max(ref, 1e-12), 5)
    return out
