"""DP-Pix (METHODS.md §2): the noise scale, its law, and the guarantee in the manifest."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from anoncli.methods.dppix import dp_pixelate, dppix_noise_scale

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def test_noise_scale_is_255_m_over_b_squared_epsilon():
    assert dppix_noise_scale(16, 16, 0.5) == pytest.approx(255 * 16 / (16 ** 2 * 0.5))
    assert dppix_noise_scale(4, 1, 2.0) == pytest.approx(255 / 32)
    with pytest.raises(ValueError):
        dppix_noise_scale(4, 1, 0.0)


def test_cells_must_hold_b_by_b_pixels():
    with pytest.raises(ValueError, match="does not divide"):
        dp_pixelate(np.zeros((6, 6, 3)), 4, 1, 1.0)


def test_empirical_noise_of_100000_draws_follows_the_stated_laplace_law():
    # One-pixel cells of a mid-grey image; the scale is small enough that clipping never happens.
    epsilon, m, cell = 100.0, 1, 1
    scale = dppix_noise_scale(cell, m, epsilon)
    grey = np.full((200, 200, 3), 127.5)
    noise = (dp_pixelate(grey, cell, m, epsilon) - 127.5).ravel()
    assert noise.size >= 10 ** 5
    assert stats.kstest(noise, "laplace", args=(0, scale)).pvalue > 1e-3
    assert stats.kstest(noise, "laplace", args=(0, 1.1 * scale)).pvalue < 1e-3


def test_output_is_constant_over_each_cell_and_fresh_every_time():
    img = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    a, b = dp_pixelate(img, 8, 4, 1.0), dp_pixelate(img, 8, 4, 1.0)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
    assert np.all(a[:8, :8] == a[0, 0]) and not np.array_equal(a, b)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_manifest_records_the_guarantee_per_face(tmp_path):
    r = run_cli("anonymize", EXAMPLES, "-o", tmp_path / "out", "--method", "dppix", "--epsilon", "2", "--cell", "8",
                "--m", "4", "-q")
    assert r.returncode == 0, r.stderr
    faces = [f for row in pd.read_csv(tmp_path / "out" / "manifest.csv").faces for f in json.loads(row)]
    assert faces
    for face in faces:
        g = face["guarantee"]
        assert g["noise_scale"] == pytest.approx(255 * 4 / (8 ** 2 * 2))
        assert (g["epsilon"], g["delta"], g["m"], g["cell_px"]) == (2.0, 0.0, 4, 8)
        assert "protects" in g and g["mechanism"].startswith("Laplace")


def test_a_resolution_that_does_not_divide_into_cells_is_refused(tmp_path):
    r = run_cli("anonymize", EXAMPLES, "-o", tmp_path / "out", "--method", "dppix", "--cell", "24", "-q")
    assert r.returncode != 0 and "multiple of --cell" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
