"""Acceptance checks on real CelebA images from ../shared (skipped where absent) and on the
bundled examples: face recall, de-identification by dlib distance, no-face policies."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "images"


def anonymize(src: Path, out: Path, *flags) -> pd.DataFrame:
    r = subprocess.run([sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(out), "-q", *map(str, flags)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode in (0, 1), r.stderr
    return pd.read_csv(out / "manifest.csv", keep_default_na=False)


def linked_subset(folder: Path, dest: Path, n: int) -> Path:
    if not folder.is_dir():
        pytest.skip(f"{folder} not available (real CelebA images live in ../shared/data)")
    dest.mkdir()
    for p in sorted(folder.glob("*.jpg"))[:n]:
        (dest / p.name).symlink_to(p)
    return dest


def test_examples_every_face_found(tmp_path):
    m = anonymize(EXAMPLES, tmp_path / "out").set_index("input")
    assert m.loc["group/three-faces.png", "n_faces"] == 3
    for name in ("astronaut.jpg", "tilted.jpg", "border.webp", "group/grey.png", "camera.png"):
        assert m.loc[name, "n_faces"] == 1, name


@pytest.mark.parametrize("subset,n", [("celeba-wild", 120), ("celeba-crops", 200)])
def test_recall_on_celeba(tmp_path, subset, n):
    src = linked_subset(SHARED / "data" / subset / "images", tmp_path / "in", n)
    m = anonymize(src, tmp_path / "out")
    assert len(m) == n
    assert (m.n_faces > 0).mean() >= 0.99


def test_blur_default_deidentifies_by_dlib_distance(tmp_path):
    dlib_identity = pytest.importorskip("anoncli.metrics.dlib_identity")
    pytest.importorskip("dlib", reason="pip install 'anoncli[eval]'")
    src = linked_subset(SHARED / "data" / "celeba-wild" / "images", tmp_path / "in", 60)
    out = tmp_path / "out"
    m = anonymize(src, out)
    _, recognizable = dlib_identity.deidentification_distances(src, out, m, dlib_identity.DlibIdentity())
    assert len(recognizable) >= 40
    assert (np.array(recognizable) > 0.6).mean() >= 0.9


@pytest.mark.parametrize("policy,status,written,code", [("keep", "no_face", True, 0), ("skip", "no_face", False, 0),
                                                        ("fail", "error", False, 1)])
def test_no_face_policies(tmp_path, policy, status, written, code):
    src = tmp_path / "in"
    src.mkdir()
    y, x = np.mgrid[0:120, 0:160]
    Image.fromarray(np.stack([x, y, x + y], 2).astype(np.uint8)).save(src / "wall.png")
    r = subprocess.run([sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(tmp_path / "out"), "-q",
                        "--no-face", policy], capture_output=True, text=True)
    assert r.returncode == code
    assert "1 with no face found" in r.stdout or policy == "fail"
    row = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False).iloc[0]
    assert row.status == status and row.reason
    assert (tmp_path / "out" / "wall.png").exists() == written
    if written:
        assert np.array_equal(np.asarray(Image.open(src / "wall.png")), np.asarray(Image.open(tmp_path / "out" / "wall.png")))
