"""Speed of the identity and latent-space methods against blur, same images, same cores, same run (issue 6
point 4; flowrot, issue 7; fsap and dpimage, issue 22 point 2; diffusion, issue 23 point 5).

    .venv/bin/python benchmarks/bench_identity.py [--data DIR] [--limit N] [--workers W] [--only TOOL ...]

Every row is one whole `anoncli anonymize` command run as a subprocess on a temp folder of links
to the first N images of DIR (sorted by name); the wall clock covers the whole command (start-up,
loading the generator and dlib's network, or the flow, in every worker, detection, the method, the manifest).
The baseline is `blur` on the same images and cores, measured in the same run. idrotate and flowrot write a
keyfile (passphrase from $ANONCLI_PASSPHRASE, Argon2id as for any user). Prints faces/s and the
ratio to blur; writes benchmarks/results/identity-speed[-<rows>]-<date>.json.
"""
from __future__ import annotations

import csv
import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import REPO, first_images, library_versions, link_images, machine_record, warm_page_cache, write_json

DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba-crops" / "images"
KEY = object()
ROWS = (
    ("blur", ["--method", "blur"]),
    ("identitydp eps 6", ["--method", "identitydp", "--epsilon", "6"]),
    ("idrotate", ["--method", "idrotate", "--keyfile", KEY]),
    ("idrotate 300 refine steps", ["--method", "idrotate", "--refine-steps", "300", "--refine-lr", "0.01", "--keyfile", KEY]),
    ("idrotate 30 refine steps", ["--method", "idrotate", "--refine-steps", "30", "--refine-lr", "0.01", "--keyfile", KEY]),
    ("idrotate no refine", ["--method", "idrotate", "--refine-steps", "0", "--keyfile", KEY]),
    ("flowrot", ["--method", "flowrot", "--keyfile", KEY]),
    ("fsap", ["--method", "fsap"]),
    ("fsap flow-student", ["--method", "fsap", "--backbone", "flow-student"]),
    ("fsap lambda-identity 0.04", ["--method", "fsap", "--lambda-identity", "0.04", "--lambda-attribute", "0.008"]),
    ("fsap faces-together 16", ["--method", "fsap", "--faces-together", "16"]),
    ("fsap float32 one at a time", ["--method", "fsap", "--precision", "float32", "--faces-together", "1"]),
    ("fsap thesis lambda-identity 0.02", ["--method", "fsap", "--lambda-identity", "0.02", "--lambda-attribute", "0.004"]),
    ("dpimage", ["--method", "dpimage"]),
    ("diffusion", ["--method", "diffusion"]),
)


def run(label: str, args: list, src: Path, work: Path, workers: int) -> dict:
    out = work / label.replace(" ", "-")
    args = [str(work / (out.name + ".key")) if a is KEY else a for a in args]
    cmd = [sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(out), *args, "-q", "-j", str(workers)]
    env = {**os.environ, "ANONCLI_PASSPHRASE": "benchmark-passphrase"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        raise SystemExit(f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    with (out / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    faces = sum(int(r["n_faces"] or 0) for r in rows if r["status"] == "ok")
    return {"tool": label, "command": shlex.join(cmd[1:]), "images": len(rows), "faces": faces,
            "seconds": round(seconds, 2), "images_per_second": round(len(rows) / seconds, 2),
            "faces_per_second": round(faces / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", action="append", default=[], metavar="TOOL",
                    help="measure only these rows (repeatable; blur, the baseline, always runs): " + ", ".join(l for l, _ in ROWS[1:]))
    args = ap.parse_args()
    unknown = set(args.only) - {label for label, _ in ROWS}
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))}")
    chosen = [row for row in ROWS if row[0] == "blur" or not args.only or row[0] in args.only]
    images = first_images(args.data, args.limit)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        warm_page_cache(images)
        src = link_images(images, work / "in")
        warm = link_images(images[:4], work / "warm")
        for label, flags in chosen:   # untimed: .pyc compile, page cache of the weights
            run("warm " + label, flags, warm, work, args.workers)
        rows = [run(label, flags, src, work, args.workers) for label, flags in chosen]
    base = rows[0]["faces_per_second"]
    for r in rows:
        r["ratio_to_blur"] = round(r["faces_per_second"] / base, 3)
    print(f"{len(images)} images of {args.data}, {args.workers} workers, {os.cpu_count()} cores")
    print(f"{'tool':<20} {'images':>6} {'faces':>6} {'seconds':>8} {'faces/s':>8} {'ratio to blur':>13}")
    for r in rows:
        print(f"{r['tool']:<20} {r['images']:>6} {r['faces']:>6} {r['seconds']:>8.1f} {r['faces_per_second']:>8.2f} {r['ratio_to_blur']:>13.3f}")
    context = {**machine_record(" ".join(sys.argv), load_before), "libraries": library_versions(("torch", "numpy", "onnxruntime"))}
    name = "identity-speed" + "".join("-" + label.replace(" ", "-") for label in args.only)
    print(f"written {write_json(name, rows, context)}")


if __name__ == "__main__":
    main()
