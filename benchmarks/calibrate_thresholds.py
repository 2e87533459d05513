"""Reference thresholds of `anoncli report`'s evaluators: FAR 1e-3 on a labelled set of photos.

Without identity labels a report cannot calibrate a threshold on its own run's faces: face data
sets hold several photos of each person, so "pairs of different images" are not all impostors
(dlib's threshold came out 0.306 instead of 0.592 that way). The report then uses the
threshold this script measures, stored with the evaluator's registry entry
(``anoncli/metrics/evaluators.py``, ``ReferenceThreshold``), or the literature threshold alone.

For every evaluator whose weights are present: the main (largest) face of each photo, found by
the report's default detector (RetinaFace-MobileNet0.25 ONNX, threshold 0.3, 640 px, NMS 0.4)
and embedded at its box and landmarks exactly as the report does; all pairs of photos of
different identities are the impostors, of the same identity the genuine pairs. The threshold is
``anoncli.metrics.verification.threshold_at_far(impostor, 1e-3)``, the function the report
calibrates with when it has labels. It also prints the false rejection rate at that threshold
(genuine pairs at or above it) and the verification AUC.

    .venv/bin/python benchmarks/calibrate_thresholds.py [--data DIR] [--n N] [--evaluator NAME ...]

Defaults: ``--data ../shared/data/celeba-crops`` (images/ and labels.csv with ``image`` and
``identity``), ``--n 1500`` photos of the training split's identities (identity mod 10 != 0,
``anoncli.train.face_crops.is_held_out``: the held-out identities, on which acceptance figures
are measured, are never used), every k-th photo by name so that they span the identities.
Writes ``benchmarks/results/thresholds-<data>.json`` and prints the ``ReferenceThreshold`` of
each evaluator, to be copied into the registry.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anoncli.faces.detectors import create_detector  # noqa: E402
from anoncli.io.images import load_image, rgb8  # noqa: E402
from anoncli.metrics.evaluators import EVALUATORS, evaluator_available  # noqa: E402
from anoncli.metrics.privacy import pairwise_distances  # noqa: E402
from anoncli.metrics.verification import roc_auc, threshold_at_far  # noqa: E402
from anoncli.train.face_crops import is_held_out  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "celeba-crops"
RESULTS = ROOT / "benchmarks" / "results"
FAR = 1e-3
DETECTOR = dict(name="retinaface-onnx", threshold=0.3, max_side=640, nms_iou=0.4)   # the report's default run detector


def chosen_photos(data: Path, n: int) -> list[tuple[str, str]]:
    """(file name, identity) of ``n`` training-split photos, every k-th by name."""
    import pandas as pd

    table = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    rows = sorted((name, ident) for name, ident in zip(table["image"], table["identity"])
                  if ident and not is_held_out(data.name, name, ident))
    if n >= len(rows):
        return rows
    step = len(rows) / n
    return [rows[int(k * step)] for k in range(n)]


def main_faces(folder: Path, photos: list[tuple[str, str]]) -> list[tuple[str, str, np.ndarray, dict]]:
    detector = create_detector(DETECTOR["name"], threshold=DETECTOR["threshold"], max_side=DETECTOR["max_side"],
                               nms_iou=DETECTOR["nms_iou"])
    found = []
    for name, ident in photos:
        img = load_image(folder / name, 10 ** 10, keep_metadata=False)
        rgb = rgb8(img.pixels, img.mode)
        faces = detector.detect([rgb])[0]
        if not faces:
            continue
        record = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])).to_record()
        found.append((name, ident, rgb, {"box": record["box"], "landmarks": record["landmarks"]}))
    return found


def calibrate(name: str, faces, weights_dir) -> dict:
    spec = EVALUATORS[name]
    model = spec.load(weights_dir)
    start = time.perf_counter()
    embeddings = np.concatenate([model.embed(rgb, [face]) for _, _, rgb, face in faces]).astype(np.float64)
    seconds = time.perf_counter() - start
    ids = np.array([ident for _, ident, _, _ in faces])
    dist = pairwise_distances(embeddings, embeddings, spec.metric)
    upper = np.triu_indices(len(faces), 1)
    same = (ids[:, None] == ids[None, :])[upper]
    impostor, genuine = dist[upper][~same], dist[upper][same]
    threshold = threshold_at_far(impostor, FAR)
    scores = np.concatenate([-genuine, -impostor])
    labels = np.concatenate([np.ones(genuine.size), np.zeros(impostor.size)])
    return {"evaluator": name, "far": FAR, "threshold": threshold, "impostor_pairs": int(impostor.size),
            "genuine_pairs": int(genuine.size), "photos": len(faces), "identities": int(len(set(ids))),
            "far_measured": float(np.mean(impostor < threshold)), "frr": float(np.mean(genuine >= threshold)),
            "auc": roc_auc(scores, labels), "seconds_per_face": seconds / max(len(faces), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with images/ and labels.csv (image, identity)")
    ap.add_argument("--n", type=int, default=1500, help="photos of the training split's identities to use")
    ap.add_argument("--evaluator", action="append", default=None, help="evaluator to calibrate (repeatable; default: all whose weights are present)")
    ap.add_argument("--weights-dir", default=None, help="look for weight files here first")
    args = ap.parse_args()
    if not (args.data / "labels.csv").is_file() or not (args.data / "images").is_dir():
        print(f"error: {args.data} has no images/ and labels.csv", file=sys.stderr)
        return 2
    names = args.evaluator or list(EVALUATORS)
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        print(f"error: unknown evaluator(s) {', '.join(unknown)}; known: {', '.join(EVALUATORS)}", file=sys.stderr)
        return 2
    photos = chosen_photos(args.data, args.n)
    faces = main_faces(args.data / "images", photos)
    results = {"date": date.today().isoformat(), "data": str(args.data.name), "photos_chosen": len(photos),
               "photos_with_a_face": len(faces), "detector": DETECTOR, "evaluators": {}}
    for name in names:
        ok, reason = evaluator_available(name, args.weights_dir)
        if not ok:
            print(f"{name}: skipped ({reason})")
            results["evaluators"][name] = {"skipped": reason}
            continue
        r = calibrate(name, faces, args.weights_dir)
        results["evaluators"][name] = r
        print(f"{name}: threshold at FAR {FAR:g} = {r['threshold']:.4f} ({r['impostor_pairs']:,} impostor pairs, "
              f"{r['genuine_pairs']:,} genuine; FRR there {r['frr']:.3f}, AUC {r['auc']:.4f}; "
              f"{r['photos']} photos of {r['identities']} identities)")
        print(f"    reference_threshold=ReferenceThreshold(\n"
              f"        {r['threshold']:.4f}, {FAR:g}, \"{args.data.name}: {r['photos']:,} photos of {r['identities']} identities "
              f"of the training split (identity mod 10 != 0), main face by {DETECTOR['name']}\",\n"
              f"        impostor_pairs={r['impostor_pairs']}, genuine_pairs={r['genuine_pairs']}, frr={r['frr']:.4f}, "
              f"date=\"{results['date']}\"),")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"thresholds-{args.data.name}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
