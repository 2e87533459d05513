"""Attribute preservation of an anonymized run (issue 23 point 3; thesis Table 6.1: 82.7 % on the anonymized
faces against 85.6 % on the originals): the accuracy of the attribute classifier trained here (CelebA's 40
attributes; `weights/attributes_celeba_64.safetensors`) against the originals' labels, on each image's
largest face, anonymized and original, aligned by the manifest's warp.

    .venv/bin/python benchmarks/eval_attributes.py RUN_DIR ORIGINALS_DIR [--labels CSV]

Prints the two mean accuracies (over faces and attributes) and their difference; writes
benchmarks/results/attributes-<method>-<date>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from bench_common import REPO, machine_record, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("originals", type=Path)
    ap.add_argument("--labels", type=Path, default=REPO.parent / "shared" / "data" / "celeba-crops" / "labels.csv")
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "attributes_celeba_64.safetensors")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import cv2
    import pandas as pd
    import torch
    from PIL import Image

    from anoncli.io.labels import read_labels
    from anoncli.models.attributes import CELEBA_ATTRIBUTES, load_attribute_net

    net, margin, _ = load_attribute_net(args.weights)
    run = json.loads((args.run / "run.json").read_text())
    params = run["config"]["params"]
    crop = int(params.get("crop_size") or params.get("resolution") or 256)
    manifest = pd.read_csv(args.run / "manifest.csv", keep_default_na=False)
    labels = read_labels(args.labels)
    side = net.config.resolution

    def aligned(path: Path, warp) -> np.ndarray:
        rgb = np.asarray(Image.open(path).convert("RGB"), np.float32)
        face = cv2.warpAffine(rgb, np.asarray(warp, np.float64), (crop, crop), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)

    truth, anonymized, original = [], [], []
    for row in manifest.itertuples():
        if row.status != "ok":
            continue
        label = labels.row_for(row.input)
        faces = json.loads(row.faces)
        if label is None or not faces:
            continue
        face = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        truth.append([float(label[name]) > 0 for name in CELEBA_ATTRIBUTES])
        anonymized.append(aligned(args.run / row.input, face["warp"]))
        original.append(aligned(args.originals / row.input, face["warp"]))
    truth = np.array(truth)

    def accuracy(faces: list[np.ndarray]) -> np.ndarray:
        x = torch.as_tensor(np.stack(faces)).permute(0, 3, 1, 2) / 127.5 - 1
        with torch.no_grad():
            predicted = torch.cat([net(x[i:i + 64]) for i in range(0, len(x), 64)]).numpy() > 0
        return (predicted == truth).mean(axis=0)

    per_attribute = {"anonymized": accuracy(anonymized), "original": accuracy(original)}
    row = {"run": str(args.run), "method": run["config"]["method"], "faces": len(truth),
           "accuracy anonymized": round(float(per_attribute["anonymized"].mean()), 4),
           "accuracy original": round(float(per_attribute["original"].mean()), 4)}
    row["difference (points)"] = round(100 * (row["accuracy anonymized"] - row["accuracy original"]), 2)
    row["per attribute"] = {name: [round(float(a), 3), round(float(o), 3)] for name, a, o in
                            zip(CELEBA_ATTRIBUTES, per_attribute["anonymized"], per_attribute["original"])}
    for k, v in row.items():
        if k != "per attribute":
            print(f"{k:24s} {v}")
    path = write_json(f"attributes-{row['method']}", [row], machine_record(" ".join(sys.argv), load_before))
    print("written", path)


if __name__ == "__main__":
    main()
