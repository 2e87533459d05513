"""`--method diffusion` (thesis §6.5): the staged procedure resumes without redoing finished work, and the
method runs end to end through the two-pass run core with per-face records in the manifest."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from anoncli.diffusion.autoencoder import AutoencoderFile
from anoncli.diffusion.deid import SemanticCodeSettings, fit_code_prior
from anoncli.diffusion.deidentify import DeidEncoders, DeidSettings, deidentify
from anoncli.models.diffae import DiffAE, DiffAEConfig

TINY = DiffAEConfig(image_size=16, model_channels=32, channel_mult=(1, 2), attention_resolutions=(8,), embed_channels=64,
                    enc_out_channels=64, enc_channel_mult=(1, 2, 2), dropout=0.0)


def tiny_setup(n_faces: int = 5):
    torch.manual_seed(0)
    model = DiffAE(TINY).eval().requires_grad_(False)
    for p in model.parameters():   # the official zero-initialised layers would make a fresh network ignore z̄
        p.add_(torch.randn_like(p) * 0.05)
    rng = np.random.default_rng(0)
    prior = fit_code_prior(rng.standard_normal((80, 64)), 0.1)
    projection = torch.randn(3 * 16 * 16, 8, generator=torch.Generator().manual_seed(1))
    encoders = DeidEncoders(identity=lambda x: x.flatten(1) @ projection, pairing=lambda x: x.mean((2, 3)),
                            attributes=lambda x: torch.nn.functional.avg_pool2d(x, 4))
    faces = rng.integers(0, 256, (n_faces, 16, 16, 3), dtype=np.uint8)
    return AutoencoderFile(model, 0.2, {}, prior), encoders, faces


SETTINGS = DeidSettings(fake_ratio=1.5, ddim_steps=2, code=SemanticCodeSettings(steps=2, lr=0.05), batch=2, fake_chunk=3)


def test_stages_resume_without_redoing_finished_batches(tmp_path, monkeypatch):
    import anoncli.diffusion.deidentify as procedure

    autoencoder, encoders, faces = tiny_setup()
    first = deidentify(faces, autoencoder, encoders, SETTINGS, tmp_path)
    assert len(first) == 5 and all(r.image.shape == (16, 16, 3) and r.image.dtype == np.uint8 for r in first)
    assert all(0 <= r.paired_fake < SETTINGS.fake_count(5) == 8 for r in first)
    batches = sorted((tmp_path / "faces").iterdir())
    assert [p.name for p in batches] == ["batch-00000.npz", "batch-00001.npz", "batch-00002.npz"]
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in batches)

    # an interruption: the last batch never written, the middle one half-written
    batches[2].unlink()
    batches[1].write_bytes(batches[1].read_bytes()[:50])
    optimised = []
    real_optimise = procedure._optimise_batch

    def counting(model, schedule, real, start_codes, enc, settings):
        optimised.append(len(real))
        return real_optimise(model, schedule, real, start_codes, enc, settings)

    monkeypatch.setattr(procedure, "_optimise_batch", counting)
    again = deidentify(faces, autoencoder, encoders, SETTINGS, tmp_path)
    assert optimised == [2, 1]   # batch 0 read back; batches 1 and 2 made again
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image) and a.paired_fake == b.paired_fake
        assert a.identity_loss == pytest.approx(b.identity_loss) and a.attribute_loss == pytest.approx(b.attribute_loss)


def test_optimisation_lowers_the_identity_loss_from_the_paired_fake(tmp_path):
    autoencoder, encoders, faces = tiny_setup(3)
    none = deidentify(faces, autoencoder, encoders, DeidSettings(1.5, 2, SemanticCodeSettings(steps=0), 3), tmp_path / "a")
    some = deidentify(faces, autoencoder, encoders, DeidSettings(1.5, 2, SemanticCodeSettings(steps=20, lr=0.2,
                                                                                             attribute_weight=0.0), 3),
                      tmp_path / "b")
    assert [r.paired_fake for r in none] == [r.paired_fake for r in some]
    assert np.mean([r.identity_loss for r in some]) < np.mean([r.identity_loss for r in none])


def test_settings_refuse_a_fake_set_no_larger_than_the_real_one():
    with pytest.raises(ValueError, match="larger than the real one"):
        DeidSettings(fake_ratio=1.0)
    assert DeidSettings(fake_ratio=1.01).fake_count(10) == 11


def test_a_file_without_code_prior_is_refused_with_the_command(tmp_path):
    autoencoder, encoders, faces = tiny_setup(2)
    with pytest.raises(ValueError, match="anoncli train diffae"):
        deidentify(faces, AutoencoderFile(autoencoder.model, 0.2, {}, None), encoders, SETTINGS, tmp_path)


def test_method_runs_two_passes_and_records_each_face(tmp_path):
    from conftest import cli, real_faces

    faces = real_faces(3)
    inp = tmp_path / "in"
    inp.mkdir()
    for f in faces:
        (inp / f.name).write_bytes(f.read_bytes())
    before = {f.name: (inp / f.name).read_bytes() for f in faces}
    out = tmp_path / "out"
    r = cli("anonymize", inp, "--output", out, "--method", "diffusion", "--steps", "1", "--ddim-steps", "2",
            "--fake-ratio", "1.5", "--batch", "2", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join((r.stdout + r.stderr).split())
    assert "z̄ does not carry the face yet" in said   # the committed autoencoder's measured state, said up front
    assert {f.name: (inp / f.name).read_bytes() for f in faces} == before
    import pandas as pd

    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 3 and set(manifest.status) == {"ok"}
    outcomes = [face["outcome"] for faces_json in manifest.faces for face in json.loads(faces_json)]
    assert outcomes and all({"paired_fake", "identity_loss", "attribute_loss"} <= set(o) for o in outcomes)
    assert not any(Path(out / ".anoncli").rglob("fit"))   # the plan's work (from the real faces) is gone
    for f in faces:
        assert (out / f.name).read_bytes() != before[f.name]


def test_a_run_killed_while_planning_resumes_from_the_batches_on_disk(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    from conftest import real_faces

    inp = tmp_path / "in"
    inp.mkdir()
    for f in real_faces(6):
        (inp / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "anoncli", "anonymize", str(inp), "-o", str(out), "--method", "diffusion", "--steps", "2",
           "--ddim-steps", "5", "--fake-ratio", "1.5", "--batch", "1", "-q", "-j", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / ".anoncli").glob("fit/*/faces/batch-*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    work = next((out / ".anoncli" / "fit").iterdir())
    assert os.stat(work).st_mode & 0o077 == 0 and os.stat(work.parent).st_mode & 0o077 == 0
    finished = len(list(work.glob("faces/batch-*.npz")))
    assert 2 <= finished < 6 and not (out / "manifest.csv").exists()

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads((out / "run.json").read_text())["dataset_level"]["plan"]
    assert plan["found_on_disk"]["face_batches"] >= finished and plan["found_on_disk"]["fake_chunks"] >= 1
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 6 and manifest.input.is_unique and set(manifest.status) == {"ok"}
    assert not (out / ".anoncli" / "fit").exists() and not (out / ".anoncli" / "pass1").exists()


@pytest.mark.parametrize("args, says", [
    (["--ddim-steps", "7"], "--ddim-steps: DDIM steps must divide"),
    (["--fake-ratio", "1"], "--fake-ratio must be >= 1.0001"),
    (["--crop-size", "32"], "--crop-size must be >= 64"),
])
def test_bad_flags_are_refused_in_one_line_before_anything_is_written(tmp_path, args, says):
    from conftest import EXAMPLES, cli

    r = cli("anonymize", EXAMPLES, "-o", tmp_path / "out", "--method", "diffusion", *args, "-q")
    assert r.returncode == 2 and says in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
