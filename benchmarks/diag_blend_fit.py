"""What the identity fit reaches against what the photo shows (idrotate, issue 20 point 2).

    .venv/bin/python benchmarks/diag_blend_fit.py [--set crops|wild] [--limit 16] [--method-flag NAME=VALUE ...]

The first face of each of the first ``--limit`` held-out CelebA crops (or CelebA photos in the wild), anonymized through the face
stage as a run does it (eight faces per pass, keys derived from the file names, so the same faces
and keys in every run), then per face the cosine to z_new = A·z̄ of r_id (i) of the face as the fit
sees it pasted into its crop (``paste`` with the stage's ``CropBlend``) and (ii) read back from the
composited photo as restore reads it, before encoding and (iii) from the file as the run writes it
(the input's format; JPEG with the input's quantisation tables). Prints the per-face pairs and their means.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_identity import held_out_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="crops", choices=["crops", "wild"])
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method-flag", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--save", type=Path, help="also write each face's z̄, A and read-back r_id to this .npz")
    args = ap.parse_args()

    import torch

    from anoncli.faces.blend import crop_bounds_in_image
    from anoncli.faces.detectors import create_detector
    from anoncli.faces.stage import anonymize_images, extract_crop
    from anoncli.identity.generator import paste
    from anoncli.io.images import encode_image, load_image, rgb_view
    from anoncli.keys.derive import FaceKey
    from anoncli.methods import build_method, get_method_spec
    from anoncli.models.tensors import to_tensor

    torch.set_num_threads(args.threads)
    method = build_method("idrotate", get_method_spec("idrotate").resolve_params(dict(f.split("=", 1) for f in args.method_flag)))
    detector = create_detector("retinaface-onnx", threshold=0.3)
    handed = []
    anonymize_many = method.anonymize_many
    method.anonymize_many = lambda requests: handed.extend(zip(requests, faces := anonymize_many(requests))) or faces

    def r_id(crop):
        with torch.no_grad():
            return method.generator.rep(to_tensor(np.asarray(crop, np.float32)[None]))[0].double().numpy()

    def crop_of(img, m):
        return extract_crop(img, m, method.resolution, crop_bounds_in_image(m, method.resolution, img.height, img.width))

    images, originals = [], []
    for path in held_out_images(args.set, args.limit)[0]:
        photo = load_image(path.read_bytes(), 10 ** 9)
        detections = detector.detect([rgb_view(photo.pixels, photo.mode)])[0][:1]
        if detections:
            key = FaceKey(path.name, hashlib.sha256(path.name.encode()).digest())
            images.append((copy.deepcopy(photo), detections, lambda i, key=key: key))
            originals.append((path.name, photo, key))
    results = anonymize_images(images, method)
    rows, saved = [], {"original": [], "turn": [], "read_back": []}
    for (name, photo, key), (protected, _, _), result, (request, face) in zip(originals, images, results, handed):
        m = np.asarray(result[1][0].warp)
        original = r_id(crop_of(photo, m))
        target = method.orthogonal(key) @ original
        fit = method.refinement(request.crop, request.landmarks_in_crop, region_in_crop=request.region_in_crop,
                                blend_in_crop=request.blend_in_crop)
        h = np.asarray(face.crop, np.float32)
        seen = paste(to_tensor(h[None]), to_tensor(np.asarray(request.crop, np.float32)[None]),
                     torch.as_tensor(fit.mask, dtype=torch.float32)[None, None], fit.detail_sigma,
                     to_tensor(fit.colour(h)[None]) - to_tensor(h[None]),
                     [request.blend_in_crop])
        with torch.no_grad():
            as_fitted = method.generator.rep(seen)[0].double().numpy()
        read_back = r_id(crop_of(protected, m))
        from_file = r_id(crop_of(load_image(encode_image(protected), 10 ** 9), m))
        rows.append((float(target @ as_fitted), float(target @ read_back), float(target @ from_file)))
        for name_, value in (("original", original), ("turn", method.orthogonal(key)), ("read_back", read_back)):
            saved[name_].append(value)
        print(f"{name}  as fitted {rows[-1][0]:.3f}  read back {rows[-1][1]:.3f}  from the written file {rows[-1][2]:.3f}",
              flush=True)
    fitted, back, from_file = np.mean(rows, 0)
    print(f"{len(rows)} faces: cosine to z_new as fitted {fitted:.3f}, read back from the photo {back:.3f}, "
          f"from the file as written (the input's format and JPEG tables) {from_file:.3f}")
    if args.save:
        np.savez(args.save, **{k: np.stack(v) for k, v in saved.items()})


if __name__ == "__main__":
    main()
