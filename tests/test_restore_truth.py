"""`anoncli restore` tells the truth (issue 20 point 4): a run nothing recovers is refused up front
with the flags that would have made it restorable; a lossy inverse is written as `approximate`
with its measured round trip, never as `restored`; a restored face that is NaN, out of range or
black is never written nor counted."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anoncli.faces.stage import RestoreFailed, check_restored_crop
from anoncli.methods import get_method_spec
from anoncli.methods.base import RestoreKind

from conftest import FACES, FAST_KDF, PASSPHRASE, cli


def png_faces(dest: Path, n: int) -> Path:
    files = sorted(FACES.glob("*.jpg"))[:n] if FACES.is_dir() else []
    if len(files) < n:
        pytest.skip(f"real face images not available in {FACES}")
    dest.mkdir(parents=True)
    for f in files:
        Image.open(f).convert("RGB").save(dest / (f.stem + ".png"))
    return dest


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# -- what each run can give back, decided from its parameters --------------------------------

def test_restore_capability_follows_the_run_parameters():
    flowrot = get_method_spec("flowrot")

    def kind(spec, escrow=False, **given):
        return spec.restore_capability(spec.resolve_params(given), escrow)

    default = kind(flowrot)
    assert default.kind is RestoreKind.IMPOSSIBLE and default.enabling_flags == ("--output-latent", "--escrow")
    line = default.refusal("flowrot")
    assert "\n" not in line and "--output-latent" in line and "--escrow" in line
    assert kind(flowrot, model="student").kind is RestoreKind.IMPOSSIBLE
    assert kind(flowrot, output_latent=True).kind is RestoreKind.EXACT
    assert kind(flowrot, output_latent=True, model="student").kind is RestoreKind.APPROXIMATE
    assert kind(flowrot, escrow=True).kind is RestoreKind.EXACT              # escrow restores any run exactly
    assert kind(get_method_spec("idrotate")).kind is RestoreKind.APPROXIMATE  # the generator's rendering, not the pixels
    blur = kind(get_method_spec("blur"))
    assert blur.kind is RestoreKind.IMPOSSIBLE and blur.enabling_flags == ("--escrow",)
    assert kind(get_method_spec("blur"), escrow=True).kind is RestoreKind.EXACT


def test_a_restored_crop_that_is_not_a_picture_is_refused():
    rng = np.random.default_rng(0)
    anonymized = rng.uniform(40, 200, (32, 32, 3))
    mask = np.zeros((32, 32))
    mask[4:28, 4:28] = 1.0
    check_restored_crop(anonymized + rng.normal(0, 3, anonymized.shape), anonymized, mask)    # a plausible face passes
    check_restored_crop(np.clip(anonymized * 1.3 - 20, -10, 270), anonymized, mask)          # a little overshoot passes
    bad = anonymized.copy()
    bad[10, 10, 1] = np.nan
    with pytest.raises(RestoreFailed, match="non-finite"):
        check_restored_crop(bad, anonymized, mask)
    bad[10, 10, 1] = np.inf
    with pytest.raises(RestoreFailed, match="non-finite"):
        check_restored_crop(bad, anonymized, mask)
    with pytest.raises(RestoreFailed, match="outside the pixel range"):
        check_restored_crop(anonymized * 3.0, anonymized, mask)
    black = anonymized.copy()
    black[4:28, 4:20] = 0.0                                                                   # 2/3 of the face region
    with pytest.raises(RestoreFailed, match="black"):
        check_restored_crop(black, anonymized, mask)
    # the same values outside the mask are not written, so they do not count
    outside = anonymized.copy()
    outside[:4] = np.nan
    check_restored_crop(outside, anonymized, mask)
    # a face that was black before (a dark photo) may come back black
    check_restored_crop(black, black, mask)


# -- a method restore that fails is not written, a lossy one is not "restored" -----------------

def _method_class():
    """A keyed colour rotation, exactly invertible, or lossy (restore quantised to steps of 24
    grey levels) when the run's ``lossy`` is set."""
    from anoncli.faces.blend import face_mask
    from anoncli.methods.base import FaceMethod

    class KeyedColourRotation(FaceMethod):
        resolution = 512   # finer than the faces, so the warps cost little detail
        restore_quality_measure = "PSNR in dB of the restored face anonymized again against the anonymized face"

        def _matrix(self, key):
            q, r = np.linalg.qr(key.rng().standard_normal((3, 3)))
            return q * np.sign(np.diag(r))

        def anonymize_crop(self, crop, landmarks_in_crop, key=None):
            return (crop - 127.5) @ self._matrix(key).T * 0.5 + 127.5

        def restore_crop(self, crop, landmarks_in_crop, key, face_params, *, region_in_crop=None, blend_in_crop=None, read_back=None):
            back = ((crop - 127.5) / 0.5) @ self._matrix(key) + 127.5
            return np.round(back / 24.0) * 24.0 if self.params["lossy"] else back

        def restore_quality(self, anonymized, restored, landmarks_in_crop, key, face_params, *, region_in_crop=None,
                            blend_in_crop=None, read_back=None):
            again = self.anonymize_crop(restored, landmarks_in_crop, key)
            return 10 * np.log10(255.0 ** 2 / max(float(np.mean((again - anonymized) ** 2)), 1e-10))

        def blend_mask(self, landmarks_in_crop):
            return face_mask(self.resolution, "box", 0.0)

    return KeyedColourRotation


