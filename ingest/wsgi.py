"""The WSGI entry point: ``gunicorn -c ingest/gunicorn.conf.py hooklane.ingest.wsgi:app``.

gunicorn imports this module in each worker after the fork (``preload_app`` is
off), so every worker builds its own app and its own Redis connection from
``HOOKLANE_CONFIG``; nothing that holds a socket crosses a fork.
"""

from __future__ import annotations

from flask import Flask

from hooklane.ingest.app import create_app
from hooklane.shared import config as hl_config
from hooklane.shared import logs

logs.configure()  # a no-op under gunicorn.conf.py, which configured it in the master already
app: Flask = create_app(hl_config.load())
