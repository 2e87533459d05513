"""A small CNN that reads CelebA's 40 binary attributes from an aligned face (for `--method diffusion`'s
pairing and its attribute-preservation measure, thesis §6.5-6.6, where FaRL's ViT is used when present).

Input: N x 3 x R x R faces in [−1, 1] (the aligned crops of ``anoncli.train.face_crops``, area-resized);
output: N x 40 logits. ``features`` is the pooled last block (the attribute feature space whose Euclidean
distance pairs real and fake faces).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..io.labels import CELEBA_ATTRIBUTES   # CelebA's order: the labels.csv columns after image and identity


@dataclass(frozen=True)
class AttributeNetConfig:
    resolution: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)   # one stride-2 stage each
    attributes: int = len(CELEBA_ATTRIBUTES)

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        if self.resolution % 2 ** len(self.widths):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2^{len(self.widths)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class AttributeNet(nn.Module):
    def __init__(self, config: AttributeNetConfig = AttributeNetConfig()):
        super().__init__()
        self.config = config
        widths = (3, *config.widths)
        self.blocks = nn.Sequential(*[_stage(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.head = nn.Linear(config.widths[-1], config.attributes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


FORMAT = "anoncli-attributes-v1"


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an anoncli attribute classifier (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def attribute_net_crops(path) -> tuple[int, float]:
    """(image side, crop margin) of an export, from its metadata alone (no network is built)."""
    import json

    meta = _metadata(path)
    return int(json.loads(meta["config"])["resolution"]), float(meta["margin"])


def load_attribute_net(path, device: str = "cpu") -> tuple[AttributeNet, float, dict]:
    """(network in eval mode, crop margin, card) of an `anoncli train attributes` export, read strictly."""
    import json

    from safetensors.torch import load_file

    meta = _metadata(path)
    net = AttributeNet(AttributeNetConfig(**json.loads(meta["config"])))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}, strict=True)
    return net.to(device).eval(), float(meta["margin"]), json.loads(meta.get("card", "{}"))
