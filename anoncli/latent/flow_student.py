"""flowrot's distilled student as a latent backbone (seed 000, MCKD; METHODS.md §7): f_E = the student's
encoder E_s(x)/γ and f_D = its decoder D_s, on the teacher Glow's per-level ε, flattened in the teacher's
order. A CNN pair about nine times cheaper than the Glow (model card), but not an inverse of each other:
f_E(f_D(z)) ≈ z only, and D_s(E_s(x)) is a lossy reconstruction (model card, round trip 15.7 dB), so a
method on it releases the original plus the decoded perturbation f_D(W′) − f_D(W), never f_D(W′) itself."""
from __future__ import annotations

from . import BackboneSpec, LatentBackbone
from .glow import flatten_levels, spec_for, split_levels


class FlowStudentBackbone(LatentBackbone):
    def __init__(self, spec: BackboneSpec, weights_dir=None, student=None):
        """``student``: a ``flow.student.FlowStudentModel`` already built (tests); otherwise the spec's weights."""
        from ..flow.student import FlowStudentModel

        self.student = student or FlowStudentModel(weights_dir, name=spec.weights[0])
        self.net = self.student.net
        self.margin = self.student.margin
        self.gamma = self.student.gamma
        self.shapes = [tuple(s) for s in self.student.shapes]
        size = sum(c * h * w for c, h, w in self.shapes)
        if student is None and (self.student.resolution, (size,)) != (spec.resolution, spec.latent_shape):
            raise ValueError(f"{spec.weights[0]} is a {self.student.resolution} px student with {size} latent values; the "
                             f"backbone {spec.name} is registered for {spec.resolution} px and {spec.latent_shape}")
        self.spec = spec if student is None else spec_for(spec, self.student.resolution, size)

    def encode(self, images):
        return flatten_levels([e / self.gamma for e in self.net.encoder(images / 2.0)])   # its input: [-0.5, 0.5]

    def decode(self, latents):
        return self.net.decoder(split_levels(latents, self.shapes)) * 2.0

    def to(self, device, memory_format=None) -> "FlowStudentBackbone":
        self.net.to(device)
        if memory_format is not None:
            self.net.to(memory_format=memory_format)
        return self
