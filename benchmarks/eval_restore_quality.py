"""How far the round trip `anoncli restore` writes for an approximate restore is from the truth
(issue 20 point 4), through the real CLI:

    .venv/bin/python benchmarks/eval_restore_quality.py [--limit 30] [--offset 0] [--weights-dir DIR]

1. `anoncli anonymize IN -o OUT --method flowrot --model student --output-latent --keyfile K` on held-out
   CelebA crops (identities the trainers hold out, as in eval_identity.py);
2. `anoncli restore OUT --keyfile K -o RESTORED` (status ``approximate``, column ``round_trip``);
3. per image, the true PSNR of the restored face against the original: both photos sampled through
   the face's aligned crop (the keyfile's warp), inside the method's blend mask.

Prints both per image, their medians, mean difference and correlation; writes
benchmarks/results/restore-quality-flowrot-student-<date>.json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import link_images, machine_record, write_json  # noqa: E402
from eval_identity import PASSPHRASE, held_out_images  # noqa: E402


def cli(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise SystemExit(f"anoncli {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r


def true_psnr(out: Path, key: Path, restored: Path, src: Path, weights_dir) -> dict[str, float]:
    """Per single-face image: PSNR of the restored face against the original in the aligned crop."""
    from anoncli.faces.align import apply_affine
    from anoncli.faces.blend import crop_bounds_in_image
    from anoncli.faces.stage import extract_crop
    from anoncli.io.images import load_image
    from anoncli.keys.keyfile import KeyfileReader
    from anoncli.keys.protect import Passphrase
    from anoncli.methods import build_method

    reader = KeyfileReader(key, Passphrase(PASSPHRASE.encode()))
    method = build_method(reader.seal["method"], reader.seal["params"], weights_dir)
    found = {}
    for row in pd.read_csv(out / "manifest.csv", keep_default_na=False).to_dict("records"):
        if row["status"] != "ok" or int(row["n_faces"]) != 1:
            continue
        meta, _, _ = reader.record(row["input"])
        m = np.asarray(meta["faces"][0]["warp"], np.float64)
        original = load_image((src / row["input"]).read_bytes(), 10 ** 9)
        back = load_image((restored / row["input"]).read_bytes(), 10 ** 9)
        roi = crop_bounds_in_image(m, method.resolution, original.height, original.width)
        if roi is None:
            continue
        a, b = (extract_crop(img, m, method.resolution, roi).astype(np.float64) for img in (original, back))
        landmarks = apply_affine(m, np.asarray(meta["faces"][0]["landmarks"], np.float64))
        weights = np.broadcast_to(method.blend_mask(landmarks)[..., None], a.shape)
        mse = float((weights * (a - b) ** 2).sum() / weights.sum())
        found[row["input"]] = 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--weights-dir", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    images, _ = held_out_images("crops", args.limit, args.offset)
    wdir = ["--weights-dir", args.weights_dir] if args.weights_dir else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, out, key, restored = link_images(images, tmp / "in"), tmp / "out", tmp / "run.key", tmp / "restored"
        cli("anonymize", src, "-o", out, "--method", "flowrot", "--model", "student", "--output-latent", "--keyfile", key,
            "--kdf-memory", "8", "--kdf-iterations", "1", *wdir, "-q", "-j", "1")
        cli("restore", out, "--keyfile", key, "-o", restored, *wdir, "-q")
        manifest = pd.read_csv(restored / "manifest.csv", keep_default_na=False).set_index("input")
        truth = true_psnr(out, key, restored, src, str(args.weights_dir) if args.weights_dir else None)
    table = pd.DataFrame([{"input": k, "status": manifest.loc[k, "status"], "round_trip_db": float(manifest.loc[k, "round_trip"]),
                           "true_psnr_db": v} for k, v in truth.items()])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    summary = {"images": len(table), "statuses": table["status"].value_counts().to_dict(),
               "round_trip median dB": round(float(table["round_trip_db"].median()), 2),
               "true PSNR median dB": round(float(table["true_psnr_db"].median()), 2),
               "mean(round_trip - true) dB": round(float((table["round_trip_db"] - table["true_psnr_db"]).mean()), 2),
               "correlation": round(float(np.corrcoef(table["round_trip_db"], table["true_psnr_db"])[0, 1]), 3)}
    for k, v in summary.items():
        print(f"{k:<28}  {v}")
    path = write_json("restore-quality-flowrot-student", [summary, *table.round(3).to_dict("records")],
                      machine_record(" ".join(sys.argv), load_before))
    print(f"written {path}")


if __name__ == "__main__":
    main()
