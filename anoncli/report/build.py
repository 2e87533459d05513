"""Build the report of one anonymized run: privacy, utility, recovery and fairness numbers.

Reads only the run's manifest and the image trees. Every face is measured where the
manifest says it is (box and landmarks found on the original), in the original, the
anonymized and, when given, the restored image.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..metrics.privacy import identification_rates, pairwise_distances, protection_rate

FAR = 1e-3
DETECTION_IOU = 0.3
EXAMPLES = 8


class ReportError(Exception):
    """A problem with the report's inputs, reported as one line."""


@dataclass
class FaceItem:
    rel: str
    index: int
    box: list
    landmarks: list
    image_sha256: str
    original: dict = field(default_factory=dict)     # evaluator -> embedding
    anonymized: dict = field(default_factory=dict)
    restored: dict = field(default_factory=dict)
    detected_original: bool | None = None
    detected_anonymized: bool | None = None


def _rgb(path: Path) -> np.ndarray:
    from ..io.images import load_image, rgb8

    img = load_image(path, 10 ** 10, keep_metadata=False)
    return rgb8(img.pixels, img.mode)


class EmbeddingCache:
    """Embeddings of original faces by (evaluator, image content hash, face box): a second
    report over the same originals skips the recognizers."""

    def __init__(self, root: Path | None):
        self.root = root

    def _path(self, evaluator: str, sha: str) -> Path:
        return self.root / evaluator / sha[:2] / f"{sha}.json"

    def get(self, evaluator: str, sha: str, key: str):
        if self.root is None:
            return None
        try:
            data = json.loads(self._path(evaluator, sha).read_text())
        except (OSError, ValueError):
            return None
        return np.asarray(data[key], np.float64) if key in data else None

    def put(self, evaluator: str, sha: str, key: str, vector: np.ndarray) -> None:
        if self.root is None:
            return
        from ..io.atomic import write_atomic

        path = self._path(evaluator, sha)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        data[key] = [float(v) for v in vector]
        write_atomic(path, json.dumps(data).encode())


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("anoncli")) / "embeddings"


def load_run(anon_dir: Path):
    from ..io.journal import read_manifest

    try:
        record = json.loads((anon_dir / "run.json").read_text())
        manifest = read_manifest(anon_dir / "manifest.csv")
    except (OSError, ValueError) as e:
        raise ReportError(f"{anon_dir} is not the output of `anoncli anonymize` (run.json, manifest.csv): {e}") from None
    return record, manifest


