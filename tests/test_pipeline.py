"""The whole pipeline through the CLI and run_anonymize: invariants a user relies on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anoncli.config import RunConfig
from anoncli.faces.blend import face_mask, image_mask
from anoncli.metrics.dlib_identity import box_iou
from anoncli.methods import get_method_spec
from anoncli.run import run_anonymize

from conftest import SHARED, kill_halfway

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "images"


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def png_dataset(dest: Path, copies: int = 1) -> Path:
    """The example images as PNG, ``copies`` times each under different names."""
    dest.mkdir(parents=True)
    for src in sorted(EXAMPLES.rglob("*")):
        if src.suffix.lower() in (".jpg", ".png", ".webp"):
            im = Image.open(src).convert("RGB")
            for k in range(copies):
                im.save(dest / f"{src.stem}-{k}.png")
    return dest


def union_of_blend_masks(row, method: str, params: dict, shape_hw) -> np.ndarray:
    res = params["resolution"]
    mask = face_mask(res, params["shape"], params["feather"])
    union = np.zeros(shape_hw, np.float32)
    for face in json.loads(row["faces"]):
        union = np.maximum(union, image_mask(mask, np.array(face["warp"]), *shape_hw))
    return union


@pytest.mark.parametrize("method", ["blur", "pixelate", "mask"])
def test_pixels_outside_blend_masks_are_bit_identical(tmp_path, method):
    src = png_dataset(tmp_path / "in")
    out = tmp_path / "out"
    r = cli("anonymize", src, "-o", out, "--method", method, "-q", "-j", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    params = get_method_spec(method).resolve_params({})
    assert (manifest.status == "ok").all()
    for row in manifest.to_dict("records"):
        a = np.asarray(Image.open(src / row["input"]).convert("RGB"))
        b = np.asarray(Image.open(out / row["output"]).convert("RGB"))
        union = union_of_blend_masks(row, method, params, a.shape[:2])
        outside = union == 0
        assert np.array_equal(a[outside], b[outside]), row["input"]
        inside = union > 0.5
        assert np.abs(a[inside].astype(int) - b[inside]).mean() > 5, f"{row['input']}: face barely changed"


def test_real_png_dataset_bit_identical_outside_masks(tmp_path):
    wild = SHARED / "data" / "celeba-wild" / "images"
    if not wild.is_dir():
        pytest.skip(f"{wild} not available")
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(wild.glob("*.jpg"))[:40]:
        Image.open(p).convert("RGB").save(src / (p.stem + ".png"))
    out = tmp_path / "out"
    summary = run_anonymize(src, out, RunConfig("blur", get_method_spec("blur").resolve_params({})),
                            workers=1, batch_size=8, progress=False, log=lambda m: None)
    assert summary.counts["error"] == 0
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    params = get_method_spec("blur").resolve_params({})
    changed_outside = 0
    for row in manifest[manifest.status == "ok"].to_dict("records"):
        a = np.asarray(Image.open(src / row["input"]))
        b = np.asarray(Image.open(out / row["output"]))
        outside = union_of_blend_masks(row, "blur", params, a.shape[:2]) == 0
        changed_outside += int((a[outside] != b[outside]).any())
    assert changed_outside == 0


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    src = png_dataset(tmp_path / "in", copies=8)
    n_inputs = len(list(src.iterdir()))
    reference = tmp_path / "reference"
    assert cli("anonymize", src, "-o", reference, "-q", "-j", "1").returncode == 0

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(out), "-q", "-j", "2", "--batch-size", "2"]
    journal = out / ".anoncli" / "journal.jsonl"
    done_before = kill_halfway(cmd, journal, n_inputs)
    assert 0 < done_before < n_inputs, "the kill must land halfway"

    r = cli("anonymize", src, "-o", out, "-q", "-j", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "already done earlier" in r.stdout
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == n_inputs and manifest.input.is_unique
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".anoncli" not in p.parts)
    expected = sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*") if p.is_file() and ".anoncli" not in p.parts)
    assert produced == expected
    for rel in expected:
        if rel.endswith(".png"):
            assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    journal_inputs = [json.loads(line)["input"] for line in journal.read_text().splitlines()]
    assert set(journal_inputs) == set(manifest.input)


def test_rerun_skips_everything_and_a_different_config_is_refused(tmp_path):
    src = png_dataset(tmp_path / "in")
    out = tmp_path / "out"
    assert cli("anonymize", src, "-o", out, "-q", "-j", "1").returncode == 0
    again = cli("anonymize", src, "-o", out, "-q", "-j", "1")
    assert again.returncode == 0 and f"{len(list(src.iterdir()))} already done earlier" in again.stdout
    clash = cli("anonymize", src, "-o", out, "--method", "pixelate", "-q")
    assert clash.returncode == 2
    assert "different configuration" in clash.stderr and "--overwrite" in clash.stderr
    assert "Traceback" not in clash.stderr
    replaced = cli("anonymize", src, "-o", out, "--method", "pixelate", "-q", "--overwrite")
    assert replaced.returncode == 0
    assert set(pd.read_csv(out / "manifest.csv").method) == {"pixelate"}


def test_input_is_never_modified(tmp_path):
    src = png_dataset(tmp_path / "in")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in src.iterdir()}
    assert cli("anonymize", src, "-o", tmp_path / "out", "-q").returncode == 0
    assert before == {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in src.iterdir()}


def test_default_output_is_a_sibling_and_run_record_is_complete(tmp_path):
    src = png_dataset(tmp_path / "photos")
    assert cli("anonymize", src, "-q").returncode == 0
    out = tmp_path / "photos-anon"
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["method"] == "blur" and len(record["config_hash"]) == 16
    assert record["detector"]["sha256"] and record["libraries"]["onnxruntime"]
    assert record["counts"]["ok"] == len(list(src.iterdir()))


def test_method_flags_are_validated(tmp_path):
    src = png_dataset(tmp_path / "in")
    bad = cli("anonymize", src, "--method", "blur", "--cells", "zero")
    assert bad.returncode == 2 and "--cells expects float" in bad.stderr
    unknown = cli("anonymize", src, "--method", "pixelate", "--sigma", "3")
    assert unknown.returncode == 2 and "has no flag --sigma" in unknown.stderr
    nomethod = cli("anonymize", src, "--method", "nosuch")
    assert nomethod.returncode == 2 and "unknown method" in nomethod.stderr


def test_strength_is_relative_to_face_size(tmp_path):
    """The same face at two resolutions gets the same relative blur (absolute sigma scales)."""
    src = tmp_path / "in"
    src.mkdir()
    face = Image.open(EXAMPLES / "astronaut.jpg")
    face.save(src / "big.png")
    face.resize((256, 256), Image.LANCZOS).save(src / "small.png")
    out = tmp_path / "out"
    assert cli("anonymize", src, "-o", out, "-q", "-j", "1").returncode == 0
    m = pd.read_csv(out / "manifest.csv").set_index("input")
    sigma = {k: json.loads(m.loc[k, "faces"])[0]["abs_params"]["sigma_px"] for k in ("big.png", "small.png")}
    assert sigma["big.png"] / sigma["small.png"] == pytest.approx(2.0, rel=0.05)


def test_help_does_not_import_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "anoncli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "anonymize" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert not {"torch", "cv2", "pandas", "onnxruntime"} & imported


def test_methods_lists_every_method_with_its_flags():
    r = cli("methods", "--json")
    assert r.returncode == 0
    data = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"blur", "pixelate", "mask", "noise"} <= set(data)
    assert any(p["flag"] == "--sigma" and p["default"] == 0.22 for p in data["blur"]["params"])
    assert all(m["citation"] for m in data.values())


def test_missing_weights_name_the_command_that_gets_them(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("ANONCLI_WEIGHTS", None)
    src = png_dataset(tmp_path / "in")
    r = cli("anonymize", src, "--detector", "retinaface-facexlib", env=env)
    assert r.returncode == 3
    assert "anoncli weights fetch retinaface-mobile0.25" in r.stderr.replace("\n", " ")
    listing = cli("weights", "list", env=env)
    assert listing.returncode == 0 and "missing" in listing.stdout


def test_facexlib_detector_after_weights_import(tmp_path):
    shared_weights = SHARED / "weights"
    if not (shared_weights / "retinaface_mobilenet0.25.pth").is_file():
        pytest.skip(f"{shared_weights} not available")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    imported = cli("weights", "import", shared_weights, env=env)
    assert imported.returncode == 0 and "retinaface-mobile0.25" in imported.stdout
    assert cli("weights", "verify", env=env).returncode == 0
    src = png_dataset(tmp_path / "in")
    runs = {}
    for det in ("retinaface-onnx", "retinaface-facexlib"):
        out = tmp_path / det
        r = cli("anonymize", src, "-o", out, "--detector", det, "-q", "-j", "1", env=env)
        assert r.returncode == 0, r.stderr
        runs[det] = pd.read_csv(out / "manifest.csv").set_index("input")
    # Two trainings of the same network: every confident face one finds, the other finds at the same place.
    for name in runs["retinaface-onnx"].index:
        a = json.loads(runs["retinaface-onnx"].loc[name, "faces"])
        b = json.loads(runs["retinaface-facexlib"].loc[name, "faces"])
        for mine, theirs in ((a, b), (b, a)):
            for face in (f for f in mine if f["score"] >= 0.5):
                assert max((box_iou(face["box"], g["box"]) for g in theirs), default=0) > 0.5, name
