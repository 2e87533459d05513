"""Per-face speed of flowrot's model part, teacher against the distilled student (issue 7, point 4).

    .venv/bin/python benchmarks/bench_flow_student.py [--fresh] [--faces N] [--threads T]

Each face, one at a time as the pipeline does it: encode the aligned 64 px crop, turn the latent by
the face's orthogonal matrix, decode at λ = 0.5 (anonymize), then encode that fake face, turn back
and decode (restore). The teacher is the committed Glow; the student is the committed one, or with
--fresh a freshly initialised student of the same architecture (its speed does not depend on its
weights, only its fake faces do). Faces: held-out CelebA crops of `../shared/data`. Prints faces/s of each and the
student's speed-up; writes benchmarks/results/flow-student-speed-<date>.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, library_versions, machine_record, write_json  # noqa: E402


def held_out_crops(n: int, resolution: int, margin: float) -> np.ndarray:
    import cv2
    import pandas as pd
    from PIL import Image

    from anoncli.faces.align import alignment_matrix
    from anoncli.faces.detectors import create_detector
    from anoncli.train.face_crops import is_held_out

    folder = REPO.parent / "shared" / "data" / "celeba-crops"
    if not (folder / "labels.csv").is_file():
        raise SystemExit(f"{folder} is missing; is ../shared present?")
    table = pd.read_csv(folder / "labels.csv")
    names = [m for m, i in zip(table["image"], table["identity"]) if is_held_out("celeba-crops", m, str(i))]
    detector = create_detector("retinaface-onnx")
    crops = []
    for name in names:
        rgb = np.asarray(Image.open(folder / "images" / name).convert("RGB"))
        dets = detector.detect([rgb])[0]
        if dets:
            m = alignment_matrix(max(dets, key=lambda d: d.size).landmarks, resolution, margin)
            crops.append(cv2.warpAffine(rgb, m, (resolution, resolution), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        if len(crops) == n:
            break
    return np.stack(crops).astype(np.float32)


def time_model(encode, decode, crops: np.ndarray, m: int) -> float:
    """Seconds per face for anonymize + restore, each face alone."""
    from anoncli.methods.flowrot import decrypt_latent, encrypt_latent, face_rotation

    t0 = time.perf_counter()
    for crop in crops:
        a = face_rotation(os.urandom(32), m)
        fake = decode(encrypt_latent(encode(crop), a), 0.5)
        decode(decrypt_latent([e / 0.5 for e in encode(fake)], a), 1.0)
    return (time.perf_counter() - t0) / len(crops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fresh", action="store_true", help="time a freshly initialised student instead of the registered one")
    ap.add_argument("--faces", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import torch

    from anoncli.flow.model import FlowModel
    from anoncli.flow.student import FlowStudentModel
    from anoncli.models.flow_student import FlowStudent, StudentConfig
    from anoncli.weights import WeightsMissing

    torch.set_num_threads(args.threads)
    teacher = FlowModel()
    if args.fresh:
        student = FlowStudentModel.from_network(FlowStudent(StudentConfig.for_teacher(teacher.net)), teacher.margin)
        source = "fresh weights"
    else:
        try:
            student, source = FlowStudentModel(), "the registered student (weights/)"
        except WeightsMissing as e:
            raise SystemExit(f"{e}\n(or time the architecture alone with --fresh)")
    student_encode, student_decode = student.encode, student.decode

    crops = held_out_crops(args.faces, teacher.resolution, teacher.margin)
    load_before = os.getloadavg()[0]
    time_model(teacher.encode, teacher.decode, crops[:3], teacher.resolution)          # warm-up
    time_model(student_encode, student_decode, crops[:3], teacher.resolution)
    rows = []
    for label, enc, dec, params in (("teacher (Glow)", teacher.encode, teacher.decode, teacher.net.parameters()),
                                    ("student", student_encode, student_decode, student.net.parameters())):
        seconds = time_model(enc, dec, crops, teacher.resolution)
        rows.append({"model": label, "faces": len(crops), "ms_per_face": round(seconds * 1000, 2),
                     "faces_per_second": round(1 / seconds, 2), "parameters": sum(p.numel() for p in params)})
    speedup = rows[1]["faces_per_second"] / rows[0]["faces_per_second"]
    for r in rows:
        r["ratio_to_teacher"] = round(r["faces_per_second"] / rows[0]["faces_per_second"], 3)
    print(f"{len(crops)} held-out CelebA faces, {teacher.resolution} px, {args.threads} threads; student: {source}")
    print(f"{'model':<16} {'params':>10} {'ms/face':>8} {'faces/s':>8} {'ratio to teacher':>16}")
    for r in rows:
        print(f"{r['model']:<16} {r['parameters']:>10,} {r['ms_per_face']:>8.1f} {r['faces_per_second']:>8.2f} {r['ratio_to_teacher']:>16.3f}")
    context = {**machine_record(" ".join(sys.argv), load_before), "libraries": library_versions(("torch", "numpy")),
               "student": source, "speedup": round(speedup, 3)}
    print(f"written {write_json('flow-student-speed', rows, context)}")


if __name__ == "__main__":
    main()
