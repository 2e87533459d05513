"""The distilled student of the flow, ready for the methods with the teacher's interface
(``encode``, ``decode``, ``shapes``; seed 000, MCKD; METHODS.md §7): ``--method flowrot --model
student``. Loads ``anoncli train student``'s safetensors export (format ``anoncli-flow-student/1``).

The student's encoder was trained to give γ·ε of the teacher (‖γz − E_s(D_t(z))‖²), so ``encode``
divides by γ; its decoder takes the teacher's per-level ε, so decoding at temperature T feeds it
T·ε, as the teacher's z = μ + T·σ·ε does. Unlike the teacher, neither half is exact: the student's
round trip is lossy, and its fake faces are measured on their own (model card).
"""
from __future__ import annotations

import json

import numpy as np

STUDENT_WEIGHTS = "flow-student-celeba-utk-64"
FORMAT = "anoncli-flow-student/1"


class FlowStudentModel:
    """FlowStudent, frozen, in float32; crops are float RGB 0..255, R x R x 3."""

    def __init__(self, weights_dir=None, name: str = STUDENT_WEIGHTS):
        from safetensors import safe_open
        from safetensors.torch import load_file

        from ..weights import resolve_weights

        resolved = resolve_weights(name, weights_dir)
        with safe_open(str(resolved.path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{resolved.path} is not an anoncli flow student export (format {meta.get('format')!r})")
        self._build(load_file(str(resolved.path)), json.loads(meta["config"]), float(meta["margin"]), float(meta["gamma"]))
        self.sha256 = resolved.entry.sha256
        self.teacher_sha256 = meta.get("teacher_sha256", "")
        self.card = json.loads(meta.get("card", "{}"))

    @classmethod
    def from_network(cls, student, margin: float, gamma: float = 1.0) -> "FlowStudentModel":
        """A model around an in-memory FlowStudent (tests, the trainer's evaluation)."""
        model = cls.__new__(cls)
        model._build(student.state_dict(), student.config.to_dict(), margin, gamma)
        model.sha256 = model.teacher_sha256 = ""
        model.card = {}
        return model

    def _build(self, tensors: dict, config: dict, margin: float, gamma: float) -> None:
        import torch

        from ..models.flow_student import FlowStudent, StudentConfig

        self.torch = torch
        self.config = StudentConfig.from_dict(config)
        self.net = FlowStudent(self.config)
        self.net.load_state_dict(tensors, strict=True)
        self.net.eval().requires_grad_(False)
        self.resolution, self.margin, self.gamma = self.config.resolution, margin, gamma
        r = self.resolution
        self.shapes = [(c, r >> (i + 1), r >> (i + 1)) for i, c in enumerate(self.config.latent_channels)]

    def encode(self, crop: np.ndarray) -> list[np.ndarray]:
        """ε of every level (float64, the level's C x H x W) of one crop: E_s(x)/γ."""
        if crop.shape[:2] != (self.resolution, self.resolution):
            raise ValueError(f"the student works on {self.resolution} px crops, got {crop.shape[:2]}")
        x = self.torch.from_numpy(np.ascontiguousarray(crop, np.float32)).permute(2, 0, 1)[None] / 255.0 - 0.5
        with self.torch.no_grad():
            return [(e[0] / self.gamma).double().numpy() for e in self.net.encoder(x)]

    def decode(self, eps: list[np.ndarray], temperature: float = 1.0) -> np.ndarray:
        """D_s(T·ε) as a float crop, 0..255."""
        with self.torch.no_grad():
            x = self.net.decoder([self.torch.as_tensor(np.asarray(e, np.float32) * temperature)[None] for e in eps])
        return ((x[0].permute(1, 2, 0).numpy().astype(np.float64) + 0.5) * 255.0).clip(0.0, 255.0)
