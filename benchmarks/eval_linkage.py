"""Can an attacker who knows the method link its faces to their owners? Identification ranked both
ways, nearest first and farthest first, on held-out CelebA crops.

    .venv/bin/python benchmarks/eval_linkage.py [--limit 100] [--method M ...] [--run METHOD=DIR ...]

For each method, the first ``--limit`` held-out crops are anonymized at its defaults (or ``--run``
names a finished run of exactly those images, e.g. one kept by ``eval_identity.py --keep-run``),
then every anonymized face (probe) is ranked against the other images' originals (never its own
photo) in three spaces:

- ``anoncli report``'s evaluators, dlib (Euclidean) and MobileFaceNet (cosine): its "rank-1,
  anonymized" and "rank-1, farthest first";
- r_id, dlib's descriptor centred and whitened with the generator's training statistics (what
  identitydp and idrotate perturb): cosine, nearest and farthest first.

idrotate turns each identity by θ (eq. 6.16), which leaves cos θ between the face's identity and
its owner's: −0.5 at level 9, a relation that nearest-first ranking misses and farthest-first
finds. Prints a table; writes benchmarks/results/linkage-<methods>-<date>.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import link_images, machine_record, write_json  # noqa: E402
from eval_identity import SHARED_WEIGHTS, held_out_images  # noqa: E402

PASSPHRASE = "linkage-benchmark-passphrase"


def anoncli(*args) -> None:
    env = {**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}
    r = subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"anoncli {' '.join(map(str, args[:3]))} failed:\n{r.stdout}\n{r.stderr}")


def r_id_embeddings(folder: Path, names: list[str], method) -> dict[str, np.ndarray]:
    """r_id of the largest detected face of each image, aligned as the identity methods align it."""
    from anoncli.faces.detectors import create_detector
    from anoncli.faces.stage import _face_steps
    from anoncli.io.images import load_image, rgb_view
    from anoncli.keys.derive import FaceKey

    detector = create_detector("retinaface-onnx", threshold=0.3)
    unused_key = FaceKey("linkage", bytes(32))
    out = {}
    for name in names:
        photo = load_image((folder / name).read_bytes(), 10 ** 9)
        detections = detector.detect([rgb_view(photo.pixels, photo.mode)])[0][:1]
        if detections:
            request = next(_face_steps(copy.deepcopy(photo), detections, method, lambda i: unused_key, False))
            vector = np.asarray(method.generator.encode(request.crop)[0], np.float64)
            out[name] = vector / np.linalg.norm(vector)
    return out


def r_id_identification(originals: dict, anonymized: dict, identity: dict) -> dict:
    from anoncli.metrics.privacy import chance_identification_rates, identification_rates, pairwise_distances

    names = [n for n in originals if n in anonymized]
    ids = [identity[n] for n in names]
    distances = pairwise_distances(np.stack([anonymized[n] for n in names]), np.stack([originals[n] for n in names]), "cosine")
    own = np.eye(len(names), dtype=bool)
    return {"rank1": identification_rates(distances, ids, ids, (1,), own)[1],
            "rank1_farthest": identification_rates(distances, ids, ids, (1,), own, farthest=True)[1],
            "chance_rank1": chance_identification_rates(ids, ids, (1,), own)[1], "probes": len(names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--method", action="append", help="default: identitydp, flowrot, idrotate")
    ap.add_argument("--run", action="append", default=[], metavar="METHOD=DIR", help="a finished run of these images to measure")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    runs = dict(given.split("=", 1) for given in args.run)
    methods = args.method or ["identitydp", "flowrot", "idrotate"]

    from anoncli.methods import build_method, get_method_spec

    images, labels = held_out_images("crops", args.limit)
    table = pd.read_csv(labels)
    identity = dict(zip(table["image"].astype(str), table["identity"].astype(str)))
    aligner = build_method("idrotate", get_method_spec("idrotate").resolve_params({}))   # its crops and r_id
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = link_images(images, tmp / "in")
        names = [p.name for p in images]
        originals = r_id_embeddings(src, names, aligner)
        for method in methods:
            run = Path(runs[method]) if method in runs else tmp / method
            if method not in runs:
                keys = ["--keyfile", tmp / f"{method}.key"] if get_method_spec(method).reversible else []
                anoncli("anonymize", src, "-o", run, "--method", method, *keys, "-q", "-j", args.workers)
            anoncli("report", run, "--original", src, "--labels", labels, "--evaluator", "dlib", "--evaluator", "mobilefacenet",
                    "--weights-dir", SHARED_WEIGHTS, "-o", tmp / f"report-{method}", "-q", "-j", args.workers)
            privacy = json.loads((tmp / f"report-{method}" / "report.json").read_text())["privacy"]
            row = {"method": method, "run": str(run) if method in runs else "made here, defaults"}
            for evaluator in ("dlib", "mobilefacenet"):
                ident = privacy[evaluator]["identification"]
                row[evaluator] = {k: ident[k] for k in ("rank1", "rank1_farthest", "chance_rank1", "probes")}
            row["r_id"] = r_id_identification(originals, r_id_embeddings(run, names, aligner), identity)
            rows.append(row)
    print(f"{'method':<12} {'space':<14} {'rank-1 nearest':>15} {'rank-1 farthest':>16} {'chance':>7} {'probes':>7}")
    for row in rows:
        for space in ("dlib", "mobilefacenet", "r_id"):
            m = row[space]
            print(f"{row['method']:<12} {space:<14} {m['rank1']:>15.3f} {m['rank1_farthest']:>16.3f} {m['chance_rank1']:>7.3f} {m['probes']:>7}")
    print(f"written {write_json('linkage-' + '-'.join(methods), rows, machine_record(' '.join(sys.argv), load_before))}")


if __name__ == "__main__":
    main()
