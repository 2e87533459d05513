"""Method flags of the upsampler (``anoncli.faces.upsampling``) that enlarges a 64 px generated face to
the working crop: flowrot, dpimage and diffusion list these in their specs. Importable without torch."""
from __future__ import annotations

from ..faces.upsampling import get_upsampler_spec, list_upsamplers
from .base import Param


def upsampler_params(what: str, upsampler: str, strength: float, note: str = "") -> tuple[Param, ...]:
    """``--upsampler`` and ``--upsampler-strength`` with these defaults; ``what`` names the face that is enlarged."""
    return (
        Param("upsampler", str, upsampler, f"How {what} is enlarged to the crop: " + "; ".join(
              f"{u.name}, {u.summary}" for u in list_upsamplers()) + "." + note,
              choices=tuple(u.name for u in list_upsamplers())),
        Param("upsampler_strength", float, strength, "With a learned --upsampler: its output mixed with the "
              "bicubic enlargement, b + s·(network − b); 1 = the network's alone, 0 = bicubic.", minimum=0.0, maximum=1.0),
    )


def upsampler_weights(params: dict) -> tuple[str, ...]:
    """Weights the upsampler loads with these parameters (for a spec's ``param_weights``)."""
    return get_upsampler_spec(params["upsampler"]).weights if "upsampler" in params else ()


def create_method_upsampler(params: dict, weights_dir=None, device: str = "cpu"):
    """The upsampler a method's resolved parameters ask for (``faces.upsampling.create_upsampler``)."""
    from ..faces.upsampling import create_upsampler

    return create_upsampler(params.get("upsampler", "bicubic"), weights_dir, device, float(params.get("upsampler_strength", 1.0)))
