"""Method metadata (importable without torch) and the interface every method implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Param:
    """One number or choice a researcher may vary, with its default and where it comes from."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: Any) -> Any:
        """Convert and validate a raw value (string from the command line, or a typed value); None
        stays None for a parameter whose default is None ("not given")."""
        if raw is None and self.default is None:
            return None
        try:
            if self.type is bool and isinstance(raw, str):
                low = raw.lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                value = low in ("1", "true", "yes", "on")
            else:
                value = self.type(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{self.flag} expects {self.type.__name__}, got {raw!r}") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.flag} must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.flag} must be <= {self.maximum}, got {value}")
        return value


class RestoreKind(Enum):
    """What `anoncli restore` can give back of a run's faces."""

    EXACT = "exact"              # the original pixels, to the precision the run kept (status ``restored``)
    APPROXIMATE = "approximate"  # a lossy inverse: written with each face's measured round trip (status ``approximate``)
    IMPOSSIBLE = "impossible"    # nothing the run kept recovers the faces: restore refuses before writing


@dataclass(frozen=True)
class RestoreCapability:
    """How a run with given parameters can be restored, and why; ``enabling_flags``: the
    `anoncli anonymize` flags that would have made an impossible restore possible."""

    kind: RestoreKind
    reason: str
    enabling_flags: tuple[str, ...] = ()

    def refusal(self, method: str) -> str:
        """The one line `anoncli restore` prints when it refuses."""
        flags = " or ".join(self.enabling_flags)
        return (f"this {method} run cannot be restored: {_reason_sentence(self.reason)}; "
                f"anonymize with {flags} to make a restorable run" if flags else
                f"this {method} run cannot be restored: {_reason_sentence(self.reason)}")


def _reason_sentence(reason: str) -> str:
    return reason[:1].lower() + reason[1:].rstrip(".")


ESCROW_RESTORE = RestoreCapability(RestoreKind.EXACT, "the keyfile holds each face's original pixels (escrow)")


@dataclass(frozen=True)
class MethodSpec:
    """What `anoncli methods` shows, and how to build the method; ``load`` imports lazily."""

    name: str
    summary: str
    citation: str
    params: tuple[Param, ...]
    load: Callable[[], type]
    reversible: bool = False      # restores from the anonymized image and the face key (needs --keyfile)
    formal_guarantee: str | None = None
    weights: tuple[str, ...] = ()
    deterministic: bool = True
    aliases: tuple[str, ...] = field(default_factory=tuple)
    recognizers: tuple[str, ...] = ()   # face recognizers the method uses internally (white-box in reports)
    check: Callable[[dict], None] | None = None   # raises ValueError when the parameters do not fit together
    dataset_level: bool = False   # needs every face of the dataset before any output (two passes, anoncli.two_pass)
    advisory: Callable[[object, dict], str | None] | None = None   # (weights_dir, params) -> a warning to show before a run, or None
    param_weights: Callable[[dict], tuple[str, ...]] | None = None   # weights some parameter values need besides ``weights``
    restore: Callable[[dict], RestoreCapability] | None = None   # (resolved params) -> what the inverse recovers; None: exact
    param_recognizers: Callable[[dict], tuple[str, ...]] | None = None   # recognizers some parameter values use besides ``recognizers``
    faces_together: Callable[[dict], int] | None = None   # (resolved params) -> ``FaceMethod.faces_together``; None: 1

    def faces_per_call(self, params: dict) -> int:
        """How many faces the method works on at once with these (resolved) parameters; the run then
        gives each worker units with enough faces to keep that many busy."""
        return self.faces_together(params) if self.faces_together else 1

    def recognizers_used(self, params: dict) -> tuple[str, ...]:
        """The report evaluators (``metrics.evaluators``) a run with these (resolved) parameters
        optimised against: white-box in its report."""
        return self.recognizers + (self.param_recognizers(params) if self.param_recognizers else ())

    def weights_needed(self, params: dict) -> tuple[str, ...]:
        """Registry names of the files a run with these (resolved) parameters loads."""
        return tuple(dict.fromkeys(self.weights + (self.param_weights(params) if self.param_weights else ())))

    def restore_capability(self, params: dict, escrow: bool) -> RestoreCapability:
        """What `anoncli restore` can recover of a run with these (resolved) parameters, with or
        without escrow; decided before anything is written."""
        if escrow:
            return ESCROW_RESTORE
        if not self.reversible:
            return RestoreCapability(RestoreKind.IMPOSSIBLE, f"the keyfile holds no escrow, and {self.name} cannot be "
                                     "undone from its output", ("--escrow",))
        if self.restore is None:
            return RestoreCapability(RestoreKind.EXACT, f"{self.name}'s exact inverse with each face's key")
        return self.restore(params)

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``, each value validated; unknown names are an error."""
        known = {p.name for p in self.params}
        unknown = sorted(set(given) - known)
        if unknown:
            flags = ", ".join("--" + u.replace("_", "-") for u in unknown)
            valid = ", ".join(p.flag for p in self.params) or "none"
            raise ValueError(f"method {self.name!r} has no flag {flags}; its flags: {valid}")
        resolved = {p.name: p.parse(given[p.name]) if p.name in given else p.default for p in self.params}
        if self.check is not None:
            self.check(resolved)
        return resolved


@dataclass
class AnonymizedFace:
    """One face's result: the crop, extra images (name -> uint8 RGB, written under
    OUTPUT/<name>s/), and figures the method measured on this face (e.g. FSAP's iterations and final
    identity loss), recorded in the manifest as the face's ``outcome``."""

    crop: np.ndarray
    side_images: dict[str, np.ndarray] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None
    key_record: dict[str, Any] | None = None
    """What the face's keyfile record keeps besides ``FaceMethod.key_params`` (sealed with the keyfile,
    never in the manifest), handed back to ``restore_crop`` in its ``face_params``."""


