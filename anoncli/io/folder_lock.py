"""One run at a time per output folder (issue 21): an OS file lock on ``FOLDER/.anoncli/lock``.

The lock is ``flock`` on an open file, so the kernel drops it when its process ends, however it
ends (SIGKILL, power loss of a local disk): a lock left by a killed run is simply taken. The file
itself only says who holds it (pid, command, start time) for the message the second run prints;
its content is never trusted to decide anything."""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "lock"


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock."""


@dataclass
class FolderLock:
    """Held from ``acquire`` to ``release`` (or the end of the ``with`` block, or of the process)."""

    state_dir: Path
    _fd: int | None = None

    @property
    def path(self) -> Path:
        return self.state_dir / LOCK_NAME

    def acquire(self, purpose: str) -> "FolderLock":
        """Take the lock or raise ``FolderBusy`` naming its holder; ``purpose``: what this
        process does there (shown to a second process)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise FolderBusy(f"{self.state_dir.parent} is in use by another anoncli process ({holder}); "
                             "wait for it to finish, or choose another output folder with -o") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "purpose": purpose, "command": " ".join(sys.argv[:3]),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(fd: int) -> str:
    """The holder as its lock file tells it (best effort: it may be mid-write)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "it is starting"
    return f"{info.get('purpose', 'a run')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"
