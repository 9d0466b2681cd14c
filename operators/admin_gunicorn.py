"""gunicorn settings for the admin API (`hooklane admin`), loaded as ``-c python:hooklane.operators.admin_gunicorn``.

Environment: HOOKLANE_ADMIN_BIND (default 127.0.0.1:8002: operators reach it over a private network or
a tunnel, never on the providers' port).
"""

from __future__ import annotations

import os

bind = [os.environ.get("HOOKLANE_ADMIN_BIND") or "127.0.0.1:8002"]
# Two: one operator's bulk replay does not block another's list. Traffic is a few requests a minute.
workers = 2
worker_class = "sync"
# A bulk replay of many thousands of dead letters takes a while; it is not a stuck worker.
timeout = 300
graceful_timeout = 25
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
control_socket_disable = True
# No access log: the app writes one audit line per action, with the client address.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("HOOKLANE_LOG_LEVEL", "info").lower()
logger_class = "hooklane.ingest.gunicorn_logging.Logger"