@dataclass
class FaceRequest:
    """One face for ``FaceMethod.anonymize_many``: what ``anonymize_face`` takes."""

    crop: np.ndarray
    landmarks_in_crop: np.ndarray
    key: Any = None
    region_in_crop: np.ndarray | None = None
    """The region the stage's compositing will replace, in crop space (R x R in [0, 1], its edge
    feathered by the method's ``region_feather``), when the method composites through a
    ``Compositor``; otherwise None."""
    blend_in_crop: Any = None
    """With ``region_in_crop``: how that compositing will weigh the method's change, band by band, in
    crop space (``anoncli.faces.compositing.CropBlend``)."""
    read_back: Any = None
    """With ``region_in_crop``: a function of a crop the method might return (float RGB 0-255) giving
    the crop a reader (restore, a recognizer) will find in the file the run writes, exactly: the
    compositing, the image's sample depth and its lossy encoding, the crop's extraction
    (``faces.stage._read_back``). For a method that fits its face to what the photo will show."""


class PlanRefused(ValueError):
    """A dataset-level method cannot plan this dataset as asked; the message names what would let it."""


class FaceMethod:
    """A method that replaces the aligned face crop.

    ``anonymize_crop`` gets a float32 RGB crop (0-255 scale) at ``resolution`` and returns
    one of the same shape; ``blend_mask`` is the crop-space mask used to put it back, unless
    ``compositor`` is set: then the stage puts it back through that
    ``anoncli.faces.compositing.Compositor`` (dense-landmark region, colour match, detail kept,
    multi-band blend at the photo's resolution) and ``blend_mask`` is only the method's own view.
    ``key`` is the face's own ``FaceKey`` (a secret and a keyed generator) when the run has a
    keyfile; reversible methods require it and undo their work in ``restore_crop``.
    """

    name: str = ""      # its registry name, set by ``methods.build_method``
    resolution: int = 256
    margin: float = 0.3
    compositor = None   # anoncli.faces.compositing.Compositor | None
    reads_back = False  # whether its fits read the written photo (the stage then builds each face's ``read_back``)
    restore_matches_colour = False   # whether restore's compositing colour-matches the restored face (a rendering, not the original's pixels)

    def __init__(self, **params: Any) -> None:
        self.params = params

    def anonymize_crop(self, crop: np.ndarray, landmarks_in_crop: np.ndarray, key=None) -> np.ndarray:
        raise NotImplementedError

    def restore_crop(self, crop: np.ndarray, landmarks_in_crop: np.ndarray, key, face_params: dict, *,
                     region_in_crop: np.ndarray | None = None, blend_in_crop=None, read_back=None) -> np.ndarray:
        """The original crop from the anonymized one and the face's key (reversible methods only).
        ``region_in_crop``, ``blend_in_crop`` and ``read_back``: as in ``FaceRequest``, how restore's
        compositing will put the restored face back (``Compositor.composite`` with ``restoring``) and
        what the restored file will show."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore without escrow")

    restore_quality_measure: str | None = None   # what ``restore_quality`` returns (unit; higher is better)

    def restore_quality(self, anonymized: np.ndarray, restored: np.ndarray, landmarks_in_crop: np.ndarray, key,
                        face_params: dict, *, region_in_crop: np.ndarray | None = None, blend_in_crop=None,
                        read_back=None) -> float:
        """For a method whose inverse is approximate (``RestoreKind.APPROXIMATE``): one face's
        round-trip quality, measured from the anonymized crop, the restored one and the key
        alone (the original is not at hand), as described by ``restore_quality_measure``;
        ``region_in_crop``, ``blend_in_crop`` and ``read_back`` as in ``restore_crop``."""
        raise NotImplementedError(f"{type(self).__name__} measures no restore quality")

    def anonymize_face(self, crop: np.ndarray, landmarks_in_crop: np.ndarray, key=None) -> "AnonymizedFace":
        """``anonymize_crop`` with what else one pass gives: the extra per-face images the run writes
        under OUTPUT/<name>s/ and the per-face figures the manifest records (``AnonymizedFace``).
        A method with either overrides this, so that all come from one pass."""
        return AnonymizedFace(self.anonymize_crop(crop, landmarks_in_crop, key))

    faces_together: int = 1   # how many faces ``anonymize_many`` works on at once (a batch through its networks)
    region_feather: float = 0.0   # inward edge of ``FaceRequest.region_in_crop``, as a fraction of the crop

    def anonymize_many(self, requests: list[FaceRequest]) -> list["AnonymizedFace"]:
        """``anonymize_face`` of each request, in order. A method whose networks run faster on a batch
        (``faces_together`` > 1) overrides this; the result of a face must not depend on the others, and
        an entry may be the exception that failed its face (the stage fails that image alone)."""
        return [self.anonymize_face(r.crop, r.landmarks_in_crop, r.key) for r in requests]

    def key_params(self, key) -> dict:
        """Per-face values the keyfile keeps for restore (e.g. a rotation angle); never the key itself."""
        return {}

    def blend_mask(self, landmarks_in_crop: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def guarantee(self) -> dict | None:
        """The formal guarantee for one face (mechanism, epsilon, delta, sensitivity, what is
        protected), written into the manifest; None for methods without one."""
        return None

    def absolute_params(self, crop_pixels_per_image_pixel: float) -> dict[str, float]:
        """The strengths in image pixels for one face, recorded in the manifest."""
        return {}


class ShapedMaskMethod(FaceMethod):
    """A method blended through ``face_mask`` with its ``shape`` and ``feather`` parameters; the
    landmark-free shapes (ellipse, box) are the same for every face and built once."""

    _mask: np.ndarray | None = None

    def blend_mask(self, landmarks_in_crop: np.ndarray) -> np.ndarray:
        from ..faces.blend import face_mask

        if self.params["shape"] == "hull":
            return face_mask(self.resolution, "hull", self.params["feather"], self.margin, landmarks_in_crop)
        if self._mask is None:
            self._mask = face_mask(self.resolution, self.params["shape"], self.params["feather"], self.margin)
        return self._mask
