"""dlib's face recognition ResNet in PyTorch (King, dlib face recognition ResNet,
``dnn_face_recognition_ex.cpp``: ``anet_type``, 29 conv layers, 150x150 RGB chip in, 128-d
descriptor out), built from the :class:`~anoncli.models.dlib_serialized.DlibNetwork` that the
reader parses out of ``dlib_face_recognition_resnet_model_v1.dat``.

Every forward op is a torch op, so gradients reach the input chip. Semantics follow dlib's CPU
code (``dlib/dnn/layers.h``, ``input.h``, ``cpu_dlib.cpp``):

* ``input_rgb_image_sized``: ``(pixel - channel mean) / 256`` for R, G, B planes (NCHW);
* ``con_``: cross-correlation with the stored stride and zero padding, plus a bias per filter;
  output size ``1 + (n + 2 p - k) // s``;
* ``affine_``: ``x * gamma + beta``, per channel in CONV_MODE (gamma shaped ``1 x k x 1 x 1``),
  per element in FC_MODE (``1 x k x nr x nc``);
* ``max_pool_`` / ``avg_pool_``: window ``[r s - p, r s - p + h)`` clipped to the image
  (``subm_clipped``), so padded cells never win a max and are not counted in a mean; a window of
  0 rows or columns spans the whole input (``avg_pool_everything``);
* ``add_prev_``: the output takes the larger of each dimension of the two inputs and each input
  counts as 0 outside its own extent (``cpu::add(dest, src1, src2)``), i.e. the smaller one is
  zero-padded at the end of channels, rows and columns;
* ``fc_``: ``x.flatten(1) @ W`` with ``W`` stored ``num_inputs x num_outputs`` (+ bias if any);
* ``loss_metric_``: the descriptor is the fc output as is, not normalised.

No file access here: ``anoncli.identity.encoders`` reads the file and builds the network.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dlib_serialized import DlibLayer, DlibNetwork

PIXEL_SCALE = 256.0


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class DlibConv(nn.Conv2d):
    """``con_`` with the stride and padding stored in the file."""

    def __init__(self, layer: DlibLayer):
        s = layer.settings
        super().__init__(s["in_channels"], s["num_filters"], (s["rows"], s["cols"]),
                         stride=(s["stride_y"], s["stride_x"]), padding=(s["padding_y"], s["padding_x"]))
        with torch.no_grad():
            self.weight.copy_(_tensor(layer.params["weight"]))
            self.bias.copy_(_tensor(layer.params["bias"]))


class DlibAffine(nn.Module):
    """``affine_``: ``x * gamma + beta``; gamma and beta are stored 1 x k x 1 x 1 in CONV_MODE
    (per channel) and 1 x k x nr x nc in FC_MODE (per element), so broadcasting covers both."""

    def __init__(self, layer: DlibLayer):
        super().__init__()
        self.mode = layer.settings["mode"]
        self.gamma = nn.Parameter(_tensor(layer.params["gamma"]))
        self.beta = nn.Parameter(_tensor(layer.params["beta"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


class DlibPool(nn.Module):
    """``max_pool_`` / ``avg_pool_`` over windows clipped to the image (padding never counts)."""

    def __init__(self, layer: DlibLayer):
        super().__init__()
        s = layer.settings
        self.use_max = layer.kind == "max_pool"
        self.window = (s["rows"], s["cols"])
        self.stride = (s["stride_y"], s["stride_x"])
        self.padding = (s["padding_y"], s["padding_x"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = (self.window[0] or x.shape[2], self.window[1] or x.shape[3])
        py, px = self.padding
        if self.use_max:
            if py or px:
                x = F.pad(x, (px, px, py, py), value=float("-inf"))
            return F.max_pool2d(x, window, self.stride)
        if not (py or px):
            return F.avg_pool2d(x, window, self.stride)
        # Mean over the in-image cells only: window sums divided by in-image cell counts.
        sums = F.avg_pool2d(F.pad(x, (px, px, py, py)), window, self.stride, divisor_override=1)
        ones = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype, device=x.device)
        counts = F.avg_pool2d(F.pad(ones, (px, px, py, py)), window, self.stride, divisor_override=1)
        return sums / counts


class DlibFullyConnected(nn.Module):
    """``fc_``: ``x.flatten(1) @ W`` (``W``: num_inputs x num_outputs), plus bias if stored."""

    def __init__(self, layer: DlibLayer):
        super().__init__()
        self.weight = nn.Parameter(_tensor(layer.params["weight"]))
        self.bias = nn.Parameter(_tensor(layer.params["bias"])) if "bias" in layer.params else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1) @ self.weight
        return out + self.bias if self.bias is not None else out


def add_zero_extended(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add(dest, src1, src2)`` for ``add_prev_``: sizes are the larger of each
    dimension, each input is zero beyond its own channels / rows / columns."""
    if a.shape == b.shape:
        return a + b
    k, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def extend(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, k - t.shape[1]))

    return extend(a) + extend(b)


