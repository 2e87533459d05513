"""`anoncli report` end to end on real faces."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import SHARED, cli, real_faces

pytest.importorskip("dlib", reason="dlib is the reference evaluator: pip install 'anoncli[eval]'")


def copy_faces(dest, n):
    dest.mkdir()
    for f in real_faces(n):
        shutil.copy(f, dest / f.name)
    return dest


def test_report_of_a_dataset_against_itself(tmp_path):
    src = copy_faces(tmp_path / "in", 16)
    anon = tmp_path / "anon"
    assert cli("anonymize", src, "-o", anon, "-q", "-j", "1").returncode == 0
    for f in src.iterdir():  # undo the anonymization: the "anonymized" files are the originals
        shutil.copy(f, anon / f.name)
    r = cli("report", anon, "--labels", SHARED / "data" / "celeba-wild" / "labels.csv", "--evaluator", "dlib",
            "--cache-dir", tmp_path / "cache", "-o", tmp_path / "report", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    dlib = report["privacy"]["dlib"]
    assert dlib["protection_rate"]["literature"] == 0.0
    assert max(dlib["distances"]["anonymized"]) < 1e-6
    assert report["utility"]["ssim"]["face"] == pytest.approx(1.0)
    assert report["utility"]["ssim"]["whole"] == pytest.approx(1.0)
    assert report["utility"]["detection_rate"]["anonymized"] == 1.0
    assert report["utility"]["landmarks"]["nme_mean"] == 0.0
    ident = dlib["identification"]
    assert ident is not None and ident["rank1"] == ident["baseline_rank1"] and ident["rank5"] == ident["baseline_rank5"]
    assert ident["rank1_farthest"] <= ident["rank1"] and ident["rank5_farthest"] <= ident["rank5"]   # unchanged: found near, not far
    assert 0 < ident["chance_rank1"] < ident["chance_rank5"] <= 1 and ident["identities"] >= 2
    assert (tmp_path / "report" / "report.html").read_text().count("<svg") >= 1
    assert list((tmp_path / "cache").rglob("*.json")), "original embeddings are cached"


def test_report_of_blur_counts_protection_and_recovery(tmp_path):
    src = copy_faces(tmp_path / "in", 10)
    anon = tmp_path / "anon"
    env_pass = {**os.environ, "ANONCLI_PASSPHRASE": "report test passphrase"}
    r = subprocess.run([sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(anon), "-q", "-j", "1",
                        "--keyfile", str(tmp_path / "k.key"), "--escrow", "--kdf-memory", "1", "--kdf-iterations", "1",
                        "--kdf-lanes", "1"], capture_output=True, text=True, env=env_pass)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "anoncli", "restore", str(anon), "--keyfile", str(tmp_path / "k.key"),
                        "-o", str(tmp_path / "restored"), "-q"], capture_output=True, text=True, env=env_pass)
    assert r.returncode == 0, r.stderr
    # The anonymized images stand in for a restore with a wrong key: nothing comes back.
    r = cli("report", anon, "--restored", tmp_path / "restored", "--wrong-restored", anon, "--evaluator", "dlib",
            "--cache-dir", tmp_path / "cache", "-o", tmp_path / "report", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    manifest = pd.read_csv(anon / "manifest.csv", keep_default_na=False)
    assert report["counts"]["faces"] == int(manifest.n_faces.sum())
    assert report["privacy"]["dlib"]["protection_rate"]["literature"] > 0.5
    ssim = report["utility"]["ssim"]
    assert ssim["face"] < 0.95
    # blur touches only the face boxes, so the whole image lies between the face and the rest
    assert ssim["face"] < ssim["whole"] < ssim["outside"]
    assert report["recovery"]["identity_distance"]["dlib"] < 0.1
    assert report["recovery"]["psnr"] > 40
    wrong = report["recovery"]["wrong_key"]
    assert wrong["n"] == report["recovery"]["n"] and wrong["psnr"] < 35
    assert wrong["identity_distance"]["dlib"] > 0.3
    landmarks = report["utility"]["landmarks"]
    assert landmarks["available"] and landmarks["n"] == report["counts"]["faces"] and landmarks["nme_mean"] > 0.02


def test_report_json_shows_mobilefacenet_verifies_celeba_crops(tmp_path):
    """Acceptance 3: the evaluator is loaded correctly (AUC >= 0.95 on same/different pairs of originals)."""
    crops = SHARED / "data" / "celeba-crops"
    weights = SHARED / "weights" / "mobilefacenet_arcface_casia.ckpt"
    if not (crops / "labels.csv").is_file() or not weights.is_file():
        pytest.skip(f"CelebA crops or MobileFaceNet weights not in {SHARED}")
    labels = pd.read_csv(crops / "labels.csv", usecols=[0, 1], names=["image", "identity"], header=0, dtype=str)
    per_identity = labels.groupby("identity")["image"].apply(sorted)
    chosen = [imgs[:4] for imgs in per_identity if len(imgs) >= 4][:30]
    src = tmp_path / "in"
    src.mkdir()
    for images in chosen:
        for name in images:
            shutil.copy(crops / "images" / name, src / name)
    assert cli("anonymize", src, "-o", tmp_path / "anon", "-q").returncode == 0
    r = cli("report", tmp_path / "anon", "--labels", crops / "labels.csv", "--evaluator", "mobilefacenet",
            "--weights-dir", SHARED / "weights", "--cache-dir", tmp_path / "cache", "-o", tmp_path / "report", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    verification = next(e for e in report["evaluators"] if e["name"] == "mobilefacenet")["verification"]
    assert verification["genuine_pairs"] >= 150 and verification["impostor_pairs"] >= 5000
    assert verification["auc"] >= 0.95


def test_report_of_a_folder_that_is_no_run_says_so_in_one_line(tmp_path):
    (tmp_path / "photos").mkdir()
    for folder, said in ((tmp_path / "photos", "has no manifest.csv and run.json: not the output of `anoncli anonymize`"),
                         (tmp_path / "absent", "is not a folder")):
        r = cli("report", folder)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and said in lines[0], r.stderr
        assert "Errno" not in r.stderr and "Traceback" not in r.stderr
