"""ingest: the public front door. Authenticate a delivery over its raw bytes, enqueue it, answer in milliseconds.

Lives here: the Flask app (app.py), source authentication (auth.py), gunicorn's settings and worker
(gunicorn.conf.py), ingest's Prometheus metrics. The port it serves carries /webhooks/, /healthz,
/readyz and /metrics only.
May import: hooklane.shared. Never workers or operators (tests/test_layout.py).
"""
