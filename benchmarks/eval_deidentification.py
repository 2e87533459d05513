"""Acceptance measurement for the obfuscation defaults (issue 2, points 2 and 4).

For each method, runs the real CLI on CelebA images and reports:
  recall   share of photos with at least one face anonymized;
  deid     share of faces whose dlib face_recognition distance between original and
           anonymized face is above 0.6, over the faces dlib detects in the original
           (the faces face_recognition can encode), measured at dlib's box; the share
           over every anonymized face, at the detector's box, is printed beside it.

    python benchmarks/eval_deidentification.py [--set celeba-wild|celeba-crops] [--limit N] [--methods blur,pixelate]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_METHODS = ["blur", "blur --kind downsample", "pixelate", "mask", "noise"]


def run_cli(src: Path, out: Path, method: str, workers: int) -> float:
    name, *flags = method.split()
    cmd = [sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(out), "--method", name, *flags, "-q", "-j", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"anoncli failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="celeba-wild", choices=["celeba-wild", "celeba-crops"])
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--offset", type=int, default=0, help="skip this many images first (sorted order)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from anoncli.metrics.dlib_identity import SAME_PERSON_THRESHOLD, DlibIdentity, deidentification_distances

    images = sorted((DATA / args.set / "images").glob("*.jpg"))[args.offset:args.offset + args.limit]
    if not images:
        raise SystemExit(f"no images under {DATA / args.set}; is ../shared present?")
    scorer = DlibIdentity()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in images:
            (src / p.name).symlink_to(p)
        for method in args.methods.split(","):
            out = Path(tmp) / ("out-" + method.replace(" ", "_"))
            seconds = run_cli(src, out, method, args.workers)
            manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
            every, recog = deidentification_distances(src, out, manifest, scorer)
            every, dists = np.array(every), np.array(recog)
            rows.append({
                "faces_all": int(len(every)),
                "deid_share_all": float((every > SAME_PERSON_THRESHOLD).mean()) if len(every) else float("nan"),
                "method": method, "images": len(manifest),
                "recall": float((manifest.n_faces > 0).mean()),
                "faces": int(len(dists)),
                "deid_share": float((dists > SAME_PERSON_THRESHOLD).mean()) if len(dists) else float("nan"),
                "median_distance": float(np.median(dists)) if len(dists) else float("nan"),
                "seconds": round(seconds, 2),
            })
            r = rows[-1]
            print(f"{method:24s} images {r['images']:4d}  recall {r['recall']:.4f}  faces {r['faces']:4d}  "
                  f"dlib>0.6 {r['deid_share']:.4f} (all {r['faces_all']}: {r['deid_share_all']:.4f})  median {r['median_distance']:.3f}  {r['seconds']}s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"set": args.set, "limit": args.limit, "offset": args.offset, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
