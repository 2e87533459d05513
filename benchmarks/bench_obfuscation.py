"""Speed and face recall of anoncli's obfuscation methods against deface, same images, same cores.

    .venv/bin/python benchmarks/bench_obfuscation.py [--data DIR] [--limit N] [--workers W]

anoncli runs through its real CLI as a subprocess; the wall clock covers the whole command
(start-up, model load, workers, manifest). deface is the baseline: its per-image CLI path
(read, CenterFace at the CLI's default threshold, blur, write) runs in W spawned processes
over disjoint shards, timed from spawning the first to the last one finishing. The stock
`deface` command, W copies over the same shards, is timed too as a check on that path.
Face recall = share of images with at least one face anonymized.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import multiprocessing as mp
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bench_common import REPO, first_images, library_versions, link_images, machine_record, warm_page_cache, write_json

DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba-wild" / "images"
DEFACE_CLI = Path(sys.executable).with_name("deface")

# (row label, `anoncli anonymize` arguments)
ANONCLI_METHODS = (
    ("blur", ["--method", "blur"]),
    ("blur kind=downsample", ["--method", "blur", "--kind", "downsample"]),
    ("pixelate", ["--method", "pixelate"]),
    ("mask", ["--method", "mask"]),
    ("noise", ["--method", "noise"]),
)
BASELINE = "deface"
DEFACE_CLI_ROW = "deface CLI (check)"


@dataclass
class Result:
    tool: str
    images: int
    seconds: float
    images_with_face: int | None  # None: not measured
    faces: int | None
    peak_rss_mib: float | None = None   # the largest process of the command (anoncli runs only)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    @property
    def recall(self) -> float | None:
        return None if self.images_with_face is None else self.images_with_face / self.images


# ---------------------------------------------------------------- inputs


def shards(images: list, n: int) -> list[list]:
    return [s for s in (images[i::n] for i in range(n)) if s]


# ---------------------------------------------------------------- anoncli

def run_anoncli(label: str, args: list[str], input_dir: Path, work: Path, workers: int) -> Result:
    out_dir = work / f"anoncli-{label.replace(' ', '-').replace('=', '-')}"
    command = [sys.executable, "-m", "anoncli", "anonymize", str(input_dir), "-o", str(out_dir), *args,
               "-q", "-j", str(workers)]
    # A wrapper process reports the largest resident set among its waited-for descendants (the run
    # and its workers): ru_maxrss of RUSAGE_CHILDREN, KiB on Linux.
    wrapper = [sys.executable, "-c", "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"]
    start = time.perf_counter()
    done = subprocess.run(wrapper + command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    peak = next((int(line.split()[1]) / 1024 for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KIB")), None)
    return Result(f"anoncli {label}", *manifest_counts(out_dir / "manifest.csv", seconds), peak_rss_mib=peak)


def manifest_counts(manifest: Path, seconds: float) -> tuple[int, float, int, int]:
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    anonymized = [int(r["n_faces"]) for r in rows if r["status"] == "ok" and int(r["n_faces"]) > 0]
    return len(rows), seconds, len(anonymized), sum(anonymized)


# ---------------------------------------------------------------- deface

def deface_cli_defaults() -> argparse.Namespace:
    """deface's own argument parser with no flags: its defaults, read rather than copied."""
    from deface import deface as deface_cli

    argv, sys.argv = sys.argv, ["deface", "input.jpg"]
    try:
        return deface_cli.parse_cli_args()
    finally:
        sys.argv = argv


def load_centerface(args: argparse.Namespace):
    """The detector as deface's CLI builds it; backend "auto" is onnxrt only if both onnx and onnxruntime import."""
    from deface.centerface import CenterFace

    with contextlib.redirect_stdout(io.StringIO()):  # "Running on ...ExecutionProvider."
        return CenterFace(in_shape=args.scale, backend=args.backend, override_execution_provider=args.execution_provider)


def deface_shard(paths: list[str], out_dir: str) -> list[int]:
    """deface's CLI per-image path (deface.image_detect) over one shard; faces found per image."""
    import imageio
    import imageio.v2 as iio
    from deface import deface as deface_cli

    args = deface_cli_defaults()
    centerface = load_centerface(args)
    faces = []
    for path in paths:
        frame = iio.imread(path)
        dets, _ = centerface(frame, threshold=args.thresh)
        deface_cli.anonymize_frame(dets, frame, mask_scale=args.mask_scale, replacewith=args.replacewith,
                                   ellipse=not args.boxes, draw_scores=args.draw_scores, replaceimg=None,
                                   mosaicsize=args.mosaicsize)
        stem, ext = os.path.splitext(os.path.basename(path))
        imageio.imsave(os.path.join(out_dir, f"{stem}_anonymized{ext}"), frame)
        faces.append(len(dets))
    return faces


def run_deface_api(images: list[Path], work: Path, workers: int) -> Result:
    out_dir = work / "deface-api"
    out_dir.mkdir()
    parts = shards([str(p) for p in images], workers)
    start = time.perf_counter()
    with ProcessPoolExecutor(len(parts), mp_context=mp.get_context("spawn")) as pool:
        faces = [n for part in pool.map(deface_shard, parts, [str(out_dir)] * len(parts)) for n in part]
    seconds = time.perf_counter() - start
    return Result(BASELINE, len(faces), seconds, sum(n > 0 for n in faces), sum(faces))