_MODULES = {"con": DlibConv, "affine": DlibAffine, "max_pool": DlibPool, "avg_pool": DlibPool,
            "fc": DlibFullyConnected}


class DlibFaceResNet(nn.Module):
    """The network of a :class:`DlibNetwork`, run layer by layer with dlib's tag / skip /
    add_prev wiring. ``forward`` takes N x 3 x H x W RGB values in 0..255 (float) and returns
    N x 128 descriptors exactly as ``compute_face_descriptor`` does (not normalised)."""

    def __init__(self, network: DlibNetwork):
        super().__init__()
        self.input_size = (network.input.rows, network.input.cols)
        self.register_buffer("mean_rgb", torch.tensor(network.input.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.distance_threshold = float(network.loss.settings.get("distance_threshold", 0.6))
        self.steps: list[tuple[str, int]] = []
        layers = []
        for layer in network.layers:
            if layer.kind in _MODULES:
                layers.append(_MODULES[layer.kind](layer))
            elif layer.kind in ("relu", "tag", "skip", "add_prev"):
                layers.append(nn.ReLU() if layer.kind == "relu" else nn.Identity())
            else:
                raise ValueError(f"layer kind {layer.kind!r} is not supported by the dlib ResNet port")
            self.steps.append((layer.kind, layer.settings.get("id", layer.settings.get("tag", 0))))
        self.layers = nn.ModuleList(layers)

    def normalise_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """``input_rgb_image_sized::to_tensor``: ``(pixel - mean) / 256`` per channel."""
        if rgb.ndim != 4 or rgb.shape[1] != 3 or tuple(rgb.shape[2:]) != self.input_size:
            raise ValueError(f"expected N x 3 x {self.input_size[0]} x {self.input_size[1]} RGB chips, "
                             f"got {tuple(rgb.shape)}")
        return (rgb - self.mean_rgb) / PIXEL_SCALE

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self._run(rgb)

    def block_features(self, rgb: torch.Tensor, blocks: int) -> list[torch.Tensor]:
        """The activations after each of the first ``blocks`` residual sums (``add_prev``), for
        feature-space losses; stops there, so the rest of the network is not run."""
        found: list[torch.Tensor] = []
        self._run(rgb, found, blocks)
        return found

    def _run(self, rgb: torch.Tensor, found: list | None = None, blocks: int = 0) -> torch.Tensor:
        x = self.normalise_input(rgb)
        tagged: dict[int, torch.Tensor] = {}
        for (kind, ident), layer in zip(self.steps, self.layers):
            if kind == "tag":
                tagged[ident] = x
            elif kind == "skip":
                x = tagged[ident]
            elif kind == "add_prev":
                x = add_zero_extended(x, tagged[ident])
                if found is not None:
                    found.append(x)
                    if len(found) == blocks:
                        return x
            else:
                x = layer(x)
        return x


def chips_to_tensor(chips) -> torch.Tensor:
    """uint8 RGB chip(s), H x W x 3 or N x H x W x 3 (or a list), to float N x 3 x H x W."""
    array = np.stack([np.asarray(c) for c in chips]) if isinstance(chips, (list, tuple)) else np.asarray(chips)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[3] != 3:
        raise ValueError(f"expected H x W x 3 RGB chips, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2), dtype=np.float32))
