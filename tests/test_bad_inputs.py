"""Bad inputs end to end: a folder of broken, odd and hostile files through the real CLI.

Every discovered image file gets exactly one manifest row; failures carry a reason; nothing
prints a traceback; nothing half-written or temporary is left in the output.
"""
from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from anoncli.io.atomic import TEMP_MARK
from anoncli.io.journal import read_manifest

from conftest import FACES, FACE_NAME, jpeg_bytes, png_bomb, smooth_rgb

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
LONG_NAME = "l" * 246 + ".png"  # 250 bytes: legal, but too long for a naive temp-file name

# name -> statuses it may end with
EXPECT = {
    "face.jpg": {"ok", "no_face"},
    "cmyk.jpg": {"ok", "no_face"},
    "grey16.png": {"ok", "no_face"},
    "rgb16.png": {"ok", "no_face"},
    "grey8.png": {"ok", "no_face"},
    "palette.png": {"ok", "no_face"},
    "rgba.png": {"ok", "no_face"},
    "sub/UPPER.JPEG": {"ok", "no_face"},
    LONG_NAME: {"ok", "no_face"},
    "empty.jpg": {"error"},
    "truncated.jpg": {"error"},
    "x.png": {"error"},
    "bomb.png": {"error"},
    "gif_named.webp": {"error"},
    "apng.png": {"error"},
    "animated.webp": {"error"},
    "loop.jpg": {"error"},
}
if not IS_ROOT:
    EXPECT["noread.jpg"] = {"error"}
GOOD = sorted(n for n, s in EXPECT.items() if s != {"error"})


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "anoncli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _base_image() -> np.ndarray:
    """RGB pixels the mode variants are made from: the real face when present, else a gradient."""
    path = FACES / FACE_NAME
    if path.is_file():
        return np.array(Image.open(path).convert("RGB"))
    return smooth_rgb(120, 160)


