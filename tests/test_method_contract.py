"""Every registered method through the same contract (issue 21, acceptance 7): a method added to
the registry is run end to end by this test without any other change to the run core.

On the bundled examples (6 photos, 8 faces): exit 0, one manifest row per input, every image
with a face written at its own size and changed inside each face's box, each face's record
carrying the method's parameters (and its guarantee where the method states one), run.json naming
the method; a reversible method's keyfile restores every image (exactly or `approximate`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anoncli.methods import available_methods

from conftest import EXAMPLES, FAST_KDF, cli

# Flags that keep a slow method's run short here (the contract, not the method's quality, is tested).
FAST_FLAGS = {"idrotate": ["--refine-steps", "10"], "identitydp": ["--refine-steps", "10"], "fsap": ["--iterations", "3"],
              "dpimage": ["--iterations", "20"], "diffusion": ["--steps", "1", "--ddim-steps", "2"]}


def _labels(tmp_path: Path) -> Path:
    """A labels table of the examples with one attribute (k-Same-Select partitions on it)."""
    names = sorted(p.name for p in EXAMPLES.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".png", ".webp"))
    path = tmp_path / "labels.csv"
    pd.DataFrame({"image": names, "Male": [0] * len(names)}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("spec", available_methods(), ids=lambda s: s.name)
def test_every_registered_method_keeps_the_run_contract(spec, tmp_path):
    out = tmp_path / "out"
    args = ["anonymize", EXAMPLES, "-o", out, "--method", spec.name, "-q", "-j", "1", *FAST_FLAGS.get(spec.name, [])]
    if spec.name.startswith("ksame"):
        args += ["--k", "2"]
        if spec.name == "ksame-select":
            args += ["--labels", _labels(tmp_path), "--select", "Male", "--identity-column", "none"]
    if spec.reversible:
        args += ["--keyfile", tmp_path / "run.key", *FAST_KDF]
    r = cli(*args)
    if r.returncode == 3:
        pytest.skip(f"{spec.name}: weights missing here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr

    rows = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    inputs = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*") if p.is_file())
    assert sorted(rows["input"]) == inputs
    assert json.loads((out / "run.json").read_text())["method"]["name"] == spec.name
    faces_seen = 0
    for row in rows.itertuples():
        faces = json.loads(row.faces)
        if row.status != "ok":
            continue
        original = np.asarray(Image.open(EXAMPLES / row.input).convert("RGB"), np.float32)
        written = np.asarray(Image.open(out / row.output).convert("RGB"), np.float32)
        assert written.shape == original.shape
        for face in faces:
            faces_seen += 1
            x0, y0, x1, y1 = (int(round(v)) for v in face["box"])
            x0, y0 = max(x0, 0), max(y0, 0)
            assert np.abs(written[y0:y1, x0:x1] - original[y0:y1, x0:x1]).mean() > 1.0, (row.input, face["box"])
            if spec.formal_guarantee:
                assert face.get("guarantee"), (spec.name, "a method that states a guarantee records it per face")
        assert json.loads(row.params) is not None
    assert faces_seen >= 6

    if spec.reversible:
        back = cli("restore", out, "--keyfile", tmp_path / "run.key", "-o", tmp_path / "back", "-q", "--json")
        if back.returncode == 7:   # refused up front: one line naming the flags that make such a run restorable
            assert back.stderr.count("\n") == 1 and "--escrow" in back.stderr and not (tmp_path / "back").exists()
            return
        assert back.returncode == 0, back.stdout + back.stderr
        counts = json.loads(back.stdout)["counts"]
        assert counts["restored"] + counts["approximate"] == int((rows["status"] == "ok").sum())
