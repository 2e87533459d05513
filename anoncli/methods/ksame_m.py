"""k-Same-M (Gross, Sweeney, De la Torre, Baker, "Model-based face de-identification", CVPRW 2006;
book ch. 3.1.2; METHODS.md §3b).

k-Same on an appearance model instead of raw pixels, so that a group's face is sharp:

1. every aligned face gets dlib's 68 landmarks (its shape, in crop pixels);
2. the mean shape of the dataset, with fixed points on the crop's border, is triangulated
   (Delaunay), and every face is warped piecewise-affinely onto it: its shape-free texture
   (Cootes, Edwards, Taylor, "Active appearance models", TPAMI 2001, §3);
3. clustering units (identities with labels, otherwise faces; METHODS.md §3 **Decision**) are
   grouped by MDAV, k to 2k−1 units per group, in the AAM's combined shape-and-texture space:
   shape coordinates and the texture inside the mean shape's hull (sampled at 64 px), the shape
   weighted so that its total variance is ``shape_weight`` times the texture's (Cootes et al.
   2001 §4.2, W_s = r·I with r² = texture variance / shape variance). Every principal component
   is kept, so the distances are those of the combined model's parameters. A person with several
   photos is one unit: by default their medoid photo (nearest their mean in that space), or
   (``unit_face="mean"``) the mean of all their photos, which averages away more detail.
   ``bound="faces"`` (default) also balances the groups (``microaggregation.balanced_groups``):
   no person holds more than 1/k of a group's faces, so naming one person is right for at most
   1/k of the faces, not only of the people; a person with more than 1/k of all faces cannot be
   hidden and is refused;
4. each group's shape is the mean of its units' shapes and its texture the mean of their
   shape-free textures (every unit weighted once; per pixel without the ``trim`` share of
   extreme members at each end, and with the fine detail the averaging lost put back by
   ``detail``: see ``trimmed_mean``, ``restore_detail``); the group texture is rendered on the group
   shape (``render_shape="group"``, every face of the group gets the same crop: the k-anonymous
   choice) or on each face's own shape (``render_shape="own"``: pose and expression kept, and
   the shape is then *not* k-anonymised, which the guarantee states).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..faces.piecewise_affine import crop_border_points, triangulate, warp_piecewise_affine
from .base import PlanRefused
from .ksame import FaceRef, KSame, KSamePlan
from .microaggregation import balanced, balanced_groups, centred_gram, mdav_groups

RENDER_SHAPES = ("group", "own")
UNIT_FACES = ("medoid", "mean")
BOUNDS = ("faces", "units")
FEATURE_SIDE = 64
"""Side at which shape-free textures enter the clustering distance (area-averaged): the model's
texture sampling. Distances between aligned faces are carried by their coarse structure, and the
features of thousands of units stay small; the averages themselves use the full crop."""
REGION_FEATHER = 0.02   # soft edge of the crop-space region (as the identity methods' REFINEMENT_FEATHER)
OWN_SHAPE_CAVEAT = ("the face is drawn on its own 68-point shape (render_shape=own): its texture is k-anonymous but "
                    "its shape (face outline, pose, expression, proportions) is the original's and is NOT k-anonymised")


@dataclass(frozen=True)
class ShapeModel:
    """The dataset's mean shape, the crop border points and the triangulation of both."""

    mean_shape: np.ndarray      # (68, 2) crop pixels
    border: np.ndarray          # (B, 2) fixed points on the crop's edge
    triangles: np.ndarray       # (T, 3) indices into [shape; border]
    resolution: int

    def points(self, shape: np.ndarray) -> np.ndarray:
        return np.vstack([np.asarray(shape, np.float64), self.border])

    def shape_free(self, crop: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """The crop warped so that ``shape`` lands on the mean shape."""
        return warp_piecewise_affine(crop, self.points(shape), self.points(self.mean_shape), self.triangles)

    def render(self, texture: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """A shape-free texture warped from the mean shape onto ``shape``."""
        return warp_piecewise_affine(texture, self.points(self.mean_shape), self.points(shape), self.triangles)

    def hull_mask(self, side: int | None = None) -> np.ndarray:
        """Pixels inside the mean shape's convex hull, where the appearance model's texture lives,
        on a ``side`` x ``side`` grid (default: the crop's)."""
        side = side or self.resolution
        mask = np.zeros((side, side), np.uint8)
        pts = (self.mean_shape + 0.5) * (side / self.resolution) - 0.5
        hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, 4)
        return mask.astype(bool)


def fit_shape_model(shapes: np.ndarray, resolution: int, border_per_side: int = 4) -> ShapeModel:
    """Mean of the (n, 68, 2) shapes (already similarity-aligned by the common frame) and the
    Delaunay triangulation of it together with ``4·border_per_side`` border points."""
    shapes = np.asarray(shapes, np.float64)
    if shapes.ndim != 3 or shapes.shape[2] != 2 or len(shapes) == 0:
        raise ValueError(f"expected (n, points, 2) shapes, got {shapes.shape}")
    mean = shapes.mean(0)
    border = crop_border_points(resolution, border_per_side)
    return ShapeModel(mean, border, triangulate(np.vstack([mean, border])), int(resolution))


def combined_features(textures: np.ndarray, shapes: np.ndarray, inside: np.ndarray,
                      shape_weight: float = 1.0) -> np.ndarray:
    """(n, d) rows [texture inside the hull, r·shape], r chosen so that the shape part's total
    variance is ``shape_weight`` times the texture part's (Cootes et al. 2001 §4.2)."""
    tex = np.asarray(textures)[:, inside].reshape(len(textures), -1).astype(np.float32)
    shp = np.asarray(shapes, np.float64).reshape(len(shapes), -1)
    tex_var = float(((tex - tex.mean(0)) ** 2).sum(1).mean()) if len(tex) > 1 else 1.0
    shp_var = float(((shp - shp.mean(0)) ** 2).sum(1).mean()) if len(shp) > 1 else 1.0
    r = np.sqrt(shape_weight * tex_var / shp_var) if shp_var > 0 and tex_var > 0 else 1.0
    return np.hstack([tex, (r * shp).astype(np.float32)])


DETAIL_SIGMAS_256 = (1.0, 2.0, 4.0)
"""Edges of the fine-detail octave bands (Gaussian sigmas in pixels of a 256 px crop; scaled with
the resolution): pores, lashes and hair, the detail an average of unaligned textures loses."""


def detail_bands(texture: np.ndarray, sigmas) -> tuple[list[np.ndarray], np.ndarray]:
    """Difference-of-Gaussians bands, finest first, and the low-pass rest; they sum to ``texture``."""
    prev, bands = np.asarray(texture, np.float32), []
    for sigma in sigmas:
        low = cv2.GaussianBlur(prev, (0, 0), sigma)
        bands.append(prev - low)
        prev = low
    return bands, prev


def trimmed_mean(textures, trim: float) -> np.ndarray:
    """Per pixel and channel, the mean of the members' values without the floor(trim·n) lowest
    and highest of them (n members). A feature that only one member has (glasses, a mole, a
    stray lock of hair) then does not ghost into the group's face; trim 0 is the plain mean."""
    stack = np.stack([np.asarray(t, np.float32) for t in textures])
    cut = int(np.floor(trim * len(stack) + 1e-9))
    if cut == 0:
        return stack.mean(0, dtype=np.float64).astype(np.float32)
    if 2 * cut >= len(stack):
        raise ValueError(f"trim {trim} leaves no member of {len(stack)}")
    return np.sort(stack, axis=0)[cut:len(stack) - cut].mean(0, dtype=np.float64).astype(np.float32)


def restore_detail(average: np.ndarray, unit_textures, inside: np.ndarray, amount: float,
                   sigmas=DETAIL_SIGMAS_256) -> np.ndarray:
    """The group's average texture with the fine-detail energy the averaging removed put back.

    Averaging n aligned textures keeps what they share (eye and mouth edges) and divides the
    energy of what they do not (skin, hair strands) by up to n. Per band b, the gain
    g_b = sqrt(mean over units of E_b(unit) / E_b(average)) (E: mean square inside the model's
    hull), clipped to [1, sqrt(n)], brings the band back to the units' typical energy; the bands
    are amplified by 1 + amount·(g_b − 1). The gains are statistics of the whole group, so every
    face of the group still gets the same texture (a heuristic for authentic-looking k-Same-M
    faces in the spirit of Prinosil et al. 2017, book ref. 26; not in Gross et al. 2006).
    """
    if amount == 0:
        return np.asarray(average, np.float32)
    units = list(unit_textures)
    bands, low = detail_bands(average, sigmas)
    out = low.copy()
    for b, band in enumerate(bands):
        unit_energy = np.mean([float(np.mean(detail_bands(t, sigmas)[0][b][inside] ** 2)) for t in units])
        own = float(np.mean(band[inside] ** 2))
        gain = float(np.clip(np.sqrt(unit_energy / own), 1.0, np.sqrt(len(units)))) if own > 0 else 1.0
        out += (1.0 + amount * (gain - 1.0)) * band
    return out


PLAN_BYTES_PER_PIXEL = 7.5
"""Memory a k-Same-M plan takes per face and crop pixel: its shape-free texture (3 bytes) and its share
of the groups' float textures and renders. Measured: 1,000 CelebA crops at 512 px peaked at 2.2 GB,
about 1.8 GB above the process without them (README, k-Same-M)."""


def available_memory() -> int | None:
    """Bytes the kernel reports available for new allocations (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_plan_memory(faces: int, resolution: int, available: int | None) -> None:
    """Refuse, naming the flags that help, a plan that would not fit in the memory available."""
    need = faces * resolution * resolution * PLAN_BYTES_PER_PIXEL
    if available is not None and need > available:
        raise PlanRefused(f"k-Same-M at --resolution {resolution} needs about {need / 2**30:.1f} GiB of memory for {faces} "
                         f"faces and {available / 2**30:.1f} GiB is available: use --resolution {max(64, resolution // 2)} "
                         f"(a quarter of the memory per face) or fewer images per run")


def _medoid(features: np.ndarray, rows: list[int]) -> int:
    """The row whose features are nearest the mean of ``features`` (ties: the first)."""
    d = ((features - features.mean(0)) ** 2).sum(1)
    return rows[int(np.argmin(d))]


def plan_ksame_m(faces: list[FaceRef], crops: np.ndarray, shapes: np.ndarray, k: int, *,
                 render_shape: str = "group", shape_weight: float = 1.0, border_per_side: int = 4, unit_face: str = "medoid",
                 detail: float = 1.0, trim: float = 0.2, bound: str = "faces",
                 unit_kind: str = "faces", partition_names: tuple[str, ...] = (), progress=None,
                 photo_caveat: str = "") -> KSamePlan:
    """The k-Same-M plan of ``faces`` (``faces[i].slot`` indexes ``crops`` and ``shapes``).
    ``photo_caveat``: what the compositing takes from the photo inside the region
    (``ksame_specs.photo_inside_caveat``), stated in every face's guarantee.

    Replacement rows are one per group (``render_shape="group"``) or one per face ("own", with
    ``face_row`` naming each face's row)."""
    if unit_face not in UNIT_FACES:
        raise ValueError(f"unit_face must be one of {', '.join(UNIT_FACES)}, got {unit_face!r}")
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    if render_shape not in RENDER_SHAPES:
        raise ValueError(f"render_shape must be one of {', '.join(RENDER_SHAPES)}, got {render_shape!r}")
    res = crops.shape[1]
    slots = np.array(sorted({f.slot for f in faces}), np.int64)
    check_plan_memory(len(slots), res, available_memory())
    model = fit_shape_model(shapes[slots], res, border_per_side)
    free = np.empty((len(slots), res, res, 3), np.uint8)   # shape-free textures, in slot order
    row_of_slot = {int(s): i for i, s in enumerate(slots)}
    for i, s in enumerate(slots):
        free[i] = np.clip(np.rint(model.shape_free(np.asarray(crops[s], np.float32), shapes[s])), 0, 255)
        if progress is not None:
            progress(1)

    order: dict[str, list[int]] = {}
    for face in faces:
        order.setdefault(face.unit, []).append(row_of_slot[face.slot])
    units = list(order)
    partition_of = {f.unit: f.partition for f in faces}
    partitions = [partition_of[u] for u in units]
    side = min(res, FEATURE_SIDE)
    small = np.stack([cv2.resize(t, (side, side), interpolation=cv2.INTER_AREA) for t in free]).astype(np.float32)
    inside = model.hull_mask(side)
    unit_rows = [sorted(rows) for rows in order.values()]
    unit_faces = np.array([len(rows) for rows in unit_rows], np.float64)   # the faces each unit has in the run
    if unit_face == "medoid":
        face_features = combined_features(small, shapes[slots], inside, shape_weight)
        unit_rows = [[_medoid(face_features[rows], rows)] for rows in unit_rows]
    unit_shape = np.stack([shapes[slots[rows]].mean(0) for rows in unit_rows])
    features = combined_features(np.stack([small[rows].mean(0) for rows in unit_rows]), unit_shape, inside,
                                 shape_weight)
    del small

    full_inside = model.hull_mask()
    sigmas = tuple(v * res / 256 for v in DETAIL_SIGMAS_256)
    unit_group = np.full(len(units), -1, np.int64)
    group_textures, group_shapes, groups, too_small, too_heavy = [], [], [], {}, {}
    for part in dict.fromkeys(partitions):
        members = np.array([i for i, p in enumerate(partitions) if p == part], np.int64)
        if bound == "faces":   # a unit with more than 1/k of the faces cannot be hidden among them
            members = members[np.argsort(-unit_faces[members], kind="stable")]
            while members.size >= k and not balanced(unit_faces[members], k):
                too_heavy[int(members[0])] = (int(unit_faces[members[0]]), int(unit_faces[members].sum()))
                members = members[1:]
            members = np.sort(members)
        if members.size < k:
            too_small[part] = members.size
            continue
        gram = centred_gram(features[members])
        found = balanced_groups(gram, k, unit_faces[members]) if bound == "faces" else mdav_groups(gram, k)
        for group in found:
            chosen = members[group]
            unit_group[chosen] = len(groups)
            # every unit once: the mean of its shape-free textures (one texture for a medoid)
            textures = [free[unit_rows[u]].astype(np.float32).mean(0) for u in chosen]
            texture = trimmed_mean(textures, trim)
            group_textures.append(restore_detail(texture, textures, full_inside, detail, sigmas))
            group_shapes.append(unit_shape[chosen].mean(0))
            groups.append({"units": int(chosen.size), "partition": dict(zip(partition_names, part)),
                           "render_shape": render_shape, "largest_unit_faces": int(unit_faces[chosen].max())})
    del free

    face_group, excluded, face_row, rows = {}, {}, {}, []
    unit_index = {u: i for i, u in enumerate(units)}
    if render_shape == "group":
        rows = [model.render(t, s) for t, s in zip(group_textures, group_shapes)]
    for face in faces:
        key = (face.rel, face.index)
        u = unit_index[face.unit]
        g = int(unit_group[u])
        if u in too_heavy:
            mine, total = too_heavy[u]
            excluded[key] = (f"k-Same cannot hide this face: its person has {mine} of the {total} faces left "
                             f"to group, more than 1/k (k={k}); add images of other people, lower --k, or use "
                             "--bound units")
            continue
        if g < 0:
            what = ", ".join(f"{n}={v}" for n, v in zip(partition_names, face.partition)) or "the dataset"
            excluded[key] = (f"k-Same cannot hide this face: {what} holds {too_small[face.partition]} {unit_kind} "
                             f"(< k={k}); lower --k" + (" or select fewer attributes" if partition_names else ""))
            continue
        face_group[key] = g
        groups[g]["faces"] = groups[g].get("faces", 0) + 1
        if render_shape == "own":
            face_row[key] = len(rows)
            rows.append(model.render(group_textures[g], shapes[face.slot]))
    stacked = (np.clip(np.stack(rows), 0, 255).astype(np.float32) if rows
               else np.zeros((0, res, res, 3), np.float32))
    return KSamePlan(face_group, stacked, groups, excluded, unit_kind,
                     face_row=face_row if render_shape == "own" else None,
                     caveat="; ".join(c for c in (OWN_SHAPE_CAVEAT if render_shape == "own" else "", photo_caveat) if c))


class KSameM(KSame):
    """k-Same-M: ``fit`` plans in the appearance model (``plan_ksame_m``) from every face's 68-point
    landmarks, whose predictor is loaded on first use (workers that only place faces never load it)."""

    default_space = "model"

    def __init__(self, weights_dir=None, **params):
        import importlib.util

        from ..faces.landmarks68 import INSTALL_DLIB, LandmarksUnavailable

        super().__init__(**params)
        if importlib.util.find_spec("dlib") is None:
            raise LandmarksUnavailable(f"ksame-m needs dlib's 68-point landmarks and dlib is not installed: {INSTALL_DLIB}")
        from ..faces.compositing import Compositor
        from ..faces.compositing_config import config_from_params

        self._weights_dir = weights_dir
        self._landmarks = None
        self.compositor = Compositor(config_from_params(self.params), weights_dir)

    def crop_mask(self) -> np.ndarray:
        """The region in crop space (what ``benchmarks/eval_ksame.py`` compares): for --shape
        landmarks the mean 68-point outline; the stage composites with each face's own outline,
        predicted in the photo."""
        from ..faces.blend import face_mask

        shape = "ellipse" if self.params["shape"] == "hull" else self.params["shape"]   # hull needs each face's landmarks
        return face_mask(self.resolution, shape, REGION_FEATHER, self.margin, None, self.params["brow_raise"])

    def landmarks(self, crop: np.ndarray) -> np.ndarray:
        """(68, 2) landmarks of an aligned crop of this method's resolution."""
        if self._landmarks is None:
            from ..faces.landmarks68 import CropLandmarks68

            self._landmarks = CropLandmarks68(self.resolution, self.margin, self._weights_dir)
        return self._landmarks(crop)

    def _group(self, refs: list[FaceRef], crops: np.ndarray, unit_kind: str, select, progress: bool) -> KSamePlan:
        """The landmarks of every face's crop, then the appearance-model plan."""
        from .ksame_specs import photo_inside_caveat

        slots = sorted({r.slot for r in refs})
        shapes = np.zeros((len(crops), 68, 2), np.float64)
        bar = None
        if progress and slots:
            import sys

            from tqdm import tqdm

            bar = tqdm(total=2 * len(slots), unit="face", desc="planning: landmarks, shape-free textures",
                       dynamic_ncols=True, file=sys.stderr)
        try:
            for slot in slots:
                shapes[slot] = self.landmarks(crops[slot])
                if bar is not None:
                    bar.update(1)
            p = self.params
            return plan_ksame_m(refs, crops, shapes, int(p["k"]), render_shape=p["render_shape"],
                                shape_weight=float(p["shape_weight"]), border_per_side=int(p["border_points"]),
                                unit_face=p["unit_face"], detail=float(p["detail"]), trim=float(p["trim"]), bound=p["bound"],
                                unit_kind=unit_kind, partition_names=select,
                                progress=bar.update if bar is not None else None, photo_caveat=photo_inside_caveat(p))
        finally:
            if bar is not None:
                bar.close()
