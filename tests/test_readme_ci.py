"""The README's two command lines (install + main job, install + tests) are what `.ci/run` runs,
and the extra the test line installs brings every package the tests import."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def first_fenced_block(markdown: str, heading: str) -> list[str]:
    """Lines of the first ``` block after the line ``heading``, before the next heading of its level."""
    lines = markdown.splitlines()
    assert heading in lines, f"README.md has no heading {heading!r}"
    level = heading.split(" ")[0] + " "
    block: list[str] | None = None
    for line in lines[lines.index(heading) + 1:]:
        if block is None and line.startswith(level):
            break
        if line.startswith("```"):
            if block is not None:
                return block
            block = []
        elif block is not None:
            block.append(line)
    raise AssertionError(f"no fenced block under {heading!r} in README.md")


def readme_line(heading: str) -> str:
    block = [line for line in first_fenced_block((REPO / "README.md").read_text(), heading) if line.strip()]
    assert len(block) == 1, f"the block under {heading!r} must be one command line to copy, got {block}"
    return block[0].strip()


INSTALL_LINE = readme_line("## Install")
TEST_LINE = readme_line("## Tests")


def ci_commands() -> list[str]:
    """The command lines of .ci/run, comments and blank lines left out."""
    text = (REPO / ".ci" / "run").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_lines_install_first_then_run():
    install, run = (part.strip() for part in INSTALL_LINE.split("&&"))
    assert shlex.split(install)[:3] == ["pip", "install", "-e"] and shlex.split(install)[3] == "."
    assert shlex.split(run)[:2] == ["anoncli", "anonymize"] and (REPO / shlex.split(run)[2]).is_dir()
    install, run = (part.strip() for part in TEST_LINE.split("&&"))
    assert shlex.split(install)[:3] == ["pip", "install", "-e"] and re.fullmatch(r"\.\[\w+\]", shlex.split(install)[3])
    assert shlex.split(run)[:3] == ["python", "-m", "pytest"]


def test_ci_runs_exactly_the_readme_lines():
    commands = ci_commands()
    assert commands.count(INSTALL_LINE) == 1, f".ci/run does not run the README's line {INSTALL_LINE!r}"
    assert commands.count(TEST_LINE) == 1, f".ci/run does not run the README's line {TEST_LINE!r}"
    assert commands.index(INSTALL_LINE) < commands.index(TEST_LINE)
    assert commands[-1] == TEST_LINE, "the tests are CI's last command: its output ends with pytest's summary"
    # Nothing else installs packages or runs tests, so CI passes only if the README's lines suffice.
    others = [c for c in commands if c not in (INSTALL_LINE, TEST_LINE)]
    assert not [c for c in others if re.search(r"\bpip\b|\bpytest\b", c)], others


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> tuple[str, list[str]]:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    assert m, requirement
    return _normalise(m.group(1)), [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]


def declared_distributions(extra: str) -> set[str]:
    """Distributions `pip install -e '.[extra]'` asks for: the core ones and the extra's, self-references expanded."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    names, todo, seen = {_requirement_name(r)[0] for r in project["dependencies"]}, [extra], set()
    while todo:
        current = todo.pop()
        assert current in extras, f"pyproject.toml has no extra {current!r}"
        seen.add(current)
        for requirement in extras[current]:
            name, sub = _requirement_name(requirement)
            if name == _normalise(project["name"]):
                todo += [s for s in sub if s not in seen]
            else:
                names.add(name)
    return names


def modules_imported_by_tests() -> dict[str, str]:
    """Top-level module -> the test file that imports it (import statements and pytest.importorskip)."""
    found: dict[str, str] = {}
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for name in names:
                found.setdefault(name.split(".")[0], path.name)
    local = {"anoncli", *(p.stem for p in REPO.glob("*/*.py"))}   # tests/, benchmarks/ scripts on sys.path
    return {m: f for m, f in found.items() if m not in local and m not in sys.stdlib_module_names}


def module_owners(modules) -> dict[str, set[str]]:
    """Module -> installed distributions providing it: top_level.txt first, else the distribution's file
    list (dlib-bin's top_level.txt names only its extension module, not the ``dlib`` package)."""
    known = importlib.metadata.packages_distributions()
    owners = {m: {_normalise(d) for d in known.get(m, ())} for m in modules}
    unresolved = [m for m in modules if not owners[m]]
    if unresolved:
        for dist in importlib.metadata.distributions():
            record = dist.read_text("RECORD") or ""
            for m in unresolved:
                if re.search(rf"^{re.escape(m)}(/|\\.[^/,]*,)", record, re.MULTILINE):
                    owners[m].add(_normalise(dist.metadata["Name"]))
    return owners


def test_the_test_extra_brings_everything_the_tests_import():
    extra = re.search(r"\.\[(\w+)\]", TEST_LINE).group(1)
    declared = declared_distributions(extra)
    imported = modules_imported_by_tests()
    owners = module_owners(imported)
    problems = []
    for module, test_file in sorted(imported.items()):
        dists = owners.get(module)
        if not dists:
            problems.append(f"{module} (imported by {test_file}) is not installed here: which distribution?")
        elif not dists & declared:
            problems.append(f"{module} (imported by {test_file}) comes from {sorted(dists)}, which "
                            f"`pip install -e '.[{extra}]'` does not ask for")
    assert not problems, "\n".join(problems)


def test_extra_parsing_sees_self_references():
    """The check above is only as good as the expansion of `anoncli[eval,bench]` inside `test`."""
    declared = declared_distributions(re.search(r"\.\[(\w+)\]", TEST_LINE).group(1))
    assert {"pytest", "playwright", "dlib-bin"} <= declared
