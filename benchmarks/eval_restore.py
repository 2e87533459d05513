"""Keyfiles and escrow restore on real faces: exactness, keyfile size per face, and cost.

    .venv/bin/python benchmarks/eval_restore.py [--data DIR] [--limit N] [--workers W]

For the first N images of DIR (sorted), as JPEG (as shipped) and as PNG (converted once,
untimed), it runs through the real CLI:
  1. `anonymize -m blur` (the baseline),
  2. `anonymize -m blur --keyfile K` (keys only), and
  3. `anonymize -m blur --keyfile K --escrow`, then `restore`,
and reports images/s of each (and the ratio to the baseline in the same run), keyfile bytes
per face, how many restored PNGs are pixel-identical to the inputs, how many JPEG face
regions equal the original decoded pixels before re-encoding, and the restored JPEGs' PSNR.
Writes the table to benchmarks/results/restore-<data name>.json.
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

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba-wild" / "images"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PASSPHRASE = "benchmark passphrase, not secret"


def cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise SystemExit(f"anoncli {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return seconds, r


def decoded(path: Path) -> np.ndarray:
    from anoncli.io.images import load_image

    return load_image(path, 10 ** 9).pixels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def face_regions_exact(src: Path, anon: Path, key: Path, restored: Path) -> tuple[int, int, int, int]:
    """(regions equal to the original decoded pixels before re-encoding, regions checked, regions
    equal in the restored files as written (a JPEG is re-encoded), largest difference there)."""
    from anoncli.io.images import load_image
    from anoncli.keys.keyfile import KeyfileReader
    from anoncli.keys.protect import Passphrase
    from anoncli.restore import _restorer

    reader = KeyfileReader(key, Passphrase(PASSPHRASE.encode()))
    restorer = _restorer(reader.seal, json.loads((anon / "run.json").read_text()), None)
    equal = total = equal_written = 0
    worst = 0
    for rel in reader.records:
        img = load_image((anon / rel).read_bytes(), 10 ** 9)
        meta, blobs, ring = reader.record(rel)
        restorer.restore(img, meta, blobs, ring)
        original, written = decoded(src / rel), decoded(restored / rel)
        for face in meta["faces"]:
            x0, y0, x1, y1 = face["escrow"]["box"]
            total += 1
            equal += int(np.array_equal(img.pixels[y0:y1, x0:x1], original[y0:y1, x0:x1]))
            difference = np.abs(written[y0:y1, x0:x1].astype(int) - original[y0:y1, x0:x1])
            equal_written += int(not difference.any())
            worst = max(worst, int(difference.max(initial=0)))
    return equal, total, equal_written, worst


def evaluate(src: Path, work: Path, workers: int, label: str) -> dict:
    names = sorted(p.name for p in src.iterdir())
    common = ["-q", "-j", workers]
    row: dict = {"dataset": label, "images": len(names)}
    cli("anonymize", src, "-o", work / "warm", *common)  # page cache, .pyc files
    t_base, _ = cli("anonymize", src, "-o", work / "base", *common)
    t_keys, _ = cli("anonymize", src, "-o", work / "keys", "--keyfile", work / "keys.key", *common)
    t_escrow, r = cli("anonymize", src, "-o", work / "escrow", "--keyfile", work / "escrow.key", "--escrow", *common)
    t_restore, rr = cli("restore", work / "escrow", "--keyfile", work / "escrow.key", "-o", work / "restored", "-q")
    manifest = pd.read_csv(work / "escrow" / "manifest.csv", keep_default_na=False)
    ok = manifest[manifest.status == "ok"]
    faces = int(ok.n_faces.sum())
    keys_faces = int(pd.read_csv(work / "keys" / "manifest.csv", keep_default_na=False).query("status == 'ok'").n_faces.sum())
    row.update({
        "anonymized": len(ok), "faces": faces,
        "baseline_img_s": len(names) / t_base,
        "keys_img_s": len(names) / t_keys, "keys_ratio": t_base / t_keys,
        "escrow_img_s": len(names) / t_escrow, "escrow_ratio": t_base / t_escrow,
        "restore_img_s": len(names) / t_restore,
        "keyfile_bytes_per_face": (work / "keys.key").stat().st_size / max(keys_faces, 1),
        "escrow_keyfile_bytes_per_face": (work / "escrow.key").stat().st_size / max(faces, 1),
        "summary_line": next((line for line in r.stdout.splitlines() if line.startswith("keyfile:")), ""),
    })
    restored = pd.read_csv(work / "restored" / "manifest.csv", keep_default_na=False)
    row["restored"] = int((restored.status == "restored").sum())
    values, identical = [], 0
    for rel in ok.input:
        a, b = decoded(src / rel), decoded(work / "restored" / rel)
        identical += int(np.array_equal(a, b))
        values.append(psnr(a, b))
    row["pixel_identical"] = identical
    finite = [v for v in values if np.isfinite(v)]
    row["psnr_min"] = min(values) if values else None
    row["psnr_mean_finite"] = float(np.mean(finite)) if finite else None
    row["regions_exact"], row["regions"], row["regions_exact_in_files"], row["regions_largest_difference_in_files"] = \
        face_regions_exact(src, work / "escrow", work / "escrow.key", work / "restored")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.limit]
    if not files:
        raise SystemExit(f"no images in {args.data}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jpeg, png = tmp / "jpeg", tmp / "png"
        jpeg.mkdir()
        png.mkdir()
        for f in files:
            (jpeg / f.name).write_bytes(f.read_bytes())
            Image.open(f).convert("RGB").save(png / (f.stem + ".png"))
        for label, src in (("JPEG", jpeg), ("PNG", png)):
            work = tmp / f"work-{label}"
            work.mkdir()
            rows.append(evaluate(src, work, args.workers, label))
    header = ("data", "imgs", "faces", "base img/s", "keys img/s (×)", "escrow img/s (×)", "restore img/s",
              "B/face keys", "KiB/face escrow", "identical", "regions exact before encoding", "regions exact in files (max diff)",
              "PSNR min dB")
    print(f"{args.data} first {len(files)} images, {args.workers} workers, {platform.processor() or platform.machine()}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in (
            r["dataset"], r["images"], r["faces"], f"{r['baseline_img_s']:.1f}",
            f"{r['keys_img_s']:.1f} ({r['keys_ratio']:.2f})", f"{r['escrow_img_s']:.1f} ({r['escrow_ratio']:.2f})",
            f"{r['restore_img_s']:.1f}", f"{r['keyfile_bytes_per_face']:.0f}",
            f"{r['escrow_keyfile_bytes_per_face'] / 1024:.1f}", f"{r['pixel_identical']}/{r['anonymized']}",
            f"{r['regions_exact']}/{r['regions']}",
            f"{r['regions_exact_in_files']}/{r['regions']} ({r['regions_largest_difference_in_files']})",
            "inf" if r["psnr_min"] == float("inf") else f"{r['psnr_min']:.2f}")))
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"restore-{args.data.parent.name if args.data.name == 'images' else args.data.name}.json"
    out.write_text(json.dumps({"data": str(args.data), "limit": args.limit, "workers": args.workers,
                               "rows": rows}, indent=2, default=float))
    print(f"written {out}")


if __name__ == "__main__":
    main()
