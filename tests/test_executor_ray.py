"""`--executor ray` against a local Ray cluster started here (`ray start --head`): the same
manifest and bytes as the local executor, the dataset-level passes, a keyfile that restores, a
SIGKILLed run that resumes, and one-line refusals."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import EXAMPLES, FAST_KDF, cli, kill_halfway, real_faces

pytest.importorskip("ray.data", reason="the Ray executor's tests need Ray Data: pip install 'anoncli[ray]'")

# Token authentication, as Ray sets up by default, with this module's own token: the machine may have no
# ~/.ray/auth_token, and the tests must not write one into the user's home.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
VOLATILE = ["timings"]   # seconds measured per image: the one column that differs between two runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-CPU Ray head on this machine; its address, for --ray-address."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, **RAY_ENV}
    started = subprocess.run([ray_cli, "start", "--head", "--num-cpus", "2", "--port", str(port), "--include-dashboard=false",
                              "--object-store-memory", str(256 * 1024 ** 2), "--temp-dir", str(temp), "--disable-usage-stats"],
                             capture_output=True, text=True, env=env, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    yield f"127.0.0.1:{port}"
    _stop_processes_mentioning(str(temp))   # `ray stop` would stop every Ray cluster of this user


def _stop_processes_mentioning(text: str) -> None:
    """SIGTERM, then SIGKILL, the processes whose command line names ``text`` (this cluster's
    own temp folder: its GCS and raylet) and their descendants (agents and workers, which rename
    themselves)."""
    import signal
    import time

    def matching() -> list[int]:
        named, parent = set(), {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    named.add(int(entry.name))
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
        found, grew = set(named), True
        while grew:
            children = {pid for pid, ppid in parent.items() if ppid in found} - found
            found |= children
            grew = bool(children)
        return sorted(found)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in matching():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + 10
        while matching() and time.time() < deadline:
            time.sleep(0.2)


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", keep_default_na=False).drop(columns=VOLATILE)


def _same_outputs(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(_manifest(a), _manifest(b))
    for row in _manifest(a).itertuples():
        if row.output:
            assert (a / row.output).read_bytes() == (b / row.output).read_bytes(), row.output


@pytest.mark.parametrize("method_args", [["--method", "blur"], ["--method", "ksame-pixel", "--k", "2"]],
                         ids=["blur", "ksame-pixel (two passes)"])
def test_ray_gives_the_local_executors_manifest_and_bytes(cluster, tmp_path, method_args):
    local = cli("anonymize", EXAMPLES, "-o", tmp_path / "local", *method_args, "-q", "-j", "2", "--batch-size", "2")
    assert local.returncode == 0, local.stderr
    ray = cli("anonymize", EXAMPLES, "-o", tmp_path / "ray", *method_args, "-q", "-j", "2", "--batch-size", "2",
              "--executor", "ray", "--ray-address", cluster, env_extra=RAY_ENV)
    assert ray.returncode == 0, ray.stdout + ray.stderr
    assert ray.stderr == local.stderr, "Ray's own logging reaches the user's terminal"
    _same_outputs(tmp_path / "local", tmp_path / "ray")


def test_ray_run_with_a_keyfile_restores(cluster, tmp_path):
    out, key = tmp_path / "anon", tmp_path / "run.key"
    r = cli("anonymize", EXAMPLES, "-o", out, "--method", "flowrot", "--output-latent", "--keyfile", key, *FAST_KDF,
            "-q", "-j", "2", "--executor", "ray", "--ray-address", cluster, env_extra=RAY_ENV)
    if r.returncode == 3:
        pytest.skip(f"flowrot's weights are missing here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr
    back = cli("restore", out, "--keyfile", key, "-o", tmp_path / "back", "-q", "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    summary = json.loads(back.stdout)
    ok = int((_manifest(out)["status"] == "ok").sum())
    assert summary["counts"]["restored"] == ok > 0


def test_sigkilled_ray_run_resumes_without_gaps_or_duplicates(cluster, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for f in real_faces(24):
        shutil.copy(f, src / f.name)
    args = ["anonymize", src, "-q", "-j", "2", "--batch-size", "2", "--executor", "ray", "--ray-address", cluster]
    killed_at = kill_halfway([sys.executable, "-m", "anoncli", *map(str, args), "-o", str(tmp_path / "ray")],
                             tmp_path / "ray" / ".anoncli" / "journal.jsonl", 24, env={**os.environ, **RAY_ENV})
    assert 0 < killed_at < 24
    resumed = cli(*args, "-o", tmp_path / "ray", env_extra=RAY_ENV)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    local = cli("anonymize", src, "-o", tmp_path / "local", "-q", "-j", "2")
    assert local.returncode == 0
    _same_outputs(tmp_path / "local", tmp_path / "ray")
    assert not [p for p in (tmp_path / "ray").rglob("*") if ".tmp" in p.name or "anoncli-tmp" in p.name]


def test_unreachable_cluster_is_one_line_and_resumable(tmp_path):
    r = cli("anonymize", EXAMPLES, "-o", tmp_path / "out", "-q", "--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}",
            timeout=120)
    assert r.returncode == 1
    assert "cannot reach the Ray cluster" in r.stdout and "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("args, says", [
    (["--executor", "spark"], "unknown --executor"),
    (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--escrow", "--keyfile", "KEY"], "--escrow is not available with --executor ray"),
])
def test_refusals_before_any_work(tmp_path, args, says):
    args = [str(tmp_path / "k.key") if a == "KEY" else a for a in args]
    r = cli("anonymize", EXAMPLES, "-o", tmp_path / "out", "-q", *args)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
