"""MTCNN detection of a run's faces: the thesis' detector (facenet-pytorch), for issue 22's "MTCNN detection
of anonymized faces ≥ 0.99", beside the originals.

    pip install --no-deps --target .mtcnn facenet-pytorch==2.6.0
    python benchmarks/eval_mtcnn.py RUN ORIGINALS [--site .mtcnn] [--threshold 0.9]

facenet-pytorch 2.6.0 declares torch<2.3, numpy<2 and Pillow<10.3, so it cannot be a dependency of this
project (`anoncli report` uses CenterFace instead); installed without its dependencies into a folder of
its own, its MTCNN (weights inside the wheel) runs on this project's torch and torchvision. For every face
of RUN's manifest, the best MTCNN probability of a detection overlapping its box (IoU ≥ 0.3) in the
anonymized image and in the original; a face counts as detected at --threshold (default 0.7, MTCNN's own
last-stage threshold: any box it returns), and the rate at 0.99 is printed beside it. Prints the rates; writes benchmarks/results/mtcnn-<RUN name>-DATE.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_record, write_json  # noqa: E402


def face_boxes(run: Path) -> list[tuple[str, list[float]]]:
    rows = pd.read_csv(run / "manifest.csv", keep_default_na=False)
    out = []
    for row in rows.itertuples():
        if row.status != "ok":
            continue
        for face in json.loads(row.faces or "[]"):
            if "warp" in face and not face.get("skipped"):
                out.append((row.input, face["box"]))
    return out


def best_probability(mtcnn, image: Path, box: list[float]) -> float:
    from anoncli.metrics.dlib_identity import box_iou

    boxes, probs = mtcnn.detect(Image.open(image).convert("RGB"))
    if boxes is None:
        return 0.0
    return max([float(p) for b, p in zip(boxes, probs) if box_iou(list(b), box) >= 0.3], default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("originals", type=Path)
    ap.add_argument("--site", type=Path, help="folder facenet-pytorch was installed into with --target")
    ap.add_argument("--threshold", type=float, default=0.7,
                    help="probability at which a face counts as detected (0.7: any box MTCNN returns at its own thresholds)")
    args = ap.parse_args()
    if args.site:
        sys.path.insert(0, str(args.site.resolve()))
    try:
        import torch
        from facenet_pytorch import MTCNN
    except ImportError as e:
        raise SystemExit(f"facenet-pytorch is not importable ({e}); pip install --no-deps --target .mtcnn facenet-pytorch==2.6.0")
    torch.set_num_threads(2)
    mtcnn = MTCNN(keep_all=True, device="cpu")
    faces = face_boxes(args.run)
    if not faces:
        raise SystemExit(f"no anonymized faces in {args.run}/manifest.csv")
    probs = {"anonymized": [], "originals": []}
    for name, box in faces:
        probs["anonymized"].append(best_probability(mtcnn, args.run / name, box))
        probs["originals"].append(best_probability(mtcnn, args.originals / name, box))
    row = {"run": str(args.run), "faces": len(faces), "threshold": args.threshold}
    for role, p in probs.items():
        p = np.asarray(p)
        row[f"detected {role}"] = round(float((p >= args.threshold).mean()), 4)
        row[f"detected {role} at 0.99"] = round(float((p >= 0.99).mean()), 4)
        row[f"median probability {role}"] = round(float(np.median(p)), 5)
    for k, v in row.items():
        print(f"{k:<34} {v}")
    run_json = args.run / "run.json"
    method = json.loads(run_json.read_text())["method"]["name"] if run_json.is_file() else args.run.name
    print(f"written {write_json(f'mtcnn-{method}', [row], machine_record(' '.join(sys.argv), 0.0))}")


if __name__ == "__main__":
    main()
