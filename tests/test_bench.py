"""The benchmark scripts still drive what they claim to measure.

Figures are never asserted here (docs/benchmarks.md holds them); what is checked is that each
in-process variant of bench/ingest-breakdown builds its app against a real Redis and gets the
answer it expects, so the breakdown cannot quietly measure an app that answers 401 or 500; and that
bench/ingest-slow-clients' stall mode really fills the buffer budget it reports on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
BREAKDOWN = ROOT / "bench" / "ingest-breakdown"
VARIANTS = ("floor", "lpush", "ingest", "ingest-no-log", "ingest-no-metrics", "ingest-no-auth", "ingest-no-enqueue")


def _load_bench_ingest() -> ModuleType:
    loader = SourceFileLoader("bench_ingest", str(ROOT / "bench" / "ingest"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


bench = _load_bench_ingest()


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_breakdown_variant_answers_as_expected_and_reports_its_cpu(
    variant: str, real_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = real_redis.connection_pool.connection_kwargs["port"]
    config = tmp_path / "hooklane.toml"
    config.write_text(bench.CONFIG.format(port=port))
    for key, value in {"HOOKLANE_CONFIG": str(config), "BENCH_VR_SECRET": bench.SECRET,
                       "BENCH_REDIS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    out = subprocess.run([sys.executable, str(BREAKDOWN), "--variant", variant, "--requests", "30"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr  # a wrong status (401, 500) exits non-zero
    result = json.loads(out.stdout)
    assert result["variant"] == variant and result["cpu_us"] > 0
    if variant.startswith("ingest") and variant != "ingest-no-enqueue":
        assert real_redis.llen("rq:queue:hooklane") > 0, "the ingest variant queued nothing"
    if variant == "lpush":
        assert real_redis.llen("bench:lpush") > 0


def test_slow_clients_bench_stall_mode_has_stalled_bodies_shed_past_the_buffer_budget() -> None:
    # 30 connections holding ~100 KB each against a 1 MiB budget per worker: some must be shed, the rest
    # held to the deadline, and the probes (each a whole delivery) all served.
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest-slow-clients"), "--trickle", "stall", "--body-kb", "100",
         "--tricklers", "30", "--max-buffered-mb", "1", "--duration", "1", "--read-timeout", "2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "x 'HTTP/1.1 503 Service Unavailable'" in out.stdout, out.stdout
    assert "x 'HTTP/1.1 408 Request Timeout'" in out.stdout, out.stdout
    assert "peak worker RSS:" in out.stdout, out.stdout
