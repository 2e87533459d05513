"""Restores in progress, recorded in the anonymized folder they read (issue 21).

A restore writes the originals into a hidden staging folder beside its ``-o`` and renames it when
done; a restore killed with SIGKILL cannot remove it. So each restore also records its staging
folder in ``ANON_DIR/.anoncli/restoring/<id>.json`` and holds an OS lock on that record while it
runs. The next restore or anonymize that touches the same anonymized folder, whatever its ``-o``,
finds the records whose lock is free (their restore has ended without removing them), deletes
their staging folders and says so. Where the anonymized folder is read-only nothing is recorded
and only a staging folder of the same ``-o`` is found (by its name)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from .atomic import TEMP_MARK
from .discover import STATE_DIR

RECORDS = "restoring"
STAGING_MARK = f"{TEMP_MARK}restore-"   # in every staging folder's name (restore.run_restore)


@dataclass
class StagingRecord:
    """This restore's record, locked until ``close``."""

    path: Path
    fd: int

    def close(self) -> None:
        """The restore ended (its staging folder renamed or removed): forget it."""
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)


def record_staging(anon_dir: Path, staging: Path) -> StagingRecord | None:
    """Record ``staging`` as this process's restore of ``anon_dir``; None where the folder is read-only."""
    folder = anon_dir / STATE_DIR / RECORDS
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.json"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, json.dumps({"staging": str(staging), "pid": os.getpid()}).encode(), 0)
    os.fsync(fd)
    return StagingRecord(path, fd)


def remove_abandoned(anon_dir: Path) -> list[Path]:
    """Delete the staging folders of restores of ``anon_dir`` that ended without removing them
    (killed); returns the folders removed."""
    folder = anon_dir / STATE_DIR / RECORDS
    removed = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue   # its restore is still running
            try:
                staging = Path(json.loads(os.pread(fd, 65536, 0).decode())["staging"])
            except (OSError, ValueError, KeyError):
                staging = None
            if staging is not None and STAGING_MARK in staging.name and staging.exists():   # never anything else
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(staging)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return removed


def staging_folder(output: Path) -> Path:
    """This process's staging folder for a restore into ``output`` (hidden, beside it)."""
    return output.with_name(f"{staging_prefix(output)}{os.getpid()}")


def staging_prefix(output: Path) -> str:
    return f".{output.name[:40]}{STAGING_MARK}"


def remove_dead_same_output(output: Path) -> list[Path]:
    """Staging folders of earlier restores into the same ``output`` whose process is gone (the
    fallback where the anonymized folder was read-only and nothing was recorded); a running
    restore's folder (its pid alive) is left alone."""
    removed = []
    prefix = staging_prefix(output)
    for stale in output.parent.glob(prefix + "*") if output.parent.is_dir() else ():
        pid = stale.name[len(prefix):]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
