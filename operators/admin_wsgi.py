"""The admin API's WSGI entry point (`hooklane admin`): one app per gunicorn worker, built after the fork."""

from __future__ import annotations

from flask import Flask

from hooklane.operators.admin import create_admin_app
from hooklane.shared import config as hl_config
from hooklane.shared import logs

logs.configure()
app: Flask = create_admin_app(hl_config.load())
