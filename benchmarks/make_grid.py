"""Original | run A | run B ... grids of every face, at the photo's resolution (no resampling), for
looking at a method's faces (README grids).

    python benchmarks/make_grid.py OUT.jpg ORIGINALS RUN [RUN ...] [--faces N] [--context 1.6]

Each row is one face of RUN's manifest (the first RUN's boxes), cut from the originals and from
every run with the same box grown by --context around its centre."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("originals", type=Path)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--context", type=float, default=1.6, help="the box's side times this")
    ap.add_argument("--gap", type=int, default=4)
    args = ap.parse_args()
    rows = pd.read_csv(args.runs[0] / "manifest.csv", keep_default_na=False)
    tiles = []
    for row in rows.itertuples():
        if row.status != "ok":
            continue
        sources = [args.originals / row.input] + [run / row.output for run in args.runs]
        images = [np.asarray(Image.open(p).convert("RGB")) for p in sources]
        for face in json.loads(row.faces):
            if "warp" not in face:
                continue
            x0, y0, x1, y1 = face["box"]
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * args.context / 2
            h, w = images[0].shape[:2]
            box = [int(max(cx - half, 0)), int(max(cy - half, 0)), int(min(cx + half, w)), int(min(cy + half, h))]
            cut = [im[box[1]:box[3], box[0]:box[2]] for im in images]
            gap = np.full((cut[0].shape[0], args.gap, 3), 255, np.uint8)
            tiles.append(np.concatenate(sum(([c, gap] for c in cut), [])[:-1], axis=1))
            if len(tiles) == args.faces:
                break
        if len(tiles) == args.faces:
            break
    width = max(t.shape[1] for t in tiles)
    padded = [np.pad(t, ((0, args.gap), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    Image.fromarray(np.concatenate(padded, axis=0)).save(args.out, quality=90)
    print(f"{args.out}: {len(tiles)} faces, {len(args.runs)} runs")


if __name__ == "__main__":
    main()
