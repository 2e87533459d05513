"""The k-Same family (METHODS.md §3): plans, the first-pass cache, labels, and whole runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anoncli.faces.blend import face_mask
from anoncli.io.face_store import FaceStore
from anoncli.io.labels import CELEBA_ATTRIBUTES, LabelTable, read_labels
from anoncli.methods.eigenfaces import fit_eigenfaces, project, reconstruct
from anoncli.methods.ksame import FaceRef, face_units, plan_ksame
from conftest import SHARED, kill_halfway

CROPS = SHARED / "data" / "celeba-crops"


# ---------------------------------------------------------------- labels

def test_celeba_header_that_lost_its_attribute_names_is_read_with_celeba_columns(tmp_path):
    values = ["1", "-1"] * 20
    path = tmp_path / "labels.csv"
    path.write_text("image,identity,000001.jpg," + ",".join(values) + "\n"
                    "a.jpg,7," + ",".join(values) + "\n" "b.jpg,8," + ",".join(values[::-1]) + "\n")
    table = read_labels(path)
    assert table.columns == ("image", "identity", *CELEBA_ATTRIBUTES)
    assert table.row_for("sub/a.jpg")["5_o_Clock_Shadow"] == "1" and table.row_for("b.jpg")["Young"] == "1"
    assert table.row_for("000001.jpg") is None and table.notes


def test_plain_labels_and_unusable_ones(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,age,gender\nx.png,30,1\n")
    table = read_labels(path)
    assert table.columns == ("image", "age", "gender") and table.row_for("x.png")["gender"] == "1" and not table.notes
    (tmp_path / "bad.csv").write_text("file,age\nx.png,3\n")
    with pytest.raises(ValueError, match="no `image` column"):
        read_labels(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="--select: no column Smiling"):
        table.require(("Smiling",), "--select")


# ---------------------------------------------------------------- first-pass cache

def test_face_store_keeps_complete_records_and_cuts_a_torn_append(tmp_path):
    shape = (4, 4, 3)
    crops = [np.full(shape, i, np.uint8) for i in range(3)]
    store = FaceStore(tmp_path / "s", shape, "fp1")
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700, "the cache of original faces is private"
    store.append({"input": "a.jpg"}, crops[:2])
    store.append({"input": "b.jpg"}, crops[2:])
    store.close()
    with open(tmp_path / "s" / "crops.bin", "ab") as f:   # a kill after the crop bytes, before the line
        f.write(b"\x07" * 30)
    with open(tmp_path / "s" / "images.jsonl", "ab") as f:
        f.write(b'{"input": "c.jp')
    store = FaceStore(tmp_path / "s", shape, "fp1")
    assert set(store.records()) == {"a.jpg", "b.jpg"} and store.records()["b.jpg"]["slots"] == [2]
    assert (tmp_path / "s" / "crops.bin").stat().st_size == 3 * 48
    assert np.array_equal(store.crops()[1], crops[1])
    again = store.append({"input": "a.jpg"}, crops[2:])   # a changed image supersedes its record
    assert again["slots"] == [3] and store.records()["a.jpg"]["slots"] == [3]
    store.close()
    assert FaceStore(tmp_path / "s", shape, "other settings").records() == {}


# ---------------------------------------------------------------- plans

def _refs(units: list[str], partitions=None) -> list[FaceRef]:
    return [FaceRef(f"{i}.jpg", 0, i, u, partitions[i] if partitions else ()) for i, u in enumerate(units)]


def test_every_face_is_replaced_by_the_pixel_average_of_a_group_of_at_least_k():
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (23, 6, 6, 3)).astype(np.uint8)
    plan = plan_ksame(_refs([f"f{i}" for i in range(23)]), crops, k=5)
    members: dict[int, list[int]] = {}
    for (rel, _), g in plan.face_group.items():
        members.setdefault(g, []).append(int(rel.split(".")[0]))
    assert sorted(i for m in members.values() for i in m) == list(range(23))
    for g, m in members.items():
        assert 5 <= len(m) <= 9 and plan.groups[g]["units"] == len(m) == plan.groups[g]["faces"]
        np.testing.assert_allclose(plan.replacements[g], crops[m].astype(np.float64).mean(0), atol=1e-3)


def test_with_identities_a_group_holds_k_people_each_weighted_once():
    rng = np.random.default_rng(2)
    counts = [1, 4, 2, 3, 1, 2, 5, 1, 2, 3, 1, 2]
    units = [f"id:{p}" for p, c in enumerate(counts) for _ in range(c)]
    crops = rng.integers(0, 256, (len(units), 5, 5, 3)).astype(np.uint8)
    plan = plan_ksame(_refs(units), crops, k=4, unit_kind="identities")
    people: dict[int, set] = {}
    for (rel, _), g in plan.face_group.items():
        people.setdefault(g, set()).add(units[int(rel.split(".")[0])])
    for person in set(units):  # all of one person's faces in one group
        assert len({g for (rel, _), g in plan.face_group.items() if units[int(rel.split(".")[0])] == person}) == 1
    for g, who in people.items():
        assert len(who) >= 4 and plan.groups[g]["units"] == len(who)
        person_means = [crops[[i for i, u in enumerate(units) if u == p]].astype(np.float64).mean(0) for p in who]
        np.testing.assert_allclose(plan.replacements[g], np.mean(person_means, 0), atol=1e-3)


def test_select_keeps_the_chosen_attributes_and_refuses_partitions_under_k():
    rng = np.random.default_rng(3)
    parts = [("1", "1")] * 7 + [("-1", "1")] * 6 + [("1", "-1")] * 2
    crops = rng.integers(0, 256, (len(parts), 4, 4, 3)).astype(np.uint8)
    plan = plan_ksame(_refs([f"f{i}" for i in range(len(parts))], parts), crops, k=3,
                      partition_names=("Male", "Young"))
    for (rel, _), g in plan.face_group.items():
        assert tuple(plan.groups[g]["partition"].values()) == parts[int(rel.split(".")[0])]
    assert set(plan.excluded) == {("13.jpg", 0), ("14.jpg", 0)}
    assert "Male=1, Young=-1 holds 2 faces (< k=3)" in plan.excluded[("13.jpg", 0)]


def test_eigen_replacement_is_the_reconstruction_of_the_mean_coefficients():
    rng = np.random.default_rng(4)
    crops = rng.integers(0, 256, (12, 6, 6, 3)).astype(np.uint8)
    refs = _refs([f"f{i}" for i in range(12)])
    plan = plan_ksame(refs, crops, k=3, space="eigen", components=4)
    basis, _ = fit_eigenfaces(crops.reshape(12, -1).astype(np.float32), 4)
    for g in set(plan.face_group.values()):
        m = [int(r.split(".")[0]) for (r, _), gg in plan.face_group.items() if gg == g]
        expected = reconstruct(basis, project(basis, crops[m].reshape(len(m), -1).astype(np.float32)).mean(0, keepdims=True))
        np.testing.assert_allclose(plan.replacements[g].ravel(), np.clip(expected[0], 0, 255), atol=1e-2)
    full = plan_ksame(refs, crops, k=3, space="eigen", components=50)
    pixel = plan_ksame(refs, crops, k=3)
    np.testing.assert_allclose(full.replacements, pixel.replacements, atol=1e-2)  # all components: k-Same-Pixel


def test_units_from_labels_main_face_only():
    table = LabelTable(("image", "identity", "Male"), {"a.jpg": {"image": "a.jpg", "identity": "9", "Male": "1"}})
    refs, kind = face_units([("a.jpg", 0, 0, True), ("a.jpg", 1, 1, False), ("b.jpg", 0, 2, True)], table,
                            "identity", ("Male",))
    assert kind == "identities"
    assert refs[0].unit.endswith("id:9") and refs[0].partition == ("1",)
    assert refs[1].unit != refs[0].unit and refs[1].partition != ("1",) and refs[2].partition == refs[1].partition


# ---------------------------------------------------------------- whole runs on CelebA crops

def _celeba_subset(tmp_path: Path, identities: int, per_identity: int) -> Path:
    if not (CROPS / "labels.csv").is_file():
        pytest.skip(f"CelebA crops not available ({CROPS} is missing; they live in the shared data folder)")
    table = read_labels(CROPS / "labels.csv")
    by_id: dict[str, list[str]] = {}
    for name, row in sorted(table.rows.items()):
        by_id.setdefault(row["identity"], []).append(name)
    chosen = [names[:per_identity] for _, names in sorted(by_id.items()) if len(names) >= per_identity][:identities]
    src = tmp_path / "in"
    src.mkdir()
    for names in chosen:
        for name in names:
            shutil.copy(CROPS / "images" / name, src / name)
    return src


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _faces(out: Path) -> list[tuple[str, dict]]:
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    return [(row.input, f) for row in manifest.itertuples() for f in json.loads(row.faces)]


def _aligned(path: Path, warp, resolution: int) -> np.ndarray:
    """The aligned crop, NaN where it falls outside the image."""
    import cv2
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32)
    m = np.asarray(warp, np.float64)
    crop = cv2.warpAffine(rgb, m, (resolution, resolution), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(rgb.shape[:2], np.float32), m, (resolution, resolution), flags=cv2.INTER_NEAREST)
    crop[inside < 1] = np.nan
    return crop


def test_ksame_pixel_on_celeba_crops_every_face_shared_by_k_identities(tmp_path):
    src = _celeba_subset(tmp_path, identities=11, per_identity=4)
    out = tmp_path / "out"
    r = cli("anonymize", src, "-o", out, "--method", "ksame-pixel", "--k", "5", "--labels", CROPS / "labels.csv",
            "-q", "-j", "2", "--batch-size", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    faces = _faces(out)
    assert len(faces) == 44
    groups: dict[int, list] = {}
    for rel, face in faces:
        g = face["guarantee"]
        assert g["clustered_over"] == "identities" and g["group_units"] >= 5 and g["k"] == 5
        groups.setdefault(g["group"], []).append((rel, face))
    labels = read_labels(CROPS / "labels.csv")
    inside = face_mask(128, "ellipse", 0.02) > 0.98  # where the blend takes (almost) only the replacement
    for members in groups.values():
        assert len({labels.row_for(rel)["identity"] for rel, _ in members}) >= 5
        crops = [_aligned(out / rel, face["warp"], 128)[inside] for rel, face in members]
        spread = max(np.nanmean(np.abs(c - crops[0])) for c in crops)
        assert spread < 4.0, "faces of one group must be the same face (up to JPEG and resampling)"
    first, second = (_aligned(out / m[0][0], m[0][1]["warp"], 128)[inside] for m in list(groups.values())[:2])
    assert np.nanmean(np.abs(first - second)) > 4.0
    run = json.loads((out / "run.json").read_text())["dataset_level"]
    assert run["plan"]["groups"] == len(groups) and run["pass1"]["aligned_now"] == 44


def test_ksame_select_groups_share_the_selected_attributes(tmp_path):
    src = _celeba_subset(tmp_path, identities=16, per_identity=3)
    out = tmp_path / "out"
    r = cli("anonymize", src, "-o", out, "--method", "ksame-select", "--k", "2", "--labels", CROPS / "labels.csv",
            "--select", "Male", "-q", "-j", "1")
    labels = read_labels(CROPS / "labels.csv")
    groups: dict[int, set] = {}
    for rel, face in _faces(out):
        groups.setdefault(face["guarantee"]["group"], set()).add(labels.row_for(rel)["Male"])
        assert face["guarantee"]["partition"] == {"Male": labels.row_for(rel)["Male"]}
    assert groups and all(len(v) == 1 for v in groups.values())
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    failed = manifest[manifest.status == "error"]
    assert r.returncode == (1 if len(failed) else 0)
    assert all("k-Same cannot hide this face" in why for why in failed.reason)
    bad = cli("anonymize", src, "-o", tmp_path / "o2", "--method", "ksame-select", "--k", "2", "--labels",
              CROPS / "labels.csv", "--select", "Smiling,Nope", "-q")
    assert bad.returncode == 2 and "--select: no column Nope" in bad.stderr and "Traceback" not in bad.stderr


def test_interrupted_ksame_run_resumes_without_redoing_its_first_pass(tmp_path):
    src = _celeba_subset(tmp_path, identities=6, per_identity=5)
    n = len(list(src.iterdir()))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(out), "--method", "ksame-eigen",
           "--k", "3", "--labels", str(CROPS / "labels.csv"), "-q", "-j", "1", "--batch-size", "2"]
    written = kill_halfway(cmd, out / ".anoncli" / "journal.jsonl", n)   # killed in the second pass
    assert 0 < written < n, "the kill must land in the second pass"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["dataset_level"]["pass1"] == {**record["dataset_level"]["pass1"], "aligned_now": 0, "cached": n}
    assert record["dataset_level"]["plan"]["reused"] is True
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == n and manifest.input.is_unique and set(manifest.status) == {"ok"}
    assert record["resumed_items"] >= written
    assert not (out / ".anoncli" / "pass1").exists(), "the cache of original faces goes once every image is done"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and f"{n} already done earlier" in again.stdout
    assert "skipped" in json.loads((out / "run.json").read_text())["dataset_level"]["pass1"]

    out2 = tmp_path / "out2"
    cmd2 = [*cmd[:6], str(out2), *cmd[7:]]
    aligned = kill_halfway(cmd2, out2 / ".anoncli" / "pass1" / "images.jsonl", n)   # killed in the first pass
    assert 0 < aligned < n
    assert subprocess.run(cmd2, capture_output=True, text=True, timeout=600).returncode == 0
    pass1 = json.loads((out2 / "run.json").read_text())["dataset_level"]["pass1"]
    assert pass1["cached"] >= aligned and pass1["aligned_now"] == n - pass1["cached"]
