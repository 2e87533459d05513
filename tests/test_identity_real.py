"""The identity methods with the committed generator on real faces, through the CLI (issue 6):
pixels outside the blend mask unchanged, the guarantee in the manifest, fresh noise per run, and
idrotate's restore moving the identity back. Skipped without ../shared or the generator weights."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, face_file

CROPS = SHARED / "data" / "celeba-crops"


@pytest.fixture(scope="module")
def generator_present():
    from anoncli.identity.generator import GENERATOR_WEIGHTS
    from anoncli.weights import weights_available

    ok, why = weights_available([GENERATOR_WEIGHTS])
    if not ok:
        pytest.skip(why)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def _png_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dest)


def test_identitydp_changes_only_the_blend_region(tmp_path, generator_present):
    from anoncli.faces.compositing import Compositor
    from anoncli.faces.compositing_config import config_from_params
    from anoncli.methods import get_method_spec
    from anoncli.identity.generator import GENERATOR_WEIGHTS, read_generator_file
    from anoncli.weights import resolve_weights

    _png_copy(face_file(), tmp_path / "in" / "face.png")
    outs = []
    for run in ("a", "b"):
        r = _cli("anonymize", tmp_path / "in", "-o", tmp_path / run, "--method", "identitydp", "--epsilon", "6", "-q", "-j", "1")
        assert r.returncode == 0, r.stderr
        outs.append(np.asarray(Image.open(tmp_path / run / "face.png").convert("RGB")))
    original = np.asarray(Image.open(tmp_path / "in" / "face.png").convert("RGB"))
    import csv

    rows = list(csv.DictReader((tmp_path / "a" / "manifest.csv").open()))
    faces = json.loads(rows[0]["faces"])
    assert faces, "the face must be found"
    margin = read_generator_file(resolve_weights(GENERATOR_WEIGHTS).path).margin
    touched = np.zeros(original.shape[:2], bool)
    compositor = Compositor(config_from_params(get_method_spec("identitydp").resolve_params({})))
    whole = (0, 0, original.shape[1], original.shape[0])
    for face in faces:
        # the region the compositor replaces: dlib's 68-point outline of the face, brows to chin
        region = compositor.locate(original, whole, np.asarray(face["landmarks"]), np.asarray(face["warp"]), 128, margin)
        assert face["region"] == region.source
        touched |= region.hard_mask(whole) > 0
        rim_px = max(2, round(0.03 * region.width))
        g = face["guarantee"]
        assert g["epsilon"] == 6 and g["dimension"] == 128
        assert g["l1_sensitivity"] == pytest.approx(2 * math.sqrt(128), abs=1e-5)
        assert g["noise_scale"] == pytest.approx(2 * math.sqrt(128) / 6, abs=1e-5)
    # the manifest's landmarks are rounded to 2 decimals, and dlib's regression trees may turn a
    # hundredth of a pixel into a point a pixel or two away: allow a rim of 3 % of the face's width
    from scipy.ndimage import binary_dilation

    rim = binary_dilation(touched, iterations=rim_px)
    for out in outs:
        np.testing.assert_array_equal(out[~rim], original[~rim])
        assert np.abs(out[touched].astype(int) - original[touched]).mean() > 1.0
    assert not np.array_equal(outs[0], outs[1]), "each run draws fresh noise"


@pytest.fixture(scope="module")
def idrotate_round_trip(tmp_path_factory, generator_present):
    """Six held-out CelebA crops (PNG) anonymized with idrotate and a keyfile, then restored."""
    import pandas as pd

    from anoncli.train.face_crops import is_held_out

    if not (CROPS / "labels.csv").is_file():
        pytest.skip(f"{CROPS} is not available")
    tmp = tmp_path_factory.mktemp("idrotate")
    table = pd.read_csv(CROPS / "labels.csv")
    names = [n for n, i in zip(table["image"], table["identity"]) if is_held_out("celeba-crops", n, str(i))][:6]
    for n in names:
        _png_copy(CROPS / "images" / n, tmp / "in" / (Path(n).stem + ".png"))
    env = {"ANONCLI_PASSPHRASE": "test-passphrase-idrotate"}
    key = tmp / "run.key"
    anon = _cli("anonymize", tmp / "in", "-o", tmp / "anon", "--method", "idrotate", "--keyfile", key,
                "--kdf-memory", "8", "--kdf-iterations", "1", "-q", "-j", "1", env=env)
    restored = _cli("restore", tmp / "anon", "--keyfile", key, "-o", tmp / "restored", "-q", env=env)
    return tmp, anon, restored


def test_idrotate_round_trip_runs_through_the_cli(idrotate_round_trip):
    tmp, anon, restored = idrotate_round_trip
    assert anon.returncode == 0, anon.stderr
    assert restored.returncode == 0, restored.stderr
    import csv

    rows = list(csv.DictReader((tmp / "restored" / "manifest.csv").open()))
    # the generator's rendering of the identity read back, not the original pixels: approximate, with its cosine
    assert len(rows) == 6 and all(r["status"] == "approximate" and r["restored_from"] == "model" for r in rows)
    assert all(-1.0 <= float(r["round_trip"]) <= 1.0 for r in rows)
    for p in (tmp / "in").iterdir():
        a, b = (np.asarray(Image.open(tmp / d / p.name).convert("RGB")) for d in ("anon", "restored"))
        assert a.shape == b.shape and not np.array_equal(a, b)   # restore re-renders the face


def test_idrotate_restore_moves_the_identity_back(idrotate_round_trip):
    pytest.importorskip("dlib", reason="dlib measures the identity: pip install 'anoncli[eval]'")
    from anoncli.metrics.dlib_identity import DlibIdentity

    tmp, anon, restored = idrotate_round_trip
    assert anon.returncode == 0 and restored.returncode == 0
    scorer = DlibIdentity()
    anon_d, rest_d = [], []
    for p in sorted((tmp / "in").iterdir()):
        orig = np.asarray(Image.open(p).convert("RGB"))
        boxes = scorer.detect(orig)
        if not boxes:
            continue
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        a = np.asarray(Image.open(tmp / "anon" / p.name).convert("RGB"))
        r = np.asarray(Image.open(tmp / "restored" / p.name).convert("RGB"))
        anon_d.append(scorer.distance(orig, a, box))
        rest_d.append(scorer.distance(orig, r, box))
    assert len(rest_d) >= 4
    assert np.mean(anon_d) > 0.6 and np.mean(rest_d) < 0.5
