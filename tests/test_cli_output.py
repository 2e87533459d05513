"""What the CLI prints in an 80-column terminal, its --json outputs, and unknown options named as such."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from anoncli import cli
from anoncli.method_flags import UnknownOption, method_flag_values
from anoncli.methods import available_methods, get_method_spec
from anoncli.weights import REGISTRY

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
ELLIPSIS = "…"
EVAL_HINT = "pip install 'anoncli[eval]'"


def run_cli(*args, columns: int = 80) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]


def test_weights_list_shows_every_name_whole_at_80_columns():
    r = run_cli("weights", "list")
    assert r.returncode == 0, r.stderr
    assert ELLIPSIS not in r.stdout
    rows = table_lines(r.stdout)
    assert rows and all(len(line) <= 80 for line in rows), max(rows, key=len)
    names_in_table = {line.split("│")[1].strip() for line in rows if line.startswith("│")}
    assert set(REGISTRY) <= names_in_table
    for entry in REGISTRY.values():   # each entry's file and official copy, whole, below the table
        assert f"{entry.name}: {entry.filename}" in r.stdout and entry.url in r.stdout


def test_weights_list_json():
    r = run_cli("weights", "list", "--json", columns=40)
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    assert [e["name"] for e in entries] == list(REGISTRY)
    for e in entries:
        assert e["status"] in ("present", "missing", "corrupt")
        assert (e["found_at"] is not None) == (e["status"] == "present")
        assert e["sha256"] == REGISTRY[e["name"]].sha256 and e["official_copy"] == REGISTRY[e["name"]].url


def synthetic_report() -> dict:
    """A report as build_report returns it: two evaluators measured, one unavailable with a long reason."""
    def privacy(rate):
        return {"protection_rate": {"literature": rate, "far_1e-3": rate - 0.01}, "pairs": 10,
                "distances": {"anonymized": [0.9] * 10, "genuine": [0.3] * 4, "impostor": [0.8] * 40},
                "identification": {"rank1": 0.1, "rank5": 0.2, "rank1_farthest": 0.037, "rank5_farthest": 0.2, "baseline_rank1": 0.9, "baseline_rank5": 1.0,
                                   "chance_rank1": 0.05, "chance_rank5": 0.25, "identities": 20, "probes": 10,
                                   "gallery": 30}}

    def evaluator(name, available, white_box=False, reason=None):
        return {"name": name, "summary": name, "metric": "cosine", "available": available, "reason": reason,
                "white_box": white_box, "weights_sha256": "ab" * 32,
                "thresholds": {"literature": 0.6, "far_1e-3": 0.55 if available else None},
                "threshold_source": "paper", "verification": {"auc": 0.99, "pairs": 50} if available else None}

    long_reason = ("weights mobilefacenet-arcface-casia missing: `anoncli weights import DIR` or `anoncli weights "
                   f"fetch mobilefacenet-arcface-casia`; its module needs {EVAL_HINT}")
    return {
        "tool_version": "0.1.0", "created": "2024-05-01T12:00:00+00:00", "anon_dir": "/d/anon", "original_dir": "/d/o",
        "restored_dir": None, "wrong_restored_dir": None, "gallery_dir": None,
        "run": {"method": "identitydp", "params": {"epsilon": 1.0}, "run_id": "r1"},
        "counts": {"images": 10, "faces": 10, "measured_images": 10, "skipped": []},
        "evaluators": [evaluator("dlib", True), evaluator("mobilefacenet", False, reason=long_reason),
                       evaluator("arcface", True, white_box=True)],
        "privacy": {"dlib": privacy(0.8), "arcface": privacy(0.95)},
        "examples": [],
        "utility": {"detection_rate": {"detector": "dlib HOG", "anonymized": 0.9, "original": 1.0, "n": 10},
                    "landmarks": {"available": False, "reason": f"dlib is not installed: {EVAL_HINT}"},
                    "ssim": {"face": 0.5, "outside": 0.99, "whole": 0.9},
                    "psnr": {"face": 20.0, "outside": 45.0, "whole": 30.0, "face_identical_images": 0},
                    "lpips": {"available": False, "value": None, "reason": "weights missing"},
                    "fid": {"available": False, "value": None, "reason": "fewer than two faces"}},
        "recovery": None, "fairness": {},
    }


def run_report(monkeypatch, tmp_path, *extra):
    """`anoncli report` on a synthetic result, printed to a console made as cli.py makes it under COLUMNS=80."""
    import anoncli.report.build as build

    monkeypatch.setattr(build, "build_report", lambda *a, **k: synthetic_report())
    monkeypatch.setenv("COLUMNS", "80")
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(soft_wrap=True, file=buffer))
    anon = tmp_path / "anon"
    anon.mkdir()
    result = CliRunner().invoke(cli.app, ["report", str(anon), "-o", str(tmp_path / "rep"), "-q", *extra])
    assert result.exit_code == 0, result.output
    return buffer.getvalue()


def test_report_table_keeps_names_whole_and_reasons_below(monkeypatch, tmp_path):
    text = run_report(monkeypatch, tmp_path)
    assert ELLIPSIS not in text
    rows = table_lines(text)
    assert rows and all(len(line) <= 80 for line in rows), max(rows, key=len)
    header = " ".join(rows[:3])
    assert "dlib" in header and "arcface" in header and "(white-box)" in header
    for measure in ("threshold, literature", "protected, literature", "threshold, FAR 1e-3", "protected, FAR 1e-3",
                    "rank-1, anonymized", "rank-1, farthest first", "rank-1, originals", "AUC on originals"):
        assert any(measure in line for line in rows), measure
    assert any("farthest first" in line and "3.7 %" in line for line in rows)
    assert not any("mobilefacenet" in line for line in rows), "an unavailable evaluator's reason stays out of the table"
    reason = synthetic_report()["evaluators"][1]["reason"]
    assert f"mobilefacenet unavailable: {reason}" in text.splitlines()
    assert f"landmarks: unavailable (dlib is not installed: {EVAL_HINT})" in text, "markup ate [eval]"
    assert (tmp_path / "rep" / "report.json").is_file() and (tmp_path / "rep" / "report.html").is_file()


def test_report_json_is_a_summary_for_scripts(monkeypatch, tmp_path):
    summary = json.loads(run_report(monkeypatch, tmp_path, "--json"))
    assert summary["report_json"] == str(tmp_path / "rep" / "report.json")
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["run"] == summary["run"]
    by_name = {e["name"]: e for e in summary["evaluators"]}
    assert list(by_name) == ["dlib", "mobilefacenet", "arcface"]
    assert by_name["dlib"]["protection_rate"]["literature"] == 0.8 and "distances" not in by_name["dlib"]
    assert by_name["arcface"]["white_box"] and by_name["arcface"]["identification"]["rank1"] == 0.1
    assert not by_name["mobilefacenet"]["available"] and EVAL_HINT in by_name["mobilefacenet"]["reason"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("crops")
    (d / "a.jpg").write_bytes((EXAMPLES / "astronaut.jpg").read_bytes())
    return d


@pytest.mark.parametrize("args, message", [
    (["--methd", "blur"], "no such option --methd; did you mean --method?"),
    (["--method", "pixelate", "--thres", "0.5"], "no such option --thres; did you mean --thresh?"),
    (["--method", "blur", "--sigmaa", "3"], "no such option --sigmaa; did you mean --sigma?"),
    (["--yaml"], "no such option --yaml; see `anoncli anonymize --help`"),
    (["--method", "pixelate", "--sigma", "3"], "method 'pixelate' has no flag --sigma"),
])
def test_unknown_options_are_named_as_such(photos, tmp_path, args, message):
    r = run_cli("anonymize", photos, "-o", tmp_path / "out", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_method_flags_are_only_what_the_method_declares():
    blur, general = get_method_spec("blur"), ["--method", "--output", "--thresh", "--help"]
    assert method_flag_values(["--kind=downsample", "--cells", "3", "--sigma", "-1"], blur, general) == \
        {"kind": "downsample", "cells": "3", "sigma": "-1"}
    flowrot = get_method_spec("flowrot")
    assert method_flag_values(["--no-output-latent"], flowrot, general) == {"output_latent": "false"}
    assert method_flag_values(["--output-latent"], flowrot, general) == {"output_latent": "true"}
    with pytest.raises(UnknownOption, match="no such option --no-sigma; did you mean --sigma"):
        method_flag_values(["--no-sigma"], blur, general)   # --no- only negates a declared on/off flag
    with pytest.raises(UnknownOption, match=r"no such option --outptu; did you mean --output\?"):
        method_flag_values(["--outptu", "x"], blur, general, available_methods())
    with pytest.raises(UnknownOption, match="no such option -x"):
        method_flag_values(["-x"], blur, general)
    with pytest.raises(ValueError, match=r"has no flag --k; .*\(--k belongs to ksame-eigen, .*ksame-pixel"):
        method_flag_values(["--k", "2"], blur, general, available_methods())
    with pytest.raises(ValueError, match="unexpected argument 'stray'"):
        method_flag_values(["stray"], blur, general)


def test_error_messages_keep_brackets(tmp_path):
    """Rich markup must not swallow text in brackets (hints like anoncli[eval], such file names)."""
    missing = tmp_path / "photos[eval]"
    r = run_cli("anonymize", missing)
    assert r.returncode == 2 and "photos[eval]" in " ".join(r.stderr.split()), r.stderr


def test_help_keeps_install_extras_in_brackets():
    """`--help` goes through rich markup too: `pip install 'anoncli[ray]'` must not print as 'anoncli'."""
    r = run_cli("anonymize", "--help", columns=400)
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "pip install 'anoncli[ray]'" in text, text
    assert "pip install 'anoncli'" not in text


def test_anonymize_and_restore_json_summaries_for_scripts(tmp_path):
    """`--json` on anonymize and restore: one JSON object on stdout, the same counts as the text,
    the output files, keyfile sizes, and no key material."""
    env = {**os.environ, "ANONCLI_PASSPHRASE": "a passphrase for json"}
    examples = Path(__file__).resolve().parents[1] / "examples" / "images"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True, env=env,
                              timeout=300, stdin=subprocess.DEVNULL)

    r = run("anonymize", examples, "-o", tmp_path / "anon", "--method", "blur", "--keyfile", tmp_path / "run.key", "--escrow",
            "--kdf-memory", "1", "--kdf-iterations", "1", "--kdf-lanes", "1", "-j", "1", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["images"] == 6 and summary["counts"]["ok"] == 6 and summary["faces"] == 8 and summary["exit_code"] == 0
    assert Path(summary["manifest"]).is_file() and Path(summary["manifest_parquet"]).is_file()
    assert summary["keyfile"]["records"] == 6 and summary["keyfile"]["escrow"] is True
    assert "passphrase" not in r.stdout and "secret" not in r.stdout
    import pandas as pd

    table, csv_table = pd.read_parquet(summary["manifest_parquet"]), pd.read_csv(summary["manifest"], keep_default_na=False)
    assert list(table.columns) == list(csv_table.columns)
    assert list(table["input"]) == list(csv_table["input"]) and list(table["faces"]) == list(csv_table["faces"])
    r = run("restore", tmp_path / "anon", "--keyfile", tmp_path / "run.key", "-o", tmp_path / "back", "--json")
    assert r.returncode == 0, r.stderr
    restored = json.loads(r.stdout)
    assert restored["counts"]["restored"] == 6 and restored["source"] == "escrow" and restored["problems"] == []
