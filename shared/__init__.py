"""shared: what two or more wings use. Config, the delivery envelope, the canonical event, providers
(verify + normalize, one module each in providers/), the job format and enqueue (queueing.py),
dead letters and the typed records workers store (records.py), counters, Redis connections, logging
setup, redaction.

May import: nothing of ingest, workers or operators (tests/test_layout.py fails on an upward import).
"""
