"""gunicorn settings for ingest: ``gunicorn -c ingest/gunicorn.conf.py hooklane.ingest.wsgi:app`` (what `hooklane ingest` runs).

Environment:
    HOOKLANE_BIND            HOST:PORT (default 0.0.0.0:$PORT, 8000 without PORT, as Procfile platforms expect)
    HOOKLANE_INGEST_WORKERS  worker processes (else WEB_CONCURRENCY, else two per CPU, at least 2)
    PROMETHEUS_MULTIPROC_DIR where the workers' metrics meet (default: a fresh temporary directory)

The worker class and counts were chosen by measurement (bench/ingest, docs/benchmarks.md); see the
comments at each setting for why.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# The checkout this file lives in, so `ingest.wsgi` imports from any working directory even when the
# package is not installed (with an installed package this is its site-packages, which is harmless).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from gunicorn import glogging  # noqa: E402

from hooklane.shared import logs as hl_logging  # noqa: E402  (needs _ROOT on sys.path)

pythonpath = _ROOT
bind = [os.environ.get("HOOKLANE_BIND") or f"0.0.0.0:{os.environ.get('PORT') or 8000}"]

# sync, chosen by measurement (bench/ingest, 3 interleaved rounds on 2 CPUs, docs/benchmarks.md):
# sync -w 2 and gthread -w 2 --threads 4 accepted the same deliveries/s (~1,690 at 16 and ~1,650
# at 64 connections), but sync's p99 was half gthread's (15 vs 28 ms at c=16, 55 vs 80 ms at c=64,
# 14 vs 25 ms at 500/s in bursts of 10). A request is CPU-bound (HMAC, envelope, one JSON log
# line) around one short Redis round trip, so threads mostly add GIL hand-offs, and what gthread's
# keep-alive saves (a TCP handshake per request) did not make up for it. gevent is not a
# dependency and would not help a CPU-bound request either. Sync's weakness, a slow client
# holding a worker for as long as it takes to send, is why ingest belongs behind a buffering
# proxy or load balancer.
worker_class = "sync"


def _default_workers() -> int:
    """Two per CPU this process may run on, at least two (one stalled request must not stop the instance).

    A sync worker blocks for each request's Redis round trip, and with one worker per CPU the CPUs sat
    ~11 % idle under load. Measured 2026-11-23 on 2 CPUs, Redis on the same host, wrk c=16, three
    interleaved rounds: 4 workers accepted 2,366-2,636 deliveries/s against 2,190-2,337 for 2, with a
    lower p99 (8 vs 10 ms); 3 did as well as 4. With Redis across a network each round trip is longer
    and the extra workers matter more.

    The affinity mask, not os.cpu_count(): a container pinned to 2 of a host's 64 CPUs gets 4 workers,
    not 128. A CFS quota (Kubernetes CPU limits) is invisible to both: set WEB_CONCURRENCY there.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cpus = os.cpu_count() or 1
    return max(2, 2 * cpus)


workers = int(os.environ.get("HOOKLANE_INGEST_WORKERS") or os.environ.get("WEB_CONCURRENCY") or _default_workers())

# A request takes milliseconds; a worker silent for 30 s is stuck (e.g. a Redis socket that never
# answers past its own timeout) and is better replaced.
timeout = 30
# SIGTERM: finish in-flight deliveries (each is one Redis transaction) inside the 30 s most platforms
# (Heroku, Kubernetes' default terminationGracePeriodSeconds) allow before SIGKILL.
graceful_timeout = 25
# Only gthread/async workers keep connections open; for them, outlive a load balancer's idle
# timeout (AWS ALB: 60 s) so the balancer never reuses a connection ingest just closed.
keepalive = 75
# Heartbeat files on tmpfs: on an overlay or network /tmp a blocked write stalls the worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# gunicorn >= 25 opens a control socket at one fixed per-user path; two instances on a host (ingest and
# `hooklane dev`, the benchmark, the e2e tests) would take it from each other. Older versions ignore this.
control_socket_disable = True

# No gunicorn access log: it would print the request line, and with it a URL token
# (/webhooks/<source>/<token> or ?token=). The app logs one structured line per delivery instead.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("HOOKLANE_LOG_LEVEL", "info").lower()




class Logger(glogging.Logger):
    """gunicorn's own lines (gunicorn.error, gunicorn.access) through shared.logs: one format per process.

    `setup` runs at start and again on every SIGHUP reload, re-adding gunicorn's handlers; handing
    the records back to the root logger each time keeps the format after a reload.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        hl_logging.configure()
        for log in (self.error_log, self.access_log):
            log.handlers[:] = []
            log.propagate = True


logger_class = Logger

# Prometheus: each worker is a process with its own counters; in multiprocess mode they write to
# files in PROMETHEUS_MULTIPROC_DIR and /metrics sums them. on_starting sets it in the master, before
# any worker is forked or imports prometheus_client. A directory we create is ours to delete; the
# marker lives in the environment because gunicorn re-executes this file on every SIGHUP reload.
_OWNED_METRICS_DIR = "HOOKLANE_INGEST_OWNED_METRICS_DIR"


def on_starting(server: Any) -> None:
    # Fail in the master with the offending key, not once per worker as "Worker failed to boot".
    from hooklane.shared.config import ConfigError, load

    try:
        load()
    except ConfigError as exc:
        raise RuntimeError(f"hooklane config: {exc}") from None  # gunicorn prints "Error: ..." and exits 1
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        os.makedirs(metrics_dir, exist_ok=True)
        # Counters of a previous run would be summed into this one's.
        for stale in glob.glob(os.path.join(metrics_dir, "*.db")):
            os.remove(stale)
    else:
        metrics_dir = tempfile.mkdtemp(prefix="hooklane-ingest-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ[_OWNED_METRICS_DIR] = metrics_dir


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    owned = os.environ.get(_OWNED_METRICS_DIR)
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(owned, ignore_errors=True)
