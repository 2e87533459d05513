"""Acceptance measurement of the identity-replacing methods (issue 6 points 2-3, issue 7 points 2,
3 and 5), through the real CLI.

    .venv/bin/python benchmarks/eval_identity.py --method identitydp [--epsilon 6] [--set crops|wild] [--limit N]
                                                                  [--method-flag detail-sigma=0 ...]
    .venv/bin/python benchmarks/eval_identity.py --method idrotate [--level 9] [--set crops|wild] [--limit N] [--offset N]
                                                                  [--refine-steps K] [--no-restore]
    .venv/bin/python benchmarks/eval_identity.py --method flowrot [--temperature 0.5] [--model teacher|student] [--output-latent]
                                                                  [--set crops|wild|utkface]
    .venv/bin/python benchmarks/eval_identity.py --method fsap|dpimage [--method-flag sigma=0.3 ...]   (issue 22)
    .venv/bin/python benchmarks/eval_identity.py --method diffusion [--method-flag steps=20 ...]      (issue 23)
    .venv/bin/python benchmarks/eval_identity.py --method blur --method-flag sigma=0.003              (a yardstick for the
                                                                                                   realism figures)

Faces are held out from the generator's training: ``crops`` takes CelebA crops of the identities the
trainer holds out (identity mod 10 = 0, anoncli.train.face_crops), ``wild`` the CelebA photos, whose
identities are not in the training crops at all, ``utkface`` the UTKFace files the trainers hold
out (by name hash), measured per race and gender. Each run:

1. `anoncli anonymize IN -o OUT --method M ... -q -j W` (with a keyfile for idrotate and flowrot);
2. for idrotate and flowrot --output-latent (restore refuses flowrot without it), `anoncli restore OUT --keyfile K
   -o RESTORED`, and a wrong-key restore: the same
   restore with every face's key derived from another random master secret (the keyfile opens,
   the keys are not the run's) into WRONG;
3. `anoncli report OUT --labels L --evaluator dlib --evaluator mobilefacenet [--restored RESTORED
   --wrong-restored WRONG] [--group race --group gender] [--gallery SET/images] --weights-dir ../shared/weights -o REPORT -q`.

With ``--gallery`` every other labelled photo of the set joins the identification gallery (FFEM §5
identifies against the rest of LFW); without it the gallery is the evaluated photos alone.

Prints protection (dlib at 0.6, white-box for identitydp and idrotate, which use dlib; MobileFaceNet
at its FAR 1e-3 threshold), rank-1 identification, detection of the anonymized faces, SSIM/PSNR, for
the keyed methods the share of restored faces within dlib distance 0.5 of the original (and called
the same person by MobileFaceNet), right and wrong key, and on UTKFace the per-group detection gaps
of the anonymized faces and of the originals. Writes
benchmarks/results/identity-<method>[-latent]-<set>-<date>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, link_images, machine_record, write_json  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SHARED_WEIGHTS = REPO.parent / "shared" / "weights"
PASSPHRASE = "identity-eval-passphrase"
RESTORE_MATCH = 0.5   # issue 6 point 3: restored faces match the original at dlib distance < 0.5


def cli(*args, env=None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE, **(env or {})}, stdin=subprocess.DEVNULL)
    if r.returncode not in (0, 1):
        raise SystemExit(f"anoncli {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r


def held_out_images(which: str, limit: int, offset: int = 0) -> tuple[list[Path], Path]:
    from anoncli.train.face_crops import is_held_out

    folder = DATA / {"crops": "celeba-crops", "wild": "celeba-wild", "utkface": "utkface"}[which]
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise SystemExit(f"{labels} is missing; is ../shared present?")
    table = pd.read_csv(labels)
    if which == "crops":
        table = table[[is_held_out("celeba-crops", n, str(i)) for n, i in zip(table["image"], table["identity"])]]
    elif which == "utkface":
        table = table[[is_held_out("utkface", n, None) for n in table["image"]]]
    names = sorted(table["image"].astype(str))[offset:offset + limit]
    return [folder / "images" / n for n in names], labels


def wrong_key_restore(out: Path, keyfile: Path, dest: Path, weights_dir: Path | None) -> None:
    """`anoncli restore` in this process with every face key derived from a random master."""
    from anoncli import restore as restore_module
    from anoncli.keys.derive import Keyring
    from anoncli.keys.passphrase import obtain_passphrase
    from anoncli.keys.protect import Passphrase

    original = restore_module._Restorer.restore

    def with_wrong_keys(self, img, meta, blobs, keyring, side_images=None):
        return original(self, img, meta, blobs, Keyring(keyring.run_id, keyring.segment, os.urandom(32)), side_images)

    restore_module._Restorer.restore = with_wrong_keys
    try:
        os.environ["ANONCLI_PASSPHRASE"] = PASSPHRASE
        restore_module.run_restore(out, keyfile, Passphrase(obtain_passphrase(None, confirm=False)), dest,
                                   weights_dir=str(weights_dir) if weights_dir else None, progress=False)
    finally:
        restore_module._Restorer.restore = original


def _rank1(evaluator: dict) -> str | None:
    ident = evaluator.get("identification") or {}
    if ident.get("rank1") is None:
        return None
    chance = ident.get("chance_rank1")
    return f"{ident['rank1']:.4f} ({ident['baseline_rank1']:.4f}" + (f"; chance {chance:.4f})" if chance is not None else ")")


def _gallery(evaluator: dict) -> str | None:
    ident = evaluator.get("identification") or {}
    return f"{ident['gallery']} faces of {ident['identities']} identities" if ident.get("gallery") else None


def summarise(report: dict, method: str) -> dict:
    p, u = report["privacy"], report["utility"]
    row = {
        "faces": p.get("dlib", {}).get("pairs"),
        "protection dlib@0.6" + (" (white-box)" if method in ("identitydp", "idrotate", "fsap") else ""):
            p.get("dlib", {}).get("protection_rate", {}).get("literature"),
        "protection mobilefacenet@FAR1e-3": p.get("mobilefacenet", {}).get("protection_rate", {}).get("far_1e-3"),
        "rank-1 dlib (originals; chance)": _rank1(p.get("dlib", {})),
        "rank-1 mobilefacenet (originals; chance)": _rank1(p.get("mobilefacenet", {})),
        "rank-1 farthest first dlib / mobilefacenet": [(p.get(n, {}).get("identification") or {}).get("rank1_farthest")
                                                      for n in ("dlib", "mobilefacenet")],
        "identification gallery": _gallery(p.get("dlib", {})),
        "detection (dlib HOG)": u["detection_rate"]["anonymized"],
        "detection originals": u["detection_rate"]["original"],
        "ssim face": u["ssim"]["face"], "psnr face": u["psnr"]["face"], "ssim outside": u["ssim"]["outside"],
        "ssim whole image": u["ssim"].get("whole"), "psnr whole image": u["psnr"].get("whole"),
    }
    realism = report.get("realism") or {}
    for name, kid in (realism.get("kid") or {}).items():
        if kid.get("available"):
            row[f"realism KID/floor {name}"] = kid["ratio"]
    if (realism.get("texture") or {}).get("available"):
        row["texture (median, anonymized/original)"] = realism["texture"]["median"]
    if (realism.get("detection") or {}).get("available"):
        row["detection CenterFace (originals)"] = f"{realism['detection']['anonymized']:.4f} ({realism['detection']['original']:.4f})"
    rec = report.get("recovery")
    far = {e["name"]: e["thresholds"]["far_1e-3"] for e in report.get("evaluators", [])}
    if rec:
        for label, part in (("right key", rec), ("wrong key", rec.get("wrong_key") or {})):
            d = (part.get("identity_distances") or {}).get("dlib")
            if d:
                row[f"restore {label}: dlib < {RESTORE_MATCH}"] = sum(v < RESTORE_MATCH for v in d) / len(d)
                row[f"restore {label}: mean dlib distance"] = sum(d) / len(d)
            d = (part.get("identity_distances") or {}).get("mobilefacenet")
            if d and far.get("mobilefacenet") is not None:   # the independent evaluator's same-person call
                row[f"restore {label}: mobilefacenet same person @FAR1e-3"] = sum(v < far["mobilefacenet"] for v in d) / len(d)
    for column, part in (report.get("fairness") or {}).items():
        for metric in ("detection_rate", "original_detection_rate"):
            row[f"{column}: {metric.replace('_', ' ')} max-min gap"] = part["gaps"][metric]["max_min"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=["identitydp", "idrotate", "flowrot", "fsap", "dpimage", "diffusion", "blur"])
    ap.add_argument("--epsilon", type=float, default=6.0)
    ap.add_argument("--sensitivity", default="bound", choices=["bound", "empirical"])
    ap.add_argument("--level", type=int, default=9)
    ap.add_argument("--refine-steps", type=int, help="the methods' --refine-steps (default: the method's)")
    ap.add_argument("--temperature", type=float, default=0.5, help="flowrot's λ")
    ap.add_argument("--model", default="teacher", choices=["teacher", "student"], help="flowrot's flow: the Glow or its distilled student")
    ap.add_argument("--output-latent", action="store_true", help="flowrot: also write the encrypted latent images, which restore then reads")
    ap.add_argument("--no-restore", action="store_true", help="keyed methods: skip both restores (protection and realism only; "
                    "idrotate's restores take most of a run)")
    ap.add_argument("--set", default="crops", choices=["crops", "wild", "utkface"])
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--offset", type=int, default=0, help="skip the first N held-out images (in name order), for another sample")
    ap.add_argument("--gallery", action="store_true",
                    help="the set's whole labelled folder joins the identification gallery (report --gallery; FFEM §5's rest-as-gallery)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--weights-dir", type=Path, help="where the generator is, if not in weights/")
    ap.add_argument("--keep-run", type=Path, metavar="DIR", help="write the anonymized run to DIR and keep it, with its keyfile DIR.key (e.g. for eval_mtcnn.py)")
    ap.add_argument("--method-flag", action="append", default=[], metavar="NAME=VALUE",
                    help="any other method flag, e.g. detail-sigma=0 or colour=lab-chroma (repeatable; named in the result file)")
    args = ap.parse_args()

    images, labels = held_out_images(args.set, args.limit, args.offset)
    load_before = os.getloadavg()[0]
    flags = {"identitydp": ["--epsilon", args.epsilon, "--sensitivity", args.sensitivity], "idrotate": ["--level", args.level],
             "flowrot": ["--temperature", args.temperature, "--model", args.model], "fsap": [], "dpimage": [], "diffusion": [], "blur": []}[args.method]
    keyed = args.method in ("idrotate", "flowrot")
    if args.output_latent:
        flags += ["--output-latent", "true"]
    if args.refine_steps is not None:
        flags += ["--refine-steps", args.refine_steps]
    for given in args.method_flag:
        name, sep, value = given.partition("=")
        if not sep:
            raise SystemExit(f"--method-flag expects NAME=VALUE, got {given!r}")
        flags += ["--" + name.lstrip("-"), value]
    wdir = ["--weights-dir", args.weights_dir] if args.weights_dir else []
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = link_images(images, tmp / "in")
        out = args.keep_run or tmp / "out"
        key = out.with_name(out.name + ".key") if args.keep_run else tmp / "run.key"   # kept with the run: restore again later
        keys = ["--keyfile", key] if keyed else []
        seconds["anonymize"], r = cli("anonymize", src, "-o", out, "--method", args.method, *flags, *keys, *wdir, "-q", "-j", args.workers)
        extra = ["--group", "race", "--group", "gender"] if args.set == "utkface" else []
        if args.gallery:
            extra += ["--gallery", labels.parent / "images"]
        # `anoncli restore` refuses a flowrot run without latent images (exit 7): nothing to measure
        if keyed and not args.no_restore and (args.method != "flowrot" or args.output_latent):
            seconds["restore"], _ = cli("restore", out, "--keyfile", key, "-o", tmp / "restored", *wdir, "-q")
            t0 = time.perf_counter()
            wrong_key_restore(out, key, tmp / "wrong", args.weights_dir)
            seconds["wrong-key restore"] = time.perf_counter() - t0
            extra += ["--restored", tmp / "restored", "--wrong-restored", tmp / "wrong"]
        seconds["report"], _ = cli("report", out, "--labels", labels, "--evaluator", "dlib", "--evaluator", "mobilefacenet",
                                   *extra, "--weights-dir", SHARED_WEIGHTS, "-o", tmp / "report", "-q", "-j", args.workers)
        report = json.loads((tmp / "report" / "report.json").read_text())
    row = {"method": args.method, "set": args.set, "images": len(images), "offset": args.offset, **dict(zip(flags[::2], flags[1::2])),
           **summarise(report, args.method), "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    row = {k.lstrip("-") if isinstance(k, str) else k: v for k, v in row.items()}
    width = max(len(k) for k in row)
    for k, v in row.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    path = write_json(f"identity-{args.method}{'-student' if args.model == 'student' else ''}{'-latent' if args.output_latent else ''}"
                      f"{''.join('-' + g.lstrip('-').replace('=', '') for g in args.method_flag)}"
                      f"-{args.set}{'-gallery' if args.gallery else ''}{f'-from{args.offset}' if args.offset else ''}"
                      f"{'-norestore' if keyed and args.no_restore else ''}", [row], machine_record(" ".join(sys.argv), load_before))
    print(f"written {path}")


if __name__ == "__main__":
    main()
