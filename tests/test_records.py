"""The run's typed records: what the journal keeps of them, and what it never keeps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from anoncli.io.journal import RunJournal, manifest_frame
from anoncli.records import FaceResult, ImageRecord, KeyRecord


def _record() -> ImageRecord:
    face = FaceResult([1.0, 2.0, 30.0, 40.0], 0.99, [[5.0, 6.0]] * 5, warp=[[1, 0, 0], [0, 1, 0]], abs_params={"sigma": 3.5},
                      guarantee={"epsilon": 6.0}, side_image_pixels={"latent": np.zeros((4, 4, 3), np.uint8)})
    return ImageRecord("sub/a.jpg", "blur", {"sigma": 1}, "retinaface-onnx", "abc", status="ok", faces=[face],
                       notes=["n"], timings={"decode": 0.1}, input_sha256="in", output="sub/a.jpg", output_sha256="out",
                       key_record=KeyRecord({"input": "sub/a.jpg", "faces": []}, [b"ORIGINAL PIXELS"]))


def test_journal_round_trip_keeps_every_journaled_field_and_drops_the_secret_ones(tmp_path):
    journal = RunJournal(tmp_path / "journal.jsonl")
    journal.append(_record())
    journal.close()
    text = (tmp_path / "journal.jsonl").read_text()
    assert "ORIGINAL PIXELS" not in text and "key_record" not in text and "side_image_pixels" not in text
    back = journal.load()["sub/a.jpg"]
    expected = _record()
    expected.key_record = None
    expected.faces[0].side_image_pixels = None
    assert back == expected and back.done


def test_a_face_keeps_only_the_fields_it_has():
    assert FaceResult([0, 0, 1, 1], 0.5, []).to_dict() == {"box": [0, 0, 1, 1], "score": 0.5, "landmarks": []}
    assert FaceResult([0, 0, 1, 1], 0.5, [], skipped="crop outside the image").to_dict()["skipped"] == "crop outside the image"


def test_a_journal_line_this_version_cannot_read_is_skipped_so_its_image_is_redone(tmp_path):
    path = tmp_path / "journal.jsonl"
    good = _record().to_dict()
    unknown = {**good, "input": "b.jpg", "surprise": 1}
    bad_face = {**good, "input": "c.jpg", "faces": [{"box": [0, 0, 1, 1], "score": 1, "landmarks": [], "colour": "red"}]}
    path.write_text("\n".join(json.dumps(r) for r in (good, unknown, bad_face)) + "\n")
    assert list(RunJournal(path).load()) == ["sub/a.jpg"]


def test_manifest_rows_come_from_the_records():
    frame = manifest_frame([_record(), ImageRecord("b.png", "blur", {}, "retinaface-onnx", "abc", reason="unreadable")])
    assert list(frame["status"]) == ["ok", "error"] and list(frame["n_faces"]) == [1, 0]
    assert json.loads(frame["faces"][0])[0]["abs_params"] == {"sigma": 3.5}
    assert frame["reason"][1] == "unreadable"


@pytest.mark.parametrize("status, done", [("ok", True), ("no_face", True), ("error", False)])
def test_done_means_ok_or_no_face(status, done):
    assert ImageRecord("a", "blur", {}, "d", "h", status=status).done is done
