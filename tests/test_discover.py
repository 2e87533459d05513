"""Discovery of input files (order, extensions, links, odd entries) and the overlap check."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from anoncli.io.atomic import TEMP_MARK
from anoncli.io.discover import NOT_UTF8, discover, paths_overlap

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def rels(found) -> list[str]:
    return [item.rel for item in found.items]


def problems(found) -> dict[str, str]:
    return {item.rel: item.problem for item in found.items if item.problem}


def test_recursive_and_sorted(tmp_path):
    names = ["z.jpg", "b/c/d.png", "a.jpg", "b/a.png", "b.jpg", "a/z.jpg", "a/a.jpg", "b/c/a.webp", "a0.jpg"]
    touch(tmp_path, *reversed(names))
    found = discover(tmp_path)
    assert rels(found) == sorted(names)
    assert found.skipped_dirs == []
    assert all(item.problem is None for item in found.items)
    assert all(item.path == tmp_path / item.rel for item in found.items)


def test_extensions_are_case_insensitive(tmp_path):
    images = ["a.JPG", "b.Jpeg", "c.PNG", "d.WebP", "e.TIFF", "f.tif", "g.BMP", "h.jpeg"]
    others = ["i.gif", "j.txt", "k.jpg.bak", "l.JPG~", "jpg", "m.heic", ".n.csv"]
    touch(tmp_path, *images, *others)
    found = discover(tmp_path)
    assert sorted(i.rel for i in found.items if i.problem is None) == sorted(images)
    # formats not read (and videos) are items with the reason, so that they get a manifest row (issue 21)
    assert {i.rel: i.problem.split(":")[0] for i in found.items if i.problem} == {"i.gif": "GIF image", "m.heic": "HEIC image"}


def test_state_folder_and_temp_files_are_ignored(tmp_path):
    touch(tmp_path, "a.jpg", ".anoncli/journal.jpg", f".b.jpg{TEMP_MARK}1234abcd", f"sub/.c.png{TEMP_MARK}ffff0000")
    assert rels(discover(tmp_path)) == ["a.jpg"]


def test_hidden_files_and_folders_are_included(tmp_path):
    touch(tmp_path, ".hidden.jpg", ".dir/a.png")
    assert rels(discover(tmp_path)) == [".dir/a.png", ".hidden.jpg"]


def test_file_symlink_loop_and_broken_link_become_problems(tmp_path):
    touch(tmp_path, "good.jpg")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.symlink("a.jpg", tmp_path / "b.jpg")
    os.symlink("b.jpg", tmp_path / "a.jpg")
    os.symlink("missing.png", tmp_path / "broken.png")
    found = discover(tmp_path)
    assert rels(found) == ["a.jpg", "b.jpg", "broken.png", "good.jpg", "loop.jpg"]
    assert problems(found) == {"a.jpg": "symlink loop", "b.jpg": "symlink loop",
                               "broken.png": "broken symlink", "loop.jpg": "symlink loop"}


def test_symlink_to_a_file_is_processed(tmp_path):
    touch(tmp_path, "real.jpg")
    os.symlink("real.jpg", tmp_path / "alias.jpg")
    found = discover(tmp_path)
    assert rels(found) == ["alias.jpg", "real.jpg"] and problems(found) == {}


def test_directory_loop_is_skipped_and_reported(tmp_path):
    touch(tmp_path, "top.jpg", "sub/inner.jpg")
    os.symlink("..", tmp_path / "sub" / "back")
    os.symlink(".", tmp_path / "self")
    found = discover(tmp_path)
    assert rels(found) == ["sub/inner.jpg", "top.jpg"]
    assert sorted(d.split(":")[0] for d in found.skipped_dirs) == ["self", "sub/back"]
    assert all("symlink loop" in d for d in found.skipped_dirs)


def test_mutual_directory_links_terminate(tmp_path):
    touch(tmp_path, "a/x.jpg", "b/y.jpg")
    os.symlink("../b", tmp_path / "a" / "to_b")
    os.symlink("../a", tmp_path / "b" / "to_a")
    found = discover(tmp_path)
    assert rels(found) == ["a/x.jpg", "b/y.jpg"]  # each real folder once
    assert len(found.skipped_dirs) == 2


def test_linked_folder_outside_the_input_is_followed_once(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "elsewhere"
    touch(outside, "p.jpg")
    touch(root, "a.jpg")
    os.symlink(outside, root / "link1")
    os.symlink(outside, root / "link2")
    found = discover(root)
    assert rels(found) == ["a.jpg", "link1/p.jpg"]
    assert [d.split(":")[0] for d in found.skipped_dirs] == ["link2"]


def test_folder_named_like_an_image_is_not_a_file(tmp_path):
    touch(tmp_path, "album.jpg/a.png")
    assert rels(discover(tmp_path)) == ["album.jpg/a.png"]


def test_fifo_is_not_opened(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    os.mkfifo(tmp_path / "pipe.jpg")
    found = discover(tmp_path)  # must not block
    assert problems(found) == {"pipe.jpg": "not a regular file"}


def test_name_that_is_not_utf8_becomes_a_problem_with_a_printable_name(tmp_path):
    try:
        (tmp_path / os.fsdecode(b"bad\xffname.jpg")).write_bytes(b"x")
    except (OSError, UnicodeEncodeError):
        pytest.skip("the file system refuses names that are not UTF-8")
    touch(tmp_path, "good.jpg")
    found = discover(tmp_path)
    assert rels(found) == ["bad\\xffname.jpg", "good.jpg"]
    assert problems(found) == {"bad\\xffname.jpg": NOT_UTF8}
    for item in found.items:
        item.rel.encode("utf-8")  # the manifest can be written
        assert item.path.exists()


def test_unreadable_folder_is_reported(tmp_path):
    if IS_ROOT:
        pytest.skip("running as root: every folder is readable")
    touch(tmp_path, "a.jpg", "locked/b.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        found = discover(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert rels(found) == ["a.jpg"]
    assert any(d.startswith("locked:") and "Permission denied" in d for d in found.skipped_dirs)


def test_empty_folder(tmp_path):
    found = discover(tmp_path)
    assert found.items == [] and found.skipped_dirs == []


# -- paths_overlap -------------------------------------------------------------------------------------

def test_overlap_same_child_parent(tmp_path):
    (tmp_path / "in" / "deep").mkdir(parents=True)
    src = tmp_path / "in"
    assert paths_overlap(src, src)
    assert paths_overlap(src, src / "out")            # output inside input (need not exist yet)
    assert paths_overlap(src / "deep" / "x", src)
    assert paths_overlap(src, tmp_path)               # input inside output
    assert paths_overlap(Path(str(src) + "/"), src)


def test_no_overlap_for_siblings_sharing_a_prefix(tmp_path):
    (tmp_path / "in").mkdir()
    assert not paths_overlap(tmp_path / "in", tmp_path / "in-anon")
    assert not paths_overlap(tmp_path / "in", tmp_path / "in2" / "x")
    assert not paths_overlap(tmp_path / "a" / "in", tmp_path / "b" / "in")


def test_overlap_through_links_and_relative_paths(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    os.symlink(src, tmp_path / "alias")
    assert paths_overlap(tmp_path / "alias", src / "out")
    assert paths_overlap(src, tmp_path / "alias" / "out")
    monkeypatch.chdir(tmp_path)
    assert paths_overlap(Path("in"), src / "out")
    assert paths_overlap(Path("in/../in"), Path("alias/sub"))
    assert not paths_overlap(Path("in"), Path("out"))
