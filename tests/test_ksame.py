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
from anoncli.faces.piecewise_affine import (crop_border_points, sampling_maps, triangle_labels, triangulate,
                                            warp_piecewise_affine)
from anoncli.methods.ksame import FaceRef, face_units, plan_ksame
from anoncli.methods.ksame_m import (combined_features, detail_bands, fit_shape_model, plan_ksame_m, restore_detail,
                                    trimmed_mean)
from anoncli.methods.microaggregation import balanced_groups, centred_gram, mdav_groups
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


# ---------------------------------------------------------------- k-Same-M: piecewise-affine warps

def _smooth_image(size: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (size // 12, size // 12, 3)).astype(np.float32)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)


def _template_shape(res: int, rng, jitter: float = 0.0) -> np.ndarray:
    """68 points spread like a face's (an oval of jaw points and an inner grid), jittered."""
    t = np.linspace(0.1 * np.pi, 0.9 * np.pi, 17)
    jaw = np.stack([0.5 + 0.38 * np.cos(np.pi - t), 0.4 + 0.45 * np.sin(t)], 1)
    # an inner hexagonal lattice: well-shaped triangles that a small jitter does not fold
    rows = [np.stack([0.5 + 0.075 * (np.arange(n) - (n - 1) / 2), np.full(n, 0.2 + 0.065 * r)], 1)
            for r, n in enumerate((6, 7, 6, 7, 6, 7, 6, 6))]
    pts = np.vstack([jaw, *rows]) * res
    return pts + rng.normal(0, jitter, pts.shape)


def test_border_points_and_triangulation_cover_the_whole_crop():
    res = 64
    border = crop_border_points(res, 4)
    assert len(border) == 16 and border.min() == -0.5 and border.max() == res - 0.5
    shape = _template_shape(res, np.random.default_rng(0), 1.0)
    points = np.vstack([shape, border])
    tri = triangulate(points)
    labels = triangle_labels(points, tri, res, res)
    assert (labels >= 0).all(), "every pixel of the crop lies in a triangle"
    a, b, c = (points[tri[:, i]] for i in range(3))
    assert (((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) > 0).all()


def test_warping_a_shape_onto_itself_is_the_identity():
    res = 64
    image = _smooth_image(res)
    points = np.vstack([_template_shape(res, np.random.default_rng(1), 1.5), crop_border_points(res)])
    tri = triangulate(points)
    map_x, map_y = sampling_maps(points, points, tri, res, res)
    ys, xs = np.mgrid[0:res, 0:res]
    np.testing.assert_allclose(map_x, xs, atol=1e-4)
    np.testing.assert_allclose(map_y, ys, atol=1e-4)
    np.testing.assert_allclose(warp_piecewise_affine(image, points, points, tri), image, atol=1e-3)


def test_one_affine_for_every_triangle_is_that_affine_warp():
    """When the target points are one affine map of the source points, every triangle carries
    that map, so the piecewise warp equals cv2.warpAffine (closed form)."""
    import cv2

    res = 64
    image = _smooth_image(res, 2)
    src = np.vstack([_template_shape(res, np.random.default_rng(2), 1.0), crop_border_points(res)])
    m = np.array([[1.05, 0.04, -2.0], [-0.03, 0.97, 1.5]])
    dst = src @ m[:, :2].T + m[:, 2]
    out = warp_piecewise_affine(image, src, dst, triangulate(dst))
    expected = cv2.warpAffine(image, m, (res, res), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inner = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(out[inner], expected[inner], atol=0.05)


def test_warp_to_the_mean_shape_and_back_gives_the_image_again():
    res = 96
    rng = np.random.default_rng(3)
    image = _smooth_image(res, 3)
    shape = _template_shape(res, rng, 0.0)
    other = shape + rng.normal(0, 0.5, shape.shape)   # moves every point, folds no triangle
    border = crop_border_points(res)
    tri = triangulate(np.vstack([other, border]))
    there = warp_piecewise_affine(image, np.vstack([shape, border]), np.vstack([other, border]), tri)
    back = warp_piecewise_affine(there, np.vstack([other, border]), np.vstack([shape, border]), tri)
    moved = np.abs(there - image).mean()
    assert moved > 1.0, "the shapes differ enough for the warp to move pixels"
    assert np.abs(back - image)[8:-8, 8:-8].mean() < 0.25 * moved   # what is left: bilinear resampling, twice


# ---------------------------------------------------------------- k-Same-M: plans

def _model_faces(n_people: int, per_person: int, res: int = 48, seed: int = 5):
    rng = np.random.default_rng(seed)
    base = _template_shape(res, rng, 0.0)
    crops, shapes, units = [], [], []
    for p in range(n_people):
        person_shape = base + rng.normal(0, 1.0, base.shape)
        person_tex = _smooth_image(res, 100 + p)
        for _ in range(per_person):
            crops.append(np.clip(person_tex + rng.normal(0, 4, person_tex.shape), 0, 255).astype(np.uint8))
            shapes.append(person_shape + rng.normal(0, 0.3, base.shape))
            units.append(f"id:{p}")
    return np.stack(crops), np.stack(shapes), units


def test_combined_features_weigh_shape_variance_against_texture_variance():
    rng = np.random.default_rng(6)
    textures = rng.uniform(0, 255, (20, 8, 8, 3))
    shapes = rng.normal(0, 2.0, (20, 68, 2))
    inside = np.zeros((8, 8), bool)
    inside[2:6, 2:6] = True
    for weight in (1.0, 0.25):
        f = combined_features(textures, shapes, inside, weight)
        tex, shp = f[:, :48].astype(np.float64), f[:, 48:].astype(np.float64)
        total = lambda x: ((x - x.mean(0)) ** 2).sum(1).mean()
        assert tex.shape[1] == 16 * 3 and shp.shape[1] == 136
        assert total(shp) == pytest.approx(weight * total(tex), rel=1e-4)


@pytest.mark.parametrize("unit_face", ["mean", "medoid"])
def test_ksame_m_group_face_is_the_mean_texture_on_the_mean_shape(unit_face):
    crops, shapes, units = _model_faces(n_people=9, per_person=3)
    refs = [FaceRef(f"{i}.jpg", 0, i, u) for i, u in enumerate(units)]
    plan = plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities", unit_face=unit_face, detail=0.0, trim=0.0)
    model = fit_shape_model(shapes, crops.shape[1])
    assert plan.face_row is None and not plan.caveat
    for g in set(plan.face_group.values()):
        faces = [int(r.split(".")[0]) for (r, _), gg in plan.face_group.items() if gg == g]
        people = sorted({units[i] for i in faces})
        assert len(people) >= 3 and plan.groups[g]["units"] == len(people) and plan.groups[g]["faces"] == len(faces)
        textures, person_shapes = [], []
        for person in people:
            mine = [i for i, u in enumerate(units) if u == person]
            free = [np.clip(np.rint(model.shape_free(crops[i].astype(np.float32), shapes[i])), 0, 255) for i in mine]
            if unit_face == "medoid":   # every person here has the same spread: check the choice is one of theirs
                chosen = [i for i in mine if any(np.array_equal(f, free[j]) for j, f in enumerate(free))][:1]
                assert chosen
            textures.append(np.mean(free, 0) if unit_face == "mean" else None)
            person_shapes.append(shapes[mine].mean(0) if unit_face == "mean" else None)
        if unit_face == "mean":
            expected = model.render(np.mean(textures, 0).astype(np.float32), np.mean(person_shapes, 0))
            np.testing.assert_allclose(plan.replacements[g], np.clip(expected, 0, 255), atol=0.05)
        for i in faces:   # the default: every face of a group gets one and the same crop
            assert np.array_equal(plan.replacement((f"{i}.jpg", 0)), plan.replacements[g])


def test_ksame_m_medoid_unit_is_one_photo_of_the_person():
    crops, shapes, units = _model_faces(n_people=6, per_person=4)
    refs = [FaceRef(f"{i}.jpg", 0, i, u) for i, u in enumerate(units)]
    medoid = plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities", unit_face="medoid", detail=0.0, trim=0.0)
    mean = plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities", unit_face="mean", detail=0.0, trim=0.0)
    assert medoid.face_group.keys() == mean.face_group.keys()
    # one photo per person keeps that photo's noise: the medoid average is the rougher one
    rough = lambda x: np.abs(np.diff(x, axis=1)).mean()
    assert rough(medoid.replacements) > rough(mean.replacements)


def test_ksame_m_own_shape_gives_one_crop_per_face_and_says_the_shape_is_not_hidden():
    crops, shapes, units = _model_faces(n_people=6, per_person=2)
    refs = [FaceRef(f"{i}.jpg", 0, i, u) for i, u in enumerate(units)]
    plan = plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities", render_shape="own")
    assert plan.face_row is not None and len(plan.replacements) == len(refs)
    assert "NOT k-anonymised" in plan.caveat
    a, b = plan.replacement(("0.jpg", 0)), plan.replacement(("1.jpg", 0))
    assert plan.face_group[("0.jpg", 0)] == plan.face_group[("1.jpg", 0)] and not np.array_equal(a, b)


def test_ksame_m_refuses_a_dataset_under_k():
    crops, shapes, units = _model_faces(n_people=2, per_person=2)
    refs = [FaceRef(f"{i}.jpg", 0, i, u) for i, u in enumerate(units)]
    plan = plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities")
    assert not plan.face_group and len(plan.excluded) == 4
    assert "holds 2 identities (< k=3)" in plan.excluded[("0.jpg", 0)]


def test_ksame_m_refuses_a_plan_larger_than_the_memory_available(monkeypatch):
    """Before any texture is built: the plan's estimated bytes against what the kernel has available,
    with the flag that lowers them; no estimate where the available memory is unknown."""
    from anoncli.methods import ksame_m

    with pytest.raises(ValueError, match=r"--resolution 256 .*a quarter"):
        ksame_m.check_plan_memory(10_000, 512, available=8 * 2**30)   # 10,000 faces at 512 px: about 18 GiB
    ksame_m.check_plan_memory(1_000, 512, available=8 * 2**30)
    ksame_m.check_plan_memory(10_000, 512, available=None)
    crops, shapes, units = _model_faces(n_people=4, per_person=2)
    refs = [FaceRef(f"{i}.jpg", 0, i, u) for i, u in enumerate(units)]
    monkeypatch.setattr(ksame_m, "available_memory", lambda: 1024)
    with pytest.raises(ValueError, match="needs about"):
        plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities")


def test_a_refused_plan_exits_with_its_reason_and_leaves_no_original_face(monkeypatch, tmp_path):
    """Through the CLI (in process, the memory check made to refuse): exit 2, the reason and the flag on
    one line, and the first pass's cache of original faces removed with the planning work; the same
    folder then takes the run with other flags without --overwrite, since nothing was written."""
    pytest.importorskip("dlib")
    from typer.testing import CliRunner

    from anoncli import cli
    from anoncli.methods import ksame_m

    src = _celeba_subset(tmp_path, identities=3, per_identity=2)
    out = tmp_path / "out"
    monkeypatch.setenv("ANONCLI_PASSPHRASE", "test passphrase")
    monkeypatch.setattr(ksame_m, "available_memory", lambda: 1024)
    result = CliRunner().invoke(cli.app, ["anonymize", str(src), "-o", str(out), "--method", "ksame-m", "--k", "3",
                                          "--identity-column", "none", "-q", "-j", "1"])
    assert result.exit_code == 2, result.output
    assert "needs about" in result.output and "--resolution 256" in result.output
    assert "Traceback" not in result.output
    assert not (out / ".anoncli" / "pass1").exists() and not (out / ".anoncli" / "fit").exists()
    assert not [p for p in out.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".bin", ".npy")]
    monkeypatch.setattr(ksame_m, "available_memory", lambda: None)
    again = CliRunner().invoke(cli.app, ["anonymize", str(src), "-o", str(out), "--method", "ksame-m", "--k", "3",
                                         "--identity-column", "none", "--resolution", "128", "-q", "-j", "1"])
    assert again.exit_code == 0, again.output   # the refused run wrote nothing: other flags need no --overwrite
    assert len(list(out.glob("*.jpg"))) == 6


def test_ksame_m_without_dlib_names_the_install_command(monkeypatch):
    import importlib.util

    from anoncli.faces.landmarks68 import LandmarksUnavailable
    from anoncli.methods import build_method

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    with pytest.raises(LandmarksUnavailable, match="pip install dlib-bin"):
        build_method("ksame-m", {"k": 3})


def test_ksame_m_on_celeba_crops_every_group_is_one_sharp_face_of_k_identities(tmp_path):
    pytest.importorskip("dlib")
    src = _celeba_subset(tmp_path, identities=9, per_identity=3)
    out = tmp_path / "out"
    r = cli("anonymize", src, "-o", out, "--method", "ksame-m", "--k", "3", "--labels", CROPS / "labels.csv",
            "-q", "-j", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    faces = _faces(out)
    assert len(faces) == 27
    labels = read_labels(CROPS / "labels.csv")
    # ksame-m works on its --resolution crops and is composited into each face's own 68-point region (located
    # in the original photo), fully replaced from --blend-width (0.1) x the face's width inside its edge
    import cv2
    from PIL import Image

    from anoncli.faces.compositing import Compositor
    from anoncli.faces.compositing_config import config_from_params
    from anoncli.methods import get_method_spec

    params = get_method_spec("ksame-m").resolve_params({"k": 3})
    compositor = Compositor(config_from_params(params))
    res = params["resolution"]

    def replaced(rel, face):
        """Where the face's crop shows the group face alone."""
        photo = np.asarray(Image.open(src / rel).convert("RGB"))
        whole = (0, 0, photo.shape[1], photo.shape[0])
        region = compositor.locate(photo, whole, np.asarray(face["landmarks"]), np.asarray(face["warp"]), res, 0.0)
        hard = region.hard_mask(whole)
        interior = (cv2.distanceTransform(hard, cv2.DIST_L2, 3) > 1.2 * params["blend_width"] * region.width).astype(np.float32)
        return cv2.warpAffine(interior, np.asarray(face["warp"], np.float64), (res, res), flags=cv2.INTER_NEAREST) > 0.5

    groups: dict[int, list] = {}
    for rel, face in faces:
        g = face["guarantee"]
        assert g["clustered_over"] == "identities" and g["group_units"] >= 3 and "NOT" not in g["protects"]
        groups.setdefault(g["group"], []).append((rel, face))
    for members in groups.values():
        people = [labels.row_for(rel)["identity"] for rel, _ in members]
        assert len(set(people)) >= 3
        assert max(people.count(p) for p in people) * 3 <= len(people), "no person above 1/k of the group's faces"
        assert members[0][1]["guarantee"]["largest_unit_faces"] == max(people.count(p) for p in people)
        crops = [_aligned(out / rel, face["warp"], res) for rel, face in members]
        interiors = [replaced(rel, face) for rel, face in members]
        for c, interior in zip(crops, interiors):
            both = interior & interiors[0]
            assert both.mean() > 0.04
            assert np.nanmean(np.abs(c - crops[0])[both]) < 4.0, "one face per group (up to JPEG)"
    originals = {rel: _aligned(src / rel, face["warp"], res) for rel, face in faces}
    rel, face = faces[0]
    anon = _aligned(out / rel, face["warp"], res)
    inside = replaced(rel, face)
    assert np.nanmean(np.abs(anon[inside] - originals[rel][inside])) > 8.0, "the face was replaced"
    run = json.loads((out / "run.json").read_text())
    assert run["dataset_level"]["plan"]["space"] == "model"


def test_restore_detail_gives_back_the_band_energy_of_the_members():
    """Averaging n independent textures divides each detail band's energy by n; amount 1 brings
    it back to the members' mean energy, amount 0 leaves the average as it is."""
    import cv2

    rng = np.random.default_rng(7)
    units = [rng.normal(128, 20, (64, 64, 3)).astype(np.float32) for _ in range(6)]
    average = np.mean(units, 0).astype(np.float32)
    inside = np.zeros((64, 64), bool)
    inside[8:-8, 8:-8] = True
    sigmas = (1.0, 2.0)
    energy = lambda x, b: float(np.mean(detail_bands(x, sigmas)[0][b][inside] ** 2))
    np.testing.assert_array_equal(restore_detail(average, units, inside, 0.0, sigmas), average)
    restored = restore_detail(average, units, inside, 1.0, sigmas)
    for b in range(2):
        members = np.mean([energy(u, b) for u in units])
        assert energy(average, b) < 0.3 * members
        # measured again on the result, up to the overlap of neighbouring Gaussian bands
        assert energy(restored, b) == pytest.approx(members, rel=0.15)
    bands, low = detail_bands(average, sigmas)
    np.testing.assert_allclose(sum(bands) + low, average, atol=1e-3)
    coarse = lambda x: cv2.GaussianBlur(x, (0, 0), 8.0)[inside]
    np.testing.assert_allclose(coarse(restored), coarse(average), atol=0.5)  # the coarse face is untouched


def test_balanced_groups_bound_every_persons_share_of_the_faces():
    rng = np.random.default_rng(8)
    points = rng.normal(size=(45, 4))
    faces = rng.integers(1, 17, 45).astype(float)
    groups = balanced_groups(centred_gram(points), 5, faces)
    assert sorted(np.concatenate(groups).tolist()) == list(range(45))
    for g in groups:
        assert len(g) >= 5 and faces[g].max() * 5 <= faces[g].sum()
    unweighted = mdav_groups(centred_gram(points), 5)
    assert any(faces[g].max() * 5 > faces[g].sum() for g in unweighted), "plain MDAV would break the per-face bound"
    equal = balanced_groups(centred_gram(points), 5, np.ones(45))
    assert sorted(map(len, equal)) == [5] * 9
    with pytest.raises(ValueError, match="1/k of the total weight"):
        balanced_groups(centred_gram(points[:6]), 5, [30, 1, 1, 1, 1, 1])


def test_ksame_m_refuses_a_person_with_more_than_a_kth_of_the_faces():
    crops, shapes, units = _model_faces(n_people=4, per_person=2)
    units = units[:2] + ["id:big"] * 2 + units[4:]   # still 4 people; now give one of them many photos
    crops = np.concatenate([crops, crops[2:3].repeat(6, 0)])
    shapes = np.concatenate([shapes, shapes[2:3].repeat(6, 0)])
    units = units + ["id:big"] * 6
    refs = [FaceRef(f"{i}.jpg", 0, i, u) for i, u in enumerate(units)]
    plan = plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities")
    big = [("%d.jpg" % i, 0) for i, u in enumerate(units) if u == "id:big"]
    assert all("its person has 8 of the 14 faces" in plan.excluded[key] for key in big)
    assert all(plan.face_group.get(key) is None for key in big)
    assert {u for (r, _), g in plan.face_group.items() for u in [units[int(r.split(".")[0])]]} == \
        {"id:0", "id:2", "id:3"}
    loose = plan_ksame_m(refs, crops, shapes, k=3, unit_kind="identities", bound="units")
    assert not loose.excluded and loose.groups[0]["largest_unit_faces"] == 8


def test_trimmed_mean_leaves_out_a_feature_only_one_member_has():
    rng = np.random.default_rng(9)
    members = [np.full((8, 8, 3), 100.0, np.float32) + rng.normal(0, 2, (8, 8, 3)).astype(np.float32) for _ in range(5)]
    members[3][2:4, :] = 10.0   # one member's dark glasses frame
    np.testing.assert_allclose(trimmed_mean(members, 0.0), np.mean(members, 0), atol=1e-4)
    plain, trimmed = np.mean(members, 0)[2:4], trimmed_mean(members, 0.2)[2:4]
    assert plain.mean() < 85 and abs(trimmed.mean() - 100.0) < 2.5, "the frame ghosts into the mean, not the trimmed mean"
    middle = np.sort(np.stack(members), 0)[1:4].mean(0)
    np.testing.assert_allclose(trimmed_mean(members, 0.2), middle, atol=1e-4)
    with pytest.raises(ValueError, match="leaves no member"):
        trimmed_mean(members[:2], 0.45 + 0.1)


def test_ksame_m_says_what_the_compositing_takes_from_the_photo():
    """k-Same-M composites with nothing of the photo inside the region by default; --colour or
    --detail-sigma bring the person's own colour or detail in, and every face's guarantee says so."""
    from anoncli.methods import get_method_spec
    from anoncli.methods.ksame_specs import photo_inside_caveat

    defaults = get_method_spec("ksame-m").resolve_params({})
    assert defaults["shape"] == "landmarks" and defaults["colour"] == "none" and defaults["detail_sigma"] == 0.0
    assert photo_inside_caveat(defaults) == ""
    caveat = photo_inside_caveat({**defaults, "colour": "lab", "detail_sigma": 0.5})
    assert "--colour lab" in caveat and "--detail-sigma" in caveat and "not k-anonymised" in caveat
