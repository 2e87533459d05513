"""The pose terms of the mean outline (``anoncli/faces/outline.py``: ``OUTLINE_ACROSS_112``,
``OUTLINE_DOWN_112``): where dlib's 68 points fail (extreme pose) the compositor places the mean
outline by the five detector landmarks; a turned face's outline is not the frontal mean. Fitted
here, in the 112 px frame of the five landmarks, as mean + (s - s0) x across + (t - t0) x down, where
s and t are the nose tip's offset from the eyes' midpoint across and along the face, in eye
distances, on the faces whose 68 points agree with the detector (the compositor's own test).

    python benchmarks/fit_pose_outline.py [--limit 800]

Faces: every retinaface-onnx detection with eyes at least 20 px apart in the CelebA photos in the
wild (``../shared/data/celeba-wild``), three quarters to fit, a quarter held out. Prints the held-out
mean point error of the frontal mean and of the posed one (all faces, and the turned ones), and the
constants to paste.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "celeba-wild" / "images"


def faces(limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Five landmarks and the 68 points' first 27, both in the 112 px frame, of the faces whose 68 agree."""
    from anoncli.faces.align import alignment_matrix, apply_affine
    from anoncli.faces.compositing import LANDMARK_DISAGREEMENT, landmark_disagreement, predict_landmarks68
    from anoncli.faces.detectors import create_detector

    detector = create_detector("retinaface-onnx")
    fives, outlines = [], []
    for path in sorted(DATA.glob("*.jpg"))[:limit]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for det in detector.detect([rgb])[0]:
            l5 = np.asarray(det.landmarks, np.float64)
            if np.linalg.norm(l5[1] - l5[0]) < 20:
                continue
            pts = predict_landmarks68(rgb, l5)
            if landmark_disagreement(pts, l5) > LANDMARK_DISAGREEMENT:
                continue
            m = alignment_matrix(l5, 112, 0.0)
            fives.append(apply_affine(m, l5))
            outlines.append(apply_affine(m, pts[:27]))
    return np.array(fives), np.array(outlines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=800, help="photos, in name order")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing; is ../shared present?")
    from anoncli.faces.outline import MEAN_OUTLINE_112, nose_offsets, posed_mean_outline

    fives, outlines = faces(args.limit)
    s, t = nose_offsets(fives)
    s0, t0 = float(np.median(s)), float(np.median(t))
    order = np.random.default_rng(0).permutation(len(fives))
    fit, held = order[: len(order) * 3 // 4], order[len(order) * 3 // 4:]
    design = np.stack([np.ones(len(fit)), s[fit] - s0, t[fit] - t0], 1)
    coef, *_ = np.linalg.lstsq(design, (outlines[fit] - MEAN_OUTLINE_112).reshape(len(fit), -1), rcond=None)
    across, down = coef[1].reshape(27, 2), coef[2].reshape(27, 2)
    frontal = np.linalg.norm(MEAN_OUTLINE_112 - outlines[held], axis=2).mean(1)
    posed = np.array([np.linalg.norm(posed_mean_outline(f, s0, t0, across, down) - o, axis=1).mean()
                      for f, o in zip(fives[held], outlines[held])])
    turned = np.abs(s[held] - s0) > 0.15
    print(f"{len(fives)} faces whose 68 points agree; s (across) 5-95 %: {np.percentile(s, 5):.3f} .. {np.percentile(s, 95):.3f}")
    print("| held-out faces | n | frontal mean outline | posed |\n| --- | --- | --- | --- |")
    print(f"| all | {len(held)} | {frontal.mean():.2f} px | {posed.mean():.2f} px |")
    print(f"| turned (|s - s0| > 0.15) | {int(turned.sum())} | {frontal[turned].mean():.2f} px | {posed[turned].mean():.2f} px |")
    print(f"\nPOSE_REFERENCE = ({s0:.4f}, {t0:.4f})")
    for name, arr in (("OUTLINE_ACROSS_112", across), ("OUTLINE_DOWN_112", down)):
        rows = ", ".join(f"[{x:.1f}, {y:.1f}]" for x, y in arr)
        print(f"{name} = np.array([{rows}])")


if __name__ == "__main__":
    main()