def _thumbnail(rgb: np.ndarray, box, side: int = 160) -> str:
    from PIL import Image

    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(w, h) * 0.8
    crop = Image.fromarray(rgb).crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    crop.thumbnail((side, side))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def build_report(anon_dir: Path, original_dir: Path | None = None, restored_dir: Path | None = None,
                 labels=None, identity_column: str | None = "identity", group_columns: tuple[str, ...] = (),
                 evaluator_names: tuple[str, ...] = ("dlib", "mobilefacenet"), weights_dir: str | None = None,
                 cache_dir: Path | None = None, progress: bool = True) -> dict:
    """The report as a dict (see ``anoncli.report.html`` for its layout)."""
    from ..metrics.dlib_identity import box_iou
    from ..metrics.evaluators import EVALUATORS, evaluator_available
    from ..metrics.image_quality import psnr, ssim, mae

    anon_dir = Path(anon_dir)
    record, manifest = load_run(anon_dir)
    if original_dir is None:
        if not record.get("input_dir"):
            raise ReportError("run.json does not name the original folder; give --original DIR")
        original_dir = Path(record["input_dir"])
    if not Path(original_dir).is_dir():
        raise ReportError(f"original folder {original_dir} does not exist")

    evaluators, evaluator_info = {}, []
    method_uses = set(record.get("method", {}).get("evaluators", []) or [])
    for name in evaluator_names:
        if name not in EVALUATORS:
            raise ReportError(f"unknown evaluator {name!r}; known: {', '.join(EVALUATORS)}")
        spec = EVALUATORS[name]
        ok, reason = evaluator_available(name, weights_dir)
        if ok:
            try:
                evaluators[name] = spec.load(weights_dir)
            except (ImportError, RuntimeError) as e:
                ok, reason = False, f"{e}" + (f" (pip install 'anoncli[{spec.requires}]')" if spec.requires else "")
        evaluator_info.append({"name": name, "summary": spec.summary, "metric": spec.metric, "available": ok,
                               "reason": reason, "white_box": name in method_uses,
                               "thresholds": {"literature": spec.literature_threshold, "far_1e-3": None},
                               "threshold_source": spec.threshold_source})

    cache = EmbeddingCache(default_cache_dir() if cache_dir is None else cache_dir)
    hog = None
    if "dlib" in evaluators:
        hog = evaluators["dlib"].model

    label_by_image = {}
    if labels is not None:
        label_by_image = {str(r["image"]): r for r in labels.to_dict("records")}

    faces: list[FaceItem] = []
    quality = {"ssim_face": [], "ssim_out": [], "psnr_face": [], "psnr_out": []}
    recovery = {"psnr": [], "ssim": [], "mae": []}
    examples = []
    rows = [r for r in manifest.to_dict("records") if r["status"] == "ok" and r.get("output")]
    iterator = rows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(rows, unit="img", desc="measuring", dynamic_ncols=True, file=sys.stderr)
    for row in iterator:
        rel = row["input"]
        face_records = [f for f in json.loads(row["faces"]) if "skipped" not in f]
        if not face_records:
            continue
        try:
            original = _rgb(Path(original_dir) / rel)
            anonymized = _rgb(anon_dir / row["output"])
        except Exception as e:  # a missing or unreadable file is counted, not fatal
            print(f"skipped {rel}: {e}", file=sys.stderr)
            continue
        if original.shape != anonymized.shape:
            continue
        restored = None
        if restored_dir is not None and (Path(restored_dir) / rel).is_file():
            restored = _rgb(Path(restored_dir) / rel)
            if restored.shape != original.shape:
                restored = None
        sha = row.get("input_sha256") or hashlib.sha256((Path(original_dir) / rel).read_bytes()).hexdigest()
        items = [FaceItem(rel, i, f["box"], f["landmarks"], sha) for i, f in enumerate(face_records)]
        for name, ev in evaluators.items():
            keys = [json.dumps([round(v, 1) for v in it.box]) for it in items]
            cached = [cache.get(name, sha, k) for k in keys]
            missing = [i for i, c in enumerate(cached) if c is None]
            if missing:
                fresh = ev.embed(original, [face_records[i] for i in missing])
                for i, vec in zip(missing, fresh):
                    cached[i] = np.asarray(vec, np.float64)
                    cache.put(name, sha, keys[i], cached[i])
            anon_emb = ev.embed(anonymized, face_records)
            rest_emb = ev.embed(restored, face_records) if restored is not None else [None] * len(items)
            for it, o, a, r in zip(items, cached, anon_emb, rest_emb):
                it.original[name], it.anonymized[name] = o, np.asarray(a, np.float64)
                if r is not None:
                    it.restored[name] = np.asarray(r, np.float64)
        if hog is not None:
            found_anon, found_orig = hog.detect(anonymized), hog.detect(original)
            for it in items:
                it.detected_anonymized = any(box_iou(b, it.box) >= DETECTION_IOU for b in found_anon)
                it.detected_original = any(box_iou(b, it.box) >= DETECTION_IOU for b in found_orig)
        mask = np.zeros(original.shape[:2], bool)
        for it in items:
            x0, y0, x1, y1 = (int(round(v)) for v in it.box)
            mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        quality["ssim_face"].append(ssim(original, anonymized, mask))
        quality["psnr_face"].append(psnr(original, anonymized, mask))
        if (~mask).any():
            quality["ssim_out"].append(ssim(original, anonymized, ~mask))
            quality["psnr_out"].append(psnr(original, anonymized, ~mask))
        if restored is not None:
            recovery["psnr"].append(psnr(original, restored))
            recovery["ssim"].append(ssim(original, restored))
            recovery["mae"].append(mae(original, restored))
        if len(examples) < EXAMPLES:
            box = items[0].box
            examples.append({"input": rel, "original": _thumbnail(original, box), "anonymized": _thumbnail(anonymized, box),
                             "restored": _thumbnail(restored, box) if restored is not None else None})
        faces.extend(items)

    report = {
        "tool_version": __version__, "created": datetime.now(timezone.utc).isoformat(),
        "anon_dir": str(anon_dir), "original_dir": str(original_dir),
        "restored_dir": str(restored_dir) if restored_dir else None,
        "run": {"method": record.get("config", {}).get("method"), "params": record.get("config", {}).get("params"),
                "run_id": record.get("run_id")},
        "counts": {"images": len(rows), "faces": len(faces)},
        "evaluators": evaluator_info,
        "privacy": {}, "examples": examples,
    }
    for info in evaluator_info:
        name = info["name"]
        if name not in evaluators:
            continue
        report["privacy"][name] = _privacy(name, info, faces, label_by_image, identity_column)
    report["utility"] = _utility(faces, quality)
    report["recovery"] = _recovery(faces, recovery, evaluators) if restored_dir is not None else None
    report["fairness"] = _fairness(faces, label_by_image, group_columns, report["privacy"], evaluator_info)
    return report


