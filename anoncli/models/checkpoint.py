"""Loading official checkpoints into the project's network definitions."""
from __future__ import annotations

import os


def load_state_dict_exactly(module, path: str | os.PathLike, what: str) -> None:
    """Load the state dict saved at ``path`` into ``module``; every key and shape must match.

    ``module`` may live on the meta device: the loaded tensors are adopted (``assign=True``),
    so no throw-away random weights are allocated. Raises ValueError naming the file.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for a truncated or non-torch file
        raise ValueError(f"{path}: not readable as a {what} state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a {what} state dict, found a {type(state).__name__}")
    try:
        result = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: not a {what} state dict: {e}") from None
    if result.missing_keys or result.unexpected_keys:
        def some(keys):
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        raise ValueError(f"{path}: not a {what} state dict: missing keys [{some(result.missing_keys)}], "
                         f"unexpected keys [{some(result.unexpected_keys)}]")
