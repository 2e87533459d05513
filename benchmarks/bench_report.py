"""Time `anoncli report` on real photos: first run (empty feature cache) and second run.

    .venv/bin/python benchmarks/bench_report.py [--data DIR] [--limit N] [--workers W] [--weights-dir DIR]

Anonymizes the first N photos of DIR (sorted) with blur once (untimed), then runs the real
CLI `anoncli report` with both evaluators (dlib, MobileFaceNet), identity labels when
DIR/../labels.csv exists, a fresh cache folder (first run) and the same folder again (second
run). The baseline, measured in the same run, is decoding every original and anonymized
image once, the least any report has to do. Prints a table and writes
benchmarks/results/report-<data name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba-wild" / "images"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cli(*args) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"anoncli {args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return time.perf_counter() - t0


def decode_all(paths) -> float:
    from PIL import Image

    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB").load()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=800)
    ap.add_argument("--workers", type=int, default=0, help="report worker processes (0: the CLI default)")
    ap.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared" / "weights")
    args = ap.parse_args()

    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.limit]
    labels = args.data.parent / "labels.csv"
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        src.mkdir()
        for f in files:
            os.symlink(f, src / f.name)
        cli("anonymize", src, "-o", tmp / "anon", "--method", "blur", "-q")
        report = ["report", tmp / "anon", "--weights-dir", args.weights_dir, "--cache-dir", tmp / "cache",
                  "-o", tmp / "report", "-q", "--workers", args.workers]
        if labels.is_file():
            report += ["--labels", labels]
        images = [p for p in (tmp / "anon").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        baseline = decode_all(list(src.iterdir()) + images)
        first = cli(*report)
        second = cli(*report)
        result = json.loads((tmp / "report" / "report.json").read_text())

    n = len(files)
    rows = [("baseline: decode originals + anonymized", baseline), ("report, first run (empty cache)", first),
            ("report, second run (cached features)", second)]
    print(f"{n} photos of {args.data}, {result['counts']['faces']} faces, {os.cpu_count()} cores, "
          f"evaluators {', '.join(result['privacy'])}")
    print(f"{'phase':42} {'seconds':>8} {'images/s':>9} {'x baseline':>10}")
    for name, seconds in rows:
        print(f"{name:42} {seconds:8.1f} {n / seconds:9.2f} {baseline / seconds:10.3f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"report-{args.data.parent.name}.json"
    out.write_text(json.dumps({"images": n, "faces": result["counts"]["faces"], "cores": os.cpu_count(),
                               "machine": platform.platform(), "seconds": dict(rows),
                               "protection_rate": {k: v["protection_rate"] for k, v in result["privacy"].items()},
                               "verification": {e["name"]: e["verification"] for e in result["evaluators"]}},
                              indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
