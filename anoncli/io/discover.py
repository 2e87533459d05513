"""Recursive discovery of image files; problems become items with a reason, never exceptions."""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .atomic import TEMP_MARK

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts")
OTHER_MEDIA_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".cr2", ".nef", ".arw", ".dng", ".raw")
NOT_PROCESSED_VIDEO = ("video: not processed (anoncli anonymizes still images; extract the frames first, e.g. "
                       "ffmpeg -i VIDEO frames/%06d.png, and anonymize that folder)")
NOT_PROCESSED_MEDIA = ("{ext} image: not processed (formats read: " + ", ".join(e[1:] for e in IMAGE_EXTENSIONS)
                       + "; convert it, e.g. to PNG)")
STATE_DIR = ".anoncli"
NOT_UTF8 = "file or folder name is not valid UTF-8; rename it to process the file"


@dataclass
class Item:
    rel: str          # posix path relative to the input root
    path: Path
    problem: str | None = None


@dataclass
class Discovery:
    items: list[Item]
    skipped_dirs: list[str]


def discover(root: Path) -> Discovery:
    """Every image file under ``root`` (extensions case-insensitive), sorted by relative path;
    videos and images of formats not read are items too, with the reason as their problem.

    Symlinked folders are followed once; a folder reached again through a link (a loop)
    is skipped and reported in ``skipped_dirs``.
    """
    root = Path(root)
    items: list[Item] = []
    skipped: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    st = os.stat(root)
    seen_dirs.add((st.st_dev, st.st_ino))

    def on_error(err: OSError) -> None:
        rel = os.path.relpath(err.filename, root) if err.filename else "?"
        skipped.append(f"{printable(Path(rel).as_posix())}: {err.strerror or err}")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=on_error):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d == STATE_DIR:
                continue
            try:
                s = os.stat(full)
            except OSError as e:
                on_error(OSError(e.errno, e.strerror, full))
                continue
            key = (s.st_dev, s.st_ino)
            if key in seen_dirs:
                rel = printable(Path(os.path.relpath(full, root)).as_posix())
                skipped.append(f"{rel}: symlink loop or folder already visited")
                continue
            seen_dirs.add(key)
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            lower = name.lower()
            not_processed = _not_processed(lower)
            if TEMP_MARK in name or not (lower.endswith(IMAGE_EXTENSIONS) or not_processed):
                continue
            full = Path(dirpath) / name
            raw_rel = full.relative_to(root).as_posix()
            rel = printable(raw_rel)
            problem = NOT_UTF8 if rel != raw_rel else (not_processed or _file_problem(full))
            items.append(Item(rel, full, problem))
    items.sort(key=lambda it: it.rel)
    return Discovery(items, skipped)


def _not_processed(lower_name: str) -> str | None:
    """Why a media file the tool does not read gets a manifest row instead of an output (issue 21:
    a video must not vanish from the dataset unnoticed), or None."""
    if lower_name.endswith(VIDEO_EXTENSIONS):
        return NOT_PROCESSED_VIDEO
    if lower_name.endswith(OTHER_MEDIA_EXTENSIONS):
        return NOT_PROCESSED_MEDIA.format(ext=os.path.splitext(lower_name)[1][1:].upper())
    return None


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "not a regular file"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return "broken symlink"
        return f"cannot stat: {e.strerror}"
    return None


def printable(name: str) -> str:
    """``name`` with bytes that are not UTF-8 (held as surrogates) written as \\xNN escapes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def paths_overlap(a: Path, b: Path) -> bool:
    """True if one folder is the other or inside it (after resolving links)."""
    ra, rb = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return ra == rb or ra in rb.parents or rb in ra.parents
