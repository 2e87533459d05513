"""Where idrotate's restore loses the identity (issue 6, point 3): the channel through the image.

    .venv/bin/python benchmarks/diag_idrotate.py [--limit 12] [--shape ellipse|hull|crop]
                                                [--refine-steps K] [--restore] [--threads 1]
                                                [--method-flag NAME=VALUE ...]

For held-out CelebA crops, each face as the pipeline does it (detect, align, idrotate with a key
derived from the file name, blend into the photo, encode in the input's JPEG tables, decode), then:

- the cosine between r_id of the protected crop, read back as restore reads it, and the rotated
  target z_new it was rendered for (1 would be a perfect channel);
- the least-squares gains (a, b) of that r_id on (z̄, z_r): eq. 6.16 writes z_new = (cos θ − A sin θ)·z̄
  + sin θ·z_r, so a perfect channel gives a ≈ −0.5 and b ≈ 0.866 at level 9 (120°), and the rest
  of the read identity is a residual orthogonal to both, which eq. 6.19 divides by |cos θ − A sin θ|;
- the cosine of eq. 6.19-6.20's ẑ to z̄;
- with --restore, the dlib distance (dlib's own network, on the photos) of the restored face to the
  original, and of the floor: the restore's render of z̄ itself on the protected crop.

Prints the means and writes benchmarks/results/idrotate-channel-<date>.json.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_record, write_json  # noqa: E402
from eval_identity import SHARED_WEIGHTS, held_out_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--shape", choices=["ellipse", "hull", "crop"],
                    help="the fit's blend region instead of the method's (crop: the generator's whole output, as the "
                         "book's G(z_new, z_attr)); the photo is still composited as the method's --shape says")
    ap.add_argument("--refine-steps", type=int)
    ap.add_argument("--restore", action="store_true", help="also restore each face and measure dlib distances")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--method-flag", action="append", default=[], metavar="NAME=VALUE",
                    help="another idrotate parameter (e.g. refine_lr=0.05, refine_schedule=cosine); repeatable")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    import torch

    from anoncli.faces.align import apply_affine
    from anoncli.faces.blend import crop_bounds_in_image, warp_crop_to_roi
    from anoncli.faces.detectors import create_detector
    from anoncli.faces.stage import _composite_into, anonymize_faces, extract_crop, restore_faces
    from anoncli.identity.rotation import rotate_identity, unrotate_identity
    from anoncli.io.images import encode_image, load_image, rgb_view
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method, get_method_spec
    from anoncli.metrics.dlib_identity import DlibIdentity
    from anoncli.models.tensors import to_tensor

    torch.set_num_threads(args.threads)
    given = dict(flag.split("=", 1) for flag in args.method_flag)
    if args.refine_steps is not None:
        given["refine_steps"] = str(args.refine_steps)
    given.setdefault("rotation", "plane")   # the channel's gains below are eq. 6.16's
    method = build_method("idrotate", get_method_spec("idrotate").resolve_params(given))
    if args.shape:
        method.params["shape"], method._mask = args.shape, None   # "crop" is outside the flag's choices on purpose
    gen = method.generator
    detector = create_detector("retinaface-onnx", threshold=0.3)
    dlib_net = DlibIdentity(SHARED_WEIGHTS) if args.restore else None

    def crop_of(img, m):
        return extract_crop(img, m, method.resolution, crop_bounds_in_image(m, method.resolution, img.height, img.width))

    def r_id(crop):
        with torch.no_grad():
            return gen.rep(to_tensor(np.asarray(crop, np.float32)[None]))[0].double().numpy()

    paths, _ = held_out_images("crops", args.limit)
    rows = []
    for path in paths:
        photo = load_image(path.read_bytes(), 10 ** 9)
        dets = detector.detect([rgb_view(photo.pixels, photo.mode)])[0][:1]
        if not dets:
            continue
        key = FaceKey(path.name, hashlib.sha256(path.name.encode()).digest())
        protected = copy.deepcopy(photo)
        _, secrets = anonymize_faces(protected, dets, method, lambda i: key)
        m = np.asarray(secrets[0].warp)
        z_bar = r_id(crop_of(photo, m))
        z_ref = method.reference(key)
        z_new = rotate_identity(z_bar, z_ref, method.degrees)
        read_back = load_image(encode_image(protected), 10 ** 9)
        e = r_id(crop_of(read_back, m))
        (a, b), *_ = np.linalg.lstsq(np.stack([z_bar, z_ref], 1), e, rcond=None)
        row = {"image": path.name, "channel_cos": float(e @ z_new / np.linalg.norm(z_new)), "gain_a": float(a), "gain_b": float(b),
               "residual": float(np.linalg.norm(e - a * z_bar - b * z_ref)),
               "recovered_cos": float(unrotate_identity(e, z_ref, method.degrees) @ z_bar)}
        if args.restore:
            original = rgb_view(photo.pixels, photo.mode)
            restored = copy.deepcopy(read_back)
            face = {"index": 0, "warp": secrets[0].warp, "landmarks": secrets[0].landmarks, "params": secrets[0].params}
            restore_faces(restored, [face], method, {0: key})
            row["restore_dlib"] = dlib_net.distance(original, rgb_view(restored.pixels, restored.mode), dets[0].box)
            crop = crop_of(read_back, m)
            landmarks = apply_affine(m, np.asarray(secrets[0].landmarks))
            floor = copy.deepcopy(read_back)
            roi = crop_bounds_in_image(m, method.resolution, floor.height, floor.width)
            rendered = method.render(z_bar, gen.encode(crop)[1], crop, landmarks).astype(np.float32)
            _composite_into(floor, roi, warp_crop_to_roi(rendered, m, roi), warp_crop_to_roi(method.blend_mask(landmarks), m, roi))
            row["floor_dlib"] = dlib_net.distance(original, rgb_view(floor.pixels, floor.mode), dets[0].box)
        rows.append(row)
        print(row["image"], {k: round(v, 3) for k, v in row.items() if k != "image"}, flush=True)
    summary = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0] if k != "image"}
    if args.restore:
        summary["restore_under_0.5"] = round(float(np.mean([r["restore_dlib"] < 0.5 for r in rows])), 3)
        summary["floor_under_0.5"] = round(float(np.mean([r["floor_dlib"] < 0.5 for r in rows])), 3)
    print(f"{len(rows)} faces, shape {method.params['shape']}, refine steps {method.params['refine_steps']} at {method.params['refine_lr']:g} "
          f"{method.params['refine_schedule']}, level {method.params['level']} "
          f"({method.degrees:g}°; a perfect channel: a = {np.cos(np.radians(method.degrees)):.3f} − A·{np.sin(np.radians(method.degrees)):.3f}, "
          f"b = {np.sin(np.radians(method.degrees)):.3f}, residual 0)")
    for k, v in summary.items():
        print(f"  {k:<20} {v:>8}")
    context = {**machine_record(" ".join(sys.argv), load_before), "summary": summary,
               "settings": {"shape": method.params["shape"], "level": method.params["level"],
                                **{k: method.params[k] for k in ("refine_steps", "refine_lr", "refine_schedule", "refine_overturn")}}}
    print(f"written {write_json('idrotate-channel', rows, context)}")


if __name__ == "__main__":
    main()