@pytest.fixture(scope="module")
def keyed_method():
    from anoncli.methods import _REGISTRY, register
    from anoncli.methods.base import MethodSpec, Param, RestoreCapability

    cls = _method_class()

    def capability(params):
        if params["lossy"]:
            return RestoreCapability(RestoreKind.APPROXIMATE, "the test's restore is quantised")
        return RestoreCapability(RestoreKind.EXACT, "the test's colour rotation is exact")

    spec = register(MethodSpec("test-restore-truth", "test only", "tests", (Param("lossy", bool, False, "lossy restore"),),
                               lambda: cls, reversible=True, restore=capability))
    yield cls, spec
    _REGISTRY.pop(spec.name, None)


def _keyed_run(root: Path, spec, lossy: bool) -> tuple[Path, Path, Path]:
    from anoncli.config import RunConfig
    from anoncli.keys.envelope import Argon2Params
    from anoncli.keys.protect import Passphrase
    from anoncli.run import KeyOptions, run_anonymize

    src = png_faces(root / "in", 3)
    protector = Passphrase(PASSPHRASE.encode(), Argon2Params.new(64, 1, 1))
    summary = run_anonymize(src, root / "anon", RunConfig(method=spec.name, params={"lossy": lossy}), workers=1,
                            batch_size=4, progress=False, keys=KeyOptions(root / "run.key", protector, escrow=False))
    assert summary.counts["ok"] == 3
    return src, root / "anon", root / "run.key"


@pytest.fixture(scope="module")
def exact_run(keyed_method, tmp_path_factory):
    return _keyed_run(tmp_path_factory.mktemp("exact"), keyed_method[1], lossy=False)


def _restore(anon: Path, key: Path, dest: Path):
    from anoncli.keys.protect import Passphrase
    from anoncli.restore import run_restore

    summary = run_restore(anon, key, Passphrase(PASSPHRASE.encode()), dest, progress=False)
    return summary, pd.read_csv(dest / "manifest.csv", keep_default_na=False)


@pytest.mark.parametrize("broken, reason", [(np.nan, "non-finite"), (0.0, "black"), (1e6, "outside the pixel range")])
def test_a_method_restore_giving_nan_or_black_is_not_written_nor_counted(keyed_method, exact_run, tmp_path, monkeypatch,
                                                                         broken, reason):
    cls, _ = keyed_method
    src, anon, key = exact_run
    honest = cls.restore_crop
    calls = []

    def first_face_broken(self, crop, landmarks_in_crop, key, face_params):
        calls.append(1)
        out = honest(self, crop, landmarks_in_crop, key, face_params)
        return np.full_like(out, broken) if len(calls) == 1 else out

    monkeypatch.setattr(cls, "restore_crop", first_face_broken)
    summary, manifest = _restore(anon, key, tmp_path / "restored")
    failed = manifest[manifest.status == "error"]
    assert len(failed) == 1 and reason in failed.reason.iloc[0]
    assert summary.counts["restored"] == 2 and summary.counts["error"] == 1 and summary.exit_code == 1
    assert not (tmp_path / "restored" / failed.input.iloc[0]).exists() and failed.output_sha256.iloc[0] == ""
    for rel in manifest[manifest.status == "restored"].input:
        restored = np.asarray(Image.open(tmp_path / "restored" / rel).convert("RGB"), np.float64)
        original = np.asarray(Image.open(src / rel).convert("RGB"), np.float64)
        assert np.abs(restored - original).mean() < 2.0, rel     # the others came back