def _finite_mean(values) -> float | None:
    v = [x for x in values if x is not None and not math.isnan(x) and not math.isinf(x)]
    return float(np.mean(v)) if v else None


def _distance(metric: str, a: np.ndarray, b: np.ndarray) -> float:
    return float(pairwise_distances(a[None], b[None], metric)[0, 0])


def _privacy(name: str, info: dict, faces: list[FaceItem], labels: dict, identity_column: str | None) -> dict:
    from ..metrics.verification import threshold_at_far

    metric = info["metric"]
    anon = [_distance(metric, f.original[name], f.anonymized[name]) for f in faces]
    originals = np.stack([f.original[name] for f in faces]) if faces else np.zeros((0, 1))
    ids = [labels.get(Path(f.rel).name, {}).get(identity_column) if identity_column else None for f in faces]
    dist = pairwise_distances(originals, originals, metric) if len(faces) else np.zeros((0, 0))
    upper = np.triu_indices(len(faces), 1)
    rels = np.array([f.rel for f in faces])
    same_image = rels[:, None] == rels[None, :]
    if any(i is not None for i in ids):
        id_arr = np.array([str(i) for i in ids])
        same_id = id_arr[:, None] == id_arr[None, :]
        impostor = dist[upper][~same_id[upper] & ~same_image[upper]]
        genuine = dist[upper][same_id[upper] & ~same_image[upper]]
    else:  # without labels, faces of different images are taken as different people
        impostor, genuine = dist[upper][~same_image[upper]], np.zeros(0)
    far_threshold = threshold_at_far(impostor, FAR) if impostor.size >= 1 / FAR else None
    info["thresholds"]["far_1e-3"] = far_threshold
    info["impostor_pairs"] = int(impostor.size)
    rates = {"literature": protection_rate(anon, info["thresholds"]["literature"]) if info["thresholds"]["literature"] is not None else None,
             "far_1e-3": protection_rate(anon, far_threshold) if far_threshold is not None else None}
    out = {"protection_rate": rates, "pairs": len(anon),
           "distances": {"anonymized": anon, "genuine": genuine.tolist()[:5000], "impostor": impostor.tolist()[:5000]},
           "identification": None}
    if any(i is not None for i in ids):
        out["identification"] = _identification(name, metric, faces, ids)
    return out


