"""Issue 21 in part: one run per output folder (an OS lock), restores that leave no original
behind when stopped (SIGTERM, SIGHUP) or killed (the next command removes what they left), and
restored originals readable by their owner only."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anoncli.io.folder_lock import FolderBusy, FolderLock
from anoncli.io.partial_restores import RECORDS, STAGING_MARK, record_staging, remove_abandoned

from conftest import EXAMPLES, FAST_KDF, PASSPHRASE, cli, real_faces


@pytest.fixture(scope="module")
def escrow_run(tmp_path_factory):
    """The example images blurred with a keyfile and escrow (restore is exact and fast)."""
    tmp = tmp_path_factory.mktemp("safety")
    r = cli("anonymize", EXAMPLES, "-o", tmp / "anon", "--method", "blur", "--keyfile", tmp / "run.key", "--escrow",
            *FAST_KDF, "-q", "-j", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp


def test_a_second_run_into_a_locked_output_folder_exits_2_naming_the_first(tmp_path):
    out = tmp_path / "out"
    with FolderLock(out / ".anoncli").acquire("anoncli anonymize (the first run)"):
        r = cli("anonymize", EXAMPLES, "-o", out, "--method", "blur", "-q", "-j", "1")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "in use by another anoncli process" in r.stderr and f"pid {os.getpid()}" in r.stderr
        assert "Traceback" not in r.stderr
        assert not (out / "manifest.csv").exists() and not list(out.glob("*.jpg"))
    # the first run ended (its lock released): the same command now works
    r = cli("anonymize", EXAMPLES, "-o", out, "--method", "blur", "-q", "-j", "1")
    assert r.returncode == 0, r.stderr
    assert (out / "manifest.csv").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    state = tmp_path / "out" / ".anoncli"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from anoncli.io.folder_lock import FolderLock; "
                               f"FolderLock(Path({str(state)!r})).acquire('holder'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match="holder"):
            FolderLock(state).acquire("second")
    finally:
        holder.kill()   # SIGKILL: no cleanup runs, the lock file stays
        holder.wait()
    assert (state / "lock").exists()
    FolderLock(state).acquire("third").release()


def test_sigterm_during_restore_leaves_nothing_restored_anywhere(escrow_run, monkeypatch):
    """SIGTERM (as `timeout`, systemd or Slurm send it) mid-restore: the staging folder holding the
    originals restored so far is removed, and so is its record."""
    import anoncli.restore as restore
    from anoncli.keys.protect import Passphrase

    calls = []
    real = restore._restore_one

    def stop_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(restore, "_restore_one", stop_on_second)
    out = escrow_run / "stopped"
    with pytest.raises(KeyboardInterrupt):
        restore.run_restore(escrow_run / "anon", escrow_run / "run.key", Passphrase(PASSPHRASE.encode()), out, progress=False)
    assert len(calls) == 2
    assert not out.exists() and not [p for p in escrow_run.iterdir() if STAGING_MARK in p.name]
    assert not list((escrow_run / "anon" / ".anoncli" / RECORDS).glob("*.json"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the previous handler is back"


def test_sigterm_to_the_restore_command_exits_non_zero_in_one_line(escrow_run, tmp_path):
    """The real CLI under SIGTERM: no traceback, exit 130, no output or staging folder left."""
    out = tmp_path / "restored"
    code = ("import os, signal, sys; import anoncli.restore as r; real = r._restore_one; n = []\n"
            "def slow(*a, **k):\n"
            "    n.append(1)\n"
            "    if len(n) == 2: os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return real(*a, **k)\n"
            "r._restore_one = slow\n"
            "from anoncli.cli import main; sys.argv = ['anoncli'] + sys.argv[1:]; main()")
    env = {**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}
    p = subprocess.run([sys.executable, "-c", code, "restore", str(escrow_run / "anon"), "--keyfile", str(escrow_run / "run.key"),
                        "-o", str(out), "-q", "-j", "1"], capture_output=True, text=True, env=env, timeout=300,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 130, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and "nothing restored was kept" in (p.stdout + p.stderr)
    assert not out.exists() and not [q for q in tmp_path.iterdir() if STAGING_MARK in q.name]


def test_sigterm_to_a_restore_on_the_pool_leaves_nothing_restored(tmp_path):
    """The same with two worker processes restoring: the parent stops them before it removes their folder."""
    anon, key = tmp_path / "anon", tmp_path / "run.key"
    src = tmp_path / "in"
    src.mkdir()
    for f in real_faces(40):
        (src / f.name).write_bytes(f.read_bytes())
    r = cli("anonymize", src, "-o", anon, "--method", "blur", "--keyfile", key, "--escrow", *FAST_KDF, "-q")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "restored"
    env = {**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}
    proc = subprocess.Popen([sys.executable, "-m", "anoncli", "restore", str(anon), "--keyfile", str(key), "-o", str(out),
                             "-q", "-j", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.is_file() for q in tmp_path.iterdir() if STAGING_MARK in q.name
                                             for p in q.rglob("*.jpg")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    time.sleep(1)   # a worker that outlived the stop would write here now
    assert not out.exists() and not [q for q in tmp_path.iterdir() if STAGING_MARK in q.name]


def test_a_killed_restores_leftovers_are_removed_by_the_next_restore_whatever_its_output(escrow_run, tmp_path):
    from anoncli.keys.protect import Passphrase
    from anoncli.restore import run_restore

    anon = escrow_run / "anon"
    # a restore killed with SIGKILL: its staging folder (originals inside) and its record stay,
    # and its lock is gone with its process
    staging = tmp_path / f".elsewhere{STAGING_MARK}4242"
    staging.mkdir(mode=0o700)
    (staging / "astronaut.jpg").write_bytes(b"an original")
    killed = record_staging(anon, staging)
    os.close(killed.fd)   # the process died: the lock is released, nothing removed
    assert killed.path.exists()
    not_ours = tmp_path / "not-a-staging-folder"   # a record never makes it remove anything else
    not_ours.mkdir()
    forged = record_staging(anon, not_ours)
    os.close(forged.fd)

    summary = run_restore(anon, escrow_run / "run.key", Passphrase(PASSPHRASE.encode()), tmp_path / "other-output",
                          progress=False)
    assert summary.removed_partial == [staging]
    assert not staging.exists() and not killed.path.exists()
    assert not_ours.exists()
    assert summary.counts["restored"] > 0


def test_anonymize_into_the_folder_removes_a_killed_restores_leftovers(tmp_path):
    out = tmp_path / "out"
    assert cli("anonymize", EXAMPLES, "-o", out, "--method", "blur", "-q", "-j", "1").returncode == 0
    staging = tmp_path / f".x{STAGING_MARK}1"
    staging.mkdir()
    os.close(record_staging(out, staging).fd)
    r = cli("anonymize", EXAMPLES, "-o", out, "--method", "blur", "-j", "1", "-q")
    assert r.returncode == 0, r.stderr
    assert "partial output of a restore" in r.stdout + r.stderr and not staging.exists()
    assert remove_abandoned(out) == []


def test_restored_originals_are_readable_by_their_owner_only(escrow_run):
    from anoncli.keys.protect import Passphrase
    from anoncli.restore import run_restore

    out = escrow_run / "restored-perms"
    run_restore(escrow_run / "anon", escrow_run / "run.key", Passphrase(PASSPHRASE.encode()), out, progress=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    images = [p for p in out.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".webp")]
    assert images and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in images)


def test_videos_and_unread_media_get_a_manifest_row_and_are_counted(tmp_path):
    import shutil

    import pandas as pd

    only_video = tmp_path / "only-video"
    only_video.mkdir()
    (only_video / "clip.MP4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    r = cli("anonymize", only_video, "-o", tmp_path / "out1", "--method", "blur", "-q", "-j", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed" in r.stdout and "Traceback" not in r.stderr
    rows = pd.read_csv(tmp_path / "out1" / "manifest.csv", keep_default_na=False)
    assert list(rows["input"]) == ["clip.MP4"] and rows["reason"][0].startswith("video: not processed")

    mixed = tmp_path / "mixed"
    shutil.copytree(EXAMPLES, mixed)
    (mixed / "group" / "party.mov").write_bytes(b"not read")
    (mixed / "anim.gif").write_bytes(b"GIF89a")
    r = cli("anonymize", mixed, "-o", tmp_path / "out2", "--method", "blur", "-q", "-j", "1")
    assert r.returncode == 1
    rows = pd.read_csv(tmp_path / "out2" / "manifest.csv", keep_default_na=False).set_index("input")
    assert rows.loc["group/party.mov", "reason"].startswith("video: not processed")
    assert rows.loc["anim.gif", "reason"].startswith("GIF image: not processed")
    assert (rows["status"] == "ok").sum() == 6 and "2 failed" in r.stdout
    assert not (tmp_path / "out2" / "group" / "party.mov").exists()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("size", ["20k", "150k", "600k", "1200k"])
def test_a_full_disk_at_any_write_stops_in_one_message_and_resumes(tmp_path, size):
    """A real full disk (a tmpfs of a few sizes, so that the images, the journal, the manifest or
    the keyfile is the write that fails): exit 1, no traceback, a `stopped:` line; the same
    command on a disk with room completes, and the keyfile restores every image."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, size):
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk injection of test_bad_inputs still runs")
    try:
        args = ("anonymize", EXAMPLES, "-o", disk / "out", "--method", "blur", "--keyfile", disk / "run.key", "--escrow",
                *FAST_KDF, "-q", "-j", "1")
        r = cli(*args)
        assert r.returncode in (1, 2), r.stdout + r.stderr
        assert "Traceback" not in r.stderr and "no space left on device" in (r.stdout + r.stderr).lower()
        assert subprocess.run(["mount", "-o", "remount,size=20m", str(disk)]).returncode == 0
        r = cli(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        r = cli("restore", disk / "out", "--keyfile", disk / "run.key", "-o", disk / "back", "-q")
        assert r.returncode == 0 and "6 restored" in r.stdout, r.stdout + r.stderr
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
@pytest.mark.parametrize("stop, workers, extra", [(signal.SIGTERM, 2, []), (signal.SIGINT, 1, ["--refine-steps", "30"])],
                         ids=["sigterm-pool-default-settings", "sigint-in-process"])
def test_a_slow_method_stops_within_seconds_keeping_every_finished_image(tmp_path, stop, workers, extra):
    """idrotate one face at a time (about 15 s a face on 2 cores; with its default --faces-together 8 the
    example images would all finish together, in one batch): stopped once a first image is done,
    the run ends within 10 s, no worker is left, and every image written has its journal row and
    keyfile record (journalled per image, not per batch), so the partial run restores."""
    import json
    import time

    out = tmp_path / "out"
    env = {**os.environ, "ANONCLI_PASSPHRASE": PASSPHRASE}
    run = subprocess.Popen([sys.executable, "-m", "anoncli", "anonymize", str(EXAMPLES), "-o", str(out), "--method", "idrotate",
                            "--keyfile", str(tmp_path / "run.key"), "--faces-together", "1", *FAST_KDF, *extra, "-q", "-j", str(workers),
                            "--batch-size", "3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           # a shell without job control starts background commands (e.g. `.ci/run &`) with SIGINT
                           # ignored, and Python keeps an ignored SIGINT ignored: the run must get Ctrl-C as a terminal sends it
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal = out / ".anoncli" / "journal.jsonl"
    started = time.time()
    while not (journal.exists() and journal.read_text().count("\n") >= 1):
        if run.poll() is not None or time.time() - started > 400:
            run.kill()
            pytest.fail(f"no image finished: {run.communicate()[1][-2000:]}")
        time.sleep(0.3)
    workers_seen = _children(run.pid)
    sent = time.time()
    run.send_signal(stop)
    stdout, stderr = run.communicate(timeout=60)
    took = time.time() - sent   # the run's own summary line says when it stopped, the rest is the process's exit
    assert took < 10, f"stopped within 10 s, not {took:.1f} s: {stdout[-600:]} {stderr[-600:]}"
    assert run.returncode == 1 and "interrupted" in stdout and "Traceback" not in stderr, stdout + stderr
    def running(pid):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"   # a zombie has ended (and waits to be reaped by init)

    deadline = time.time() + 5
    while [pid for pid in workers_seen if running(pid)] and time.time() < deadline:
        time.sleep(0.2)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200] for pid in workers_seen if running(pid)}
    assert not left, f"no worker outlives the run: {left}"
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                     and ".anoncli" not in p.parts and p.name not in ("manifest.csv", "manifest.parquet", "run.json"))
    assert rows and sorted(r["input"] for r in rows if r["status"] == "ok") == written
    r = cli("restore", out, "--keyfile", tmp_path / "run.key", "-o", tmp_path / "back", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(written)} approximate" in r.stdout


