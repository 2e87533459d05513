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
