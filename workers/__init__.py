"""RQ jobs: normalize -> dedupe -> route -> run handlers, retries, dead letters."""
