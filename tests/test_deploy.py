"""Procfile, Dockerfile and .dockerignore, checked as far as this machine can without a Docker engine.

What is run here is what the image would run: the Procfile's and CMD's command lines are parsed by the real
`hooklane` parser, the dependency step's Python is executed against the real pyproject.toml, and the
HEALTHCHECK command is executed against a live ingest server and a live worker endpoint.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from conftest import free_port
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

from hooklane.ingest.app import create_app
from hooklane.operators.cli import build_parser
from hooklane.shared.config import Config
from hooklane.workers import job_metrics as worker_metrics

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [args for ins, args in dockerfile() if ins == name]


def subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(sub.choices)


def assert_is_hooklane_command(argv: list[str]) -> None:
    assert argv[0] == "hooklane" and "hooklane" in PYPROJECT["project"]["scripts"], argv
    assert argv[1] in subcommands(), f"{argv[1]!r} is not a hooklane subcommand"
    build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown option or a missing argument


# --------------------------------------------------------------------------- Procfile


def test_procfile_runs_the_two_processes_as_hooklane_subcommands() -> None:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip():
            name, _, command = line.partition(":")
            entries[name.strip()] = shlex.split(command)
    assert set(entries) == {"web", "worker"}
    assert entries["web"] == ["hooklane", "ingest"] and entries["worker"] == ["hooklane", "worker"]
    for argv in entries.values():
        assert_is_hooklane_command(argv)


def test_the_installed_console_script_lists_those_subcommands() -> None:
    script = Path(sys.executable).parent / "hooklane"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("ingest", "worker"):
        assert re.search(rf"^\s+{name}\s", done.stdout, re.M), f"`hooklane --help` does not list {name}"
    done = subprocess.run([str(script), "worker", "--help"], capture_output=True, text=True, timeout=60)
    assert "--metrics-port" in done.stdout


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_user_port_and_command() -> None:
    (base,) = instructions("FROM")
    assert base == "python:3.11-slim"
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    order = [ins for ins, _ in dockerfile()]
    assert order.index("USER") > max(i for i, ins in enumerate(order) if ins == "RUN"), "USER before a RUN"
    env = " ".join(instructions("ENV"))
    assert instructions("EXPOSE") == ["8000"] and "PORT=8000" in env
    (cmd,) = instructions("CMD")
    argv = json.loads(cmd)  # exec form: signals reach hooklane (gunicorn / RQ) directly, not a shell
    assert argv == ["hooklane", "ingest"]
    assert_is_hooklane_command(argv)


def test_dependencies_get_their_own_layer_before_the_source() -> None:
    steps = dockerfile()
    copies = [(i, args) for i, (ins, args) in enumerate(steps) if ins == "COPY"]
    assert copies[0][1] == "pyproject.toml ./", "the first COPY must be pyproject.toml alone"
    source_copy = next(i for i, args in copies if args == ". .")
    deps_runs = [args for ins, args in steps[copies[0][0]:source_copy] if ins == "RUN"]
    assert len(deps_runs) == 1 and "pip install -r" in deps_runs[0]


def test_the_dependency_step_installs_exactly_pyprojects_dependencies(tmp_path: Path) -> None:
    (run,) = [args for ins, args in dockerfile() if ins == "RUN" and "tomllib" in args]
    code = shlex.split(run)[2]  # python -c "<code>" > /tmp/requirements.txt && ...
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == PYPROJECT["project"]["dependencies"]


def test_the_project_is_installed_the_way_the_makefile_installs_it() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (make_install,) = [ln for ln in makefile.splitlines() if "pip install" in ln and "-e" in ln]
    make_target = shlex.split(make_install)[-1]
    (docker_install,) = [args for ins, args in dockerfile() if ins == "RUN" and "pip install --no-deps" in args]
    docker_argv = shlex.split(docker_install.split("&&")[0])
    # Both: an editable install of this checkout (code runs from the source tree, as in CI); the image skips
    # the dev extras and, having installed the same dependencies a layer earlier, re-resolves nothing.
    assert make_target.startswith(".") and make_target.split("[")[0] == "."
    assert docker_argv[-2:] == ["-e", "."]
    assert "[dev]" in make_target and "[dev]" not in docker_install


def _healthcheck_code() -> str:
    (health,) = instructions("HEALTHCHECK")
    options, _, cmd = health.partition("CMD ")
    assert "--interval" in options and "--timeout" in options
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "-c"], "python's urllib: the slim image has no curl"
    return argv[2]


def _run_healthcheck(env: dict[str, str]) -> int:
    clean = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOOKLANE_HEALTHCHECK_URL")}
    return subprocess.run([sys.executable, "-c", _healthcheck_code()], env={**clean, **env},
                          capture_output=True, timeout=30).returncode


@pytest.fixture
def live_ingest(config: Config) -> Iterator[int]:
    app = create_app(config, fakeredis.FakeRedis())
    assert "/healthz" in {r.rule for r in app.url_map.iter_rules()}
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def test_healthcheck_passes_against_ingest_and_fails_without_it(live_ingest: int) -> None:
    assert _run_healthcheck({"PORT": str(live_ingest)}) == 0
    assert _run_healthcheck({"PORT": str(free_port())}) != 0


def test_healthcheck_reaches_a_worker_through_its_metrics_port() -> None:
    server = worker_metrics.serve(0, CollectorRegistry(), lambda: {"worker": "w"}, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        assert _run_healthcheck({"PORT": str(free_port()), "HOOKLANE_HEALTHCHECK_URL": url}) == 0
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- .dockerignore


def _ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.lstrip("!").lstrip("/")
        if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, f"{p}/*") or fnmatch.fnmatch(path, p.replace("**/", "")):
            result = not negate
    return result


def test_dockerignore_keeps_what_the_build_needs_and_drops_local_state() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    readme = PYPROJECT["project"]["readme"]  # setuptools reads it while installing
    for needed in ("pyproject.toml", readme, "ingest/app.py", "ingest/gunicorn.conf.py", "workers/main.py",
                   "operators/cli/__init__.py", "operators/dev.toml"):
        assert not _ignored(needed, patterns), f"{needed} would be missing from the image"
    for local in (".venv/bin/python", ".git/HEAD", "hooklane.toml", ".env", "shared/__pycache__/x.pyc"):
        assert _ignored(local, patterns), f"{local} would be copied into the image"


def _gunicorn_workers(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], cpus: set[int]) -> int:
    import runpy

    for key in ("HOOKLANE_INGEST_WORKERS", "WEB_CONCURRENCY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: cpus)
    return runpy.run_path(str(ROOT / "ingest" / "gunicorn.conf.py"))["workers"]


@pytest.mark.parametrize(("env", "cpus", "expected"), [
    ({}, {0}, 2),                         # never fewer than two
    ({}, {0, 1}, 4),                      # two per CPU
    ({}, {3, 7}, 4),                      # a container pinned to 2 of a bigger host's CPUs
    ({"WEB_CONCURRENCY": "5"}, {0, 1}, 5),
    ({"HOOKLANE_INGEST_WORKERS": "3", "WEB_CONCURRENCY": "5"}, {0, 1}, 3),
])
def test_ingest_worker_count_follows_the_cpus_it_may_use_unless_told(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], cpus: set[int], expected: int
) -> None:
    assert _gunicorn_workers(monkeypatch, env, cpus) == expected
