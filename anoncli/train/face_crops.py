"""The aligned training faces for the identity generator: detect, align, cut, embed, once.

Each source folder (a data set folder holding ``images/`` and optionally ``labels.csv``) gives
the largest face of each image, aligned on the methods' template (``anoncli.faces.align``) at
the generator's resolution, stored in one uint8 array with an index table; dlib descriptors of
each crop and of its mirror image are computed through the same differentiable chip warp the
training loss uses. Held-out faces are chosen by identity (CelebA) or by a hash of the file
name (no identity labels), so no held-out person is ever trained on.

Everything lives under a work folder outside the repository (the data's licence forbids
copying it into the project); ``prepare`` resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.atomic import write_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
HOLDOUT_MODULUS = 10   # one identity (or file) in ten is held out


def is_held_out(source: str, name: str, identity: str | None) -> bool:
    """Identity-disjoint split: identity mod 10 == 0 when labelled, else a hash of the name."""
    if identity not in (None, "", "nan"):
        try:
            return int(float(identity)) % HOLDOUT_MODULUS == 0
        except ValueError:
            pass
    digest = hashlib.sha256(f"{source}/{name}".encode()).digest()
    return digest[0] % HOLDOUT_MODULUS == 0


@dataclass
class CropSet:
    crops: np.ndarray            # N x R x R x 3 uint8
    index: list[dict]            # source, image, identity, held_out
    descriptors: np.ndarray      # N x 2 x 128: crop, mirrored crop

    def split(self, held_out: bool) -> np.ndarray:
        return np.array([i for i, row in enumerate(self.index) if bool(row["held_out"]) == held_out], dtype=np.int64)


def _identities(folder: Path) -> dict[str, str]:
    labels = folder / "labels.csv"
    if not labels.is_file():
        return {}
    import pandas as pd

    table = pd.read_csv(labels)
    if "identity" not in table.columns:
        return {}
    return dict(zip(table["image"].astype(str), table["identity"].astype(str)))


def _images(folder: Path) -> list[Path]:
    root = folder / "images" if (folder / "images").is_dir() else folder
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def prepare(sources: list[Path], work: Path, resolution: int, margin: float, progress: bool = True) -> CropSet:
    """Detect, align and embed every image of ``sources`` (resuming a previous run in ``work``)."""
    import cv2
    from PIL import Image, ImageOps
    from tqdm import tqdm

    from ..faces.align import alignment_matrix
    from ..faces.detectors import create_detector

    work.mkdir(parents=True, exist_ok=True)
    meta_path = work / "crops.json"
    settings = {"resolution": resolution, "margin": margin, "sources": [str(s.resolve()) for s in sources]}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["settings"] == settings and (work / "crops.npy").is_file() and (work / "descriptors.npy").is_file():
            return CropSet(np.load(work / "crops.npy", mmap_mode="r"), meta["index"], np.load(work / "descriptors.npy"))
    detector = create_detector("retinaface-onnx")
    crops, index = [], []
    todo = [(src, path) for src in sources for path in _images(src)]
    identities = {src: _identities(src) for src in sources}
    for src, path in tqdm(todo, desc="align", unit="img", disable=not progress):
        rgb = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        dets = detector.detect([rgb])[0]
        if not dets:
            continue
        det = max(dets, key=lambda d: d.size)
        m = alignment_matrix(det.landmarks, resolution, margin)
        crops.append(cv2.warpAffine(rgb, m, (resolution, resolution), flags=cv2.INTER_LINEAR,  # as the methods' crops
                                    borderMode=cv2.BORDER_REPLICATE))
        identity = identities[src].get(path.name)
        index.append({"source": src.name, "image": path.name, "identity": identity,
                      "held_out": is_held_out(src.name, path.name, identity)})
    if not crops:
        raise ValueError(f"no face found in the images of {', '.join(str(s) for s in sources)}")
    crops_arr = np.stack(crops)
    descriptors = embed_crops(crops_arr, resolution, margin, progress)
    save_npy(work / "crops.npy", crops_arr)
    save_npy(work / "descriptors.npy", descriptors)
    write_atomic(meta_path, json.dumps({"settings": settings, "index": index}).encode())
    return CropSet(crops_arr, index, descriptors)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as a .npy file at ``path``, written atomically."""
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    write_atomic(path, buf.getvalue())


def embed_crops(crops: np.ndarray, resolution: int, margin: float, progress: bool = True, batch: int = 32,
                device: str = "cpu") -> np.ndarray:
    """dlib descriptors (N x 2 x 128) of each crop and of its mirror, through the chip warp."""
    import torch
    from tqdm import tqdm

    from ..identity.encoders import load_identity_encoder
    from ..identity.representation import representation_without_code
    from ..models.tensors import to_tensor

    rep = representation_without_code(load_identity_encoder("dlib-resnet"), resolution, margin).to(device)
    out = np.zeros((len(crops), 2, 128), np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, len(crops), batch), desc="embed", unit="batch", disable=not progress):
            x = to_tensor(crops[start:start + batch]).to(device)
            out[start:start + batch, 0] = rep.descriptors(x).cpu().numpy()
            out[start:start + batch, 1] = rep.descriptors(x.flip(3)).cpu().numpy()
    return out
