"""What the speed benchmarks share: the images they time, and the record of where they ran."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def first_images(data_dir: Path, limit: int) -> list[Path]:
    images = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        sys.exit(f"no images in {data_dir}")
    return images[:limit]


def link_images(images: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for image in images:
        (folder / image.name).symlink_to(image.resolve())
    return folder


def warm_page_cache(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def write_json(prefix: str, rows: list[dict], context: dict) -> Path:
    """``results/PREFIX-DATE.json`` with the run's context and its rows."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{prefix}-{datetime.now():%Y-%m-%d}.json"
    path.write_text(json.dumps({**context, "results": rows}, indent=2) + "\n")
    return path


def anoncli_source() -> str:
    """The commit anoncli runs from, and whether its package folder has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + (" + uncommitted changes in anoncli/" if git("status", "--porcelain", "anoncli") else "")


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine_record(command: str, load_before: float) -> dict:
    """Where and how a benchmark ran: its command, the machine, the load, the anoncli source."""
    return {
        "command": command,
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {platform.platform()}",
        "load average (1 min), before / after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
        "anoncli source": anoncli_source(),
    }
