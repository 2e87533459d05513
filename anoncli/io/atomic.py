"""Durable, atomic file writes: temp file in the same folder, fsync, rename, fsync the folder."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".anoncli-tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(name: str) -> str:
    """A hidden sibling name for ``name``; the name is shortened so that a file whose own name
    is near the 255-byte limit can still be written."""
    return f".{name[:40]}{TEMP_MARK}{secrets.token_hex(4)}"


class _FdWriter:
    """Unbuffered writes straight to a descriptor, so that a full disk surfaces at the write."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)


@contextmanager
def atomic_writer(path: Path, mode: int = 0o644):
    """A writer whose bytes replace ``path`` only if the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            yield _FdWriter(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file, or all of the new one."""
    with atomic_writer(path, mode) as f:
        f.write(data)


def remove_stale_temps(root: Path) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    n = 0
    if not root.exists():
        return 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            if TEMP_MARK in name:
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n
