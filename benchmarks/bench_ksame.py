"""Speed of the dataset-level k-Same methods against blur, same images, same cores, same run.

    .venv/bin/python benchmarks/bench_ksame.py [--data DIR] [--labels CSV] [--limit N] [--workers W]

Every row is one whole `anoncli anonymize` command run as a subprocess on a temp folder of
links to the first N images of DIR (sorted by name); the wall clock covers the whole command
(start-up, model load, workers, both passes, clustering, manifest). The baseline is the
per-image `blur` on the same images and cores, measured in the same run. The k-Same rows are
`ksame-pixel`, `ksame-eigen`, `ksame-select --select Male` and `ksame-m` at k = 5 with the identity labels
(a clustering unit is one person), and `ksame-pixel` without labels (a unit is one face). The
last row runs the labelled `ksame-pixel` command again on its finished output: a re-run, which
should skip both passes. Groups and the smallest group come from each output's run.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bench_common import REPO, first_images, library_versions, link_images, machine_record, warm_page_cache, write_json

DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba-crops" / "images"
K = 5
BASELINE = "blur"
RERUN = "ksame-pixel, labels (re-run)"

# (row label, output folder name, `anoncli anonymize` arguments; LABELS stands for --labels CSV)
LABELS = object()
ROWS = (
    (BASELINE, "blur", ["--method", "blur"]),
    ("ksame-pixel, labels", "ksame-pixel", ["--method", "ksame-pixel", "--k", str(K), "--labels", LABELS]),
    ("ksame-eigen, labels", "ksame-eigen", ["--method", "ksame-eigen", "--k", str(K), "--labels", LABELS]),
    ("ksame-select Male, labels", "ksame-select", ["--method", "ksame-select", "--k", str(K), "--labels", LABELS,
                                                   "--select", "Male"]),
    ("ksame-m, labels", "ksame-m", ["--method", "ksame-m", "--k", str(K), "--labels", LABELS]),
    ("ksame-pixel, no labels (faces)", "ksame-pixel-faces", ["--method", "ksame-pixel", "--k", str(K)]),
)
RERUN_OF = "ksame-pixel, labels"


@dataclass
class Result:
    tool: str
    command: str
    images: int
    seconds: float
    ok: int
    failed: int
    faces: int
    groups: int | None = None          # None: not a dataset-level run
    smallest_group: int | None = None
    largest_group: int | None = None
    clustered_over: str | None = None
    excluded_faces: int | None = None
    pass1_aligned_now: int | None = None
    passes_skipped: bool | None = None   # a re-run of a finished run: neither pass ran
    plan_reused: bool | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


# ---------------------------------------------------------------- inputs


# ---------------------------------------------------------------- anoncli

def anonymize_command(args: list, input_dir: Path, out_dir: Path, labels: Path, workers: int) -> list[str]:
    args = [str(labels) if a is LABELS else a for a in args]
    return [sys.executable, "-m", "anoncli", "anonymize", str(input_dir), "-o", str(out_dir), *args,
            "-q", "-j", str(workers)]


def run_anoncli(label: str, command: list[str], out_dir: Path) -> Result:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some images failed (e.g. a ksame-select partition below k)
        raise RuntimeError(f"{shlex.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    with (out_dir / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if r["status"] == "ok"]
    result = Result(label, shlex.join(command[1:]), len(rows), seconds, len(ok),
                    sum(r["status"] == "error" for r in rows), sum(int(r["n_faces"]) for r in ok))
    dataset = json.loads((out_dir / "run.json").read_text()).get("dataset_level")
    if dataset:
        plan = dataset["plan"]
        result.groups, result.smallest_group = plan.get("groups"), plan.get("smallest_group")
        result.largest_group, result.clustered_over = plan.get("largest_group"), plan.get("clustered_over")
        result.excluded_faces = plan.get("excluded_faces")
        result.pass1_aligned_now = dataset["pass1"].get("aligned_now")
        result.passes_skipped = "skipped" in dataset["pass1"]
        result.plan_reused = bool(plan.get("reused"))
    return result


def run_all(images: list[Path], labels: Path, work: Path, workers: int) -> list[Result]:
    input_dir = link_images(images, work / "input")
    warm_up(images, labels, work / "warm-up", workers)
    results, commands = [], {}
    for label, folder, args in ROWS:
        out_dir = work / folder
        commands[label] = (anonymize_command(args, input_dir, out_dir, labels, workers), out_dir)
        results.append(run_anoncli(label, *commands[label]))
    results.append(run_anoncli(RERUN, *commands[RERUN_OF]))
    return results


def warm_up(images: list[Path], labels: Path, work: Path, workers: int) -> None:
    """Untimed tiny runs (blur and k-Same), so no row pays for a cold page cache or first .pyc compile."""
    warm_page_cache([*images, labels])
    few = link_images(images[: max(4, 2 * workers)], work / "input")
    for name, args in (("blur", ["--method", "blur"]), ("ksame", ["--method", "ksame-pixel", "--k", "2"])):
        run_anoncli(f"warm-up {name}", anonymize_command(args, few, work / name, labels, workers), work / name)


# ---------------------------------------------------------------- report

def result_rows(results: list[Result]) -> list[dict]:
    baseline = next(r for r in results if r.tool == BASELINE)
    return [{**asdict(r), "seconds": round(r.seconds, 3), "images_per_second": round(r.images_per_second, 2),
             "ratio_to_blur": round(r.images_per_second / baseline.images_per_second, 3)} for r in results]


def print_table(rows: list[dict], header: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    def shown(value) -> str:
        return "n/a" if value is None else str(value)

    print("\n".join(header))
    def passes(r: dict) -> str:
        if r["groups"] is None:
            return "n/a"
        return "skipped" if r["passes_skipped"] else f"{r['pass1_aligned_now']} aligned"

    console = Console(width=160)
    table = Table(title=f"anoncli k-Same (k={K}) vs blur (ratio = images/s over blur's images/s)",
                  caption="smallest / largest: group size in clustering units (identities or faces)")
    for name in ("tool", "images", "ok", "failed", "seconds", "images/s", "ratio to blur", "groups",
                 "smallest", "largest", "units", "pass 1"):
        table.add_column(name, justify="left" if name in ("tool", "units", "pass 1") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["tool"], str(r["images"]), str(r["ok"]), str(r["failed"]), f"{r['seconds']:.2f}",
                      f"{r['images_per_second']:.1f}", f"{r['ratio_to_blur']:.2f}x", shown(r["groups"]),
                      shown(r["smallest_group"]), shown(r["largest_group"]), shown(r["clustered_over"]),
                      passes(r))
    console.print(table)


# ---------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of images (default: %(default)s)")
    parser.add_argument("--labels", type=Path, help="labels CSV with image, identity and Male columns "
                                                    "(default: DATA/../labels.csv)")
    parser.add_argument("--limit", type=int, default=1000, help="first N images, sorted by name (default: 1000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for every run (default: all cores)")
    args = parser.parse_args()
    if args.labels is None:
        args.labels = args.data.parent / "labels.csv"
    if not args.labels.is_file():
        parser.error(f"no labels file {args.labels}; give --labels CSV")
    args.labels = args.labels.resolve()
    return args


def describe_run(args: argparse.Namespace, images: list[Path], command: str, load_before: float) -> dict:
    return {
        **machine_record(command, load_before),
        "images": f"first {len(images)} of {args.data} (sorted); labels {args.labels}; workers: {args.workers} for every run",
        "anoncli run": f"`python -m anoncli anonymize IMGDIR -o OUT --method NAME [--k {K} --labels CSV [--select Male]] "
                       f"-q -j {args.workers}`, wall clock of the whole command, defaults otherwise; groups from "
                       f"OUT/run.json dataset_level.plan; '{RERUN}' is the same command as '{RERUN_OF}' run again "
                       "on its finished output",
    }


def main() -> None:
    args = parse_args()
    images = first_images(args.data, args.limit)
    command = shlex.join([sys.executable, *sys.argv])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-ksame-") as tmp:
        results = run_all(images, args.labels, Path(tmp), args.workers)
    run = describe_run(args, images, command, load_before)
    rows = result_rows(results)
    print_table(rows, [f"{key}: {value}" for key, value in run.items()])
    context = {"date": datetime.now().isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
               "workers": args.workers, "image_count": len(images), "k": K, **run, "libraries": library_versions(("anoncli", "numpy", "opencv-python", "onnxruntime"))}
    print(f"results: {write_json('ksame', rows, context)}")


if __name__ == "__main__":
    main()
