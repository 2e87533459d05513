"""The second look at uncertain large detections (anoncli.faces.confirmation): its geometry, which
detections it sends back to the detector, and, through the pipeline, that real faces survive it and
the torsos it was made for are left untouched with a note when it is asked for (it is off by default)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anoncli.config import RunConfig
from anoncli.faces.confirmation import AT, CONTEXT, ConfirmSettings, confirm, confirmed_by, second_look_region
from anoncli.faces.detection import Detection
from anoncli.methods import get_method_spec
from anoncli.run import run_anonymize

from conftest import FACES, SHARED
from test_pipeline import EXAMPLES


def detection(box, score):
    x0, y0, x1, y1 = box
    eyes = [(x0 + 0.3 * (x1 - x0), y0 + 0.4 * (y1 - y0)), (x0 + 0.7 * (x1 - x0), y0 + 0.4 * (y1 - y0))]
    return Detection(np.array(box, np.float64), score, np.array(eyes + [((x0 + x1) / 2, (y0 + y1) / 2)] * 3, np.float64))


def test_region_is_the_box_with_context_and_the_scale_makes_it_160_px():
    region, scale = second_look_region((400, 300, 600, 550), (2000, 1000, 3))
    side = 250
    assert region == (400 - CONTEXT * side, 300 - CONTEXT * side, 600 + CONTEXT * side, 550 + CONTEXT * side)
    assert scale == pytest.approx(AT / side)
    clipped, _ = second_look_region((10, 20, 210, 220), (300, 260, 3))
    assert clipped == (0, 0, 260, 300)


def test_a_second_detection_counts_only_where_the_box_is_and_above_the_threshold():
    box, region, scale = (400, 300, 600, 500), (280, 180, 720, 620), 0.8
    centre = ((500 - 280) * scale, (400 - 180) * scale)
    def at(dx, dy, score):
        cx, cy = centre[0] + dx, centre[1] + dy
        return detection((cx - 80, cy - 80, cx + 80, cy + 80), score)

    d = detection(box, 0.4)
    assert confirmed_by(d, region, scale, [at(5, -5, 0.9)], 0.3)
    assert not confirmed_by(d, region, scale, [at(5, -5, 0.2)], 0.3)
    assert not confirmed_by(d, region, scale, [at(0.35 * AT, 0, 0.9)], 0.3)
    assert not confirmed_by(d, region, scale, [], 0.3)


class FakeDetector:
    """Finds a face in the middle of whatever it is given when told to; records the patches."""

    def __init__(self, finds: bool):
        self.finds, self.patches = finds, []

    def detect(self, images):
        self.patches.append(images[0].shape)
        h, w = images[0].shape[:2]
        return [[detection((w / 2 - 80, h / 2 - 80, w / 2 + 80, h / 2 + 80), 0.95)] if self.finds else []]


def test_only_uncertain_large_detections_get_the_second_look():
    image = np.zeros((1200, 1600, 3), np.uint8)
    certain = detection((100, 100, 400, 400), 0.9)
    small = detection((600, 100, 650, 150), 0.35)
    large = detection((800, 300, 1200, 800), 0.35)
    settings = ConfirmSettings(below=0.5, min_side=96, threshold=0.3)

    refusing = FakeDetector(finds=False)
    kept, dropped = confirm(refusing, image, [certain, small, large], settings)
    assert kept == [certain, small] and dropped == [large]
    (h, w, _), = refusing.patches   # one second look, at the box's longer side scaled to 160 px
    assert h == pytest.approx((1 + 2 * CONTEXT) * AT, abs=2) and w <= h

    finding = FakeDetector(finds=True)
    kept, dropped = confirm(finding, image, [certain, small, large], settings)
    assert kept == [certain, small, large] and dropped == []
    assert confirm(FakeDetector(finds=False), image, [large], ConfirmSettings(below=0.0))[0] == [large]


def faces_found(out) -> list[int]:
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False).sort_values("input")
    return [len(json.loads(f)) if f else 0 for f in manifest["faces"]]


def test_every_real_face_survives_a_second_look(tmp_path):
    """With every detection of 40 px and more sent to the second look (--confirm-below 1), the bundled
    examples lose no face: a real face seen at its best scale is found again."""
    counts = []
    for name, below in (("all", 1.0), ("none", 0.0)):
        config = RunConfig(method="blur", confirm_below=below, confirm_min_side=40.0)
        run_anonymize(EXAMPLES, tmp_path / name, config, workers=1, batch_size=4, progress=False, log=lambda m: None)
        counts.append(faces_found(tmp_path / name))
    assert counts[0] == counts[1] and sum(counts[0]) >= 5


TORSOS = ("019535.jpg", "020639.jpg")   # a bikini and a torso RetinaFace scores 0.33 and 0.36


@pytest.mark.parametrize("method, params", [("blur", {}), ("ksame-pixel", {"k": 2})])
def test_torsos_are_left_untouched_and_noted_when_asked(tmp_path, method, params):
    """Also through a dataset-level method's two passes, whose second pass rebuilds each record."""
    if not all((FACES / name).is_file() for name in TORSOS):
        pytest.skip(f"the CelebA photos in the wild are not here ({SHARED} is missing)")
    src = tmp_path / "in"
    src.mkdir()
    for name in TORSOS:
        (src / name).symlink_to(FACES / name)
    params = get_method_spec(method).resolve_params(params)
    summary = run_anonymize(src, tmp_path / "out", RunConfig(method=method, params=params, confirm_below=0.5), workers=1, batch_size=4,
                            progress=False, log=lambda m: None)
    assert summary.left_untouched == len(TORSOS)   # what the command's summary counts
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    for row in manifest.itertuples():
        assert "not found again at 160 px, left untouched" in row.notes, row.notes
        faces = json.loads(row.faces) if row.faces else []
        assert all(f["score"] >= 0.5 for f in faces), faces   # the torso (417 and 1174 px, 0.33 and 0.36) is gone
        assert faces   # each photo's own face (0.99) is still anonymized
        # the chest: the torso's box below every face's box, as the photo was (but for re-encoding)
        x0, y0, x1, y1 = json.loads(re.search(r"left untouched: box (\[[^\]]*\])", row.notes).group(1))
        below_faces = max(y0, max(int(f["box"][3]) for f in faces) + 40)
        original = np.asarray(Image.open(src / row.input).convert("RGB"), np.int16)[below_faces:y1, max(x0, 0):x1]
        written = np.asarray(Image.open(tmp_path / "out" / row.output).convert("RGB"), np.int16)[below_faces:y1, max(x0, 0):x1]
        assert original.size > 0 and np.abs(written - original).mean() < 3.0