def test_a_lossy_inverse_is_approximate_with_its_measured_round_trip(keyed_method, tmp_path):
    _, spec = keyed_method
    src, anon, key = _keyed_run(tmp_path, spec, lossy=True)
    summary, manifest = _restore(anon, key, tmp_path / "restored")
    assert set(manifest.status) == {"approximate"} and summary.counts["restored"] == 0
    assert summary.counts["approximate"] == 3 and summary.exit_code == 0
    quality = manifest.round_trip.astype(float)
    # steps of 24 levels (6.9 rms), halved by the re-anonymization: about 3.5 levels rms, 37 dB
    assert ((quality > 32) & (quality < 42)).all(), quality.tolist()
    record = json.loads((tmp_path / "restored" / "restore.json").read_text())
    assert record["restore"]["kind"] == "approximate" and record["counts"]["restored"] == 0
    assert record["round_trip"]["measure"].startswith("PSNR") and record["round_trip"]["min"] == pytest.approx(quality.min())
    assert sorted(summary.round_trips) == pytest.approx(sorted(quality))


def test_an_exact_inverse_is_restored_without_a_round_trip(exact_run, tmp_path):
    _, anon, key = exact_run
    summary, manifest = _restore(anon, key, tmp_path / "restored")
    assert set(manifest.status) == {"restored"} and (manifest.round_trip == "").all()
    assert summary.counts["approximate"] == 0 and summary.exit_code == 0
    assert "round_trip" not in json.loads((tmp_path / "restored" / "restore.json").read_text())


# -- acceptance 4: a default flowrot run's restore refuses up front ----------------------------

def test_default_flowrot_restore_refuses_up_front_naming_the_flags(tmp_path):
    src = png_faces(tmp_path / "in", 2)
    anon, key, out = tmp_path / "anon", tmp_path / "run.key", tmp_path / "restored"
    r = cli("anonymize", src, "-o", anon, "--method", "flowrot", "--keyfile", key, *FAST_KDF, "-q", "-j", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    # refused from run.json before any passphrase is asked for (none is given, stdin is closed)
    r = cli("restore", anon, "--keyfile", key, "-o", out, "-q", env_extra={"ANONCLI_PASSPHRASE": ""})
    lines = error_lines(r.stderr)
    assert r.returncode == 7 and len(lines) == 1, r.stderr
    assert "--output-latent" in lines[0] and "--escrow" in lines[0] and "cannot be restored" in lines[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".restored")]
    # a run.json edited to claim latent images changes nothing: the keyfile's sealed parameters decide
    record = json.loads((anon / "run.json").read_text())
    record["config"]["params"]["output_latent"] = True
    (anon / "run.json").write_text(json.dumps(record))
    r = cli("restore", anon, "--keyfile", key, "-o", out, "-q")
    lines = error_lines(r.stderr)
    assert r.returncode == 7 and len(lines) == 1 and "--output-latent" in lines[0], r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".restored")]


def test_a_run_made_without_a_keyfile_is_refused_as_such(tmp_path):
    src = png_faces(tmp_path / "in", 1)
    anon, out = tmp_path / "anon", tmp_path / "restored"
    r = cli("anonymize", src, "-o", anon, "--method", "blur", "-q", "-j", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("restore", anon, "--keyfile", tmp_path / "no.key", "-o", out, "-q", env_extra={"ANONCLI_PASSPHRASE": ""})
    lines = error_lines(r.stderr)
    assert r.returncode == 7 and len(lines) == 1, r.stderr
    assert "made without a keyfile" in lines[0] and "--keyfile" in lines[0] and "holds no escrow" not in lines[0]
    assert not out.exists()
