"""The report's dlib protection rate agrees with benchmarks/check_dlib_protection.py, which
computes it with dlib's own Python API and no anoncli code, on held-out CelebA photos."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FACES

pytest.importorskip("dlib", reason="dlib is the reference evaluator: pip install 'anoncli[eval]'")

CHECK_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "check_dlib_protection.py"
# The last photos by name: held out from the first-N sets the other tests and benchmarks use.
# 40 keeps the test under a minute on two cores (the report also runs dlib's HOG detector twice per image).
HELD_OUT = 40


def cli(*args):
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=os.environ.copy())


def load_check_module():
    spec = importlib.util.spec_from_file_location("check_dlib_protection", CHECK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dlib_protection_rate_matches_independent_dlib(tmp_path):
    photos = sorted(FACES.glob("*.jpg"))[-HELD_OUT:] if FACES.is_dir() else []
    if len(photos) < HELD_OUT:
        pytest.skip(f"real face images not available in {FACES} (the shared data folder)")
    src = tmp_path / "in"
    src.mkdir()
    for photo in photos:
        shutil.copy(photo, src / photo.name)
    anon = tmp_path / "anon"
    r = cli("anonymize", src, "-o", anon, "--method", "blur", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("report", anon, "--evaluator", "dlib", "--cache-dir", tmp_path / "cache", "-o", tmp_path / "report", "-q")
    assert r.returncode == 0, r.stdout + r.stderr

    check = load_check_module()
    reported = check.report_dlib(tmp_path / "report" / "report.json")
    independent = check.independent_protection(anon, src)
    assert independent["pairs"] > HELD_OUT // 2, "most photos should yield a face pair"
    assert reported["pairs"] == independent["pairs"]
    difference_pp = abs(reported["protection_rate"] - independent["protection_rate"]) * 100
    assert difference_pp <= check.TOLERANCE_PP, json.dumps(check.compare(independent, reported))
    # Same boxes, same trimming, same models: the distances themselves agree, face by face.
    assert check.compare(independent, reported)["max_distance_gap"] < 1e-4
