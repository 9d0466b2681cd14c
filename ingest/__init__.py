"""The thin front door: authenticate, log, enqueue the raw delivery, answer."""
