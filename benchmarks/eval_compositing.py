"""What the compositing of generated faces costs and gives (issue 20 §2), paired: every variant is
measured on the same generator outputs, so that the noise of the method does not hide the
difference between compositing settings.

    .venv/bin/python benchmarks/eval_compositing.py [--method identitydp] [--set crops|wild] [--limit 100]
        [--variant NAME:flag=value,flag=value ...] [--method-flag epsilon=6 ...]

1. The method (default identitydp at its defaults) anonymizes each face's aligned crop once
   (``crops``: held-out CelebA crops as in eval_identity.py; ``wild``: CelebA in-the-wild photos,
   the largest face when it is at least --min-face px).
2. Each variant composites that same crop into the photo with its compositing flags (the method's
   defaults overridden by the variant's; ``legacy`` is the code before issue 20: the fixed
   ellipse, feather 0.02, alpha blend of the enlarged crop).
3. Per variant: protection (distance of anonymized to original at the detector's box and landmarks
   at or above the threshold) by dlib (the port, white-box for the identity methods; 0.6 and the
   registry's FAR 1e-3 reference threshold) and by MobileFaceNet (independent; its FAR 1e-3
   reference threshold), and the texture figure (anoncli.metrics.texture) inside the face region.

Writes benchmarks/results/compositing-<method>-<set>-<date>.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_record, write_json  # noqa: E402
from eval_identity import DATA, SHARED_WEIGHTS, held_out_images  # noqa: E402

DEFAULT_VARIANTS = ("legacy", "default", "detail0:detail_sigma=0", "detail0.75:detail_sigma=0.75", "detail1:detail_sigma=1")


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    flags = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected NAME:flag=value,flag=value")
        flags[key.replace("-", "_")] = value
    return name, flags


def photos(which: str, limit: int) -> list[Path]:
    if which == "crops":
        return held_out_images("crops", limit)[0]
    return sorted((DATA / "celeba-wild" / "images").glob("*.jpg"))


def generate(method, keyed: bool, which: str, limit: int, min_face: float) -> list[dict]:
    """Each face's photo, detection, warp, roi and the method's crop (made once for all variants)."""
    from anoncli.faces.align import alignment_matrix, apply_affine
    from anoncli.faces.blend import crop_bounds_in_image
    from anoncli.faces.detectors import create_detector
    from anoncli.faces.stage import extract_crop
    from anoncli.io.images import LoadedImage

    detector = create_detector("retinaface-onnx")
    faces = []
    for path in photos(which, limit):
        if len(faces) >= limit:
            break
        rgb = np.asarray(Image.open(path).convert("RGB"))
        found = detector.detect([rgb])[0]
        if not found:
            continue
        det = max(found, key=lambda d: d.size)
        if det.size < min_face:
            continue
        m = alignment_matrix(det.landmarks, method.resolution, method.margin)
        roi = crop_bounds_in_image(m, method.resolution, *rgb.shape[:2])
        crop = extract_crop(LoadedImage(rgb, "RGB", "PNG"), m, method.resolution, roi)   # as the face stage cuts it
        key = type("FaceKey", (), {"secret": os.urandom(32)})() if keyed else None
        anon = method.anonymize_crop(crop, apply_affine(m, det.landmarks), key)
        faces.append({"path": path, "det": det, "m": m, "roi": roi, "anon": anon})
    return faces


def composite(rgb: np.ndarray, face: dict, method, name: str, config) -> np.ndarray:
    from anoncli.faces.blend import composite as alpha_blend, face_mask, warp_crop_to_roi
    from anoncli.faces.compositing import Compositor

    x0, y0, x1, y1 = face["roi"]
    base = rgb[y0:y1, x0:x1].astype(np.float32)
    if name == "legacy":
        mask = warp_crop_to_roi(face_mask(method.resolution, "ellipse", 0.02, method.margin), face["m"], face["roi"])
        out = alpha_blend(base, warp_crop_to_roi(face["anon"].astype(np.float32), face["m"], face["roi"]), mask)
    else:
        compositor = Compositor(config)
        region = compositor.locate(rgb[y0:y1, x0:x1], face["roi"], face["det"].landmarks, face["m"], method.resolution, method.margin)
        out, _ = compositor.composite(base, face["anon"], face["m"], face["roi"], region)
    result = rgb.copy()
    result[y0:y1, x0:x1] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="identitydp", choices=["identitydp", "idrotate"])
    ap.add_argument("--method-flag", action="append", default=[], metavar="NAME=VALUE", help="the method's own flags, e.g. epsilon=6")
    ap.add_argument("--set", default="crops", choices=["crops", "wild"])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--min-face", type=float, default=150.0, help="wild: the smallest main face taken, px")
    ap.add_argument("--variant", action="append", default=[], help="NAME:flag=value,... (repeatable; default: legacy, "
                    "default, detail_sigma 0, 0.75, 1)")
    args = ap.parse_args()

    from anoncli.faces.compositing import Compositor
    from anoncli.faces.compositing_config import config_from_params
    from anoncli.methods import build_method, get_method_spec
    from anoncli.metrics.evaluators import EVALUATORS
    from anoncli.metrics.texture import texture_ratio

    spec = get_method_spec(args.method)
    given = dict(f.partition("=")[::2] for f in args.method_flag)
    method = build_method(args.method, spec.resolve_params({k.replace("-", "_"): v for k, v in given.items()}), None)
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    configs = {name: config_from_params(spec.resolve_params({**given, **flags})) for name, flags in variants}

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    faces = generate(method, spec.reversible, args.set, args.limit, args.min_face if args.set == "wild" else 0.0)
    seconds_generate = time.perf_counter() - t0
    evaluators = {n: EVALUATORS[n].load(str(SHARED_WEIGHTS)) for n in ("dlib", "mobilefacenet")}
    reference = Compositor(configs.get("default") or config_from_params(spec.resolve_params(given)))

    def distance(name, a, b):
        if EVALUATORS[name].metric == "euclidean":
            return float(np.linalg.norm(a - b))
        return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    measured = {name: {"dlib": [], "mobilefacenet": [], "texture": []} for name, _ in variants}
    for face in faces:
        rgb = np.asarray(Image.open(face["path"]).convert("RGB"))
        record = [{"box": face["det"].box, "landmarks": face["det"].landmarks}]
        x0, y0, x1, y1 = face["roi"]
        region = reference.locate(rgb[y0:y1, x0:x1], face["roi"], face["det"].landmarks, face["m"], method.resolution, method.margin)
        whole = (0, 0, rgb.shape[1], rgb.shape[0])
        mask = region.hard_mask(whole)
        originals = {n: e.embed(rgb, record)[0] for n, e in evaluators.items()}
        for name, _ in variants:
            out = composite(rgb, face, method, name, configs[name])
            for n, e in evaluators.items():
                measured[name][n].append(distance(n, originals[n], e.embed(out, record)[0]))
            measured[name]["texture"].append(texture_ratio(out, rgb, mask))

    thresholds = {"dlib@0.6": ("dlib", 0.6), "dlib@FAR1e-3": ("dlib", EVALUATORS["dlib"].reference_threshold.value),
                  "mobilefacenet@FAR1e-3": ("mobilefacenet", EVALUATORS["mobilefacenet"].reference_threshold.value)}
    rows = []
    for name, flags in variants:
        m = {k: np.asarray(v) for k, v in measured[name].items()}
        row = {"variant": name, "flags": flags, "faces": len(faces), "method": args.method, "set": args.set,
               **{f"protection {label}": round(float(np.mean(m[n] >= t)), 4) for label, (n, t) in thresholds.items()},
               "dlib distance mean": round(float(m["dlib"].mean()), 4),
               "mobilefacenet distance mean": round(float(m["mobilefacenet"].mean()), 4),
               "texture median": round(float(np.median(m["texture"])), 3),
               "texture 10th percentile": round(float(np.percentile(m["texture"], 10)), 3),
               "texture share >= 0.6": round(float(np.mean(m["texture"] >= 0.6)), 3)}
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items() if k not in ("method", "set")))
    context = machine_record(" ".join(sys.argv), load_before)
    context["seconds generating"] = round(seconds_generate, 1)
    context["thresholds"] = {k: round(t, 4) for k, (_, t) in thresholds.items()}
    print(f"written {write_json(f'compositing-{args.method}-{args.set}', rows, context)}")


if __name__ == "__main__":
    main()
