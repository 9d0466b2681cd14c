"""operators: what people run by hand. The `hooklane` CLI (cli/), dead-letter and stats actions
(actions.py), the admin HTTP API in a process of its own (admin.py), the signed load sender
(sending.py) and `hooklane dev`'s sample config (dev.toml).

May import: every other wing (it starts ingest and workers, and reads what they write).
"""
