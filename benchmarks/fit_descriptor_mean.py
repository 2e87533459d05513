"""The mean dlib face descriptor of training faces, which FSAP's identity loss centres on
(``anoncli/identity/centres.py``): dlib's 128-d vectors share a large common part (two strangers
at cosine 0.83), so 1 − cos of raw vectors never reaches the thesis' τ = 0.8; centred, strangers
sit near cosine 0, as the thesis' ArcFace vectors do.

    python benchmarks/fit_descriptor_mean.py [--limit 1000]

Faces: CelebA crops of the training identities (identity mod 10 != 0; the evaluations use the
others), main face by retinaface-onnx, aligned as FSAP's 256 px crop on the Glow's template, cut
to dlib's chip by FSAP's own sampler. Prints the constant to paste, and the mean cosine of
strangers before and after centring.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "celeba-crops"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=1000)
    args = ap.parse_args()
    import cv2
    import torch
    from PIL import Image

    from anoncli.faces.align import alignment_matrix
    from anoncli.faces.detectors import create_detector
    from anoncli.methods import build_method
    from anoncli.train.face_crops import is_held_out

    torch.set_num_threads(2)
    labels = pd.read_csv(DATA / "labels.csv", usecols=["image", "identity"])
    labels = labels[[not is_held_out("celeba-crops", n, str(i)) for n, i in zip(labels["image"], labels["identity"])]]
    labels = labels.sort_values("image").head(args.limit)
    method = build_method("fsap", {"perceptual": "offline"}, str(REPO / "weights"))
    detector = create_detector("retinaface-onnx", weights_dir=str(REPO / "weights"))
    vectors, identities = [], []
    for name, identity in zip(labels["image"], labels["identity"]):
        rgb = np.asarray(Image.open(DATA / "images" / name).convert("RGB"))
        found = detector.detect([rgb])[0]
        if not found:
            continue
        m = alignment_matrix(max(found, key=lambda d: d.score).landmarks, method.resolution, method.margin)
        crop = cv2.warpAffine(rgb, m, (method.resolution, method.resolution), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        with torch.no_grad():
            vectors.append(method.embed(method.crop_tensor(crop))[0].numpy())
        identities.append(identity)
    e, ids = np.array(vectors, np.float64), np.array(identities)
    mean = e.mean(0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(e), 4000), rng.integers(0, len(e), 4000)
    strangers = ids[a] != ids[b]

    def cos(x, y):
        return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)

    print(f"{len(e)} faces of {len(set(ids))} identities; strangers' mean cosine raw "
          f"{cos(e[a], e[b])[strangers].mean():.3f}, centred {cos(e[a] - mean, e[b] - mean)[strangers].mean():.3f}")
    print("DLIB_DESCRIPTOR_MEAN = (" + ", ".join(f"{v:.5f}" for v in mean) + ")")


if __name__ == "__main__":
    main()
