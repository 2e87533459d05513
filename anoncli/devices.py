"""``--device``: where a method's networks run. Parsing needs no torch (``anoncli --help`` stays
light); ``resolve_device`` imports it to check that the device exists."""
from __future__ import annotations

import re

DEVICE_HELP = "auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"
_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device_name(name: str) -> str:
    """The name unchanged, or ValueError naming the accepted forms."""
    if not _PATTERN.match(str(name)):
        raise ValueError(f"--device must be {DEVICE_HELP}; got {name!r}")
    return str(name)


def resolve_device(name: str) -> str:
    """The torch device string for ``name``; ValueError (one line) when it is not available here."""
    import torch

    name = check_device_name(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA GPU on this machine (use --device cpu)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


PRECISIONS = ("auto", "float32", "bfloat16")
PRECISION_HELP = ("auto (bfloat16 where the device computes it natively: a CPU with AVX-512 BF16 or AMX, a CUDA GPU "
                  "that supports it; float32 elsewhere), float32 or bfloat16")


def search_dtype(precision: str, device: str):
    """The torch dtype that autocast should compute a search's networks in, or None for float32."""
    import torch

    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if native else None