def _identification(name: str, metric: str, faces: list[FaceItem], ids: list) -> dict | None:
    """FFEM §5: the main (largest) labelled face of each image as probe, against a gallery of
    the other images' original faces."""
    main: dict[str, int] = {}
    for k, f in enumerate(faces):
        if ids[k] is None:
            continue
        area = (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])
        if f.rel not in main or area > main[f.rel][1]:
            main[f.rel] = (k, area)
    chosen = [k for k, _ in main.values()]
    if len(chosen) < 2:
        return None
    gallery = np.stack([faces[k].original[name] for k in chosen])
    gallery_ids = [str(ids[k]) for k in chosen]
    exclude = np.eye(len(chosen), dtype=bool)
    base = identification_rates(pairwise_distances(gallery, gallery, metric), gallery_ids, gallery_ids, (1, 5), exclude)
    probes = np.stack([faces[k].anonymized[name] for k in chosen])
    anon = identification_rates(pairwise_distances(probes, gallery, metric), gallery_ids, gallery_ids, (1, 5), exclude)
    return {"rank1": anon[1], "rank5": anon[5], "baseline_rank1": base[1], "baseline_rank5": base[5],
            "probes": len(chosen), "gallery": len(chosen)}


def _utility(faces: list[FaceItem], quality: dict) -> dict:
    # Of the faces the second detector finds in the original, the share it still finds after anonymization.
    detected = [f.detected_anonymized for f in faces if f.detected_original]
    original = [f.detected_original for f in faces if f.detected_original is not None]
    unavailable = "needs pretrained weights that are not installed (no offline copy)"
    return {
        "detection_rate": {"detector": "dlib HOG (face_recognition default)", "anonymized": float(np.mean(detected)),
                           "original": float(np.mean(original)), "n": len(detected)} if detected else None,
        "landmarks": {"available": False, "reason": "68-point landmark distance not implemented yet"},
        "ssim": {"face": _finite_mean(quality["ssim_face"]), "outside": _finite_mean(quality["ssim_out"])},
        "psnr": {"face": _finite_mean(quality["psnr_face"]), "outside": _finite_mean(quality["psnr_out"]),
                 "face_identical_images": sum(1 for v in quality["psnr_face"] if math.isinf(v))},
        "lpips": {"available": False, "value": None, "reason": "LPIPS " + unavailable},
        "fid": {"available": False, "value": None, "reason": "FID (Inception) " + unavailable},
    }


def _recovery(faces: list[FaceItem], recovery: dict, evaluators: dict) -> dict:
    from ..metrics.evaluators import EVALUATORS

    identity = {}
    for name in evaluators:
        pairs = [(f.original[name], f.restored[name]) for f in faces if name in f.restored]
        if pairs:
            identity[name] = float(np.mean([_distance(EVALUATORS[name].metric, a, b) for a, b in pairs]))
    return {"psnr": _finite_mean(recovery["psnr"]), "identical_images": sum(1 for v in recovery["psnr"] if math.isinf(v)),
            "ssim": _finite_mean(recovery["ssim"]), "mae": _finite_mean(recovery["mae"]),
            "identity_distance": identity, "n": len(recovery["psnr"]), "wrong_key": None}


def _fairness(faces: list[FaceItem], labels: dict, group_columns, privacy: dict, evaluator_info: list) -> dict | None:
    from ..metrics.fairness import group_gaps

    if not group_columns or not labels:
        return None
    first = next((i for i in evaluator_info if i["name"] in privacy), None)
    out = {}
    for column in group_columns:
        groups: dict[str, list[int]] = {}
        for k, f in enumerate(faces):
            value = labels.get(Path(f.rel).name, {}).get(column)
            if value is not None and value == value:
                groups.setdefault(str(value), []).append(k)
        table = {}
        for group, members in sorted(groups.items()):
            det = [faces[k].detected_anonymized for k in members if faces[k].detected_anonymized is not None]
            prot = None
            if first is not None and first["thresholds"]["literature"] is not None:
                d = [privacy[first["name"]]["distances"]["anonymized"][k] for k in members]
                prot = protection_rate(d, first["thresholds"]["literature"])
            table[group] = {"n": len(members), "detection_rate": float(np.mean(det)) if det else None, "protection_rate": prot}
        out[column] = {"groups": table, "protection_evaluator": first["name"] if first else None,
                       "gaps": {m: group_gaps({g: v[m] for g, v in table.items()}) for m in ("detection_rate", "protection_rate")}}
    return out
