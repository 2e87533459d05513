"""Parameters of the identity methods (METHODS.md §5-6; book ch. 5-6): they replace the face by
the trained disentangling generator's output h(r̃_id, g(X)) with a perturbed (IdentityDP) or
key-rotated (idrotate) identity vector. Importable without torch."""
from __future__ import annotations

from ..devices import PRECISION_HELP, PRECISIONS
from ..identity.generator import REFINE_INPUTS, SCHEDULES
from .base import MethodSpec, Param, RestoreCapability, RestoreKind
from .compositing_specs import compositing_params, compositing_weights

_GENERATOR = "aei-celeba-utk-128"
_ENCODER = "dlib-face-recognition-resnet"
_BOOK = "Wen et al., Face De-identification (2023)"


def _blend_params() -> tuple[Param, ...]:
    """How the generator's face goes back into the photo (``anoncli.faces.compositing``)."""
    return compositing_params()


def _refine_params(steps: int, lr: float, schedule: str = "constant") -> tuple[Param, ...]:
    return (
        Param("refine_steps", int, steps, "Adam steps fitting the generator's identity inputs so the pasted face shows the requested identity "
              "(not in the book; the trained generator renders identities only approximately). 0: one generator pass; each step adds a forward and backward pass through the generator and dlib's network.",
              minimum=0, maximum=1000),
        Param("refine_lr", float, lr, "Adam's learning rate in that fit (per coordinate of the unit 128-d inputs: 0.1 jumps far in one step, 0.01 "
              "converges over tens of steps).", minimum=1e-6, maximum=10.0),
        Param("refine_inputs", str, "shared", "What that fit moves: shared, one identity code given to every input of the "
              "generator (its stem and each AAD block); per-block, one code per input (the extended space of Image2StyleGAN), "
              "which reaches the identity more closely but draws less natural faces (identitydp on 300 held-out crops: "
              "README, identity methods). idrotate's restore always fits one code per input.", choices=REFINE_INPUTS),
        Param("faces_together", int, 8, "Speed only: how many faces share each pass through the generator and dlib's "
              "network in that fit (a batch); each face's fit is still its own (README, identity methods' speed).",
              minimum=1, maximum=256),
        Param("precision", str, "auto", "Speed only: what that fit computes in: " + PRECISION_HELP + ". "
              "The fitted inputs are always rendered in float32.", choices=PRECISIONS),
        Param("refine_schedule", str, schedule, "How that rate changes over the fit: constant, or cosine (annealed from "
              "--refine-lr to 0 by the last step; tried for shorter idrotate fits, it restored fewer faces: README).",
              choices=SCHEDULES),
    )


def _generator_advisory(weights_dir, params=None):
    from ..identity.generator import generator_warning

    return generator_warning(weights_dir)


IDROTATE_LINKAGE = ("with --rotation plane, idrotate's faces are linkable to their owners: eq. 6.16 keeps cos θ of the original identity in the "
                    "face's (-0.5 at the default level 9), which is what restore reads back without stored data, and an "
                    "attacker who knows the method reads it too. On 100 held-out CelebA crops at level 9, ranking the other "
                    "originals farthest first named the right person for 23.9 % of faces by MobileFaceNet and 44.6 % by dlib "
                    "(chance 3.9 %; `anoncli report` shows it as \"rank-1, farthest first\"; README, idrotate). "
                    "The default, --rotation orthogonal, keeps no such component.")


def _idrotate_advisory(weights_dir, params=None):
    warnings = [IDROTATE_LINKAGE] if (params or {}).get("rotation") == "plane" else []
    generator = _generator_advisory(weights_dir)
    return " Also: ".join(warnings + ([generator] if generator else [])) or None


def _idrotate_restore(params: dict) -> RestoreCapability:
    figures = ("69.3 % of held-out faces within dlib 0.5 at level 9, 2.0 % with a wrong key" if params.get("rotation") == "plane"
               else "within dlib 0.5: 99.0 % of 101 held-out CelebA crops and 90.9 % of 132 faces in CelebA photos in the "
                    "wild, 0.0 % and 2.3 % with a wrong key")
    return RestoreCapability(RestoreKind.APPROXIMATE, "restore renders the identity read back from each protected face, "
                             "less the rendering error its keyfile record keeps, turned back with the key (Aᵀ, or eq. 6.19-6.21 "
                             f"with --rotation plane) by the generator: the original's identity ({figures}), "
                             "not its pixels; written with each face's measured rendering cosine")


def _load(name: str):
    def load():
        from . import identity

        return getattr(identity, name)

    return load


