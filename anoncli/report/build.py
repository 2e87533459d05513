"""Build the report of one anonymized run: privacy, utility, recovery and fairness numbers.

Reads only the run's manifest and the image trees. Every face is measured where the
manifest says it is (box and landmarks found on the original), in the original, the
anonymized and, when given, the restored image.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..metrics.privacy import chance_identification_rates, identification_rates, pairwise_distances, protection_rate
from .cache import default_cache_dir
from .measure import DETECTION_IOU, ImageTask, MeasureConfig, ModelLoadError, decode_rgb, measure_all
from .realism import centerface_available, centerface_score, example_image, realism_networks, realism_section

FAR = 1e-3
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
    wrong: dict = field(default_factory=dict)
    landmark_distance: dict | None = None
    lpips: float | None = None
    inception: dict = field(default_factory=dict)   # role -> pool3 features of the face crop
    detected_original: bool | None = None
    detected_anonymized: bool | None = None
    realism: dict = field(default_factory=dict)     # role -> feature network -> realism feature vector
    texture: float | None = None                    # high-frequency energy in the face, anonymized / original
    centerface: dict = field(default_factory=dict)  # role -> best CenterFace score at the face's box


def load_run(anon_dir: Path):
    from ..run import RunError, read_run_folder

    try:
        record, manifest, _ = read_run_folder(anon_dir)
    except RunError as e:
        raise ReportError(str(e)) from None
    return record, manifest


def _examples(tasks: list[ImageTask], measured: set[str]) -> list[dict]:
    """The first face of the first few measured images at the photo's resolution (its
    neighbourhood, cut and never resized, as lossless PNG): original | anonymized | restored."""
    examples = []
    for task in tasks:
        if len(examples) >= EXAMPLES:
            break
        if task.rel not in measured:
            continue
        box = task.faces[0]["box"]
        try:
            cuts = {role: example_image(decode_rgb(Path(path)), box) for role, path in task.paths.items() if role != "wrong"}
        except Exception:
            continue
        examples.append({"input": task.rel, "original": cuts["original"][0], "anonymized": cuts["anonymized"][0],
                         "restored": cuts["restored"][0] if "restored" in cuts else None,
                         "width": cuts["original"][1], "height": cuts["original"][2], "native": True})
    return examples


def _dlib_tools(weights_dir: str | None) -> tuple[bool, str | None]:
    """Whether the HOG detector and the 68-point predictor (detection and landmark utility) can run."""
    import importlib.util

    from ..weights import locate

    if importlib.util.find_spec("dlib") is None:
        return False, "dlib is not installed: pip install dlib-bin"
    if locate("dlib-shape-predictor-68", weights_dir)[0] is None:
        return False, "weights dlib-shape-predictor-68 missing: pip install face_recognition_models"
    return True, None


def _evaluator_info(evaluator_names, weights_dir, method_uses) -> list[dict]:
    from dataclasses import asdict

    from ..metrics.evaluators import EVALUATORS, evaluator_available
    from ..weights import REGISTRY

    info = []
    for name in evaluator_names:
        if name not in EVALUATORS:
            raise ReportError(f"unknown evaluator {name!r}; known: {', '.join(EVALUATORS)}")
        spec = EVALUATORS[name]
        ok, reason = evaluator_available(name, weights_dir)
        info.append({"name": name, "summary": spec.summary, "metric": spec.metric, "available": ok,
                     "reason": reason, "white_box": name in method_uses,
                     "weights_sha256": REGISTRY[spec.weights[0]].sha256,
                     "thresholds": {"literature": spec.literature_threshold, "far_1e-3": None},
                     "threshold_source": spec.threshold_source,
                     "far_threshold": None,   # where the FAR 1e-3 threshold came from (_privacy)
                     "reference_threshold": asdict(spec.reference_threshold) if spec.reference_threshold else None,
                     "verification": None})
    return info


def _no_evaluator_error(evaluator_info: list[dict]) -> str:
    return ("no privacy evaluator can run, so the report would measure no privacy: "
            + "; ".join(f"{i['name']}: {i['reason']}" for i in evaluator_info))


def _tasks(manifest_rows, anon_dir: Path, original_dir, restored_dir, wrong_restored_dir) -> list[ImageTask]:
    tasks = []
    for row in manifest_rows:
        faces = [f for f in json.loads(row["faces"]) if "skipped" not in f]
        if not faces:
            continue
        rel = row["input"]
        paths = {"original": str(Path(original_dir) / rel), "anonymized": str(anon_dir / row["output"])}
        for role, folder in (("restored", restored_dir), ("wrong", wrong_restored_dir)):
            if folder is not None and (Path(folder) / rel).is_file():
                paths[role] = str(Path(folder) / rel)
        tasks.append(ImageTask(rel, faces, paths))
    return tasks


def build_report(anon_dir: Path, original_dir: Path | None = None, restored_dir: Path | None = None,
                 labels=None, identity_column: str | None = "identity", group_columns: tuple[str, ...] = (),
                 evaluator_names: tuple[str, ...] = ("dlib", "mobilefacenet", "arcface"), weights_dir: str | None = None,
                 cache_dir: Path | None = None, progress: bool = True, wrong_restored_dir: Path | None = None,
                 workers: int | None = None, use_cache: bool = True, gallery_dir: Path | None = None) -> dict:
    """The report as a dict (see ``anoncli.report.html`` for its layout).

    ``gallery_dir``: a folder of labelled photos (names in ``labels``) whose main faces join the
    identification gallery beside the run's own originals, as in FFEM §5 where the rest of LFW
    is the gallery; a photo with the same content as one of the run's originals is left out."""
    anon_dir = Path(anon_dir)
    record, manifest = load_run(anon_dir)
    if original_dir is None:
        if not record.get("input_dir"):
            raise ReportError("run.json does not name the original folder; give --original DIR")
        original_dir = Path(record["input_dir"])
    for label, folder in (("original", original_dir), ("restored", restored_dir), ("wrong-key restored", wrong_restored_dir),
                          ("gallery", gallery_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise ReportError(f"{label} folder {folder} does not exist")

    method_uses = set(record.get("method", {}).get("evaluators", []) or [])
    evaluator_info = _evaluator_info(evaluator_names, weights_dir, method_uses)
    usable = tuple(i["name"] for i in evaluator_info if i["available"])
    if evaluator_info and not usable:
        raise ReportError(_no_evaluator_error(evaluator_info))
    dlib_ok, dlib_reason = _dlib_tools(weights_dir)
    label_by_image = {str(r["image"]): r for r in labels.to_dict("records")} if labels is not None else {}

    rows = [r for r in manifest.to_dict("records") if r["status"] == "ok" and r.get("output")]
    tasks = _tasks(rows, anon_dir, original_dir, restored_dir, wrong_restored_dir)
    gallery_tasks, gallery_ids_by_rel = (_gallery_tasks(Path(gallery_dir), label_by_image, identity_column)
                                         if gallery_dir else ([], {}))
    cache_root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    from ..metrics import fid, lpips

    lpips_ok, lpips_reason = lpips.available(weights_dir)
    fid_ok, fid_reason = fid.available(weights_dir)
    run_config = record.get("config", {})
    detector = (run_config.get("detector", "retinaface-onnx"), run_config.get("threshold", 0.3),
                run_config.get("detect_size", 640), run_config.get("nms_iou", 0.4))
    realism_plan = realism_networks(weights_dir, fid_ok, fid_reason)
    config = MeasureConfig(usable, weights_dir, str(cache_root) if cache_root else None, dlib_ok, lpips_ok, fid_ok, detector,
                           realism=tuple(n for n, (ok, _) in realism_plan.items() if ok and n != "inception"),
                           centerface=centerface_available()[0])
    results, skipped, gallery_measured, unmeasured = {}, [], [], 0
    try:
        for rel, measurement, reason in measure_all(tasks + gallery_tasks, config, workers or min(os.cpu_count() or 1, 4), progress):
            if rel.startswith(GALLERY_PREFIX):
                if measurement is None:
                    unmeasured += 1
                else:
                    gallery_measured.append((gallery_ids_by_rel[rel], measurement))
            elif measurement is None:
                skipped.append({"input": rel, "reason": reason})
                print(f"skipped {rel}: {reason}", file=sys.stderr)
            else:
                results[rel] = measurement
    except ModelLoadError as e:
        raise ReportError(str(e)) from None
    faces, quality, recovery = _collect(tasks, results)
    gallery = _gallery(gallery_measured, unmeasured, {m["shas"]["original"] for m in results.values()}, usable) if gallery_dir else None

    report = {
        "tool_version": __version__, "created": datetime.now(timezone.utc).isoformat(),
        "anon_dir": str(anon_dir), "original_dir": str(original_dir),
        "restored_dir": str(restored_dir) if restored_dir else None,
        "wrong_restored_dir": str(wrong_restored_dir) if wrong_restored_dir else None,
        "gallery_dir": str(gallery_dir) if gallery_dir else None,
        "run": {"method": record.get("config", {}).get("method"), "params": record.get("config", {}).get("params"),
                "run_id": record.get("run_id")},
        "counts": {"images": len(rows), "faces": len(faces), "measured_images": len(results), "skipped": skipped},
        "evaluators": evaluator_info,
        "privacy": {}, "examples": _examples(tasks, set(results)),
    }
    for info in evaluator_info:
        if info["available"]:
            report["privacy"][info["name"]] = _privacy(info["name"], info, faces, label_by_image, identity_column, gallery)
    report["utility"] = _utility(faces, quality, dlib_reason, lpips_reason, fid_reason)
    report["realism"] = realism_section(faces, realism_plan, label_by_image, identity_column)
    report["recovery"] = None
    if restored_dir is not None:
        report["recovery"] = _recovery(faces, recovery["restored"], usable, "restored")
        if wrong_restored_dir is not None:
            report["recovery"]["wrong_key"] = _recovery(faces, recovery["wrong"], usable, "wrong")
    report["fairness"] = _fairness(faces, label_by_image, group_columns, report["privacy"], evaluator_info)
    return report


GALLERY_PREFIX = "gallery:"


def _gallery_tasks(gallery_dir: Path, labels: dict, column: str | None) -> tuple[list[ImageTask], dict]:
    """One task per labelled photo of ``gallery_dir``, and each task's identity."""
    from ..io.discover import discover

    if not column or not labels:
        raise ReportError("--gallery needs --labels with an identity column naming the gallery's photos")
    out, ids = [], {}
    for item in discover(gallery_dir).items:
        value = labels.get(Path(item.rel).name, {}).get(column)
        if item.problem or value in (None, "") or value != value:
            continue
        rel = GALLERY_PREFIX + item.rel
        out.append(ImageTask(rel, [], {"original": str(item.path)}, gallery=True))
        ids[rel] = str(value)
    if not out:
        raise ReportError(f"no photo in --gallery {gallery_dir} has an identity in --labels")
    return out, ids


def _gallery(measured: list[tuple[str, dict]], unmeasured: int, own_shas: set[str], evaluators) -> dict:
    """The gallery photos' identities and main-face embeddings per evaluator, less those whose
    content is one of the run's originals (a probe must not meet its own photo)."""
    kept = [(identity, m) for identity, m in measured if m["shas"]["original"] not in own_shas]
    return {"ids": [identity for identity, _ in kept], "unmeasured": unmeasured,
            "embeddings": {n: np.array([m["embeddings"]["original"][n][0] for _, m in kept], np.float64) for n in evaluators}}


def _collect(tasks: list[ImageTask], results: dict) -> tuple[list[FaceItem], dict, dict]:
    """Faces with their embeddings, detections and landmark distances, in manifest order."""
    from ..metrics.dlib_identity import box_iou
    from ..metrics.landmarks import normalised_landmark_distance

    faces: list[FaceItem] = []
    quality = {"ssim_face": [], "ssim_out": [], "ssim_whole": [], "psnr_face": [], "psnr_out": [], "psnr_whole": []}
    recovery = {"restored": [], "wrong": []}
    for task in tasks:
        m = results.get(task.rel)
        if m is None:
            continue
        items = [FaceItem(task.rel, i, f["box"], f["landmarks"], m["shas"]["original"]) for i, f in enumerate(task.faces)]
        for role, per_evaluator in m["embeddings"].items():
            for name, vectors in per_evaluator.items():
                for it, vec in zip(items, vectors):
                    getattr(it, role)[name] = np.asarray(vec, np.float64)
        if m["hog"]:
            for it, found_original, found_anonymized in zip(items, m["hog"]["original"], m["hog"]["anonymized"]):
                it.detected_anonymized = any(box_iou(b, it.box) >= DETECTION_IOU for b in found_anonymized)
                it.detected_original = any(box_iou(b, it.box) >= DETECTION_IOU for b in found_original)
        if m["landmarks68"]:
            for it, a, b in zip(items, m["landmarks68"]["original"], m["landmarks68"]["anonymized"]):
                try:
                    it.landmark_distance = normalised_landmark_distance(a, b)
                except ValueError:  # degenerate prediction on the original
                    pass
        for k, it in enumerate(items):
            it.texture = m["texture"][k] if "texture" in m else None
            for role, per_network in m.get("realism", {}).items():
                it.realism[role] = {net: np.asarray(vectors[k], np.float64) for net, vectors in per_network.items()}
            for role, found in m.get("centerface", {}).items():
                it.centerface[role] = centerface_score(found, it.box)
            if "lpips" in m:
                it.lpips = m["lpips"][k]
            for role, vectors in m.get("inception", {}).items():
                it.inception[role] = vectors[k]
        for k, v in m["quality_anonymized"].items():
            if v is not None:
                quality[k].append(v)
        for role in recovery:
            if f"quality_{role}" in m:
                recovery[role].append(m[f"quality_{role}"])
        faces.extend(items)
    return faces, quality, recovery


def _finite_mean(values) -> float | None:
    v = [x for x in values if x is not None and not math.isnan(x) and not math.isinf(x)]
    return float(np.mean(v)) if v else None


def _distance(metric: str, a: np.ndarray, b: np.ndarray) -> float:
    return float(pairwise_distances(a[None], b[None], metric)[0, 0])


def _privacy(name: str, info: dict, faces: list[FaceItem], labels: dict, identity_column: str | None,
             gallery: dict | None = None) -> dict:
    from ..metrics.verification import roc_auc

    metric = info["metric"]
    anon = [_distance(metric, f.original[name], f.anonymized[name]) for f in faces]
    originals = np.stack([f.original[name] for f in faces]) if faces else np.zeros((0, 1))
    ids = _main_face_labels(faces, labels, identity_column)
    dist = pairwise_distances(originals, originals, metric) if len(faces) else np.zeros((0, 0))
    upper = np.triu_indices(len(faces), 1)
    rels = np.array([f.rel for f in faces])
    same_image = rels[:, None] == rels[None, :]
    if any(i is not None for i in ids):
        known = np.array([i is not None for i in ids])
        id_arr = np.array([str(i) for i in ids])
        same_id = id_arr[:, None] == id_arr[None, :]
        both_known = (known[:, None] & known[None, :])[upper]
        impostor = dist[upper][both_known & ~same_id[upper] & ~same_image[upper]]
        genuine = dist[upper][both_known & same_id[upper] & ~same_image[upper]]
    else:
        # Without labels nothing says two images show different people (face data sets hold several
        # photos of each): no impostor pairs, so no threshold is calibrated on this run's faces.
        impostor, genuine = np.zeros(0), np.zeros(0)
    far_threshold, info["far_threshold"] = _far_threshold(info, impostor, bool(labels and identity_column))
    info["thresholds"]["far_1e-3"] = far_threshold
    info["impostor_pairs"] = int(impostor.size)
    if genuine.size and impostor.size:
        # The evaluator on the originals: same-identity pairs of different photos against different identities.
        scores = np.concatenate([-genuine, -impostor])
        labels01 = np.concatenate([np.ones(genuine.size), np.zeros(impostor.size)])
        info["verification"] = {"auc": roc_auc(scores, labels01), "pairs": int(genuine.size + impostor.size),
                                "genuine_pairs": int(genuine.size), "impostor_pairs": int(impostor.size),
                                "data": "original images, identity labels"}
    rates = {"literature": protection_rate(anon, info["thresholds"]["literature"]) if info["thresholds"]["literature"] is not None else None,
             "far_1e-3": protection_rate(anon, far_threshold) if far_threshold is not None else None}
    out = {"protection_rate": rates, "pairs": len(anon),
           "distances": {"anonymized": anon, "genuine": genuine.tolist()[:5000], "impostor": impostor.tolist()[:5000]},
           "identification": None}
    if any(i is not None for i in ids):
        out["identification"] = _identification(name, metric, faces, ids, gallery)
    return out


def _far_threshold(info: dict, impostor: np.ndarray, labelled: bool) -> tuple[float | None, dict]:
    """The FAR 1e-3 threshold and where it came from: calibrated on this run's originals when
    identity labels give at least 1/FAR impostor pairs, else the evaluator's reference threshold
    (calibrated on a labelled reference set), else none (the literature threshold alone)."""
    from ..metrics.verification import threshold_at_far

    if impostor.size >= 1 / FAR:
        value = threshold_at_far(impostor, FAR)
        return value, {"value": value, "calibrated_on": "run", "impostor_pairs": int(impostor.size),
                       "source": f"calibrated at FAR {FAR:g} on {impostor.size:,} pairs of this run's original faces "
                                 f"of different labelled identities"}
    why = (f"the labels give {impostor.size:,} impostor pairs of this run's faces, fewer than {round(1 / FAR):,}"
           if labelled else "no --labels: pairs of this run's different images may show the same person")
    reference = info.get("reference_threshold")
    if reference:
        return reference["value"], {
            "value": reference["value"], "calibrated_on": "reference", "impostor_pairs": reference["impostor_pairs"],
            "source": f"reference threshold, not calibrated on this run ({why}); calibrated at FAR {reference['far']:g} on "
                      f"{reference['impostor_pairs']:,} impostor pairs of labelled photos ({reference['data']}; "
                      f"{reference['script']}, {reference['date']})"}
    return None, {"value": None, "calibrated_on": None, "impostor_pairs": 0,
                  "source": f"none, only the literature threshold applies: the evaluator has no reference threshold and {why}"}


def _main_face_labels(faces: list[FaceItem], labels: dict, column: str | None) -> list:
    """The image's label in ``column`` for its main (largest) face; None for the other faces,
    which are usually other people, and for unlabelled images."""
    if not column or not labels:
        return [None] * len(faces)
    main: dict[str, tuple[int, float]] = {}
    for k, f in enumerate(faces):
        area = (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])
        if f.rel not in main or area > main[f.rel][1]:
            main[f.rel] = (k, area)
    ids = [None] * len(faces)
    for rel, (k, _) in main.items():
        value = labels.get(Path(rel).name, {}).get(column)
        ids[k] = value if value not in (None, "") and value == value else None
    return ids


def _identification(name: str, metric: str, faces: list[FaceItem], ids: list, extra: dict | None = None) -> dict | None:
    """FFEM §5: the main (largest) labelled face of each image as probe, against a gallery of
    the other images' original faces, plus the photos of a --gallery folder (``_gallery``).
    The baseline puts each original in the probe's place."""
    chosen = [k for k, i in enumerate(ids) if i is not None]
    if len(chosen) < 2:
        return None
    probe_ids = [str(ids[k]) for k in chosen]
    gallery, gallery_ids = np.stack([faces[k].original[name] for k in chosen]), list(probe_ids)
    if extra is not None and extra["ids"]:
        gallery, gallery_ids = np.concatenate([gallery, extra["embeddings"][name]]), gallery_ids + extra["ids"]
    exclude = np.zeros((len(chosen), len(gallery_ids)), bool)
    exclude[:, :len(chosen)] = np.eye(len(chosen), dtype=bool)   # a probe's own photo
    originals = gallery[:len(chosen)]
    base = identification_rates(pairwise_distances(originals, gallery, metric), probe_ids, gallery_ids, (1, 5), exclude)
    probes = np.stack([faces[k].anonymized[name] for k in chosen])
    distances = pairwise_distances(probes, gallery, metric)
    anon = identification_rates(distances, probe_ids, gallery_ids, (1, 5), exclude)
    away = identification_rates(distances, probe_ids, gallery_ids, (1, 5), exclude, farthest=True)
    chance = chance_identification_rates(probe_ids, gallery_ids, (1, 5), exclude)
    out = {"rank1": anon[1], "rank5": anon[5], "rank1_farthest": away[1], "rank5_farthest": away[5],
           "baseline_rank1": base[1], "baseline_rank5": base[5],
           "chance_rank1": chance[1], "chance_rank5": chance[5], "identities": len(set(gallery_ids)),
           "probes": len(chosen), "gallery": len(gallery_ids)}
    if extra is not None:
        out["gallery_extra"] = len(extra["ids"])
        out["gallery_unmeasured"] = extra["unmeasured"]
    return out


def _landmarks(faces: list[FaceItem], dlib_reason: str | None) -> dict:
    from ..metrics.landmarks import REGIONS

    measured = [f.landmark_distance for f in faces if f.landmark_distance is not None]
    if not measured:
        return {"available": False, "reason": dlib_reason or "no face measured"}
    overall = [d["all"] for d in measured]
    return {"available": True, "predictor": "dlib 68-point (iBUG 300-W)",
            "normalisation": "inter-ocular distance (outer eye corners) of the original",
            "nme_mean": float(np.mean(overall)), "nme_median": float(np.median(overall)), "n": len(measured),
            "regions": {r: float(np.mean([d[r] for d in measured])) for r in REGIONS}}


def _fid(faces: list[FaceItem], reason: str | None) -> dict:
    from ..metrics.fid import fid_from_features
    from .measure import FACE_CROP_SIDE

    pairs = [f.inception for f in faces if len(f.inception) == 2]
    if reason is not None or len(pairs) < 2:
        return {"available": False, "value": None, "reason": reason or "fewer than two faces"}
    value = fid_from_features(np.array([p["original"] for p in pairs]), np.array([p["anonymized"] for p in pairs]))
    return {"available": True, "value": value, "n": len(pairs),
            "data": f"face crops ({FACE_CROP_SIDE} px, resized to 299) of originals against anonymized",
            "note": "biased upwards below 2048 faces per set (pytorch-fid); compare only runs of the same size"}


def _utility(faces: list[FaceItem], quality: dict, dlib_reason: str | None, lpips_reason: str | None,
             fid_reason: str | None) -> dict:
    # Of the faces the second detector finds in the original, the share it still finds after anonymization.
    detected = [f.detected_anonymized for f in faces if f.detected_original]
    original = [f.detected_original for f in faces if f.detected_original is not None]
    lpips_values = [f.lpips for f in faces if f.lpips is not None]
    return {
        "detection_rate": {"detector": "dlib HOG (face_recognition's), on each face's neighbourhood scaled to a 120 px face", "anonymized": float(np.mean(detected)),
                           "original": float(np.mean(original)), "n": len(detected)} if detected else None,
        "landmarks": _landmarks(faces, dlib_reason),
        "ssim": {"face": _finite_mean(quality["ssim_face"]), "outside": _finite_mean(quality["ssim_out"]),
                 "whole": _finite_mean(quality["ssim_whole"])},
        "psnr": {"face": _finite_mean(quality["psnr_face"]), "outside": _finite_mean(quality["psnr_out"]),
                 "whole": _finite_mean(quality["psnr_whole"]),
                 "face_identical_images": sum(1 for v in quality["psnr_face"] if math.isinf(v))},
        "lpips": {"available": True, "value": float(np.mean(lpips_values)), "n": len(lpips_values),
                  "network": "AlexNet, v0.1, face crops"} if lpips_values
        else {"available": False, "value": None, "reason": lpips_reason or "no face measured"},
        "fid": _fid(faces, fid_reason),
    }


def _recovery(faces: list[FaceItem], numbers: list[dict], evaluators, role: str) -> dict:
    from ..metrics.evaluators import EVALUATORS

    identity, matched, distances = {}, {}, {}
    for name in evaluators:
        pairs = [(f.original[name], getattr(f, role)[name]) for f in faces if name in getattr(f, role)]
        if pairs:
            d = [float(_distance(EVALUATORS[name].metric, a, b)) for a, b in pairs]
            identity[name] = float(np.mean(d))
            distances[name] = d
            threshold = EVALUATORS[name].literature_threshold
            if threshold is not None:   # share of restored faces the recognizer calls the same person
                matched[name] = float(np.mean([v < threshold for v in d]))
    psnrs = [n["psnr"] for n in numbers]
    return {"psnr": _finite_mean(psnrs), "identical_images": sum(1 for v in psnrs if math.isinf(v)),
            "ssim": _finite_mean([n["ssim"] for n in numbers]), "mae": _finite_mean([n["mae"] for n in numbers]),
            "identity_distance": identity, "identity_match_rate": matched, "identity_distances": distances,
            "n": len(numbers), "wrong_key": None}


def _fairness(faces: list[FaceItem], labels: dict, group_columns, privacy: dict, evaluator_info: list) -> dict | None:
    from ..metrics.fairness import group_gaps

    if not group_columns or not labels:
        return None
    first = next((i for i in evaluator_info if i["name"] in privacy), None)
    out = {}
    for column in group_columns:
        groups: dict[str, list[int]] = {}
        for k, value in enumerate(_main_face_labels(faces, labels, column)):
            if value is not None:
                groups.setdefault(str(value), []).append(k)
        table = {}
        for group, members in sorted(groups.items()):
            det = [faces[k].detected_anonymized for k in members if faces[k].detected_anonymized is not None]
            det_original = [faces[k].detected_original for k in members if faces[k].detected_original is not None]
            prot = None
            if first is not None and first["thresholds"]["literature"] is not None:
                d = [privacy[first["name"]]["distances"]["anonymized"][k] for k in members]
                prot = protection_rate(d, first["thresholds"]["literature"])
            table[group] = {"n": len(members), "detection_rate": float(np.mean(det)) if det else None,
                            "original_detection_rate": float(np.mean(det_original)) if det_original else None, "protection_rate": prot}
        out[column] = {"groups": table, "protection_evaluator": first["name"] if first else None,
                       "gaps": {m: group_gaps({g: v[m] for g, v in table.items()})
                                for m in ("detection_rate", "original_detection_rate", "protection_rate")}}
    return out
