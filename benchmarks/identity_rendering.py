"""How closely the committed identity generator draws the identity vector it is given, by kind of
vector (README, *What the generator is asked to draw*): on held-out training crops, one generator
pass (no fit), the cosine between the vector and r_id of the face, alone and pasted into its crop.

    python benchmarks/identity_rendering.py --crops WORK/data [--faces 96] [--weights-dir ../shared/weights]

WORK/data is the crop cache `anoncli train aei --work WORK` prepares (crops.npy, crops.json,
descriptors.npy). Kinds: uniform unit vectors (identitydp's r̃_id / ‖r̃_id‖ at small ε), the same
shaped like real faces (``--noisy-identity face-shaped``), and another held-out face's own vector.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_record, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path, required=True, help="a training work folder's data/ (crop cache)")
    ap.add_argument("--faces", type=int, default=96)
    ap.add_argument("--weights-dir", type=Path)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch
    import torch.nn.functional as F

    from anoncli.identity.generator import IdentityGenerator
    from anoncli.identity.representation import shaped_like_faces
    from anoncli.models.tensors import to_tensor
    from anoncli.train.aei import composite_mask

    generator = IdentityGenerator(args.weights_dir)
    meta = json.loads((args.crops / "crops.json").read_text())
    index = meta["index"] if isinstance(meta, dict) else meta
    crops = np.load(args.crops / "crops.npy", mmap_mode="r")
    descriptors = np.load(args.crops / "descriptors.npy")
    held = np.array([i for i, row in enumerate(index) if row["held_out"]][:args.faces])
    mask = composite_mask(generator.resolution, generator.margin)
    rng = np.random.default_rng(0)
    cosines: dict[str, list[float]] = {}
    with torch.no_grad():
        for first in range(0, len(held), 16):
            rows = held[first:first + 16]
            x = to_tensor(np.asarray(crops[rows]))
            modulations = generator.net.generator.modulations(generator.net.encoder(x))
            uniform = rng.standard_normal((len(rows), generator.dimension))
            uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
            kinds = {"uniform": uniform,
                     "face-shaped": np.stack([shaped_like_faces(u, generator.face_code_root) for u in uniform]),
                     "another face": generator.rep.codes_of(torch.as_tensor(descriptors[np.roll(held, 1)[first:first + 16], 0])).numpy()}
            for kind, codes in kinds.items():
                code = torch.as_tensor(codes, dtype=torch.float32)
                face = generator.net.generator(code, modulations)
                cosines.setdefault(kind, []).extend(F.cosine_similarity(generator.rep(face), code, dim=1).tolist())
                cosines.setdefault(kind + ", pasted", []).extend(
                    F.cosine_similarity(generator.rep(mask * face + (1 - mask) * x), code, dim=1).tolist())
    row = {"faces": len(held), **{k: round(float(np.mean(v)), 3) for k, v in cosines.items()}}
    for k, v in row.items():
        print(f"{k:<22} {v}")
    print("written", write_json("identity-rendering", [row], machine_record(" ".join(sys.argv), load_before)))


if __name__ == "__main__":
    main()