def build_input(root: Path) -> dict:
    """The bad-inputs folder; returns the arrays the mode checks compare against."""
    root.mkdir()
    rng = np.random.default_rng(7)
    base = _base_image()
    h, w = base.shape[:2]
    real = FACES / FACE_NAME
    face_data = real.read_bytes() if real.is_file() else jpeg_bytes(base, quality=90)
    (root / "face.jpg").write_bytes(face_data)

    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(face_data[: len(face_data) // 2])
    (root / "x.png").write_text("this is not a picture\n")
    (root / "bomb.png").write_bytes(png_bomb())

    Image.fromarray(base).convert("CMYK").save(root / "cmyk.jpg", quality=92)
    grey = np.array(Image.fromarray(base).convert("L"))
    # 16-bit data whose low byte carries information, so a round trip through 8 bits shows.
    grey16 = grey.astype(np.uint16) * 256 + rng.integers(0, 256, grey.shape, dtype=np.uint16)
    Image.fromarray(grey16).save(root / "grey16.png")
    rgb16 = base.astype(np.uint16) * 256 + rng.integers(0, 256, base.shape, dtype=np.uint16)
    assert cv2.imwrite(str(root / "rgb16.png"), rgb16[..., ::-1])
    Image.fromarray(grey).save(root / "grey8.png")
    Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(root / "palette.png", transparency=0)
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    Image.fromarray(np.dstack([base, alpha]), "RGBA").save(root / "rgba.png")

    frames = [Image.fromarray(smooth_rgb(32, 32, seed=i)) for i in range(3)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (root / "anim.gif").rename(root / "gif_named.webp")
    frames[0].save(root / "apng.png", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(root / "animated.webp", save_all=True, append_images=frames[1:], duration=100)

    if not IS_ROOT:
        (root / "noread.jpg").write_bytes(face_data)
        os.chmod(root / "noread.jpg", 0)
    os.symlink("loop.jpg", root / "loop.jpg")
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "back")
    Image.fromarray(smooth_rgb()).save(root / "sub" / "UPPER.JPEG", quality=90)
    Image.fromarray(smooth_rgb(seed=3)).save(root / LONG_NAME)
    (root / "notes.txt").write_text("not an image extension: never discovered\n")
    return {"grey16": grey16, "rgb16": rgb16, "alpha": alpha, "grey": grey,
            "palette_rgba": np.array(Image.open(root / "palette.png").convert("RGBA"))}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    top = tmp_path_factory.mktemp("bad")
    src, out = top / "in", top / "out"
    arrays = build_input(src)
    proc = cli("anonymize", str(src), "-o", str(out), "-j", "1", "-q")
    yield {"src": src, "out": out, "proc": proc, "arrays": arrays,
           "manifest": read_manifest(out / "manifest.csv") if (out / "manifest.csv").exists() else None}
    if not IS_ROOT:
        os.chmod(src / "noread.jpg", 0o644)


def row(run, name: str):
    df = run["manifest"]
    return df[df["input"] == name].iloc[0]


def test_exit_code_and_no_traceback(bad_run):
    proc = bad_run["proc"]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert "failed" in proc.stdout


def test_one_manifest_row_per_discovered_image(bad_run):
    df = bad_run["manifest"]
    assert df is not None, bad_run["proc"].stderr[-3000:]
    assert sorted(df["input"]) == sorted(EXPECT)
    assert df["input"].is_unique
    assert not any(name.startswith("sub/back/") for name in df["input"])


def test_every_row_has_expected_status_and_errors_have_reasons(bad_run):
    df = bad_run["manifest"]
    for _, r in df.iterrows():
        assert r["status"] in EXPECT[r["input"]], (r["input"], r["status"], r["reason"])
        if r["status"] == "error":
            assert r["reason"].strip(), r["input"]
            assert not r["output"], r["input"]
            assert "internal error" not in r["reason"], (r["input"], r["reason"])
        else:
            assert r["output"] == r["input"]


@pytest.mark.parametrize("name, words", [
    ("empty.jpg", "empty file"),
    ("truncated.jpg", "truncated"),
    ("x.png", "not an image"),
    ("bomb.png", "--max-pixels"),
    ("gif_named.webp", "GIF"),
    ("apng.png", "animated"),
    ("animated.webp", "animated"),
    ("loop.jpg", "symlink loop"),
])
def test_error_reasons_name_the_problem(bad_run, name, words):
    assert words in row(bad_run, name)["reason"]


def test_unreadable_file_reason(bad_run):
    if IS_ROOT:
        pytest.skip("running as root: every file is readable")
    assert "Permission denied" in row(bad_run, "noread.jpg")["reason"]


def test_directory_loop_is_reported_not_followed(bad_run):
    assert "sub/back" in flat(bad_run["proc"].stdout)
    assert not (bad_run["out"] / "sub" / "back").exists()


def test_outputs_are_whole_and_no_temp_files(bad_run):
    out = bad_run["out"]
    written = set()
    for path in out.rglob("*"):
        assert TEMP_MARK not in path.name, path
        if path.is_file() and ".anoncli" not in path.relative_to(out).parts and path.suffix not in (".csv", ".json", ".parquet"):
            with Image.open(path) as im:
                im.load()
            written.add(path.relative_to(out).as_posix())
    assert written == set(GOOD)


def test_real_face_is_anonymized(bad_run):
    if not (FACES / FACE_NAME).is_file():
        pytest.skip(f"real face images not available under {FACES}")
    r = row(bad_run, "face.jpg")
    assert r["status"] == "ok" and r["n_faces"] >= 1
    before = np.array(Image.open(bad_run["src"] / "face.jpg"), np.float32)
    after = np.array(Image.open(bad_run["out"] / "face.jpg"), np.float32)
    assert np.abs(before - after).max() > 50  # the face really changed


def test_report_gallery_errors_are_one_line(bad_run, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,identity\nface.jpg,7\n")
    no_labels = cli("report", str(bad_run["out"]), "--gallery", str(bad_run["src"]), "-o", str(tmp_path / "r1"), "-q")
    missing = cli("report", str(bad_run["out"]), "--labels", str(labels), "--gallery", str(tmp_path / "nowhere"),
                  "-o", str(tmp_path / "r2"), "-q")
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    Image.new("RGB", (32, 32)).save(unlabelled / "nobody.png")
    nothing = cli("report", str(bad_run["out"]), "--labels", str(labels), "--gallery", str(unlabelled),
                  "-o", str(tmp_path / "r3"), "-q", "--no-cache")
    for proc, words in ((no_labels, "--gallery needs --labels"), (missing, "gallery folder"),
                        (nothing, "has an identity in --labels")):
        assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
        assert words in flat(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r3").exists()


def test_cmyk_stays_cmyk(bad_run):
    with Image.open(bad_run["out"] / "cmyk.jpg") as im:
        assert (im.format, im.mode) == ("JPEG", "CMYK")


def test_grey16_stays_16bit_greyscale(bad_run):
    with Image.open(bad_run["out"] / "grey16.png") as im:
        assert im.mode == "I;16"
    out = cv2.imread(str(bad_run["out"] / "grey16.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.ndim == 2
    # Outside the face the 16-bit values (low byte included) come back exactly.
    assert (out == bad_run["arrays"]["grey16"]).mean() > 0.5


def test_rgb16_stays_16bit_colour(bad_run):
    out = cv2.imread(str(bad_run["out"] / "rgb16.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape[2] == 3
    assert (out[..., ::-1] == bad_run["arrays"]["rgb16"]).all(axis=2).mean() > 0.5


def test_grey8_stays_greyscale(bad_run):
    with Image.open(bad_run["out"] / "grey8.png") as im:
        assert im.mode == "L"
        assert (np.array(im) == bad_run["arrays"]["grey"]).mean() > 0.5


def test_palette_with_transparency_keeps_it(bad_run):
    with Image.open(bad_run["out"] / "palette.png") as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.array(im)[..., 3], bad_run["arrays"]["palette_rgba"][..., 3])
    assert "palette" in row(bad_run, "palette.png")["notes"]


def test_rgba_keeps_alpha_identical(bad_run):
    with Image.open(bad_run["out"] / "rgba.png") as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.array(im)[..., 3], bad_run["arrays"]["alpha"])


# -- problems with the run as a whole: exit code 2, one clear line, no traceback ---------------

def _assert_usage_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    text = flat(proc.stderr)
    assert "error:" in text
    for w in words:
        assert w in text, text


def _tiny_input(path: Path) -> Path:
    path.mkdir(parents=True)
    Image.fromarray(smooth_rgb()).save(path / "a.png")
    return path


def test_output_inside_input_is_refused(tmp_path):
    src = _tiny_input(tmp_path / "in")
    _assert_usage_error(cli("anonymize", str(src), "-o", str(src / "anon"), "-q"), "overlap")
    assert not (src / "anon").exists()


def test_output_same_as_input_is_refused(tmp_path):
    src = _tiny_input(tmp_path / "in")
    _assert_usage_error(cli("anonymize", str(src), "-o", str(src), "-q"), "overlap")
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]


def test_input_containing_output_through_a_link_is_refused(tmp_path):
    src = _tiny_input(tmp_path / "in")
    os.symlink(src, tmp_path / "link")
    _assert_usage_error(cli("anonymize", str(tmp_path / "link"), "-o", str(src / "anon"), "-q"), "overlap")


def test_missing_input_folder(tmp_path):
    _assert_usage_error(cli("anonymize", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "-q"), "does not exist")
    assert not (tmp_path / "out").exists()


def test_input_that_is_a_file(tmp_path):
    f = tmp_path / "a.png"
    Image.fromarray(smooth_rgb()).save(f)
    _assert_usage_error(cli("anonymize", str(f), "-o", str(tmp_path / "out"), "-q"), "not a folder")


def test_output_that_is_a_file(tmp_path):
    src = _tiny_input(tmp_path / "in")
    (tmp_path / "out").write_text("x")
    _assert_usage_error(cli("anonymize", str(src), "-o", str(tmp_path / "out"), "-q"), "cannot write to output folder")


def test_unwritable_output_folder(tmp_path):
    if IS_ROOT:
        pytest.skip("running as root: every folder is writable")
    src = _tiny_input(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir(mode=0o500)
    try:
        _assert_usage_error(cli("anonymize", str(src), "-o", str(out), "-q"),
                            "cannot write to output folder", "Permission denied")
    finally:
        out.chmod(0o755)


# -- a full disk in the middle of a run ----------------------------------------------------------

def _disk_fills_after(n_good_writes: int):
    """An ``os.write`` that lets ``n_good_writes`` calls through, then writes half of one buffer
    and fails every later call with ENOSPC, as a filling disk does."""
    real_write = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] <= n_good_writes:
            return real_write(fd, data)
        if calls["n"] == n_good_writes + 1 and len(data) > 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from anoncli.io import atomic

    target = tmp_path / "a.png"
    target.write_bytes(b"old complete file")
    monkeypatch.setattr(atomic.os, "write", _disk_fills_after(0))
    with pytest.raises(OSError) as info:
        atomic.write_atomic(target, b"new" * 1000)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_temp_name_fits_beside_a_long_name(tmp_path):
    from anoncli.io import atomic

    name = "é" * 125 + ".png"  # 254 bytes in UTF-8, one short of the limit
    temp = atomic.temp_name(name)
    assert TEMP_MARK in temp and len(os.fsencode(temp)) <= 255
    atomic.write_atomic(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"


def test_full_disk_stops_cleanly_and_resumes(tmp_path, monkeypatch):
    from anoncli.config import RunConfig
    from anoncli.io import atomic
    from anoncli.run import run_anonymize

    src = tmp_path / "in"
    src.mkdir()
    names = [f"img{i}.png" for i in range(4)]
    for i, name in enumerate(names):
        Image.fromarray(smooth_rgb(seed=i)).save(src / name)
    out = tmp_path / "out"
    config = RunConfig(method="blur")
    kwargs = dict(workers=1, batch_size=1, progress=False, log=lambda m: None)

    # config.json and the first image are written; the second image fills the disk.
    monkeypatch.setattr(atomic.os, "write", _disk_fills_after(2))
    summary = run_anonymize(src, out, config, **kwargs)
    monkeypatch.undo()

    assert summary.stopped and "no space left" in summary.stopped
    assert summary.exit_code == 1
    assert summary.counts["not_done"] == len(names) - 1
    assert not [p for p in out.rglob("*") if TEMP_MARK in p.name]
    assert (out / "img0.png").is_file() and not (out / "img1.png").exists()
    journal = [json.loads(line) for line in (out / ".anoncli" / "journal.jsonl").read_text().splitlines()]
    assert [(r["input"], r["status"]) for r in journal] == [("img0.png", "no_face")]

    summary = run_anonymize(src, out, config, **kwargs)
    assert summary.stopped is None, summary.stopped
    assert summary.exit_code == 0
    assert summary.counts["no_face"] + summary.counts["ok"] == len(names)
    assert summary.resumed == 1
    assert not [p for p in out.rglob("*") if TEMP_MARK in p.name]
    for name in names:
        with Image.open(out / name) as im:
            im.load()
    df = read_manifest(out / "manifest.csv")
    assert sorted(df["input"]) == names and set(df["status"]) <= {"ok", "no_face"}


# -- one image that breaks a stage must not stop the others -------------------------------------

def _worker_batch(tmp_path: Path, n: int = 3):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    batch = []
    for i in range(n):
        name = f"img{i}.png"
        Image.fromarray(smooth_rgb(40 + i, 50, seed=i)).save(src / name)
        batch.append((name, str(src / name), str(out / name)))
    return batch, out


def test_detector_failure_on_one_image_fails_only_that_image(tmp_path):
    from anoncli.config import RunConfig
    from anoncli.pipeline import Worker

    worker = Worker(RunConfig(method="blur"), threads=1)
    real = worker.detector

    class Fussy:
        def detect(self, images):
            if any(im.shape[0] == 41 for im in images):
                raise RuntimeError("detector cannot handle this one")
            return real.detect(images)

    worker.detector = Fussy()
    batch, out = _worker_batch(tmp_path)
    records = {r.input: r.to_dict() for r in worker.process(batch)}
    assert records["img1.png"]["status"] == "error"
    assert "internal error in face detection" in records["img1.png"]["reason"]
    assert "detector cannot handle this one" in records["img1.png"]["reason"]
    for name in ("img0.png", "img2.png"):
        assert records[name]["status"] == "no_face" and (out / name).is_file()
    assert not (out / "img1.png").exists()


def test_unexpected_decoder_failure_fails_only_that_image(tmp_path, monkeypatch):
    from anoncli import pipeline
    from anoncli.config import RunConfig

    real_load = pipeline.load_image
    calls = []

    def load(source, *args, **kwargs):  # the batch is decoded in order: the first call is img0.png
        calls.append(source)
        if len(calls) == 1:
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(pipeline, "load_image", load)
    worker = pipeline.Worker(RunConfig(method="blur"), threads=1)
    batch, out = _worker_batch(tmp_path)
    records = {r.input: r.to_dict() for r in worker.process(batch)}
    assert records["img0.png"]["status"] == "error"
    assert records["img0.png"]["reason"].startswith("internal error in decoding: error: unpack requires")
    assert [records[n]["status"] for n in ("img1.png", "img2.png")] == ["no_face", "no_face"]