def test_restore_on_the_process_pool_writes_what_the_in_process_restore_writes(escrow_run, tmp_path):
    outputs = {}
    for workers in ("1", "2"):
        back = tmp_path / f"back-{workers}"
        r = cli("restore", escrow_run / "anon", "--keyfile", escrow_run / "run.key", "-o", back, "-q", "-j", workers)
        assert r.returncode == 0, r.stdout + r.stderr
        outputs[workers] = {p.relative_to(back).as_posix(): p.read_bytes() for p in back.rglob("*")
                            if p.is_file() and p.name != "restore.json"}
    assert outputs["1"] == outputs["2"] and len(outputs["1"]) >= 6


def test_an_image_written_but_never_journalled_is_removed_and_redone_on_resume(tmp_path, monkeypatch):
    """A stop that lands after a worker renamed its output but before the record reached the
    journal (the pool's race, simulated here in-process) leaves no unjournalled image behind."""
    import anoncli.run as run_module
    from anoncli.config import RunConfig

    taken = []
    original = run_module.Recorder.__call__

    def stop_on_the_second(self, finished):
        if taken:
            raise KeyboardInterrupt   # the second image is on disk; its record never arrives
        taken.extend(finished)
        return original(self, finished)

    out = tmp_path / "out"
    config = RunConfig(method="blur")
    monkeypatch.setattr(run_module.Recorder, "__call__", stop_on_the_second)
    summary = run_module.run_anonymize(EXAMPLES, out, config, workers=1, batch_size=1, progress=False, log=lambda m: None)
    assert summary.stopped and "interrupted" in summary.stopped
    journalled = [json.loads(line)["input"] for line in (out / ".anoncli" / "journal.jsonl").read_text().splitlines()]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                     and ".anoncli" not in p.parts and p.name not in ("manifest.csv", "manifest.parquet", "run.json"))
    assert journalled == [taken[0].input] and written == journalled
    monkeypatch.setattr(run_module.Recorder, "__call__", original)
    summary = run_module.run_anonymize(EXAMPLES, out, config, workers=1, batch_size=1, progress=False, log=lambda m: None)
    assert summary.exit_code == 0 and summary.resumed == 1
    journalled = [json.loads(line)["input"] for line in (out / ".anoncli" / "journal.jsonl").read_text().splitlines()]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                     and ".anoncli" not in p.parts and p.name not in ("manifest.csv", "manifest.parquet", "run.json"))
    assert len(journalled) == len(set(journalled)) == summary.counts["ok"] > 2 and sorted(journalled) == written
