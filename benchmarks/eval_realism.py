"""Realism of a method's faces (issue 20, acceptance 1 and 3), through the real CLI: one table row.

    .venv/bin/python benchmarks/eval_realism.py --method identitydp [--method-args "--epsilon 6"]
                                                [--set crops|wild] [--limit 300] [--offset 0] [--workers W]
    .venv/bin/python benchmarks/eval_realism.py --run OUT_DIR --original IN_DIR [--labels CSV]   # report an existing run

1. the held-out images of the set (CelebA crops of the identities the trainers hold out, or
   CelebA photos in the wild; eval_identity.held_out_images), linked into a temp folder;
2. `anoncli anonymize IN -o OUT --method M [METHOD ARGS] -q -j W` (reversible methods get a
   keyfile; ksame-* get the set's labels, for k-Same's identity groups);
3. `anoncli report OUT --original IN [--labels L] --evaluator dlib --weights-dir ../shared/weights -o REPORT -q`.

Prints one row: the KID ratio (KID / real-vs-real floor, anoncli.metrics.kid) in every feature
space the report measured (dlib and MobileFaceNet, mid-level and last block; Inception when its
weights are present), the KID and floor of dlib/mid, the texture figure (median anonymized /
original high-frequency energy in the face), and CenterFace's detection rate and mean score on the
anonymized faces and on the originals. KID ratios grow with the number of faces: compare rows of
the same --limit. Writes benchmarks/results/realism-<method>-<set>-<date>.json (with the whole
realism section of the report, per-face texture values included).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import link_images, machine_record, write_json  # noqa: E402
from eval_identity import SHARED_WEIGHTS, held_out_images  # noqa: E402

PASSPHRASE = "realism-eval-passphrase"
SPACES = ("dlib/mid", "dlib/last", "mobilefacenet/mid", "mobilefacenet/last", "inception/pool3")


def cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise SystemExit(f"anoncli {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r


def reversible(method: str) -> bool:
    from anoncli.methods import get_method_spec

    return bool(get_method_spec(method).reversible)


def report(run: Path, original: Path, labels: Path | None, dest: Path, workers: int, weights_dir: Path | None) -> dict:
    args = ["report", run, "--original", original, "--evaluator", "dlib", "-o", dest, "-q", "-j", workers,
            "--cache-dir", dest.parent / "features"]
    if labels is not None:
        args += ["--labels", labels]
    if weights_dir is not None:
        args += ["--weights-dir", weights_dir]
    cli(*args)
    return json.loads((dest / "report.json").read_text())


def row(label: str, r: dict) -> dict:
    rz = r.get("realism") or {}
    kid = rz.get("kid") or {}
    out = {"run": label, "faces": r["counts"]["faces"]}
    for space in SPACES:
        k = kid.get(space) or {}
        out[f"ratio {space}"] = k.get("ratio") if k.get("available") else None
    mid = kid.get("dlib/mid") or {}
    out["KID dlib/mid"], out["floor dlib/mid"] = mid.get("kid"), mid.get("floor")
    t, d = rz.get("texture") or {}, rz.get("detection") or {}
    out["texture median"] = t.get("median")
    for key in ("anonymized", "original", "mean_score_anonymized", "mean_score_original"):
        out[f"CenterFace {key}"] = d.get(key)
    return out


def print_row(values: dict) -> None:
    def fmt(v):
        return "n/a" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    print("| " + " | ".join(values) + " |")
    print("|" + "---|" * len(values))
    print("| " + " | ".join(fmt(v) for v in values.values()) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", help="the method to run (see `anoncli methods`)")
    ap.add_argument("--method-args", default="", help='its flags, one string, e.g. "--epsilon 6"')
    ap.add_argument("--set", default="crops", choices=["crops", "wild"])
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--offset", type=int, default=0, help="skip the first N held-out images (in name order)")
    ap.add_argument("--run", type=Path, help="report this existing anonymized folder instead of running a method")
    ap.add_argument("--original", type=Path, help="with --run: its original images")
    ap.add_argument("--labels", type=Path, help="with --run: identity labels (the split keeps identities apart)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--weights-dir", type=Path, help="where the method's weights are, if not in weights/ (anonymize)")
    ap.add_argument("--report-weights-dir", type=Path, default=SHARED_WEIGHTS if SHARED_WEIGHTS.is_dir() else None,
                    help="where the report's evaluators' weights are (default ../shared/weights)")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this folder (default: a temp folder, removed)")
    a = ap.parse_args()
    load_before = os.getloadavg()[0]
    if (a.method is None) == (a.run is None):
        ap.error("give --method or --run")
    if a.run is not None and a.original is None:
        ap.error("--run needs --original")

    with tempfile.TemporaryDirectory(prefix="eval-realism-") as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        seconds = None
        if a.run is not None:
            run, original, labels, label = a.run, a.original, a.labels, str(a.run)
        else:
            images, labels = held_out_images(a.set, a.limit, a.offset)
            original = link_images(images, work / "in")
            run = work / "out"
            args = ["anonymize", original, "-o", run, "--method", a.method, *shlex.split(a.method_args), "-q",
                    "-j", a.workers]
            if reversible(a.method):
                args += ["--keyfile", work / "run.key"]
            if a.method.startswith("ksame") and "--labels" not in a.method_args:
                args += ["--labels", labels]
            if a.weights_dir is not None and "--weights-dir" not in a.method_args:
                args += ["--weights-dir", a.weights_dir]
            seconds, _ = cli(*args)
            label = f"{a.method} {a.method_args}".strip()
        r = report(run, original, labels, work / "report", a.workers, a.report_weights_dir)
        values = row(label, r)
        print_row(values)
        name = (a.method or "run") + f"-{a.set}"
        path = write_json(f"realism-{name}", [{**values, "anonymize_seconds": seconds, "realism": r.get("realism")}],
                          {**machine_record(" ".join(map(shlex.quote, sys.argv)), load_before), "set": a.set,
                           "limit": a.limit, "offset": a.offset})
        print(f"written: {path}")


if __name__ == "__main__":
    main()
