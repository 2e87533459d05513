"""build_report in this process: the feature cache, skipped images, LPIPS and FID when their weights are present."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FACES

pytest.importorskip("dlib", reason="dlib is the reference evaluator: pip install 'anoncli[eval]'")


@pytest.fixture(scope="module")
def blurred(tmp_path_factory):
    files = sorted(FACES.glob("*.jpg"))[:5] if FACES.is_dir() else []
    if len(files) < 5:
        pytest.skip(f"real face images not available in {FACES}")
    root = tmp_path_factory.mktemp("cache")
    (root / "in").mkdir()
    for f in files:
        shutil.copy(f, root / "in" / f.name)
    r = subprocess.run([sys.executable, "-m", "anoncli", "anonymize", str(root / "in"), "-o", str(root / "anon"), "-q",
                        "-j", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return root


def _numbers(report):
    p = report["privacy"]["dlib"]
    return (p["distances"]["anonymized"], p["protection_rate"], report["utility"]["ssim"],
            report["utility"]["landmarks"]["nme_mean"], report["utility"]["detection_rate"])


def test_second_report_loads_no_model_and_gives_the_same_numbers(blurred, monkeypatch):
    from anoncli.report import measure
    from anoncli.report.build import build_report

    cache = blurred / "features"
    first = build_report(blurred / "anon", evaluator_names=("dlib",), cache_dir=cache, progress=False, workers=1)
    assert len(list(cache.rglob("*.json"))) == 10  # one record per original and per anonymized image

    def refuse(self, name):
        raise AssertionError(f"{name} loaded although every feature is cached")

    monkeypatch.setattr(measure.Measurer, "_load", refuse)
    second = build_report(blurred / "anon", evaluator_names=("dlib",), cache_dir=cache, progress=False, workers=1)
    assert _numbers(second) == _numbers(first)


def test_cache_is_keyed_by_content_not_by_name(blurred):
    from anoncli.report.build import build_report

    cache = blurred / "features-edit"
    before = build_report(blurred / "anon", evaluator_names=("dlib",), cache_dir=cache, progress=False, workers=1)
    edited = blurred / "anon-edited"
    shutil.copytree(blurred / "anon", edited)
    manifest = pd.read_csv(edited / "manifest.csv", keep_default_na=False)
    first = manifest.iloc[0]
    shutil.copy(blurred / "in" / first.input, edited / first.output)  # put an original back in place of its blur
    after = build_report(edited, evaluator_names=("dlib",), cache_dir=cache, progress=False, workers=1)
    old, new = (r["privacy"]["dlib"]["distances"]["anonymized"] for r in (before, after))
    n = int(first.n_faces)
    assert max(new[:n]) < 1e-6 < min(old[:n])
    assert new[n:] == old[n:]


def test_no_cache_writes_nothing(blurred, tmp_path):
    from anoncli.report.build import build_report

    build_report(blurred / "anon", evaluator_names=("dlib",), cache_dir=tmp_path / "c", use_cache=False,
                 progress=False, workers=1)
    assert not (tmp_path / "c").exists()


def test_missing_anonymized_image_is_skipped_and_named(blurred, capsys):
    from anoncli.report.build import build_report

    broken = blurred / "anon-missing"
    shutil.copytree(blurred / "anon", broken)
    victim = sorted(p for p in broken.iterdir() if p.suffix == ".jpg")[1]
    victim.unlink()
    report = build_report(broken, evaluator_names=("dlib",), cache_dir=blurred / "features", progress=False, workers=1)
    assert report["counts"]["measured_images"] == 4
    assert [s["input"] for s in report["counts"]["skipped"]] == [victim.name]
    assert victim.name in capsys.readouterr().err
    json.dumps(report, default=str)


@pytest.fixture
def lpips_fid_weights(monkeypatch, tmp_path):
    """Random networks saved in the official LPIPS and pytorch-fid layouts, registered under their sha256."""
    import dataclasses

    import torch
    import torchvision

    from anoncli import weights

    torch.manual_seed(0)
    files = {"lpips-alexnet-backbone": torchvision.models.alexnet(weights=None).state_dict(),
             "lpips-alex-linear-v0.1": {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1)
                                        for k, c in enumerate((64, 192, 384, 256, 256))},
             "fid-inception-2015-12-05": torchvision.models.inception_v3(
                 weights=None, aux_logits=False, num_classes=1008, init_weights=False).state_dict()}
    for name, state in files.items():
        entry = weights.REGISTRY[name]
        torch.save(state, tmp_path / entry.filename)
        monkeypatch.setitem(weights.REGISTRY, name,
                            dataclasses.replace(entry, sha256=weights.sha256_of(tmp_path / entry.filename)))
    return tmp_path


def test_lpips_and_fid_are_measured_when_their_weights_are_present(blurred, lpips_fid_weights):
    from anoncli.metrics.fid import InceptionFeatures, fid_from_features
    from anoncli.report.build import build_report
    from anoncli.report.measure import face_crop

    common = dict(evaluator_names=(), weights_dir=str(lpips_fid_weights), progress=False, workers=1, use_cache=False)
    absent = build_report(blurred / "anon", **{**common, "weights_dir": str(blurred)})  # no file matches the patched sha256
    report = build_report(blurred / "anon", **common)
    itself = build_report(blurred / "anon", original_dir=blurred / "anon", **common)
    for key in ("lpips", "fid"):
        assert absent["utility"][key]["available"] is False and "anoncli weights" in absent["utility"][key]["reason"]
        assert report["utility"][key]["available"] is True
        assert itself["utility"][key]["value"] == pytest.approx(0.0, abs=1e-6)
    assert report["utility"]["lpips"]["value"] > 1e-3
    # FID from the report's cached features equals FID from features of the face crops computed here.
    inception = InceptionFeatures(lpips_fid_weights / "pt_inception-2015-12-05-6726825d.pth")
    crops = {"original": [], "anonymized": []}
    for row in pd.read_csv(blurred / "anon" / "manifest.csv", keep_default_na=False).itertuples():
        for face in json.loads(row.faces):
            for role, path in (("original", blurred / "in" / row.input), ("anonymized", blurred / "anon" / row.output)):
                crops[role].append(face_crop(np.asarray(Image.open(path).convert("RGB")), face["box"]))
    expected = fid_from_features(inception.features(crops["original"]), inception.features(crops["anonymized"]))
    assert report["utility"]["fid"]["n"] == len(crops["original"])
    assert report["utility"]["fid"]["value"] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_gallery_folder_joins_the_identification_gallery_and_is_cached(blurred, tmp_path, monkeypatch):
    """--gallery: labelled photos join the gallery; copies of the run's originals and photos
    without a face are left out; the main face found and its embeddings are cached."""
    from anoncli.report import measure
    from anoncli.report.build import build_report

    originals = sorted((blurred / "in").iterdir())
    others = sorted(FACES.glob("*.jpg"))[5:7]
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    names = {}
    for k, f in enumerate(originals):
        shutil.copy(f, gallery / f"same-{f.name}")           # byte-identical to a probe's photo: left out
        names[f.name] = names[f"same-{f.name}"] = f"p{k}"   # every probe its own identity
        if k < 3:   # a re-encoded copy is another photo of the same person
            Image.open(f).convert("RGB").save(gallery / f"again-{f.stem}.png")
            names[f"again-{f.stem}.png"] = f"p{k}"
    for k, f in enumerate(others):
        shutil.copy(f, gallery / f"other-{k}.jpg")
        names[f"other-{k}.jpg"] = "q"
    Image.new("RGB", (96, 96), (128, 128, 128)).save(gallery / "no-face.png")
    names["no-face.png"] = "z"
    (gallery / "unlabelled.png").write_bytes((gallery / "no-face.png").read_bytes())
    labels = pd.DataFrame({"image": list(names), "identity": list(names.values())})
    common = dict(labels=labels, evaluator_names=("dlib",), cache_dir=tmp_path / "features", progress=False, workers=1)

    alone = build_report(blurred / "anon", **common)["privacy"]["dlib"]["identification"]
    assert alone["gallery"] == 5 and np.isnan(alone["baseline_rank1"])   # no probe has another photo of itself
    report = build_report(blurred / "anon", gallery_dir=gallery, **common)
    ident = report["privacy"]["dlib"]["identification"]
    assert (ident["gallery_extra"], ident["gallery_unmeasured"], ident["gallery"]) == (5, 1, 10)
    assert ident["baseline_rank1"] == 1.0          # the originals find their re-encoded copies first
    assert ident["chance_rank1"] == pytest.approx(1 / 9)   # one hit among the 9 entries that are not the probe's own
    assert report["gallery_dir"] == str(gallery)

    def refuse(self, name):
        raise AssertionError(f"{name} loaded although every feature is cached")

    monkeypatch.setattr(measure.Measurer, "_load", refuse)
    again = build_report(blurred / "anon", gallery_dir=gallery, **common)["privacy"]["dlib"]["identification"]
    assert again == ident
