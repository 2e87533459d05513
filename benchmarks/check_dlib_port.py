"""Acceptance check of the PyTorch port of dlib's face recognition ResNet
(anoncli/models/dlib_resnet.py; King, dlib face recognition ResNet, dnn_face_recognition_ex.cpp)
against dlib's own ``face_recognition_model_v1.compute_face_descriptor`` on the same chips.

Chips are made the way dlib makes them: the first N photos (sorted by name) in which dlib's HOG
detector finds a face (upsampled once), the largest face, the 5-point shape predictor and
``dlib.get_face_chip(img, shape, size=150, padding=0.25)``. It prints the largest and mean
absolute descriptor difference, the largest change of a pairwise descriptor distance, and the
time per face (best of two runs, wall and CPU time) of dlib, one chip per call and the whole
list in one call, and of the port, one chip per call and in batches of 16, on one thread and on
torch's default thread count; and writes them as JSON to
``benchmarks/results/dlib-port-<data name>.json``.

    .venv/bin/python benchmarks/check_dlib_port.py [--data DIR] [--n 200]

DIR is a data set folder holding ``images/`` (or an images folder itself); by default the
shared ``celeba-crops``. Exits 1 when the largest absolute difference is 1e-4 or more.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import dlib
import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anoncli.identity.encoders import load_identity_encoder  # noqa: E402
from anoncli.models.dlib_resnet import chips_to_tensor  # noqa: E402
from anoncli.weights import resolve_weights  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "celeba-crops"
RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE = 1e-4
BATCH = 16  # dlib's python binding runs its net in mini-batches of 16 too


def images_folder(data: Path) -> Path:
    return data / "images" if (data / "images").is_dir() else data


def data_name(data: Path) -> str:
    return data.parent.name if data.name == "images" else data.name


def face_chips(folder: Path, n: int, detector, predictor) -> tuple[np.ndarray, list[str], int]:
    """(chips, their photo names, photos scanned): one chip for the largest face per photo."""
    chips, names, scanned = [], [], 0
    for photo in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        scanned += 1
        rgb = np.asarray(ImageOps.exif_transpose(Image.open(photo)).convert("RGB"))
        faces = detector(rgb, 1)
        if not faces:
            continue
        largest = max(faces, key=lambda r: r.area())
        chips.append(dlib.get_face_chip(rgb, predictor(rgb, largest), size=150, padding=0.25))
        names.append(photo.name)
        if len(chips) == n:
            break
    return np.stack(chips), names, scanned


def time_per_face(run, count: int, repeats: int = 2) -> dict[str, float]:
    """Best-of-``repeats`` wall and CPU seconds per face (the first run also warms up); CPU
    time above wall time means the run used more than one core."""
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {"wall": best_wall / count, "cpu": best_cpu / count}


def pairwise_distances(d: np.ndarray) -> np.ndarray:
    return np.linalg.norm(d[:, None, :] - d[None, :, :], axis=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data set folder (with images/) or images folder")
    ap.add_argument("--n", type=int, default=200, help="faces to compare")
    args = ap.parse_args()
    folder = images_folder(args.data)
    if not folder.is_dir():
        raise SystemExit(f"no images folder at {folder}")

    predictor_path = resolve_weights("dlib-shape-predictor-5").path
    encoder_path = resolve_weights("dlib-face-recognition-resnet").path
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path))
    facerec = dlib.face_recognition_model_v1(str(encoder_path))
    chips, names, scanned = face_chips(folder, args.n, detector, predictor)

    start = time.perf_counter()
    port = load_identity_encoder("dlib-resnet")
    load_seconds = time.perf_counter() - start
    inputs = chips_to_tensor(chips)

    expected = np.array([np.array(facerec.compute_face_descriptor(chip)) for chip in chips])
    with torch.no_grad():
        got = torch.cat([port(inputs[i:i + BATCH]) for i in range(0, len(inputs), BATCH)]).double().numpy()
    diff = np.abs(got - expected)
    port_distances, dlib_distances = pairwise_distances(got), pairwise_distances(expected)

    chip_list = list(chips)
    count = len(chips)
    default_threads = torch.get_num_threads()

    def dlib_single():
        for chip in chip_list:
            facerec.compute_face_descriptor(chip)

    def dlib_list():
        facerec.compute_face_descriptor(chip_list)

    def port_run(batch: int, threads: int):
        def run():
            torch.set_num_threads(threads)
            try:
                with torch.no_grad():
                    for i in range(0, count, batch):
                        port(inputs[i:i + batch])
            finally:
                torch.set_num_threads(default_threads)
        return run

    # One chip per call on several threads is left out: with the other core busy, torch's
    # thread pool waits on it at every layer and a face takes tens of times longer.
    times = {
        "dlib_one_per_call": time_per_face(dlib_single, count),
        "dlib_list_call": time_per_face(dlib_list, count),
        "port_one_per_call_1_thread": time_per_face(port_run(1, 1), count),
        f"port_batch_{BATCH}_1_thread": time_per_face(port_run(BATCH, 1), count),
        f"port_batch_{BATCH}_{default_threads}_threads": time_per_face(port_run(BATCH, default_threads), count),
    }
    best_port_batch = min(t["wall"] for name, t in times.items() if name.startswith("port_batch"))
    result = {
        "data": data_name(args.data),
        "faces": count,
        "photos_scanned": scanned,
        "first_photo": names[0],
        "last_photo": names[-1],
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_descriptor_distance_to_dlib": float(np.linalg.norm(got - expected, axis=1).max()),
        "max_pairwise_distance_change": float(np.abs(port_distances - dlib_distances).max()),
        "same_person_decisions_changed": int(((port_distances < port.distance_threshold)
                                              != (dlib_distances < port.distance_threshold)).sum() // 2),
        "tolerance": TOLERANCE,
        "passed": bool(diff.max() < TOLERANCE),
        "seconds_per_face": times,
        "port_over_dlib_one_per_call": times["port_one_per_call_1_thread"]["wall"] / times["dlib_one_per_call"]["wall"],
        "best_port_batch_over_dlib_list_call": best_port_batch / times["dlib_list_call"]["wall"],
        "load_average_1min": os.getloadavg()[0],
        "port_load_seconds": load_seconds,
        "cpu_count": os.cpu_count(),
        "torch_threads_default": default_threads,
        "dlib": dlib.__version__,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }

    rows = [
        ("faces compared", f"{count} (of {scanned} photos scanned)"),
        ("max |port - dlib|", f"{result['max_abs_diff']:.3g}"),
        ("mean |port - dlib|", f"{result['mean_abs_diff']:.3g}"),
        ("max ||port - dlib|| per face", f"{result['max_descriptor_distance_to_dlib']:.3g}"),
        ("max change of a pairwise distance", f"{result['max_pairwise_distance_change']:.3g}"),
        ("same-person decisions changed (< 0.6)", str(result["same_person_decisions_changed"])),
    ] + [(f"ms / face, {name.replace('_', ' ')} (CPU ms)", f"{1000 * t['wall']:.1f} ({1000 * t['cpu']:.1f})")
         for name, t in times.items()] + [
        ("port / dlib, one per call (wall)", f"{result['port_over_dlib_one_per_call']:.3f}"),
        (f"best port batch {BATCH} / dlib list call (wall)", f"{result['best_port_batch_over_dlib_list_call']:.3f}"),
        ("load average while timing (1 min)", f"{result['load_average_1min']:.2f} on {os.cpu_count()} cores"),
        ("accepted (max < 1e-4)", "yes" if result["passed"] else "NO"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"dlib-port-{result['data']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
