"""The k-Same family (Newton, Sweeney, Malin 2005; book ch. 3.1.2; METHODS.md §3).

Every aligned face of the dataset is replaced by the average of its group, and every group
holds at least k clustering units, so each output face is shared by the faces of at least k
units and a recognizer that matches it to the originals is right for at most 1/k of them.

- k-Same-Pixel: groups by pixel distance, replacement = the pixel average.
- k-Same-Eigen: groups by distance in an eigenface space (PCA of the dataset's aligned faces),
  replacement = the reconstruction of the group's average coefficients.
- k-Same-Select (Gross et al. 2005): the units are first partitioned by chosen attribute
  values, and k-Same runs inside each partition, so the chosen attributes survive.

Clustering is MDAV (microaggregation: groups of k to 2k-1). **Decision** (METHODS.md §3): with
identity labels a unit is one identity (the mean of its aligned faces, every identity weighted
the same in its group's average), so several images of one person cannot break the 1/k bound;
without them a unit is one face, and the bound assumes each person appears once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..faces.blend import face_mask
from .base import FaceMethod
from .eigenfaces import fit_eigenfaces, project, reconstruct
from .microaggregation import centred_gram, mdav_groups
from .placed import PlacedFaces

SPACES = ("pixel", "eigen")
UNLABELLED = "(faces without a labels row)"


@dataclass(frozen=True)
class FaceRef:
    """One aligned face of the first pass: its image, index in that image and crop slot, the
    clustering unit it belongs to and its k-Same-Select partition."""

    rel: str
    index: int
    slot: int
    unit: str
    partition: tuple = ()


@dataclass
class KSamePlan:
    """Groups and their replacement faces; ``face_group[(rel, index)]`` is a group number."""

    face_group: dict[tuple[str, int], int]
    replacements: np.ndarray            # (groups, r, r, 3) float32 on the 0-255 scale
    groups: list[dict]                  # per group: faces, units, partition
    excluded: dict[tuple[str, int], str] = field(default_factory=dict)
    unit_kind: str = "faces"
    face_row: dict[tuple[str, int], int] | None = None   # per-face replacement rows (k-Same-M, own shape)
    caveat: str = ""                    # what the guarantee does not cover, stated in every face's guarantee
    k: int = 0
    mechanism: str = ""                 # e.g. "ksame-m (k-anonymity, Newton et al. 2005)"

    def replacement(self, key: tuple[str, int]) -> np.ndarray:
        """The replacement crop of face ``key`` (its group's, unless the plan has one per face)."""
        return self.replacements[self.face_row[key] if self.face_row is not None else self.face_group[key]]

    def guarantee(self, key: tuple[str, int]) -> dict:
        """What the manifest says face ``key`` is protected by."""
        group = self.face_group[key]
        g = self.groups[group]
        unit = "identities" if self.unit_kind == "identities" else "faces"
        largest = g.get("largest_unit_faces")
        return {"mechanism": self.mechanism, "k": self.k, "group": group,
                "group_faces": g["faces"], "group_units": g["units"], "clustered_over": self.unit_kind,
                "partition": g["partition"], **({"largest_unit_faces": largest} if largest is not None else {}),
                "protects": (f"this face's {'texture' if self.face_row is not None else 'replacement'} is the average of a "
                             f"group of {g['units']} {unit} and is shared by all {g['faces']} of the group's faces: matching "
                             f"it to the originals names the right one for at most 1/{g['units']} of them"
                             + ("" if unit == "identities" else ", provided each person appears once in the run (give "
                                "--labels with identities otherwise)")
                             + (f"; the person with the most faces in the group has {largest} of its {g['faces']}, so "
                                f"naming one person is right for at most {largest}/{g['faces']} of the faces"
                                if largest is not None else "")
                             + "; k-anonymity of the released set, not differential privacy"
                             + (f"; but {self.caveat}" if self.caveat else ""))}

    def saved(self) -> tuple[dict, np.ndarray]:
        """(JSON-able record, replacement array) to save the plan; ``from_saved`` reads them back."""
        return ({"unit_kind": self.unit_kind, "groups": self.groups, "k": self.k, "mechanism": self.mechanism,
                 "face_group": [[r, i, g] for (r, i), g in self.face_group.items()],
                 "excluded": [[r, i, why] for (r, i), why in self.excluded.items()],
                 "face_row": [[r, i, row] for (r, i), row in self.face_row.items()] if self.face_row is not None else None,
                 "caveat": self.caveat}, self.replacements)

    @classmethod
    def from_saved(cls, record: dict, replacements: np.ndarray) -> "KSamePlan":
        face_row = record.get("face_row")
        return cls({(r, i): g for r, i, g in record["face_group"]}, replacements, record["groups"],
                   {(r, i): why for r, i, why in record["excluded"]}, record["unit_kind"],
                   {(r, i): row for r, i, row in face_row} if face_row is not None else None,
                   record.get("caveat", ""), record["k"], record["mechanism"])


def _unit_means(faces: list[FaceRef], crops: np.ndarray) -> tuple[list[str], np.ndarray, list[tuple]]:
    """Unit keys in first-seen order, each unit's mean crop (flattened float32), its partition."""
    order: dict[str, list[int]] = {}
    for face in faces:
        order.setdefault(face.unit, []).append(face.slot)
    partition_of = {f.unit: f.partition for f in faces}
    d = int(np.prod(crops.shape[1:]))
    means = np.empty((len(order), d), np.float32)
    for row, slots in enumerate(order.values()):
        means[row] = crops[np.sort(slots)].reshape(len(slots), d).astype(np.float64).mean(0)
    units = list(order)
    return units, means, [partition_of[u] for u in units]


def plan_ksame(faces: list[FaceRef], crops: np.ndarray, k: int, space: str = "pixel", components: int = 100,
               unit_kind: str = "faces", partition_names: tuple[str, ...] = ()) -> KSamePlan:
    """Group the units of ``faces`` (k-Same inside every partition) and compute each group's face."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    shape = crops.shape[1:]
    units, means, partitions = _unit_means(faces, crops)
    if space == "eigen":
        slots = np.array(sorted({f.slot for f in faces}), np.int64)
        basis, _ = fit_eigenfaces(crops[slots].reshape(len(slots), -1), components)
        features = project(basis, means)
    unit_group = np.full(len(units), -1, np.int64)
    replacements, groups, too_small = [], [], {}
    for part in dict.fromkeys(partitions):
        members = np.array([i for i, p in enumerate(partitions) if p == part], np.int64)
        if members.size < k:
            too_small[part] = members.size
            continue
        gram = centred_gram(features[members] if space == "eigen" else means[members])
        for group in mdav_groups(gram, k):
            chosen = members[group]
            if space == "eigen":
                face = reconstruct(basis, features[chosen].mean(0, keepdims=True))[0]
            else:
                face = means[chosen].astype(np.float64).mean(0)
            unit_group[chosen] = len(groups)
            replacements.append(np.clip(face, 0, 255).astype(np.float32).reshape(shape))
            groups.append({"units": int(chosen.size), "partition": dict(zip(partition_names, part))})
    face_group, excluded = {}, {}
    unit_row = {u: i for i, u in enumerate(units)}
    for face in faces:
        g = int(unit_group[unit_row[face.unit]])
        if g < 0:
            what = ", ".join(f"{n}={v}" for n, v in zip(partition_names, face.partition)) or "the dataset"
            excluded[(face.rel, face.index)] = (
                f"k-Same cannot hide this face: {what} holds {too_small[face.partition]} {unit_kind} (< k={k}); "
                "lower --k or select fewer attributes")
            continue
        face_group[(face.rel, face.index)] = g
        groups[g]["faces"] = groups[g].get("faces", 0) + 1
    stacked = np.stack(replacements) if replacements else np.zeros((0, *shape), np.float32)
    return KSamePlan(face_group, stacked, groups, excluded, unit_kind)


def face_units(faces: list[tuple[str, int, int, bool]], labels, identity_column: str | None,
               select: tuple[str, ...]) -> tuple[list[FaceRef], str]:
    """FaceRefs for (rel, index, slot, is_main_face) rows, and what a unit is.

    A labels row describes the main (largest) face of its image; other faces of that image, and
    faces of images without a row, are units of their own in a partition of their own.
    """
    refs = []
    for rel, index, slot, is_main in faces:
        row = labels.row_for(rel) if (labels is not None and is_main) else None
        if row is None:
            unit = f"face:{rel}#{index}"
            partition = (UNLABELLED,) * len(select)
        else:
            identity = row.get(identity_column, "") if identity_column else ""
            unit = f"id:{identity}" if identity else f"face:{rel}#{index}"
            partition = tuple(row[c] for c in select)
        if select:
            unit = f"{partition}|{unit}"
        refs.append(FaceRef(rel, index, slot, unit, partition))
    return refs, ("identities" if identity_column else "faces")


class KSame(FaceMethod):
    """A dataset-level method: ``fit`` plans every face's replacement (two_pass runs it between its
    passes, and saves the plan), then the face stage blends each replacement in (``placing``)."""

    default_space = "pixel"

    def __init__(self, **params):
        super().__init__(**params)
        self.resolution = int(params["resolution"])
        self._mask = self.crop_mask()

    def crop_mask(self) -> np.ndarray:
        """The blend mask in crop space, the same for every face."""
        return face_mask(self.resolution, self.params["shape"], float(self.params["feather"]), self.margin)

    def blend_mask(self, landmarks_in_crop):
        return self._mask

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        raise RuntimeError("k-Same replaces faces in the second pass of a dataset-level run (see anoncli.two_pass)")

    @property
    def space(self) -> str:
        return self.params.get("space", self.default_space)

    def fit(self, rows, crops: np.ndarray, labels_info, log, progress: bool = False, work=None) -> tuple[KSamePlan, dict]:
        """The plan of these faces and what run.json says of it. ``rows``: (image, face index, crop
        slot, is the image's main face) per aligned face; ``crops``: the first pass's crops by slot;
        ``labels_info``: ``two_pass.resolve_labels``; ``work``: a folder for resumable work (unused:
        grouping is quick)."""
        from pathlib import Path

        labels, identity, select, labels_sha = labels_info
        refs, unit_kind = face_units(rows, labels, identity, select)
        k = int(self.params["k"])
        log(f"k-Same: grouping {len(refs)} faces ({len({r.unit for r in refs})} {unit_kind}) into groups of "
            f"at least {k} ({self.space} space)")
        plan = self._group(refs, crops, unit_kind, select, progress)
        plan.k, plan.mechanism = k, f"{self.name} (k-anonymity, Newton et al. 2005)"
        sizes = [g["units"] for g in plan.groups]
        summary = {"clustered_over": plan.unit_kind, "space": self.space, "k": k,
                   "groups": len(plan.groups), "faces": len(plan.face_group),
                   "smallest_group": min(sizes) if sizes else None, "largest_group": max(sizes) if sizes else None,
                   "excluded_faces": len(plan.excluded), "identity_column": identity, "select": list(select),
                   "labels": {"path": str(Path(self.params["labels"]).resolve()), "sha256": labels_sha,
                              "notes": labels.notes} if labels is not None else None}
        return plan, summary

    def _group(self, refs: list[FaceRef], crops: np.ndarray, unit_kind: str, select, progress: bool) -> KSamePlan:
        return plan_ksame(refs, crops, int(self.params["k"]), self.space, int(self.params.get("components", 100)),
                          unit_kind, select)

    @staticmethod
    def load_plan(record: dict, arrays: np.ndarray) -> KSamePlan:
        return KSamePlan.from_saved(record, arrays)

    def placing(self, replacements: list[np.ndarray], guarantees: list[dict]) -> PlacedFaces:
        return PlacedFaces(self, replacements, guarantees)


class KSameEigen(KSame):
    default_space = "eigen"


class KSameSelect(KSame):
    """k-Same inside each partition of --select; ``--space`` says which k-Same."""

