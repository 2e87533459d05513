"""Can a diffusion autoencoder de-identify through its semantic code? Thesis §6.5 on held-out faces,
with the real faces' inverted x_T fixed (issue 23; `--method diffusion` is not built yet).

    .venv/bin/python benchmarks/probe_diffusion_deid.py --autoencoder weights/diffae_celeba_utk_64.safetensors \
        --crops-work WORK [--data DIR ...] [--faces 8] [--fakes 64] [--steps 20] [--ddim-steps 10]

``--autoencoder``: an export of `anoncli train diffae`, or its work folder's diffae-checkpoint.pt (the
moving average). ``--crops-work``: a `train diffae` work folder whose data/ holds the aligned crops
(prepared once by the trainer). Codes of 512 training faces fit the Gaussian code prior; ``--fakes``
codes drawn from it are decoded from fresh x_T; each held-out face is paired with the fake nearest in
the attribute classifier's pooled features, then its z̄ is optimised from the fake's (Adam, dlib's
port as E_A, its vectors centred as FSAP's, the classifier's last feature map as E_I). Prints, per face and on average, dlib's
distance to the original (0.6: dlib's own threshold) and the PSNR of the decode from (paired fake's z̄,
the face's x_T) and after optimisation; writes a grid (original | reconstruction | start | result)
and benchmarks/results/diffusion-probe-stepsN-DATE.json (N: the autoencoder's training steps).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import REPO, machine_record, write_json


def load_network(path: Path):
    import torch

    from anoncli.diffusion.autoencoder import load_autoencoder
    from anoncli.models.diffae import DiffAE
    from anoncli.train.diffae import network_config

    if path.suffix == ".pt":
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = DiffAE(network_config(state["settings"]["config"]))
        model.load_state_dict(state["ema"])
        return model.eval().requires_grad_(False), state["settings"]["margin"], int(state["step"])
    exported = load_autoencoder(path)
    return exported.model.requires_grad_(False), exported.margin, int(exported.card.get("steps", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--autoencoder", type=Path, default=REPO / "weights" / "diffae_celeba_utk_64.safetensors")
    ap.add_argument("--crops-work", type=Path, required=True)
    ap.add_argument("--data", type=Path, action="append", help="the trainer's --data folders (default: CelebA crops and UTKFace in ../shared/data)")
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--fakes", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="Adam steps on z̄")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--identity-weight", type=float, default=1.0)
    ap.add_argument("--attribute-weight", type=float, default=1.0)
    ap.add_argument("--ddim-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--grid", type=Path, default=Path("/tmp/diffusion-probe.png"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch

    from anoncli.diffusion.ddim import ddim_decode, ddim_invert, linear_schedule
    from anoncli.diffusion.deid import SemanticCodeSettings, fit_code_prior, nearest_fakes, optimise_semantic_code
    from anoncli.diffusion.deidentify import deid_encoders
    from anoncli.diffusion.fake_set import build_fake_set, decoded_fakes
    from anoncli.identity.centres import descriptor_centre
    from anoncli.identity.encoders import load_identity_encoder
    from anoncli.metrics.image_quality import psnr
    from anoncli.models.attributes import load_attribute_net
    from anoncli.train.face_crops import prepare
    from anoncli.train.glow import save_grid
    from anoncli.train.training_faces import face_batch

    torch.set_num_threads(args.threads)
    model, margin, trained_steps = load_network(args.autoencoder)
    size = model.config.image_size
    schedule = linear_schedule()
    data = args.data or [REPO.parent / "shared" / "data" / "celeba-crops", REPO.parent / "shared" / "data" / "utkface"]
    crops = prepare(data, args.crops_work / "data", 128, margin, False)
    rng = np.random.default_rng(0)
    train_idx, held_idx = crops.split(held_out=False), crops.split(held_out=True)
    real = face_batch(crops, held_idx[: args.faces], size, "cpu") * 2 - 1

    attributes, attribute_margin, _ = load_attribute_net(REPO / "weights" / "attributes_celeba_64.safetensors")
    if abs(attribute_margin - margin) > 1e-6 or attributes.config.resolution != size:
        raise SystemExit("the attribute classifier reads other crops than the autoencoder makes")
    encoders = deid_encoders(attributes.requires_grad_(False), load_identity_encoder("dlib-resnet"), size, margin,
                             descriptor_centre("dlib-resnet"))   # dlib's vectors centred: strangers' cosine ~0, as FSAP's L_I
    identity_of, pooled, feature_map = encoders.identity, encoders.pairing, encoders.attributes

    t0 = time.perf_counter()
    with torch.no_grad():
        prior_codes = torch.cat([model.encode(face_batch(crops, chunk, size, "cpu") * 2 - 1)
                                 for chunk in np.array_split(rng.choice(train_idx, 512, replace=False), 8)])
        prior = fit_code_prior(prior_codes.numpy(), shrinkage=0.01)
        with tempfile.TemporaryDirectory() as folder:
            fake_set = build_fake_set(Path(folder), args.fakes, 16, decoded_fakes(model, schedule, prior, args.ddim_steps, pooled))
        fake_codes = torch.as_tensor(fake_set.codes)
        fakes = torch.as_tensor(fake_set.images).permute(0, 3, 1, 2).float() / 127.5 - 1
        paired, _ = nearest_fakes(pooled(real).numpy(), fake_set.features)
        real_code = model.encode(real)
        x_T = ddim_invert(model, schedule, real, real_code, args.ddim_steps)
        reconstruction = ddim_decode(model, schedule, x_T, real_code, args.ddim_steps)
        start_code = fake_codes[paired]
        start = ddim_decode(model, schedule, x_T, start_code, args.ddim_steps)
    settings = SemanticCodeSettings(args.steps, args.lr, args.identity_weight, args.attribute_weight)
    result = optimise_semantic_code(lambda code: ddim_decode(model, schedule, x_T, code, args.ddim_steps),
                                    start_code.numpy(), identity_of, feature_map, real, settings)
    with torch.no_grad():
        anonymized = ddim_decode(model, schedule, x_T, torch.as_tensor(result.code), args.ddim_steps)
        id_real = identity_of(real)
        distance = {name: (identity_of(faces) - id_real).norm(dim=1).numpy()
                    for name, faces in (("reconstruction", reconstruction), ("start", start), ("result", anonymized))}
    seconds = time.perf_counter() - t0

    def uint8(x):
        return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    quality = {name: float(np.mean([psnr(a, b) for a, b in zip(uint8(faces), uint8(real))]))
               for name, faces in (("reconstruction", reconstruction), ("start", start), ("result", anonymized))}
    save_grid(torch.cat([real, reconstruction, fakes[paired], start, anonymized]).add(1).div(2), args.grid)
    row = {"autoencoder": str(args.autoencoder), "trained_steps": trained_steps, "faces": args.faces, "fakes": args.fakes,
           "adam_steps": args.steps, "lr": args.lr, "identity_weight": args.identity_weight,
           "attribute_weight": args.attribute_weight, "ddim_steps": args.ddim_steps,
           **{f"dlib distance {k} (mean)": round(float(v.mean()), 3) for k, v in distance.items()},
           **{f"dlib distance {k} >= 0.6": round(float((v >= 0.6).mean()), 3) for k, v in distance.items()},
           **{f"psnr {k}": round(v, 2) for k, v in quality.items()},
           "final L_id (mean)": round(float(np.mean(result.identity_loss)), 3),
           "final L_att (mean)": round(float(np.mean(result.attribute_loss)), 4), "seconds": round(seconds, 1)}
    for k, v in row.items():
        print(f"{k:40s} {v}")
    print("grid (original | reconstruction | paired fake | start | result):", args.grid)
    write_json(f"diffusion-probe-steps{trained_steps}", [row], machine_record("benchmarks/probe_diffusion_deid.py", load_before))


if __name__ == "__main__":
    main()