def run_deface_cli(images: list[Path], work: Path, workers: int) -> Result:
    """W stock `deface DIR` commands at once, each on a folder of links to its shard (it writes *_anonymized next to them)."""
    folders = [link_images(part, work / f"deface-cli-{i}") for i, part in enumerate(shards(images, workers))]
    start = time.perf_counter()
    procs = [subprocess.Popen([str(DEFACE_CLI), str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for folder in folders]
    errors = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - start
    for proc, err in zip(procs, errors):
        if proc.returncode != 0:
            raise RuntimeError(f"deface exited {proc.returncode}:\n{err}")
    written = sum(1 for f in folders for p in f.iterdir() if p.stem.endswith("_anonymized"))
    if written != len(images):
        raise RuntimeError(f"deface CLI wrote {written} of {len(images)} images")
    return Result(DEFACE_CLI_ROW, len(images), seconds, None, None)


def deface_description(workers: int) -> str:
    from deface import __version__

    args = deface_cli_defaults()
    backend = load_centerface(args).backend
    return (f"deface {__version__}: its CLI's per-image path (imageio read, CenterFace backend={args.backend} -> "
            f"{backend}, thresh={args.thresh}, scale={args.scale} (full resolution), blur ellipse "
            f"mask-scale={args.mask_scale}, imageio write) in {workers} spawned processes over disjoint shards "
            f"(images i::{workers}); wall clock from spawn to last shard done, incl. imports and model load; "
            f"the backend's thread count left at its default. "
            f"'{DEFACE_CLI_ROW}': {workers} stock `deface SHARD_DIR` commands in parallel (timing only).")


# ---------------------------------------------------------------- report

def ratio(result: Result, baseline: Result) -> float:
    """Throughput relative to deface: above 1 is faster."""
    return result.images_per_second / baseline.images_per_second


def result_rows(results: list[Result]) -> list[dict]:
    baseline = next(r for r in results if r.tool == BASELINE)
    return [{**asdict(r), "seconds": round(r.seconds, 3), "images_per_second": round(r.images_per_second, 2),
             "ratio_to_deface": round(ratio(r, baseline), 3),
             "face_recall": None if r.recall is None else round(r.recall, 4)} for r in results]


def print_table(rows: list[dict], header: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    print("\n".join(header))
    console = Console(width=120)
    table = Table(title="anoncli obfuscation vs deface (ratio = images/s over deface's images/s)")
    for name in ("tool", "images", "seconds", "images/s", "ratio to deface", "face recall", "faces", "peak RSS MiB"):
        table.add_column(name, justify="left" if name == "tool" else "right")
    for r in rows:
        recall = "n/a" if r["face_recall"] is None else f"{r['face_recall']:.1%}"
        faces = "n/a" if r["faces"] is None else str(r["faces"])
        peak = "n/a" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        table.add_row(r["tool"], str(r["images"]), f"{r['seconds']:.2f}", f"{r['images_per_second']:.1f}",
                      f"{r['ratio_to_deface']:.2f}x", recall, faces, peak)
    console.print(table)


# ---------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of images (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=300, help="first N images, sorted by name (default: 300)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for every tool (default: all cores)")
    return parser.parse_args()


def run_all(images: list[Path], work: Path, workers: int) -> list[Result]:
    input_dir = link_images(images, work / "input")
    warm_up(images, work / "warm-up", workers)
    results = [run_deface_api(images, work, workers), run_deface_cli(images, work, workers)]
    results += [run_anoncli(label, args, input_dir, work, workers) for label, args in ANONCLI_METHODS]
    return results


def warm_up(images: list[Path], work: Path, workers: int) -> None:
    """Untimed tiny runs of both tools, so neither pays for a cold page cache or first .pyc compile."""
    warm_page_cache(images)
    few = images[: 2 * workers]
    link_images(few, work / "input")
    run_deface_api(few, work, workers)
    run_anoncli("warm-up", ["--method", "blur"], work / "input", work, workers)


def describe_run(args: argparse.Namespace, images: list[Path], command: str, load_before: float) -> dict:
    return {
        **machine_record(command, load_before),
        "images": f"first {len(images)} of {args.data} (sorted); workers: {args.workers} for every tool",
        "anoncli run": f"`python -m anoncli anonymize IMGDIR -o OUT --method NAME [--kind downsample] -q -j {args.workers}`, "
                       "wall clock of the whole command; recall from OUT/manifest.csv (status ok, n_faces > 0); "
                       "defaults otherwise",
        "deface run": deface_description(args.workers),
    }


def main() -> None:
    args = parse_args()
    images = first_images(args.data, args.limit)
    command = shlex.join([sys.executable, *sys.argv])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-obfuscation-") as tmp:
        results = run_all(images, Path(tmp), args.workers)
    run = describe_run(args, images, command, load_before)
    rows = result_rows(results)
    print_table(rows, [f"{key}: {value}" for key, value in run.items()])
    context = {"date": datetime.now().isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
               "workers": args.workers, "image_count": len(images), **run, "libraries": library_versions(("anoncli", "deface", "onnxruntime", "opencv-python", "numpy"))}
    print(f"results: {write_json('obfuscation', rows, context)}")


if __name__ == "__main__":
    main()
