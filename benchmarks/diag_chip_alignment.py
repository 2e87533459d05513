"""Which chip the identity methods' r_id reads against the chip restore's acceptance reads (issue 20 point 2).

    .venv/bin/python benchmarks/diag_chip_alignment.py RUN ORIGINALS RESTORED [--weights-dir DIR]

RUN: a kept idrotate run (``eval_identity.py --keep-run``), ORIGINALS its input folder, RESTORED its
``anoncli restore`` output. For every face of RUN's journal, dlib's distance between the original and
the restored face measured three ways:

- template chip, 128-px crop: the chip the identity methods' r_id reads, cut from the method's crop
  by the fixed similarity of ``anoncli.identity.representation`` (mean RetinaFace points on dlib chips);
- landmark chip, 128-px crop: dlib's own chip (``get_face_chip`` at dlib's 5-point landmarks of each
  photo), cut from the same 128-px crops;
- landmark chip, photo: the same at the photo's resolution, as ``anoncli report`` measures restore.

Also the original's own descriptor distance between the template and the landmark chip of its crop.
Prints means, shares within dlib's 0.5 and correlations; writes
``benchmarks/results/chip-alignment-DATE.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from bench_common import machine_record, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("originals", type=Path)
    ap.add_argument("restored", type=Path)
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch

    from anoncli.faces.blend import crop_bounds_in_image
    from anoncli.faces.dlib_chip import get_face_chip
    from anoncli.faces.stage import extract_crop
    from anoncli.io.images import load_image
    from anoncli.methods import build_method, get_method_spec
    from anoncli.metrics.dlib_port_identity import DlibPortIdentity
    from anoncli.models.dlib_resnet import chips_to_tensor
    from anoncli.models.tensors import to_tensor

    torch.set_num_threads(args.threads)
    method = build_method("idrotate", get_method_spec("idrotate").resolve_params({}), args.weights_dir)
    dlib = DlibPortIdentity(args.weights_dir)
    size = method.resolution
    records = [json.loads(line) for line in (args.run / ".anoncli" / "journal.jsonl").open()]
    records = sorted((r for r in records if r.get("faces")), key=lambda r: r["input"])

    def into_crop(m, points):
        return points @ m[:, :2].T + m[:, 2]

    def uint8(crop):
        return np.clip(np.rint(crop), 0, 255).astype(np.uint8)

    rows = []
    for record in records:
        original = load_image((args.originals / record["input"]).read_bytes(), 10 ** 9)
        restored = load_image((args.restored / record["input"]).read_bytes(), 10 ** 9)
        for face in record["faces"]:
            m = np.asarray(face["warp"], np.float64)
            roi = crop_bounds_in_image(m, size, original.height, original.width)
            crops = [extract_crop(image, m, size, roi) for image in (original, restored)]
            marks = [dlib.landmarks(image.pixels[..., :3], face["box"]) for image in (original, restored)]
            with torch.no_grad():
                template = method.generator.rep.descriptors(to_tensor(np.stack(crops))).double().numpy()
                landmark_crop = dlib.encoder(chips_to_tensor(np.stack(
                    [get_face_chip(uint8(c), into_crop(m, p)) for c, p in zip(crops, marks)]))).double().numpy()
                landmark_photo = dlib.encoder(chips_to_tensor(np.stack(
                    [get_face_chip(image.pixels[..., :3], p) for image, p in zip((original, restored), marks)]))).double().numpy()
            rows.append({"input": record["input"], "crop_px_per_photo_px": round(float(np.sqrt(abs(np.linalg.det(m[:, :2])))), 3),
                         "template_crop": float(np.linalg.norm(template[0] - template[1])),
                         "landmark_crop": float(np.linalg.norm(landmark_crop[0] - landmark_crop[1])),
                         "landmark_photo": float(np.linalg.norm(landmark_photo[0] - landmark_photo[1])),
                         "original_template_vs_landmark_crop": float(np.linalg.norm(template[0] - landmark_crop[0]))})
    ways = ("template_crop", "landmark_crop", "landmark_photo")
    table = np.array([[row[w] for w in ways] for row in rows])
    summary = {f"{w} mean": round(float(table[:, i].mean()), 3) for i, w in enumerate(ways)}
    summary.update({f"{w} within 0.5": int((table[:, i] < 0.5).sum()) for i, w in enumerate(ways)})
    summary.update({f"{w} correlation with landmark_photo": round(float(np.corrcoef(table[:, i], table[:, 2])[0, 1]), 3)
                    for i, w in enumerate(ways[:2])})
    summary["original template vs landmark chip, mean"] = round(float(np.mean([r["original_template_vs_landmark_crop"] for r in rows])), 3)
    print(f"{len(rows)} faces")
    for key, value in summary.items():
        print(f"{key:<48} {value}")
    context = machine_record(" ".join(sys.argv), load_before)
    print(f"written {write_json('chip-alignment', [summary, *rows], context)}")


if __name__ == "__main__":
    main()
