"""benchmarks/device_training.py: a work folder's aligned faces packed here come back there as a work
folder that `anoncli train` takes as its own, without detecting a face again."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import device_training  # noqa: E402

from anoncli.train import face_crops  # noqa: E402


def smooth_faces(n: int, side: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    faces = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3, 3)
        img = np.stack([np.sin(a * np.pi * xx + c), np.cos(b * np.pi * yy), np.sin(c * np.pi * (xx + yy))], -1)
        faces.append(((img + 1) * 127.5).astype(np.uint8))
    return np.stack(faces)


def make_work(tmp_path: Path, sources: list[Path]) -> Path:
    work = tmp_path / "here"
    data = work / "data"
    data.mkdir(parents=True)
    crops = smooth_faces(6)
    index = [{"source": sources[i % 2].name, "image": f"{i}.jpg", "identity": str(i), "held_out": i == 0} for i in range(6)]
    np.save(data / "crops.npy", crops)
    np.save(data / "descriptors.npy", np.random.default_rng(1).normal(0, 0.1, (6, 2, 128)).astype(np.float32))
    settings = {"resolution": 128, "margin": 0.2, "sources": [str(s) for s in sources]}
    (data / "crops.json").write_text(json.dumps({"settings": settings, "index": index}))
    return work


def test_parts_weigh_about_the_same_with_the_extras_in_the_last():
    assert device_training.split_into_parts([1] * 10, 0, 2) == [range(0, 5), range(5, 10)]
    assert device_training.split_into_parts([1] * 10, 4, 2) == [range(0, 7), range(7, 10)]
    assert device_training.split_into_parts([5, 1, 1], 0, 3) == [range(0, 1), range(1, 2), range(2, 3)]
    assert device_training.split_into_parts([1] * 4, 0, 1) == [range(0, 4)]


def test_unpacked_work_folder_is_taken_as_prepared(tmp_path, monkeypatch):
    work = make_work(tmp_path, [Path("/elsewhere/celeba-crops"), Path("/elsewhere/utkface")])
    result = device_training.pack(work, tmp_path / "pack", quality=90, with_dlib=False, parts=2)
    assert len(result["part_mib"]) == 2
    arrived = tmp_path / "arrived"   # the parts travel in separate calls and are copied into one folder there
    arrived.mkdir()
    for part in (tmp_path / "pack").iterdir():
        for f in part.iterdir():
            shutil.copyfile(f, arrived / f.name)
    there = [tmp_path / "d" / "celeba-crops", tmp_path / "d" / "utkface"]
    device_training.unpack(arrived, tmp_path / "there", there)

    def no_detection(*_):
        raise AssertionError("prepare detected faces instead of taking the unpacked ones")
    monkeypatch.setattr("anoncli.faces.detectors.create_detector", no_detection)
    crops = face_crops.prepare(there, tmp_path / "there" / "data", 128, 0.2, progress=False)

    original = np.load(work / "data" / "crops.npy").astype(float)
    mse = np.mean((np.asarray(crops.crops, float) - original) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 35
    assert crops.index == json.loads((work / "data" / "crops.json").read_text())["index"]
    assert list(crops.split(held_out=True)) == [0]
    np.testing.assert_allclose(crops.descriptors, np.load(work / "data" / "descriptors.npy"), atol=1e-3)


def test_unpack_refuses_stand_ins_that_do_not_name_the_sources(tmp_path):
    work = make_work(tmp_path, [Path("/elsewhere/celeba-crops"), Path("/elsewhere/utkface")])
    device_training.pack(work, tmp_path / "pack", quality=80, with_dlib=False)
    with pytest.raises(SystemExit, match="utkface"):
        device_training.unpack(tmp_path / "pack", tmp_path / "there", [tmp_path / "d" / "celeba-crops"])
    assert not (tmp_path / "there" / "data" / "crops.json").exists()


def test_unpack_refuses_a_pack_with_a_part_missing(tmp_path):
    work = make_work(tmp_path, [Path("/elsewhere/celeba-crops"), Path("/elsewhere/utkface")])
    device_training.pack(work, tmp_path / "pack", quality=80, with_dlib=False, parts=2)
    shutil.rmtree(tmp_path / "pack" / "part-1")
    there = [tmp_path / "d" / "celeba-crops", tmp_path / "d" / "utkface"]
    with pytest.raises(SystemExit, match="lacks .* of the 6 faces"):
        device_training.unpack(tmp_path / "pack", tmp_path / "there", there)
    assert not (tmp_path / "there" / "data" / "crops.json").exists()


def test_pack_without_descriptors_has_them_computed_again(tmp_path):
    work = make_work(tmp_path, [Path("/elsewhere/celeba-crops"), Path("/elsewhere/utkface")])
    crops = np.load(work / "data" / "crops.npy")
    as_prepared = face_crops.embed_crops(crops, 128, 0.2, progress=False)
    np.save(work / "data" / "descriptors.npy", as_prepared)
    device_training.pack(work, tmp_path / "pack", quality=90, with_dlib=False, with_descriptors=False)
    assert not (tmp_path / "pack" / device_training.DESCRIPTORS).exists()
    there = [tmp_path / "d" / "celeba-crops", tmp_path / "d" / "utkface"]
    device_training.unpack(tmp_path / "pack", tmp_path / "there", there)
    recomputed = np.load(tmp_path / "there" / "data" / "descriptors.npy")
    assert recomputed.shape == as_prepared.shape
    # dlib calls faces the same person below 0.6; WebP at quality 90 moves a descriptor far less (0.02-0.06 here)
    assert np.linalg.norm(recomputed - as_prepared, axis=-1).max() < 0.1


def test_parts_of_two_packs_are_not_mixed(tmp_path):
    work = make_work(tmp_path, [Path("/elsewhere/celeba-crops"), Path("/elsewhere/utkface")])
    device_training.pack(work, tmp_path / "one", quality=80, with_dlib=False, parts=1)
    with pytest.raises(SystemExit, match="not empty"):
        device_training.pack(work, tmp_path / "one", quality=80, with_dlib=False, parts=2)
    device_training.pack(work, tmp_path / "two", quality=80, with_dlib=False, parts=2)
    arrived = tmp_path / "arrived"
    shutil.copytree(tmp_path / "one" / "part-1", arrived)
    for f in (tmp_path / "two" / "part-2").iterdir():
        if f.name.startswith("faces-") or f.name.startswith("offsets-"):
            shutil.copyfile(f, arrived / f.name)
    there = [tmp_path / "d" / "celeba-crops", tmp_path / "d" / "utkface"]
    with pytest.raises(SystemExit, match="two packs"):
        device_training.unpack(arrived, tmp_path / "there", there)


def test_lossless_carrying_costs_dlib_nothing_and_lossy_costs_something(tmp_path):
    work = make_work(tmp_path, [Path("/elsewhere/celeba-crops"), Path("/elsewhere/utkface")])
    crops = np.load(work / "data" / "crops.npy")
    np.save(work / "data" / "descriptors.npy", face_crops.embed_crops(crops, 128, 0.2, progress=False))
    rows = {row["faces as"]: row for row in device_training.encoding_costs(work, faces=3)}
    assert rows["WebP lossless"]["dlib distance, mean"] == 0
    assert rows["WebP 80"]["dlib distance, mean"] > 0
    assert rows["WebP 80"]["bytes a face"] < rows["WebP 90"]["bytes a face"] < rows["WebP 95"]["bytes a face"]
