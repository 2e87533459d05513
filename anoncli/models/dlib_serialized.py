"""Reader for dlib's binary serialization of a DNN, enough for King's face recognition ResNet
("dlib_face_recognition_resnet_model_v1.dat"; King, dlib face recognition ResNet,
``examples/dnn_face_recognition_ex.cpp``).

Pure numpy and the standard library (no torch): it turns the file into a plain
:class:`DlibNetwork` (input layer settings, the layers from input to output with their numeric
settings and numpy parameters, the loss layer's settings). The encodings follow dlib's sources:

* integers (``dlib/serialize.h``, ``ser_helper::pack_int``): a control byte whose low nibble is
  the number of bytes that follow and whose bit 0x80 is the sign, then the magnitude as
  little-endian bytes; bits 0x70 are always 0;
* bools: the ASCII byte ``'0'`` or ``'1'``; strings: the length as an integer, then the bytes;
* floats and doubles (``dlib/float_details.h``): an integer mantissa then an integer exponent,
  value ``mantissa * 2**exponent`` (exponents 32000, 32001, 32002 mean +inf, -inf, NaN);
* tensors (``dlib/dnn/tensor.h``): version, num_samples, k, nr, nc, then the values: version 2
  as raw little-endian float32, version 1 as dlib floats; ``alias_tensor``: version 1 and the
  four sizes only;
* networks (``dlib/dnn/core.h``): ``add_loss_layer`` (version 1, loss details, subnet),
  ``add_layer`` (version 2: subnet, layer details, three bools, three tensors; over the input
  layer version 2 or 3: input layer, details, three bools, three tensors and, in version 3,
  the sample expansion factor), ``add_tag_layer`` and ``add_skip_layer`` (version 1, subnet).
  A subnet is written before the details of the layer above it, so the file holds the
  wrappers from output to input, then the input layer, then each layer's details from input
  to output;
* layer details (``dlib/dnn/layers.h``, ``input.h``, ``loss.h``): ``con_4``, ``affine_``,
  ``relu_``, ``max_pool_2``, ``avg_pool_2``, ``add_prev_``, ``fc_2``,
  ``input_rgb_image_sized`` and ``loss_metric_2``.

dlib does not store tag ids: a tag and a skip layer are the same bytes, and ``add_prev_`` does
not name its tag. They are recovered from the residual templates of
``dnn_face_recognition_ex.cpp``: ``residual = add_prev1<block<tag1<x>>>`` and
``residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<tag1<x>>>>>>``, i.e. a lone
marker is ``tag1``, two adjacent markers are ``tag2`` then ``skip1``, and ``add_prev`` adds the
most recent tag. Anything else is refused with a ValueError.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOAT_IS_INF = 32000
FLOAT_IS_NINF = 32001
FLOAT_IS_NAN = 32002

ADD_LAYER_VERSION = 2
INPUT_ADD_LAYER_VERSIONS = (2, 3)
TAG_OR_SKIP_VERSION = 1
LOSS_LAYER_VERSION = 1
CONV_MODE, FC_MODE = 0, 1
FC_HAS_BIAS, FC_NO_BIAS = 0, 1

_MAX_STRING = 1 << 16
_MAX_WRAPPERS = 100_000


@dataclass(frozen=True)
class DlibLayer:
    """One computational layer (or a tag / skip marker), in input-to-output order.

    ``kind``: ``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``,
    ``tag`` or ``skip``. ``settings`` holds its numbers (a pooling window of 0 rows or columns
    spans the whole input, as in dlib's ``avg_pool_everything = avg_pool_<0,0,1,1>``);
    ``params`` its arrays; ``offset`` where its record starts in the file.
    """

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    offset: int = -1


@dataclass(frozen=True)
class DlibInputLayer:
    """``input_rgb_image_sized<NR,NC>`` (``dlib/dnn/input.h``): pixels become
    ``(value - mean) / 256`` per RGB channel, planes R, G, B."""

    kind: str
    mean_rgb: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True)
class DlibLoss:
    """The loss layer's details, e.g. ``loss_metric_`` with ``margin`` and ``distance_threshold``."""

    kind: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class DlibNetwork:
    input: DlibInputLayer
    layers: tuple[DlibLayer, ...]
    loss: DlibLoss

    def count(self, kind: str) -> int:
        return sum(layer.kind == kind for layer in self.layers)


# ----------------------------------------------------------------------------------------
# Primitive encodings (dlib/serialize.h, dlib/float_details.h, dlib/dnn/tensor.h)


class DlibStream:
    """A cursor over dlib-serialized bytes; every read raises ValueError naming the offset."""

    def __init__(self, data: bytes | bytearray | memoryview):
        self.data = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def fail(self, expected: str, at: int | None = None) -> ValueError:
        at = self.pos if at is None else at
        return ValueError(f"not a dlib network: at offset {at} expected {expected}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining:
            raise self.fail(f"{what} ({n} bytes) but only {self.remaining} bytes remain")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def read_int(self, what: str = "an integer", unsigned: bool = False) -> int:
        start = self.pos
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size == 0 or size > 8:
            raise self.fail(f"{what}: an integer control byte (0x01..0x08, sign bit 0x80), found 0x{control:02x}", start)
        if unsigned and control & 0x80:
            raise self.fail(f"{what}: an unsigned integer, found a negative one", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def read_size(self, what: str) -> int:
        value = self.read_int(what)
        if value < 0:
            raise self.fail(f"{what}: a size >= 0, found {value}")
        return value

    def read_bool(self, what: str = "a bool") -> bool:
        start = self.pos
        byte = self.take(1, what)[0]
        if byte not in (0x30, 0x31):
            raise self.fail(f"{what}: the byte '0' or '1', found 0x{byte:02x}", start)
        return byte == 0x31

    def read_string(self, what: str = "a string") -> str:
        n = self.read_int(f"the length of {what}", unsigned=True)
        if n > _MAX_STRING:
            raise self.fail(f"{what}: a short string, found length {n}")
        return bytes(self.take(n, what)).decode("latin-1")

    def peek_string(self) -> str | None:
        """The string at the cursor if one is there (an identifier), else None; the cursor stays."""
        start = self.pos
        try:
            text = self.read_string()
        except ValueError:
            return None
        finally:
            self.pos = start
        return text if text and all(c.isalnum() or c == "_" for c in text) else None

    def read_float(self, what: str = "a float") -> float:
        mantissa = self.read_int(f"the mantissa of {what}")
        exponent = self.read_int(f"the exponent of {what}")
        return decode_float_details(mantissa, exponent)

    def read_tensor(self, what: str = "a tensor") -> np.ndarray:
        start = self.pos
        version = self.read_int(f"the version of {what}")
        if version not in (1, 2):
            raise self.fail(f"{what}: tensor version 1 or 2, found {version}", start)
        shape = tuple(self.read_size(f"a dimension of {what}") for _ in range(4))
        count = math.prod(shape)
        if version == 2:
            raw = self.take(4 * count, f"the float32 values of {what}")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        values = [self.read_float(f"value {i} of {what}") for i in range(count)]
        return np.asarray(values, dtype=np.float32).reshape(shape)

    def read_alias_tensor(self, what: str = "an alias_tensor") -> tuple[int, int, int, int]:
        start = self.pos
        version = self.read_int(f"the version of {what}")
        if version != 1:
            raise self.fail(f"{what}: alias_tensor version 1, found {version}", start)
        return tuple(self.read_size(f"a dimension of {what}") for _ in range(4))  # type: ignore[return-value]


def decode_float_details(mantissa: int, exponent: int) -> float:
    """``float_details`` to a number: ``mantissa * 2**exponent`` with dlib's inf / NaN codes."""
    if exponent == FLOAT_IS_INF:
        return math.inf
    if exponent == FLOAT_IS_NINF:
        return -math.inf
    if exponent == FLOAT_IS_NAN:
        return math.nan
    return math.ldexp(float(mantissa), exponent)


# ----------------------------------------------------------------------------------------
# Layer details (dlib/dnn/layers.h, input.h, loss.h)


def _split(params: np.ndarray, shapes: list[tuple[int, ...]], stream: DlibStream, at: int,
           what: str) -> list[np.ndarray]:
    """Cut a layer's one params tensor into its alias_tensor views (in storage order)."""
    flat = params.reshape(-1)
    sizes = [math.prod(s) for s in shapes]
    if sum(sizes) != flat.size:
        raise stream.fail(f"{what}: parameters of {sum(sizes)} values for shapes {shapes}, found {flat.size}", at)
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[start:start + size].reshape(shape).copy())
        start += size
    return out


def _read_multipliers(stream: DlibStream, names: tuple[str, ...]) -> dict[str, float]:
    return {name: stream.read_float(name) for name in names}


def _read_con(stream: DlibStream, at: int) -> DlibLayer:
    params = stream.read_tensor("con_ params")
    settings = {
        "num_filters": stream.read_int("con_ num_filters"),
        "rows": stream.read_int("con_ nr"),
        "cols": stream.read_int("con_ nc"),
        "stride_y": stream.read_int("con_ stride_y"),
        "stride_x": stream.read_int("con_ stride_x"),
        "padding_y": stream.read_int("con_ padding_y"),
        "padding_x": stream.read_int("con_ padding_x"),
    }
    filters = stream.read_alias_tensor("con_ filters")
    stream.read_alias_tensor("con_ biases")  # one per filter: its shape follows from num_filters
    settings.update(_read_multipliers(stream, ("learning_rate_multiplier", "weight_decay_multiplier",
                                               "bias_learning_rate_multiplier", "bias_weight_decay_multiplier")))
    if filters[0] != settings["num_filters"] or filters[2:] != (settings["rows"], settings["cols"]):
        raise stream.fail(f"con_ filters shaped ({settings['num_filters']}, k, {settings['rows']}, "
                          f"{settings['cols']}), found {filters}", at)
    weight, bias = _split(params, [filters, (settings["num_filters"],)], stream, at, "con_")
    settings["in_channels"] = filters[1]
    return DlibLayer("con", settings, {"weight": weight, "bias": bias}, at)


def _read_affine(stream: DlibStream, at: int) -> DlibLayer:
    params = stream.read_tensor("affine_ params")
    gamma = stream.read_alias_tensor("affine_ gamma")
    beta = stream.read_alias_tensor("affine_ beta")
    mode = stream.read_int("affine_ mode")
    if mode not in (CONV_MODE, FC_MODE) or gamma != beta:
        raise stream.fail(f"affine_ with mode 0 or 1 and gamma shaped like beta, found mode {mode}, {gamma} vs {beta}", at)
    g, b = _split(params, [gamma, beta], stream, at, "affine_")
    return DlibLayer("affine", {"mode": "conv" if mode == CONV_MODE else "fc"}, {"gamma": g, "beta": b}, at)


def _read_pool(stream: DlibStream, at: int, kind: str) -> DlibLayer:
    names = ("rows", "cols", "stride_y", "stride_x", "padding_y", "padding_x")
    settings = {name: stream.read_int(f"{kind}_ {name}") for name in names}
    sizes = (settings["rows"], settings["cols"], settings["padding_y"], settings["padding_x"])
    if settings["stride_y"] <= 0 or settings["stride_x"] <= 0 or min(sizes) < 0:
        raise stream.fail(f"{kind}_ with positive strides and non-negative sizes, found {settings}", at)
    return DlibLayer(kind, settings, {}, at)


def _read_fc(stream: DlibStream, at: int) -> DlibLayer:
    num_outputs = stream.read_int("fc_ num_outputs", unsigned=True)
    num_inputs = stream.read_int("fc_ num_inputs", unsigned=True)
    params = stream.read_tensor("fc_ params")
    weights = stream.read_alias_tensor("fc_ weights")
    stream.read_alias_tensor("fc_ biases")  # num_outputs when bias_mode says so
    bias_mode = stream.read_int("fc_ bias_mode")
    settings: dict[str, Any] = {"num_outputs": num_outputs, "num_inputs": num_inputs,
                                "has_bias": bias_mode == FC_HAS_BIAS}
    settings.update(_read_multipliers(stream, ("learning_rate_multiplier", "weight_decay_multiplier",
                                               "bias_learning_rate_multiplier", "bias_weight_decay_multiplier")))
    if bias_mode not in (FC_HAS_BIAS, FC_NO_BIAS) or weights[:2] != (num_inputs, num_outputs):
        raise stream.fail(f"fc_ weights ({num_inputs}, {num_outputs}) and bias mode 0 or 1, "
                          f"found {weights}, mode {bias_mode}", at)
    # fc_::forward is output = input (N x num_inputs) * W (num_inputs x num_outputs), biases after W.
    shapes = [(num_inputs, num_outputs)] + ([(num_outputs,)] if bias_mode == FC_HAS_BIAS else [])
    arrays = _split(params, shapes, stream, at, "fc_")
    found = {"weight": arrays[0]}
    if bias_mode == FC_HAS_BIAS:
        found["bias"] = arrays[1]
    return DlibLayer("fc", settings, found, at)


def _read_layer_details(stream: DlibStream) -> DlibLayer:
    at = stream.pos
    name = stream.read_string("a layer's details name")
    if name == "con_4":
        return _read_con(stream, at)
    if name == "affine_":
        return _read_affine(stream, at)
    if name == "relu_":
        return DlibLayer("relu", {}, {}, at)
    if name == "max_pool_2":
        return _read_pool(stream, at, "max_pool")
    if name == "avg_pool_2":
        return _read_pool(stream, at, "avg_pool")
    if name == "add_prev_":
        return DlibLayer("add_prev", {}, {}, at)
    if name == "fc_2":
        return _read_fc(stream, at)
    raise stream.fail("layer details con_4, affine_, relu_, max_pool_2, avg_pool_2, add_prev_ or fc_2, "
                      f"found {name!r}", at)


def _read_input_layer(stream: DlibStream) -> DlibInputLayer:
    at = stream.pos
    name = stream.read_string("the input layer's name")
    if name != "input_rgb_image_sized":
        raise stream.fail(f"the input layer input_rgb_image_sized, found {name!r}", at)
    mean = tuple(float(np.float32(stream.read_float(f"avg_{c}"))) for c in ("red", "green", "blue"))
    rows = stream.read_int("input NR", unsigned=True)
    cols = stream.read_int("input NC", unsigned=True)
    return DlibInputLayer(name, mean, rows, cols)  # type: ignore[arg-type]


def _read_loss(stream: DlibStream) -> DlibLoss:
    at = stream.pos
    name = stream.read_string("the loss layer's name")
    if name == "loss_metric_2":
        margin = stream.read_float("loss_metric_ margin")
        threshold = stream.read_float("loss_metric_ dist_thresh")
        return DlibLoss("loss_metric", {"margin": margin, "distance_threshold": threshold})
    if name == "loss_metric_":
        # loss.h: the first version had these hard coded.
        return DlibLoss("loss_metric", {"margin": 0.1, "distance_threshold": 0.75})
    raise stream.fail(f"the loss layer loss_metric_2, found {name!r}", at)


def _skip_layer_state(stream: DlibStream, tensors: int, what: str) -> None:
    """The bools and cached tensors add_layer writes after the details (training state, unused)."""
    for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        stream.read_bool(f"{what} {flag}")
    for i in range(tensors):
        stream.read_tensor(f"{what} cached tensor {i}")


# ----------------------------------------------------------------------------------------
# Network structure (dlib/dnn/core.h)


def _resolve_tags(layers: list[DlibLayer], stream: DlibStream) -> list[DlibLayer]:
    """Give tag / skip markers and add_prev their ids (see the module docstring for why)."""
    resolved: list[DlibLayer] = []
    placed: list[int] = []  # tag ids in the order they were placed
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind != "tag_or_skip":
            if layer.kind == "add_prev":
                if not placed:
                    raise stream.fail("a tag layer below add_prev_", layer.offset)
                layer = DlibLayer("add_prev", {"tag": placed[-1]}, {}, layer.offset)
            resolved.append(layer)
            i += 1
            continue
        run = 1
        while i + run < len(layers) and layers[i + run].kind == "tag_or_skip":
            run += 1
        if run == 1:
            resolved.append(DlibLayer("tag", {"id": 1}, {}, layer.offset))
            placed.append(1)
        elif run == 2:
            if 1 not in placed:
                raise stream.fail("tag1 below the skip1 of a residual_down block", layer.offset)
            resolved.append(DlibLayer("tag", {"id": 2}, {}, layer.offset))
            resolved.append(DlibLayer("skip", {"id": 1}, {}, layers[i + 1].offset))
            placed.append(2)
        else:
            raise stream.fail(f"at most two adjacent tag/skip layers (dnn_face_recognition_ex.cpp), found {run}",
                              layer.offset)
        i += run
    return resolved


def parse_dlib_network(data: bytes | bytearray | memoryview) -> DlibNetwork:
    """Parse a serialized ``add_loss_layer<...>`` network; ValueError on anything else."""
    stream = DlibStream(data)
    version = stream.read_int("the add_loss_layer version")
    if version != LOSS_LAYER_VERSION:
        raise stream.fail(f"add_loss_layer version {LOSS_LAYER_VERSION}, found {version}", 0)
    loss = _read_loss(stream)

    wrappers: list[tuple[int, int]] = []  # (version, offset), outermost first
    while True:
        at = stream.pos
        version = stream.read_int("a layer wrapper's version")
        if (stream.peek_string() or "").startswith("input"):
            if version not in INPUT_ADD_LAYER_VERSIONS:
                raise stream.fail(f"add_layer over the input layer, version 2 or 3, found {version}", at)
            input_version = version
            break
        if version not in (ADD_LAYER_VERSION, TAG_OR_SKIP_VERSION):
            raise stream.fail(f"add_layer (version {ADD_LAYER_VERSION}) or add_tag_layer / add_skip_layer "
                              f"(version {TAG_OR_SKIP_VERSION}), found version {version}", at)
        wrappers.append((version, at))
        if len(wrappers) > _MAX_WRAPPERS:
            raise stream.fail("an input layer within a reasonable depth")

    input_layer = _read_input_layer(stream)
    layers = [_read_layer_details(stream)]
    _skip_layer_state(stream, 3, "first add_layer")
    if input_version == 3:
        stream.read_int("_sample_expansion_factor", unsigned=True)
    for version, at in reversed(wrappers):
        if version == TAG_OR_SKIP_VERSION:
            layers.append(DlibLayer("tag_or_skip", {}, {}, at))
            continue
        layers.append(_read_layer_details(stream))
        _skip_layer_state(stream, 3, "add_layer")
    if not stream.at_end():
        raise stream.fail(f"the end of the file, found {stream.remaining} more bytes")
    return DlibNetwork(input_layer, tuple(_resolve_tags(layers, stream)), loss)


def read_dlib_network(path: str | os.PathLike) -> DlibNetwork:
    """Read and parse a dlib network file such as ``dlib_face_recognition_resnet_model_v1.dat``."""
    with open(path, "rb") as f:
        return parse_dlib_network(f.read())