IDENTITYDP_SPEC = MethodSpec(
    name="identitydp",
    summary="IdentityDP: unit identity vector + Laplace noise of scale Δf/ε, face rebuilt by the generator from the noisy identity and the face's own attribute maps.",
    citation=_BOOK + ", ch. 5 (eq. 5.10-5.13, Table 5.1: ε = 6 and 0.57); METHODS.md §5 decision (unit r_id, Δf ≤ 2√d)",
    params=(
        Param("epsilon", float, 6.0, "Privacy budget of the identity vector (Laplace mechanism); the book uses 6 and 0.57 and recommends 0.5-7.", minimum=1e-6),
        Param("sensitivity", str, "bound", "bound: Δf = 2√d, proven for any two unit vectors; empirical: the largest L1 distance between "
              "the identity vectors of the generator's training faces (book eq. 5.12), recorded, with no guarantee for faces outside that set.",
              choices=("bound", "empirical")),
        Param("noisy_identity", str, "face-shaped", "What the generator is given of the noisy vector r̃_id: unit, r̃_id / ‖r̃_id‖ "
              "(eq. 5.13); face-shaped (not in the book), C^(1/2) r̃_id / ‖C^(1/2) r̃_id‖ with C the covariance of the "
              "training faces' whitened identity vectors, so that the noise, which spreads over every direction, lies where "
              "real identities do (at ε = 6 a unit noisy vector puts 40 % of its weight where faces put 0.04 %; README). "
              "A fixed public map of the noisy vector: post-processing, the ε-DP guarantee is unchanged.",
              choices=("face-shaped", "unit")),
        *_blend_params(),
        *_refine_params(1, 0.1),
    ),
    load=_load("IdentityDP"),
    formal_guarantee="epsilon-local-DP of the identity embedding (Laplace mechanism on the unit r_id); the attribute maps are not perturbed",
    weights=(_GENERATOR, _ENCODER),
    param_weights=compositing_weights,
    deterministic=False,
    recognizers=("dlib",),
    advisory=_generator_advisory,
    faces_together=lambda params: params["faces_together"],
)

IDROTATE_SPEC = MethodSpec(
    name="idrotate",
    summary="Key-personalised identity rotation: the identity vector multiplied by an orthogonal matrix derived from the keyfile's secret "
            "(FFEM's encryption), or with --rotation plane turned by θ = g(level) towards a keyed reference vector (the book's, "
            "which keeps cos θ of the owner's identity and so can be linked to the owner: README); restore turns it back.",
    citation=_BOOK + ", ch. 6 (eq. 6.16-6.21, g(d) in 6.4.1); METHODS.md §6 decision (reference from a KDF of the key)",
    params=(
        Param("rotation", str, "orthogonal", "orthogonal (not in the book; a decision taken here): r_id multiplied by a keyed "
              "random orthogonal matrix, FFEM's encryption (seed 001, Sec. 3.2), restored by its transpose; the face keeps no "
              "component of its owner's identity, and --level and --refine-overturn do not apply. plane: the book's turn of "
              "r_id by θ towards a keyed reference (eq. 6.16-6.21); the face keeps cos θ of its owner's identity, which "
              "links it to its owner for anyone who knows θ (on 100 held-out crops at level 9, 44.6 % found by dlib ranking "
              "farthest first; README).", choices=("orthogonal", "plane")),
        Param("level", int, 9, "With --rotation plane, the privacy level d, 0-9: θ = 70 + 5d degrees for d < 4, 70 + 5(d + 1) for d ≥ 4 (90° is skipped: it cannot be undone). "
              "9 (120°) gives the largest identity change and the most stable restore (it divides by |cos θ − A sin θ|).", minimum=0, maximum=9),
        *_blend_params(),
        *_refine_params(1, 0.1),
        Param("refine_overturn", float, 40.0, "Degrees past θ where the anonymizing fit starts (its 0-step render): the generator "
              "renders only part of a requested turn, so the input that shows θ lies further round (not in the book; 0: start at z_new).",
              minimum=0.0, maximum=60.0),
        Param("refine_goal", str, "z-new", "What the anonymizing fit aims at: z-new, a face whose identity vector is z_new "
              "(eq. 6.16); inverse, a face whose identity read back through the key's inverse rotation (eq. 6.19-6.20) is z̄. "
              "inverse reaches the original more closely with the right key, but by showing −z̄ more strongly than z_new does, "
              "which brings the original back with a wrong key too (README).", choices=("z-new", "inverse")),
        Param("restore_refine_steps", int, 30, "The same fit when `anoncli restore` renders the recovered identity (at lr --refine-lr). "
              "Restore does not depend on the anonymizing fit: the keyfile keeps what each face shows of z_new short of it "
              "(its rendering error), and restore takes it off before turning back (README, identity methods).",
              minimum=0, maximum=1000),
    ),
    load=_load("IdRotate"),
    reversible=True,
    restore=_idrotate_restore,
    weights=(_GENERATOR, _ENCODER),
    param_weights=compositing_weights,
    recognizers=("dlib",),
    advisory=_idrotate_advisory,
    faces_together=lambda params: params["faces_together"],
)

IDENTITY_SPECS = (IDENTITYDP_SPEC, IDROTATE_SPEC)
