"""workers: everything after the 2xx. RQ jobs that normalize, dedupe, route and run handlers, with
retries, backoff and dead letters.

Lives here: the jobs and their failure policy (jobs.py), dedupe (dedupe.py), the handler types
(handlers/), the worker process (main.py), its metrics.
May import: hooklane.shared. Never ingest or operators (tests/test_layout.py).
"""
