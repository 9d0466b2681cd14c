"""The layout's rules: which wing may import which, and what the distribution installs."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import is_payload_file

from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import SAMPLES_PACKAGE

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
    # Plus the one data package, the payload fixtures (shipped from tests/fixtures as the providers' samples).
    assert listed == on_disk | {SAMPLES_PACKAGE}
    assert project["package-dir"][SAMPLES_PACKAGE] == "tests/fixtures"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", ".*cache",
                                                             ".hypothesis", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                   check=True, capture_output=True, timeout=300)
    (path,) = tmp_path.glob("hooklane-*.whl")
    return path


def test_the_wheel_installs_only_under_hooklane(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"hooklane"}
    # What the running processes read from the package, not from a checkout.
    for needed in ("hooklane/operators/dev.toml", "hooklane/ingest/gunicorn.conf.py",
                   "hooklane/workers/jobs.py", "hooklane/shared/providers/__init__.py"):
        assert needed in names


def test_the_wheel_ships_every_sample_payload_and_no_other_fixture(wheel: Path) -> None:
    prefix = SAMPLES_PACKAGE.replace(".", "/") + "/"
    shipped = {n[len(prefix):] for n in zipfile.ZipFile(wheel).namelist() if n.startswith(prefix)}
    samples = {f"{p.parent.name}/{p.name}" for p in (ROOT / "tests" / "fixtures").glob("*/*.*")
               if is_payload_file(p) and "--" not in p.name}
    assert len(samples) > 100
    assert shipped == samples | {"__init__.py"}


SEND_FROM = """
import sys
from importlib import resources
from hooklane.operators.cli import main
from hooklane.shared.providers import base
assert base.__file__.startswith(sys.argv[1]), base.__file__
assert str(resources.files(base.SAMPLES_PACKAGE)).startswith(sys.argv[1])
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("provider", "auth"), [("voicekit", ["--token", "t"]), ("twilio", ["--secret-env", "TW"])])
def test_hooklane_send_works_from_the_wheel_alone(wheel: Path, tmp_path: Path, provider: str,
                                                  auth: list[str]) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    bodies: list[bytes] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    count = len(PROVIDERS[provider].samples())
    try:
        # The extracted wheel first on the path: the code and the samples come from it, not from this checkout.
        result = subprocess.run(
            [sys.executable, "-c", SEND_FROM, str(site), "send", provider, "--count", str(count), "--json",
             "--url", f"http://127.0.0.1:{server.server_port}/webhooks/{provider}", *auth],
            env={**os.environ, "PYTHONPATH": str(site), "TW": "secret"}, cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["by_status"] == {"200": count}
    assert len(bodies) == count
