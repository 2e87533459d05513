"""What idrotate's identity fit does to the face (issue 20, point 3): fits of the generator's
identity inputs compared on the same held-out faces.

    .venv/bin/python benchmarks/diag_identity_fit.py [--limit 16] [--threads 1]
                                                     [--variant KIND:STEPS ...] [--grid OUT.png]

Each face as the pipeline hands it to idrotate (detected, aligned, its key derived from the file
name), then the anonymizing fit of ``anoncli.identity.generator.refine_identity_inputs_many`` with
``--rotation plane`` at level 9 (start turned past θ by ``--refine-overturn``, goal z_new, Adam at ``--refine-lr``,
through the compositing's colour and detail), with its inputs varied:

- ``per-block``: one identity code per place the generator reads it (the stem and each AAD block),
  the method's fit;
- ``tied``: one code for every place (the book's single r_id);
- ``coarse-K``: only the first K places fitted (the coarse resolutions), the finer ones left at the
  start.

Prints, per variant, the mean cosine between r_id of the face pasted into its crop (colour and
detail as the compositing does them) and z_new, and the fit's time; writes a grid (original, then
one row per variant, the pasted crops at the crop's resolution) to look at, and
benchmarks/results/identity-fit-<date>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_record, write_json  # noqa: E402
from eval_identity import held_out_images  # noqa: E402

DEFAULT_VARIANTS = ("per-block:0", "per-block:60", "per-block:300", "tied:300", "coarse-4:300")


def face_requests(method, limit: int):
    """The first face of each of the first ``limit`` held-out crops, as the face stage hands it over."""
    from anoncli.faces.detectors import create_detector
    from anoncli.faces.stage import _face_steps
    from anoncli.io.images import load_image, rgb_view
    from anoncli.keys.derive import FaceKey

    detector = create_detector("retinaface-onnx", threshold=0.3)
    requests = []
    for path in held_out_images("crops", limit)[0]:
        photo = load_image(path.read_bytes(), 10 ** 9)
        detections = detector.detect([rgb_view(photo.pixels, photo.mode)])[0][:1]
        if detections:
            key = FaceKey(path.name, hashlib.sha256(path.name.encode()).digest())
            requests.append(next(_face_steps(copy.deepcopy(photo), detections, method, lambda i: key, False)))
    return requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", action="append", help=f"KIND:STEPS (default {' '.join(DEFAULT_VARIANTS)})")
    ap.add_argument("--grid", type=Path, default=Path("identity-fit-grid.png"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch
    import torch.nn.functional as F
    from PIL import Image

    from anoncli.identity.generator import COLOUR_REFRESH, paste
    from anoncli.methods import build_method, get_method_spec
    from anoncli.models.tensors import to_images, to_tensor

    torch.set_num_threads(args.threads)
    method = build_method("idrotate", get_method_spec("idrotate").resolve_params({"rotation": "plane"}))   # the book's turn
    generator, representation = method.generator.net.generator, method.generator.rep
    requests = face_requests(method, args.limit)
    identities, attributes = method.generator.encode_many([r.crop for r in requests])
    targets, refinements = [], []
    for identity, r in zip(identities, requests):
        target, fit = method.request(identity, r.key)
        targets.append(target)
        refinements.append(method.refinement(r.crop, r.landmarks_in_crop, **fit))
    goals = F.normalize(torch.as_tensor(np.stack(targets), dtype=torch.float32), dim=1)
    starts = torch.as_tensor(np.stack([r.start for r in refinements]), dtype=torch.float32)
    crops = to_tensor(np.stack([np.asarray(r.crop, np.float32) for r in refinements]))
    masks = torch.as_tensor(np.stack([r.mask for r in refinements]), dtype=torch.float32)[:, None]
    sigma = refinements[0].detail_sigma
    places = generator.identity_inputs
    low_precision = method.low_precision() or contextlib.nullcontext

    def colour_shift(w):
        with torch.no_grad():
            faces = to_images(generator(F.normalize(w, dim=-1).float(), attributes))
        return to_tensor(np.stack([r.colour(f) for f, r in zip(faces, refinements)])) - to_tensor(faces)

    def pasted(w):
        with torch.no_grad():
            return paste(generator(F.normalize(w, dim=-1), attributes), crops, masks, sigma, colour_shift(w))

    def fit(kind: str, steps: int):
        fitted = places if kind == "per-block" else 1 if kind == "tied" else int(kind.split("-")[1])
        free = starts[:, None].repeat(1, fitted, 1).clone().requires_grad_(True)
        kept = starts[:, None].repeat(1, places - fitted, 1) if kind.startswith("coarse") else None

        def inputs():
            if kind == "tied":
                return free.expand(-1, places, -1)
            return free if kept is None else torch.cat([free, kept], 1)

        optimiser = torch.optim.Adam([free], lr=method.params["refine_lr"])
        for step in range(steps):
            if step % COLOUR_REFRESH == 0:
                shift = colour_shift(inputs().detach())
            with torch.enable_grad(), low_precision():
                shown = representation(paste(generator(F.normalize(inputs(), dim=-1), attributes), crops, masks, sigma, shift))
            loss = (1 - F.cosine_similarity(shown.float(), goals, dim=1)).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return inputs().detach()

    rows, grid = [], [[np.asarray(r.crop, np.uint8) for r in requests[:8]]]
    for variant in args.variant or DEFAULT_VARIANTS:
        kind, steps = variant.split(":")
        started = time.time()
        w = fit(kind, int(steps))
        seconds = time.time() - started
        faces = pasted(w)
        with torch.no_grad():
            cosine = F.cosine_similarity(representation(faces), goals, dim=1)
        rows.append({"variant": variant, "cos_to_z_new": round(float(cosine.mean()), 4), "seconds": round(seconds, 1)})
        print(f"{variant:<16} cosine to z_new {rows[-1]['cos_to_z_new']:.3f}   {seconds:6.1f} s", flush=True)
        grid.append([np.clip(f, 0, 255).astype(np.uint8) for f in to_images(faces)[:8]])
    Image.fromarray(np.concatenate([np.concatenate(row, 1) for row in grid], 0)).save(args.grid)
    context = {**machine_record(" ".join(sys.argv), load_before), "faces": len(requests),
               "settings": {k: method.params[k] for k in ("refine_lr", "refine_overturn", "level", "precision")}}
    print(f"grid {args.grid}; written {write_json('identity-fit', rows, context)}")


if __name__ == "__main__":
    main()
