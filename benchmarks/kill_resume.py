"""Issue 21, acceptance 1: SIGKILLs at random moments of a run, then completion.

    .venv/bin/python benchmarks/kill_resume.py [--data DIR ...] [--limit 1200] [--kills 20] [--workers 2]
                                               [--method blur] [--keyfile] [--executor local|ray]

1. An uninterrupted reference run: `anoncli anonymize IN -o REF --method M -q -j W`.
2. The same command into another folder, killed with SIGKILL (the whole process group: the run
   and its workers, as the OOM killer or a lost node would) at a uniformly random moment of the
   reference's duration, ``--kills`` times, each time restarted; then run to completion.
3. Checked: one manifest row per input, no temp file anywhere, every output byte-identical to the
   reference's (deterministic methods), and the journal holds one final row per input after the
   last resume. With ``--keyfile`` both runs write escrow keyfiles and the killed run's keyfile
   restores every image (`anoncli restore`, exit 0). With ``--executor ray`` both runs use Ray Data
   on a local cluster that each run starts (and that dies with it); the reference stays on the
   local pool, so the check is also Ray's bytes against the local executor's.
Prints a summary and writes benchmarks/results/kill-resume-<method>-<date>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import link_images, machine_record, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba-wild" / "images"
PASSPHRASE = "kill-resume benchmark passphrase"
from anoncli.io.atomic import TEMP_MARK  # noqa: E402


def command(src: Path, out: Path, args, key: Path | None, executor: str = "local") -> list[str]:
    cmd = [sys.executable, "-m", "anoncli", "anonymize", str(src), "-o", str(out), "--method", args.method, "-q",
           "-j", str(args.workers), "--executor", executor]
    if key is not None:
        cmd += ["--keyfile", str(key), "--escrow", "--kdf-memory", "1", "--kdf-iterations", "1", "--kdf-lanes", "1"]
    return cmd


def run(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0, r


def kill_at(cmd: list[str], env: dict, after: float) -> None:
    """Start ``cmd`` in its own process group and SIGKILL the group ``after`` seconds later."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", help="image folder (repeatable; default: CelebA in the wild)")
    ap.add_argument("--limit", type=int, default=1200)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--method", default="blur")
    ap.add_argument("--keyfile", action="store_true", help="escrow keyfiles in both runs, and restore the killed one")
    ap.add_argument("--executor", default="local", choices=("local", "ray"), help="the killed run's executor")
    args = ap.parse_args()
    if args.keyfile and args.executor == "ray":
        raise SystemExit("--keyfile uses --escrow, which --executor ray refuses")
    env = {**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}
    load_before = os.getloadavg()[0]
    rng = random.Random()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        folders = args.data or [DEFAULT_DATA]
        images = [p for folder in folders for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        images = list({p.name: p for p in images}.values())[:args.limit]   # one file per name (the folder is flat)
        if not images:
            raise SystemExit(f"no images in {', '.join(map(str, folders))}")
        link_images(images, src)
        n = len(images)
        ref_key = tmp / "ref.key" if args.keyfile else None
        key = tmp / "killed.key" if args.keyfile else None
        seconds, r = run(command(src, tmp / "ref", args, ref_key), env)
        if r.returncode != 0:
            raise SystemExit(f"reference run failed: {r.stderr[-2000:]}")
        moments = []
        for _ in range(args.kills):
            moments.append(rng.uniform(0.5, max(seconds, 1.0)))
            kill_at(command(src, tmp / "killed", args, key, args.executor), env, moments[-1])
        final_seconds, r = run(command(src, tmp / "killed", args, key, args.executor), env)
        problems = [] if r.returncode == 0 else [f"final run exit {r.returncode}: {r.stderr[-500:]}"]
        rows = pd.read_csv(tmp / "killed" / "manifest.csv", keep_default_na=False)
        ref_rows = pd.read_csv(tmp / "ref" / "manifest.csv", keep_default_na=False).set_index("input")
        if sorted(rows["input"]) != sorted(ref_rows.index) or rows["input"].duplicated().any():
            problems.append("manifest rows differ from one per input")
        different = [row.input for row in rows.itertuples()
                     if row.output_sha256 != ref_rows.loc[row.input, "output_sha256"]]
        temps = [str(p) for p in (tmp / "killed").rglob("*") if TEMP_MARK in p.name]
        journal = [json.loads(line) for line in (tmp / "killed" / ".anoncli" / "journal.jsonl").read_text().splitlines()]
        restored = None
        if args.keyfile:
            _, rr = run([sys.executable, "-m", "anoncli", "restore", str(tmp / "killed"), "--keyfile", str(key),
                         "-o", str(tmp / "back"), "-q", "--json"], env)
            restored = json.loads(rr.stdout)["counts"] if rr.returncode == 0 else f"exit {rr.returncode}: {rr.stderr[-300:]}"
            if rr.returncode != 0:
                problems.append(f"restore: {restored}")
        if different:
            problems.append(f"{len(different)} outputs differ from the uninterrupted run, e.g. {different[:3]}")
        if temps:
            problems.append(f"{len(temps)} temp files left, e.g. {temps[:3]}")
        result = {"method": args.method, "executor": args.executor, "images": n, "workers": args.workers, "kills": args.kills,
                  "kill_moments_s": [round(m, 2) for m in moments], "reference_seconds": round(seconds, 2),
                  "final_run_seconds": round(final_seconds, 2), "manifest_rows": len(rows),
                  "journal_rows": len(journal), "outputs_differing": len(different), "temp_files": len(temps),
                  "keyfile_restore": restored, "problems": problems, "pass": not problems}
    print(f"{args.method}, {n} images, {args.workers} workers on the {args.executor} executor, {args.kills} SIGKILLs at random moments of a "
          f"{seconds:.1f} s run, then completion ({final_seconds:.1f} s)")
    print(f"manifest rows {result['manifest_rows']} | outputs differing {result['outputs_differing']} | "
          f"temp files {result['temp_files']} | restore {restored} | {'PASS' if result['pass'] else 'FAIL: ' + '; '.join(problems)}")
    path = write_json(f"kill-resume-{args.method}" + ("-ray" if args.executor == "ray" else ""), [result], machine_record(" ".join(sys.argv), load_before))
    print(f"written {path}")


if __name__ == "__main__":
    main()
