"""Registry of anonymization methods: name -> MethodSpec. Importing this never imports torch."""
from __future__ import annotations

from .base import FaceMethod, MethodSpec, Param
from .diffusion_specs import DIFFUSION_SPEC
from .flow_specs import FLOWROT_SPEC
from .identity_specs import IDENTITY_SPECS
from .ksame_specs import KSAME_SPECS
from .latent_specs import DPIMAGE_SPEC, FSAP_SPEC
from .obfuscation_specs import DPPIX_SPEC, OBFUSCATION_SPECS

_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    for key in (spec.name, *spec.aliases):
        if key in _REGISTRY:
            raise ValueError(f"method name {key!r} registered twice")
        _REGISTRY[key] = spec
    return spec


for _spec in (*OBFUSCATION_SPECS, DPPIX_SPEC, *KSAME_SPECS, *IDENTITY_SPECS, FLOWROT_SPEC, FSAP_SPEC, DPIMAGE_SPEC, DIFFUSION_SPEC):
    register(_spec)


def available_methods() -> list[MethodSpec]:
    seen: dict[str, MethodSpec] = {}
    for spec in _REGISTRY.values():
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def get_method_spec(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        names = ", ".join(s.name for s in available_methods())
        raise KeyError(f"unknown method {name!r}; available: {names}") from None


def build_method(name: str, params: dict, weights_dir=None) -> FaceMethod:
    """The method with its validated parameters, named as its registry entry (``method.name``);
    methods with weights look in ``weights_dir`` first."""
    spec = get_method_spec(name)
    extra = {"weights_dir": weights_dir} if spec.weights or spec.param_weights else {}
    method = spec.load()(**spec.resolve_params(params), **extra)
    method.name = spec.name
    return method


__all__ = ["FaceMethod", "MethodSpec", "Param", "available_methods", "build_method", "get_method_spec", "register"]
