"""gunicorn's own lines (gunicorn.error, gunicorn.access) through hooklane's log setup: one format per process.

Named by ingest's and the admin API's gunicorn settings as ``logger_class``.
"""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

from hooklane.shared import logs


class Logger(glogging.Logger):
    """`setup` runs at start and again on every SIGHUP reload, re-adding gunicorn's handlers; handing
    the records back to the root logger each time keeps the format after a reload."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        logs.configure()
        for log in (self.error_log, self.access_log):
            log.handlers[:] = []
            log.propagate = True
