"""The layout's rules: which wing may import which, and what the distribution installs."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WINGS = ("ingest", "workers", "operators", "shared")
# What each wing may import of the others (operators may import them all).
ALLOWED = {
    "shared": set(),
    "ingest": {"shared"},
    "workers": {"shared"},
    "operators": {"shared", "ingest", "workers"},
}


def imported_wings(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hooklane" and len(parts) > 1:
                found.add((parts[1], node.lineno))
            elif parts[0] in WINGS:
                found.add((f"bare {parts[0]}", node.lineno))
    return found


def wing_files(wing: str) -> list[Path]:
    return sorted((ROOT / wing).rglob("*.py"))


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_imports_only_what_it_may(wing: str) -> None:
    bad = []
    for path in wing_files(wing):
        for target, line in imported_wings(path):
            if target != wing and target not in ALLOWED[wing]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "imports against the layout (see each wing's __init__ docstring):\n" + "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from hooklane.workers.jobs import normalize\nimport shared.config\n", encoding="utf-8")
    assert imported_wings(sample) == {("workers", 1), ("bare shared", 2)}


def test_every_package_folder_is_in_the_distribution() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(project["packages"])
    on_disk = {"hooklane." + ".".join(p.parent.relative_to(ROOT).parts)
               for wing in WINGS for p in (ROOT / wing).rglob("__init__.py")}
    assert listed == on_disk


def test_the_wheel_installs_only_under_hooklane(tmp_path: Path) -> None:
    # From a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", ".*cache",
                                                             ".hypothesis", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("hooklane-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"hooklane"}
    # What the running processes read from the package, not from a checkout.
    for needed in ("hooklane/operators/dev.toml", "hooklane/ingest/gunicorn.conf.py",
                   "hooklane/workers/jobs.py", "hooklane/shared/providers/__init__.py"):
        assert needed in names
