"""End-to-end tests: the real processes (see conftest.py)."""
