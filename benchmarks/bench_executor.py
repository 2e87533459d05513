"""Throughput of `anoncli anonymize` on the local process pool and on Ray Data, same photos, same cores.

    python benchmarks/bench_executor.py [--data DIR] [--limit 800] [--workers W] [--method blur] [--repeats 2]

Each run is the whole command (start-up, a local Ray cluster started for the run, model loads,
workers, manifest), timed by the wall clock, alternating local and Ray `--repeats` times; the
ratio is Ray's images/s over the local pool's in the same repeat. The two outputs are checked to
hold the same manifest (less timings) and the same bytes.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

import pandas as pd

from bench_common import first_images, link_images, machine_record, warm_page_cache, write_json
from bench_obfuscation import DEFAULT_DATA, run_anoncli

EXECUTORS = (("local pool", []), ("ray", ["--executor", "ray"]))


def same_outputs(a: Path, b: Path) -> bool:
    ma = pd.read_csv(a / "manifest.csv", keep_default_na=False).drop(columns=["timings"])
    mb = pd.read_csv(b / "manifest.csv", keep_default_na=False).drop(columns=["timings"])
    return ma.equals(mb) and all((a / o).read_bytes() == (b / o).read_bytes() for o in ma["output"] if o)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=800)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--method", default="blur")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    images = first_images(args.data, args.limit)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        work = Path(tmp)
        input_dir = link_images(images, work / "input")
        warm_page_cache(images)
        for repeat in range(1, args.repeats + 1):
            outputs = {}
            for label, flags in EXECUTORS:
                result = run_anoncli(f"{label} {repeat}", ["--method", args.method, *flags], input_dir, work / label, args.workers)
                outputs[label] = work / label / f"anoncli-{label.replace(' ', '-')}-{repeat}"
                rows.append({"executor": label, "repeat": repeat, "images": result.images, "seconds": round(result.seconds, 2),
                             "images_per_second": round(result.images_per_second, 2), "faces": result.faces,
                             "peak_rss_mib": None if result.peak_rss_mib is None else round(result.peak_rss_mib)})
            local_rate = rows[-2]["images_per_second"]
            rows[-1]["ratio_to_local"] = round(rows[-1]["images_per_second"] / local_rate, 3)
            rows[-2]["ratio_to_local"] = 1.0
            rows[-1]["same_manifest_and_bytes"] = rows[-2]["same_manifest_and_bytes"] = same_outputs(*outputs.values())
    context = {**machine_record(shlex.join([sys.executable, *sys.argv]), load_before),
               "images": f"first {len(images)} of {args.data}; --method {args.method}; -j {args.workers} for both"}
    print("\n".join(f"{k}: {v}" for k, v in context.items()))
    print(f"{'executor':<12}{'repeat':>7}{'images':>8}{'seconds':>9}{'img/s':>8}{'ratio':>8}{'peak MiB':>10}  same outputs")
    for r in rows:
        print(f"{r['executor']:<12}{r['repeat']:>7}{r['images']:>8}{r['seconds']:>9.1f}{r['images_per_second']:>8.1f}"
              f"{r['ratio_to_local']:>7.2f}x{r['peak_rss_mib'] or 0:>10}  {r['same_manifest_and_bytes']}")
    print(f"written: {write_json('executor', rows, context)}")


if __name__ == "__main__":
    main()
