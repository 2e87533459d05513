"""Acceptance measurement of the k-Same methods (issue 5, point 1): group sizes and dlib rank-1.

    .venv/bin/python benchmarks/eval_ksame.py [--data DIR] [--labels CSV] [--k 5] [--method ksame-pixel]
        [--select Male] [--limit N] [--out DIR] [--workers W] [--anonymized DIR] [--cache-dir DIR]

1. Anonymizes DIR (or its first N images, sorted) through the real CLI with the identity labels:
   `anoncli anonymize IN -o OUT --method METHOD --k K --labels CSV -q -j W` (timed whole).
   With --anonymized DIR this step is skipped and DIR, a finished output, is evaluated again.
2. Groups, from manifest.csv and the labels only: every anonymized face carries a group number;
   the units of a group are recomputed as the method defines them (the largest face of an image
   with a labels row is its person's identity; any other face is a unit of its own) and its faces
   counted. Every group must hold >= k units (identities) and >= k faces, and agree with the
   group_units / group_faces the manifest records. For ksame-select, the faces of a group must
   share the --select label values.
3. Pixels: each anonymized face is cut out of the OUTPUT image again (the manifest's warp) and
   matched, over the (almost) fully replaced inside of the blend mask within the image, less what a
   later face of the same image painted over, to the nearest replacement face of the saved plan
   (OUT/.anoncli/plan.npy). The faces sharing a nearest replacement form the replacement groups
   actually released; every visible face must match its recorded group and be identical to at
   least k-1 other faces. A face not visible at all (under a later face, outside the image) is counted, not compared.
4. `anoncli report OUT --labels CSV --evaluator dlib -o REPORT -q` (timed whole): dlib rank-1
   identification of the anonymized faces against the other original images, printed next to the
   bound 1/k + 0.05 and the rank-1 of the originals (the baseline).
PASS when 2 and 3 find no violation and rank-1 <= 1/k + 0.05. Writes
benchmarks/results/ksame-acceptance-<data name>-<method>.json.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba-crops" / "images"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
METHODS = ("ksame-pixel", "ksame-eigen", "ksame-select", "ksame-m")   # ksame-m at its default --render-shape group
BOUND_SLACK = 0.05
IDENTITY = "identity"


# ---------------------------------------------------------------- CLI runs

def cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    command = [sys.executable, "-m", "anoncli", *map(str, args)]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):  # anonymize: 1 = some images failed (their faces could not be hidden)
        raise SystemExit(f"{shlex.join(command[1:])} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds, done


def input_folder(data: Path, limit: int | None, where: Path) -> tuple[Path, int]:
    """DATA itself, or a folder of links to its first N images (sorted by name)."""
    images = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"no images in {data}")
    if limit is None or limit >= len(images):
        return data, len(images)
    if where.exists():  # a folder of links from an earlier call with the same --out: reuse it if it matches
        if sorted(p.name for p in where.iterdir()) != [p.name for p in images[:limit]]:
            raise SystemExit(f"{where} exists and holds other images; remove it or choose another --out")
        return where, limit
    where.mkdir(parents=True)
    for image in images[:limit]:
        (where / image.name).symlink_to(image.resolve())
    return where, limit


# ---------------------------------------------------------------- manifest checks

def read_manifest(out: Path) -> list[dict]:
    with (out / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def face_units(rows: list[dict], labels) -> list[dict]:
    """One entry per face the manifest lists as anonymized by k-Same, with its unit recomputed
    from the labels: the image's largest face with a labelled identity is that person, any other
    face is a unit of its own."""
    faces = []
    for row in rows:
        if row["status"] != "ok":
            continue
        detections = json.loads(row["faces"] or "[]")
        areas = [(d["box"][2] - d["box"][0]) * (d["box"][3] - d["box"][1]) for d in detections]
        main = int(np.argmax(areas)) if areas else -1
        label = labels.row_for(row["input"])
        for index, det in enumerate(detections):
            identity = label.get(IDENTITY, "") if (label is not None and index == main) else ""
            faces.append({"rel": row["input"], "output": row["output"], "index": index, "warp": det.get("warp"),
                          "guarantee": det.get("guarantee"), "skipped": det.get("skipped"),
                          "unit": f"id:{identity}" if identity else f"face:{row['input']}#{index}",
                          "labelled": bool(identity),
                          "attributes": label if (label is not None and index == main) else None})
    return faces


def group_sizes(faces: list[dict], group_of) -> dict[int, dict]:
    groups: dict[int, dict] = defaultdict(lambda: {"faces": 0, "units": set(), "identities": set()})
    for face in faces:
        g = groups[group_of(face)]
        g["faces"] += 1
        g["units"].add(face["unit"])
        if face["labelled"]:
            g["identities"].add(face["unit"])
    return {n: {"faces": g["faces"], "units": len(g["units"]), "identities": len(g["identities"])}
            for n, g in groups.items()}


def check_groups(rows: list[dict], labels, k: int, select: tuple[str, ...]) -> tuple[dict, list[dict]]:
    faces = face_units(rows, labels)
    placed = [f for f in faces if f["guarantee"] is not None]
    sizes = group_sizes(placed, lambda f: f["guarantee"]["group"])
    below = [f for f in placed if sizes[f["guarantee"]["group"]]["units"] < k or sizes[f["guarantee"]["group"]]["faces"] < k]
    disagree = [f for f in placed if (f["guarantee"]["group_units"], f["guarantee"]["group_faces"])
                != (sizes[f["guarantee"]["group"]]["units"], sizes[f["guarantee"]["group"]]["faces"])]
    wrong_k = [f for f in placed if f["guarantee"].get("k") != k]
    mixed_partitions = 0
    if select:
        values: dict[int, set] = defaultdict(set)
        for f in placed:
            if f["attributes"] is not None:
                values[f["guarantee"]["group"]].add(tuple(f["attributes"].get(c) for c in select))
        mixed_partitions = sum(len(v) > 1 for v in values.values())
    statuses = Counter(r["status"] for r in rows)
    units = [s["units"] for s in sizes.values()]
    per_identity = Counter(f["unit"] for f in placed if f["labelled"])
    result = {
        "images": len(rows), "status": dict(statuses),
        "faces_in_manifest": len(faces), "faces_anonymized": len(placed),
        "faces_skipped": sum(f["skipped"] is not None for f in faces),
        "faces_without_guarantee": sum(f["guarantee"] is None and f["skipped"] is None for f in faces),
        "faces_labelled": sum(f["labelled"] for f in placed),
        # probes the rank-1 can count: labelled faces whose identity has another labelled image
        "faces_identity_seen_twice": sum(n for n in per_identity.values() if n > 1),
        "groups": len(sizes), "smallest_group_units": min(units, default=None),
        "largest_group_units": max(units, default=None),
        "smallest_group_faces": min((s["faces"] for s in sizes.values()), default=None),
        "smallest_group_identities": min((s["identities"] for s in sizes.values()), default=None),
        "clustered_over": sorted({f["guarantee"].get("clustered_over") for f in placed}),
        "faces_in_group_below_k": len(below),
        "faces_recorded_size_disagrees": len(disagree),
        "faces_recorded_k_differs": len(wrong_k),
        "groups_mixing_select_values": mixed_partitions,
        "images_not_released": [{"input": r["input"], "reason": r["reason"]} for r in rows if r["status"] == "error"][:20],
    }
    return result, placed


# ---------------------------------------------------------------- pixel check

def saved_plan(out: Path, run: dict) -> tuple[np.ndarray | None, str]:
    state = out / ".anoncli"
    try:
        record = json.loads((state / "plan.json").read_text())
        data = (state / "plan.npy").read_bytes()
    except (OSError, ValueError) as e:
        return None, f"no saved plan in {state}: {e}"
    digest = (run.get("dataset_level") or {}).get("plan", {}).get("digest")
    if record.get("digest") != digest:
        return None, f"the saved plan ({record.get('digest')}) is not the run's ({digest})"
    if hashlib.sha256(data).hexdigest() != record.get("arrays_sha256"):
        return None, "plan.npy does not match the sha256 in plan.json"
    import io

    return np.load(io.BytesIO(data), allow_pickle=False), "OUT/.anoncli/plan.npy, digest " + digest


def blend_masks(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """The method's blend mask (crop coordinates) and its inside: pixels the blend replaces
    (almost) fully (mask >= 0.99), eroded 2 px against the interpolation of warping out and back."""
    import cv2

    from anoncli.methods import build_method

    method = build_method(run["method"]["name"] if isinstance(run["method"], dict) else run["method"],
                          run["config"]["params"])
    mask = np.asarray(method.blend_mask(None), np.float32).reshape(method.resolution, method.resolution)
    inside = cv2.erode((mask >= 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return mask, inside


# A later face's blend changes an 8-bit pixel of an earlier one once its mask exceeds half a level.
PAINTED_OVER = 0.5 / 255


def painted_over_by_later_faces(faces: list[dict], position: int, mask: np.ndarray) -> np.ndarray:
    """Pixels of face ``position``'s crop that a face blended after it in the same image
    (a higher detection index) painted over: each later mask mapped image -> this crop."""
    import cv2

    res = mask.shape[0]
    covered = np.zeros((res, res), bool)
    own = np.vstack([np.asarray(faces[position]["warp"], np.float64), [0, 0, 1]])
    for later in faces[position + 1:]:
        to_later = np.vstack([np.asarray(later["warp"], np.float64), [0, 0, 1]])
        later_to_own = (own @ np.linalg.inv(to_later))[:2]
        covered |= cv2.warpAffine(mask, later_to_own, (res, res), flags=cv2.INTER_LINEAR) > PAINTED_OVER
    return covered


def within_image(m: np.ndarray, res: int, height: int, width: int) -> np.ndarray:
    """Crop pixels that sample only the image: the blend writes nothing beyond its borders, where
    the crop holds replicated border pixels instead."""
    import cv2

    ones = np.ones((height, width), np.float32)
    covered = cv2.warpAffine(ones, m, (res, res), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.erode((covered >= 0.999).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def check_pixels(out: Path, run: dict, placed: list[dict], k: int) -> dict:
    """Match every anonymized face, cut out of the output again, to the nearest saved replacement,
    over the inside of its blend mask less what later faces of the same image painted over."""
    from anoncli.faces.blend import crop_bounds_in_image
    from anoncli.faces.stage import extract_crop
    from anoncli.io.images import load_image

    replacements, source = saved_plan(out, run)
    if replacements is None:
        return {"available": False, "reason": source}
    res = replacements.shape[1]
    mask, inside = blend_masks(run)
    if inside.shape != (res, res):
        return {"available": False, "reason": f"mask {inside.shape} and plan crops {res} px differ"}
    refs = replacements.reshape(len(replacements), res * res, 3).astype(np.float32)
    nearest, own_rmse, margin, unreadable, overlapped, hidden, compared = [], [], [], 0, 0, [], []
    by_image: dict[str, list[dict]] = defaultdict(list)
    for face in placed:
        by_image[face["output"]].append(face)
    for output, faces in by_image.items():
        faces.sort(key=lambda f: f["index"])
        try:
            img = load_image(out / output, 10 ** 9)
        except Exception:  # noqa: BLE001 - counted, not fatal
            unreadable += len(faces)
            continue
        for position, face in enumerate(faces):
            m = np.asarray(face["warp"], np.float64)
            roi = crop_bounds_in_image(m, res, img.height, img.width)
            if roi is None:
                unreadable += 1
                continue
            crop = extract_crop(img, m, res, roi).astype(np.float32)
            if img.pixels.dtype == np.uint16:
                crop /= 257.0
            use = visible = inside & within_image(m, res, img.height, img.width)
            if position + 1 < len(faces):
                use = visible & ~painted_over_by_later_faces(faces, position, mask)
                overlapped += bool((use != visible).any())
            pixels = use.ravel()
            if not pixels.any():  # wholly under a later face or outside the image: not visible in the output
                hidden.append(face)
                continue
            compared.append(int(pixels.sum()))
            diff = refs[:, pixels, :] - crop.reshape(res * res, 3)[pixels][None]
            rmse = np.sqrt((diff.astype(np.float64) ** 2).mean(axis=(1, 2)))
            g = face["guarantee"]["group"]
            face["pixel_group"] = int(np.argmin(rmse))
            nearest.append(face["pixel_group"] == g)
            own_rmse.append(float(rmse[g]))
            others = np.delete(rmse, g)
            margin.append(float(others.min() - rmse[g]) if others.size else float("inf"))
    matched = [f for f in placed if "pixel_group" in f]
    visible_sizes = group_sizes(matched, lambda f: f["pixel_group"])
    # The acceptance's wording: each face identical to at least k-1 other faces of the run. A face
    # not visible at all cannot be compared; it counts in the group the plan gave it.
    sizes = group_sizes(matched + hidden, lambda f: f.get("pixel_group", f["guarantee"]["group"]))
    below = sum(1 for f in matched if sizes[f["pixel_group"]]["faces"] < k)
    return {"available": True, "plan": source, "replacements": int(len(replacements)),
            "pixels_compared_per_face": {"inside_mask": int(inside.sum()), "min": min(compared, default=0)},
            "faces_compared": len(matched), "faces_not_compared": unreadable,
            "faces_partly_painted_over_by_a_later_face": overlapped,
            "faces_not_visible": len(hidden),
            "faces_nearest_own_group": int(sum(nearest)),
            "rmse_to_own_replacement": {"median": float(np.median(own_rmse)), "max": float(np.max(own_rmse))}
            if own_rmse else None,
            "margin_to_next_replacement": {"median": float(np.median(margin)), "min": float(np.min(margin))}
            if margin else None,
            "replacement_groups": len(sizes),
            "smallest_replacement_group_faces": min((s["faces"] for s in sizes.values()), default=None),
            "smallest_replacement_group_visible_faces": min((s["faces"] for s in visible_sizes.values()), default=None),
            "smallest_replacement_group_visible_units": min((s["units"] for s in visible_sizes.values()), default=None),
            "faces_in_replacement_group_below_k": below}


# ---------------------------------------------------------------- report

def identification(report: dict) -> dict | None:
    dlib = (report.get("privacy") or {}).get("dlib") or {}
    return dlib.get("identification")


def shown(value, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return format(value, spec)


def verdict(groups: dict, pixels: dict, ident: dict | None, k: int) -> tuple[bool, list[str]]:
    problems = []
    for key, what in (("faces_in_group_below_k", "faces in a group below k"),
                      ("faces_recorded_size_disagrees", "faces whose recorded group size differs from the recount"),
                      ("faces_recorded_k_differs", "faces recorded with another k"),
                      ("faces_without_guarantee", "anonymized faces without a k-Same guarantee"),
                      ("groups_mixing_select_values", "groups mixing --select values")):
        if groups[key]:
            problems.append(f"{groups[key]} {what}")
    if not groups["faces_anonymized"]:
        problems.append("no face anonymized")
    if not pixels.get("available"):
        problems.append(f"pixel check not possible: {pixels.get('reason')}")
    else:
        if pixels["faces_in_replacement_group_below_k"]:
            problems.append(f"{pixels['faces_in_replacement_group_below_k']} faces identical to fewer than k-1 others")
        if pixels["faces_nearest_own_group"] != pixels["faces_compared"] or pixels["faces_not_compared"]:
            problems.append(f"{pixels['faces_compared'] - pixels['faces_nearest_own_group']} faces nearest another "
                            f"group's replacement, {pixels['faces_not_compared']} not compared")
    rank1 = None if ident is None else ident.get("rank1")
    if rank1 is None or rank1 != rank1:
        problems.append("dlib rank-1 not measured (no probe with another image of its identity)")
    elif rank1 > 1 / k + BOUND_SLACK:
        problems.append(f"dlib rank-1 {rank1:.4f} above 1/k + {BOUND_SLACK} = {1 / k + BOUND_SLACK:.4f}")
    return not problems, problems


def print_summary(data: str, k: int, method: str, groups: dict, pixels: dict, ident: dict | None, seconds: dict) -> None:
    bound = 1 / k + BOUND_SLACK
    print(f"{data}: {groups['images']} images ({groups['status']}), {method}, k={k}; "
          f"anonymize {shown(seconds.get('anonymize'), '.1f')} s, report {shown(seconds.get('report'), '.1f')} s; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"{'check':58} {'value':>12} {'required':>12}")
    lines = [
        ("faces anonymized (manifest) / with a labelled identity", f"{groups['faces_anonymized']}/{groups['faces_labelled']}", ""),
        ("groups (units: " + ",".join(map(str, groups["clustered_over"])) + ")", str(groups["groups"]), ""),
        ("smallest group: units / identities / faces",
         f"{shown(groups['smallest_group_units'], 'd')}/{shown(groups['smallest_group_identities'], 'd')}/"
         f"{shown(groups['smallest_group_faces'], 'd')}", f">= {k} (units, faces)"),
        ("faces in a group of < k units or < k faces", str(groups["faces_in_group_below_k"]), "0"),
        ("faces whose recorded group size differs from the recount", str(groups["faces_recorded_size_disagrees"]), "0"),
        ("faces recorded with another k", str(groups["faces_recorded_k_differs"]), "0"),
        ("anonymized faces without a k-Same guarantee", str(groups["faces_without_guarantee"]), "0"),
        ("faces skipped (crop outside the image)", str(groups["faces_skipped"]), ""),
        ("groups mixing --select values", str(groups["groups_mixing_select_values"]), "0"),
    ]
    if pixels.get("available"):
        lines += [
            ("faces partly painted over by a later face (compared outside)",
             str(pixels["faces_partly_painted_over_by_a_later_face"]), ""),
            ("output faces nearest their own group's replacement",
             f"{pixels['faces_nearest_own_group']}/{pixels['faces_compared'] + pixels['faces_not_compared']}", "all"),
            ("  RMSE to own replacement, median / max (0-255)",
             f"{shown(pixels['rmse_to_own_replacement']['median'], '.2f')}/{shown(pixels['rmse_to_own_replacement']['max'], '.2f')}", ""),
            ("  margin to the next replacement, median / min",
             f"{shown(pixels['margin_to_next_replacement']['median'], '.2f')}/{shown(pixels['margin_to_next_replacement']['min'], '.2f')}", "> 0"),
            ("faces not visible (under a later face or outside the image)",
             str(pixels["faces_not_visible"]), ""),
            ("smallest replacement group: faces / visible faces / visible units",
             f"{shown(pixels['smallest_replacement_group_faces'], 'd')}/"
             f"{shown(pixels['smallest_replacement_group_visible_faces'], 'd')}/"
             f"{shown(pixels['smallest_replacement_group_visible_units'], 'd')}", f">= {k} faces"),
            ("faces identical to fewer than k-1 other faces", str(pixels["faces_in_replacement_group_below_k"]), "0"),
        ]
    else:
        lines.append(("pixel check", "n/a", pixels.get("reason", "")))
    if ident is not None:
        lines += [
            (f"dlib rank-1, anonymized vs originals ({ident.get('probes')} probes, "
             f"{groups['faces_identity_seen_twice']} counted)", shown(ident.get("rank1")), f"<= {bound:.4f}"),
            ("dlib rank-1, originals (baseline)", shown(ident.get("baseline_rank1")), ""),
            ("dlib rank-5, anonymized / originals",
             f"{shown(ident.get('rank5'), '.3f')}/{shown(ident.get('baseline_rank5'), '.3f')}", ""),
        ]
    else:
        lines.append(("dlib rank-1", "n/a", f"<= {bound:.4f}"))
    for name, value, required in lines:
        print(f"{name:58} {value:>12} {required:>12}")


# ---------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of images (default: %(default)s)")
    ap.add_argument("--labels", type=Path, help="labels CSV with image and identity columns (default: DATA/../labels.csv)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--method", default="ksame-pixel", choices=METHODS)
    ap.add_argument("--select", default="Male", help="--select columns for ksame-select (default: Male)")
    ap.add_argument("--limit", type=int, help="first N images, sorted by name (default: all)")
    ap.add_argument("--out", type=Path, help="anonymized output folder, kept (default: a temp folder, removed); "
                                             "the report goes to OUT-report, the input links (with --limit) to OUT-input")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for anonymize and report (default: all cores)")
    ap.add_argument("--anonymized", type=Path, help="skip anonymizing: evaluate this finished output folder again")
    ap.add_argument("--cache-dir", type=Path, help="feature cache for `anoncli report` (default: the report's own)")
    args = ap.parse_args()
    if args.labels is None:
        args.labels = args.data.parent / "labels.csv"
    if not args.labels.is_file():
        ap.error(f"no labels file {args.labels}; give --labels CSV")
    if args.anonymized is not None and not (args.anonymized / "run.json").is_file():
        ap.error(f"--anonymized {args.anonymized} has no run.json")
    args.labels = args.labels.resolve()
    return args


def data_name(data: Path) -> str:
    return data.parent.name if data.name == "images" else data.name


def evaluate(args: argparse.Namespace, work: Path) -> dict:
    from anoncli.io.labels import read_labels

    seconds: dict = {}
    if args.anonymized is not None:
        out = args.anonymized.resolve()
        anonymize_command = None
    else:
        out = (args.out or work / "anon").resolve()
        src, n = input_folder(args.data, args.limit, out.with_name(out.name + "-input"))
        extra = ["--select", args.select] if args.method == "ksame-select" else []
        anonymize_command = ["anonymize", src, "-o", out, "--method", args.method, "--k", args.k,
                             "--labels", args.labels, *extra, "-q", "-j", args.workers]
        seconds["anonymize"], done = cli(*anonymize_command)
        print(done.stdout.strip().splitlines()[0] if done.stdout.strip() else f"anonymized {n} images", flush=True)
    run = json.loads((out / "run.json").read_text())
    method = run["method"]["name"] if isinstance(run["method"], dict) else run["method"]
    params = run["config"]["params"]
    k = int(params.get("k", args.k))
    if k != args.k:
        print(f"note: the output was written with k={k}; checking against that k")
    select = tuple(c.strip() for c in params.get("select", "").split(",") if c.strip())
    labels = read_labels(args.labels)
    rows = read_manifest(out)
    groups, placed = check_groups(rows, labels, k, select)
    pixels = check_pixels(out, run, placed, k)
    report_dir = out.with_name(out.name + "-report") if (args.out or args.anonymized) else work / "report"
    report_command = ["report", out, "--labels", args.labels, "--evaluator", "dlib", "-o", report_dir, "-q",
                      "-j", args.workers]
    if args.cache_dir is not None:
        report_command += ["--cache-dir", args.cache_dir]
    seconds["report"], done = cli(*report_command)
    if done.returncode != 0:
        raise SystemExit(f"anoncli report failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    report = json.loads((report_dir / "report.json").read_text())
    ident = identification(report)
    passed, problems = verdict(groups, pixels, ident, k)
    print_summary(data_name(args.data), k, method + (f" --select {','.join(select)}" if select else ""), groups, pixels,
                  ident, seconds)
    print(("PASS" if passed else "FAIL") + f": every face in a group of >= {k} units and faces, "
          f"dlib rank-1 {shown(None if ident is None else ident.get('rank1'))} <= 1/k + {BOUND_SLACK} = {1 / k + BOUND_SLACK:.4f}"
          + ("" if passed else " -- " + "; ".join(problems)))
    return {
        "date": datetime.now().isoformat(timespec="seconds"), "command": shlex.join([sys.executable, *sys.argv]),
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {platform.platform()}",
        "load average (1 min) at the end": round(os.getloadavg()[0], 2),
        "data": str(args.data), "labels": str(args.labels), "limit": args.limit, "workers": args.workers,
        "method": method, "k": k, "select": list(select), "anonymized": str(out), "input_dir": run.get("input_dir"),
        "anonymize_command": None if anonymize_command is None else shlex.join(["anoncli", *map(str, anonymize_command)]),
        "report_command": shlex.join(["anoncli", *map(str, report_command)]),
        "seconds": {key: round(v, 2) for key, v in seconds.items()},
        "plan": (run.get("dataset_level") or {}).get("plan"),
        "groups": groups, "pixels": pixels,
        "identification": ident, "bound": 1 / k + BOUND_SLACK,
        "pass": passed, "problems": problems,
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-ksame-") as tmp:
        result = evaluate(args, Path(tmp))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"ksame-acceptance-{data_name(args.data)}-{args.method}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"written {path}")
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
