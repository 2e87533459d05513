"""Does a diffusion autoencoder read its semantic code? The noise-prediction error on held-out faces at
several timesteps with each face's own z̄, another face's and a zero code, and the same errors in image
terms, ‖x_0 − x̂_0‖² = (1 − ᾱ_t)/ᾱ_t · ‖ε − ε̂‖² (issue 23).

    .venv/bin/python benchmarks/diffae_code_use.py --autoencoder FILE_OR_CHECKPOINT --crops-work WORK [--faces 32]

``--autoencoder`` and ``--crops-work`` as in probe_diffusion_deid.py. An autoencoder that uses z̄ has a
clearly larger error with another face's code than with its own where x_t keeps little of the face
(large t). Writes benchmarks/results/diffae-code-use-stepsN[-M...]-DATE.json (the autoencoders' training steps).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench_common import REPO, machine_record, write_json
from probe_diffusion_deid import load_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--autoencoder", type=Path, action="append", required=True, help="repeatable: one row each")
    ap.add_argument("--crops-work", type=Path, required=True)
    ap.add_argument("--data", type=Path, action="append")
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--timesteps", default="400,800,950")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch

    from anoncli.diffusion.ddim import linear_schedule, q_sample
    from anoncli.train.face_crops import prepare
    from anoncli.train.training_faces import face_batch

    torch.set_num_threads(args.threads)
    data = args.data or [REPO.parent / "shared" / "data" / "celeba-crops", REPO.parent / "shared" / "data" / "utkface"]
    schedule = linear_schedule()
    rows = []
    for path in args.autoencoder:
        model, margin, steps = load_network(path)
        crops = prepare(data, args.crops_work / "data", 128, margin, False)
        faces = face_batch(crops, crops.split(held_out=True)[: args.faces], model.config.image_size, "cpu") * 2 - 1
        generator = torch.Generator().manual_seed(0)
        row = {"autoencoder": str(path), "trained_steps": steps, "faces": len(faces),
               "pixel variance": round(float(faces.var()), 4)}
        with torch.no_grad():
            own = model.encode(faces)
            codes = {"own": own, "other": own.roll(1, 0), "zero": torch.zeros_like(own)}
            for t in (int(v) for v in args.timesteps.split(",")):
                steps_t = torch.full((len(faces),), t, dtype=torch.long)
                noise = torch.randn(faces.shape, generator=generator)
                x_t = q_sample(schedule, faces, steps_t, noise)
                a = float(schedule.alphas_cumprod[t])
                for name, code in codes.items():
                    error = float((model(x_t, steps_t, code) - noise).pow(2).mean())
                    row[f"t={t} noise error, {name} code"] = round(error, 6)
                    row[f"t={t} image error, {name} code"] = round(error * (1 - a) / a, 3)
        rows.append(row)
        for k, v in row.items():
            print(f"{k:40s} {v}")
        print()
    steps = "-".join(str(row["trained_steps"]) for row in rows)
    write_json(f"diffae-code-use-steps{steps}", rows, machine_record("benchmarks/diffae_code_use.py", load_before))


if __name__ == "__main__":
    main()