def test_runs_made_before_the_option_existed_still_resume():
    """The option left at its default (off) leaves the configuration hash as it was before the option
    existed, so an interrupted run of an earlier version resumes; set, it is a different run."""
    before = {k: v for k, v in RunConfig(method="blur").to_dict().items() if k not in ("confirm_below", "confirm_min_side")}
    assert RunConfig(method="blur").hash == "9b79cff59114b376"   # its hash at ed74321, before the option
    assert RunConfig(method="blur").differences(before) == []
    assert RunConfig(method="blur", confirm_below=0.5).hash != RunConfig(method="blur").hash
    assert RunConfig(method="blur", confirm_below=0.5).differences(before) == ["confirm_below: 0.0 -> 0.5"]


def test_a_failing_second_look_keeps_every_detection(tmp_path, monkeypatch):
    from anoncli import pipeline

    def broken(*args):
        raise RuntimeError("detector gone")

    monkeypatch.setattr(pipeline, "confirm", broken)
    counts = []
    for name, below in (("failing", 1.0), ("off", 0.0)):
        config = RunConfig(method="blur", confirm_below=below, confirm_min_side=40.0)
        run_anonymize(EXAMPLES, tmp_path / name, config, workers=1, batch_size=4, progress=False, log=lambda m: None)
        counts.append(faces_found(tmp_path / name))
    assert counts[0] == counts[1]
    notes = pd.read_csv(tmp_path / "failing" / "manifest.csv", keep_default_na=False)["notes"]
    assert notes.str.contains("second look at uncertain detections failed").any()
