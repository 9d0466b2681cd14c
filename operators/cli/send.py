"""`hooklane send`: sign and send a provider's sample webhooks to a URL (smoke test, demo, load test)."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from hooklane.operators import sending
from hooklane.shared import config as config_mod
from hooklane.shared.config import Config, ConfigError, SourceConfig
from hooklane.shared.providers import PROVIDERS

# Redeliveries re-send one of the last bodies sent; a bounded window keeps a long load test's memory flat.
HISTORY = 1000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="sign and send a provider's sample webhook(s) to a URL")
    p.add_argument("provider", choices=sorted(PROVIDERS), help="provider whose wire format to speak")
    p.add_argument("--url", required=True, help="ingest URL, e.g. http://127.0.0.1:8000/webhooks/volumereach")
    p.add_argument("--event", help="provider event type (default: each sample type in turn)")
    p.add_argument("--count", type=int, default=1, help="requests to send, redeliveries included (default 1)")
    p.add_argument("--concurrency", type=int, default=1, help="sending threads (default 1)")
    p.add_argument("--duplicate-rate", type=float, default=0.0,
                   help="share of requests that re-send an earlier body byte-for-byte (0..1)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--secret-env", metavar="NAME", help="environment variable holding the signing secret")
    who.add_argument("--source", help="config source whose secret / token to use (default: from the URL)")
    p.add_argument("--token", help="URL token for providers that authenticate by token")
    p.add_argument("--token-in-path", action="store_true", help="send the token as /webhooks/<source>/<token>")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    p.add_argument("--seed", type=int, help="seed for the redelivery choice (reproducible runs)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=send)


@dataclass
class Credentials:
    secret: bytes | None
    token: str | None
    origin: str  # where they came from, for the summary; never the values


@dataclass
class Results:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: str, latency_ms: float | None, duplicate: bool, error: str | None = None) -> None:
        with self.lock:
            self.statuses[status] += 1
            if latency_ms is not None:
                self.latencies_ms.append(latency_ms)
            if duplicate:
                self.duplicates += 1
            if error:
                self.errors[error] += 1


def send(args: argparse.Namespace) -> int:
    if args.count < 1 or args.concurrency < 1:
        print("hooklane send: --count and --concurrency must be at least 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.duplicate_rate <= 1.0:
        print("hooklane send: --duplicate-rate must be between 0 and 1", file=sys.stderr)
        return 2
    provider = PROVIDERS[args.provider]
    try:
        if args.event is not None:
            sending.pick_event_type(provider, args.event, 0)
        creds = resolve_credentials(args)
    except (sending.SendError, ConfigError) as exc:
        print(f"hooklane send: {exc}", file=sys.stderr)
        return 2
    summary = run(args, creds)
    summary["credentials"] = creds.origin
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0 if summary["ok"] else 1


def run(args: argparse.Namespace, creds: Credentials) -> dict[str, Any]:
    """Send `--count` requests from `--concurrency` threads; returns the summary dict."""
    provider = PROVIDERS[args.provider]
    run_id = sending.new_run_id()
    rng = random.Random(args.seed)
    state_lock = threading.Lock()
    next_seq = [0]
    issued = [0]
    history: list[tuple[bytes, str | None]] = []
    results = Results()

    def next_delivery() -> tuple[sending.WireDelivery, bool] | None:
        with state_lock:
            if issued[0] >= args.count:
                return None
            issued[0] += 1
            if history and rng.random() < args.duplicate_rate:
                body, delivery_id = rng.choice(history)
                # A redelivery: the same bytes, signed afresh (a provider's retry carries a new timestamp).
                wire = sending.build_delivery(provider, None, body=body, secret=creds.secret, token=creds.token,
                                              delivery_id=delivery_id, token_in_path=args.token_in_path)
                return wire, True
            seq = next_seq[0]
            next_seq[0] += 1
        wire = sending.build_delivery(provider, None, args.event, seq=seq, run=run_id, secret=creds.secret,
                                      token=creds.token, token_in_path=args.token_in_path)
        return wire, False

    def remember(wire: sending.WireDelivery) -> None:
        delivery_id = wire.headers.get(provider.delivery_id_header) if provider.delivery_id_header else None
        with state_lock:
            history.append((wire.body, delivery_id))
            if len(history) > HISTORY:
                del history[0]

    def worker() -> None:
        # One pooled session per thread: requests.Session is not documented as thread-safe.
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            while True:
                item = next_delivery()
                if item is None:
                    return
                wire, duplicate = item
                url = sending.with_suffix(args.url, wire.url_suffix)
                started = time.perf_counter()
                try:
                    resp = session.post(url, data=wire.body, headers=wire.headers, timeout=args.timeout,
                                        allow_redirects=False)
                except requests.RequestException as exc:
                    results.record("error", None, duplicate, type(exc).__name__)
                    continue
                latency = (time.perf_counter() - started) * 1000
                resp.close()
                results.record(str(resp.status_code), latency, duplicate)
                if not duplicate and 200 <= resp.status_code < 300:
                    remember(wire)
        finally:
            session.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"send-{i}", daemon=True)
               for i in range(min(args.concurrency, args.count))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return summarize(results, elapsed, args, run_id)


def summarize(results: Results, elapsed: float, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    sent = sum(results.statuses.values())
    ok = all(s.isdigit() and 200 <= int(s) < 300 for s in results.statuses)
    lat = sorted(results.latencies_ms)
    return {
        "provider": args.provider,
        "run": run_id,
        "url": _safe_url(args.url),
        "sent": sent,
        "distinct_events": sent - results.duplicates,
        "duplicates": results.duplicates,
        "by_status": dict(sorted(results.statuses.items())),
        "errors": dict(results.errors),
        "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "max": lat[-1] if lat else None},
        "seconds": round(elapsed, 3),
        "rps": round(sent / elapsed, 1) if elapsed > 0 else None,
        "ok": ok and sent > 0,
    }


def format_summary(s: dict[str, Any]) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in s["by_status"].items())
    lat = s["latency_ms"]
    lines = [
        f"sent {s['sent']} {s['provider']} webhook(s) to {s['url']} "
        f"({s['distinct_events']} distinct, {s['duplicates']} redelivered)",
        f"  status   {statuses}",
        f"  latency  p50 {_ms(lat['p50'])}  p99 {_ms(lat['p99'])}  max {_ms(lat['max'])}",
        f"  rate     {s['rps']} req/s over {s['seconds']} s",
        f"  auth     {s['credentials']}",
    ]
    if s["errors"]:
        lines.append("  errors   " + ", ".join(f"{k}: {v}" for k, v in s["errors"].items()))
    if not s["ok"]:
        lines.append("  FAILED: some requests were not answered 2xx")
    return "\n".join(lines)


# --------------------------------------------------------------------------- credentials


def resolve_credentials(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Credentials:
    """Secret and token for the request: explicit flags first, else the config source of the provider.

    Without any config file (no --config, no HOOKLANE_CONFIG, no ./hooklane.toml)
    the sample config of `hooklane dev` is used with its dev values, so the
    command `hooklane dev` prints works from any fresh terminal.
    """
    env = os.environ if env is None else env
    provider = PROVIDERS[args.provider]
    secret: bytes | None = None
    token: str | None = args.token
    origin: list[str] = []
    if args.secret_env:
        value = env.get(args.secret_env)
        if not value:
            raise sending.SendError(f"--secret-env: environment variable {args.secret_env} is not set or empty")
        secret = value.encode("utf-8")
        origin.append(f"secret from ${args.secret_env}")
    # The config is read only when a flag does not already say everything: with --secret-env (or
    # --token for a token provider) send works where no config, or an unloadable one, is around.
    if args.source or (provider.signs and secret is None) or (not provider.signs and token is None):
        config, where = _load_config(args, env)
        source = pick_source(config, args.provider, args.source, args.url)
        if secret is None and provider.signs:
            secret = sending.signing_secret(source)
            if secret is not None:
                origin.append(f"source {source.name!r} of {where} ({source.secrets[0].ref})")
        if token is None:
            token = sending.url_token(source)
            if token is not None:
                origin.append(f"token of source {source.name!r} of {where} ({source.tokens[0].ref})")
    if token is not None and args.token:
        origin.append("token from --token")
    if provider.signs and secret is None:
        origin.append("no signature (the source has no secrets)")
    return Credentials(secret=secret, token=token, origin="; ".join(origin) or "no credentials")


def _load_config(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Config, str]:
    path = getattr(args, "config", None) or env.get("HOOKLANE_CONFIG")
    if path or Path(config_mod.DEFAULT_PATH).exists():
        config = config_mod.load(path, env=env)
        return config, config.path
    from hooklane.operators.cli import dev  # late: dev pulls in process management the common path does not need

    print(f"hooklane send: no hooklane.toml here and no HOOKLANE_CONFIG: using the `hooklane dev` sample "
          f"config ({dev.SAMPLE_CONFIG})", file=sys.stderr)
    return config_mod.load(dev.SAMPLE_CONFIG, env={**dev.DEV_ENV, **env}), "the hooklane dev sample config"


def pick_source(config: Config, provider: str, name: str | None, url: str) -> SourceConfig:
    """--source, else the source named in the URL path, else the only source of the provider."""
    if name is not None:
        source = config.sources.get(name)
        if source is None:
            raise sending.SendError(f"--source: no source {name!r} in {config.path} (known: "
                                    f"{', '.join(config.sources) or 'none'})")
        if source.provider != provider:
            raise sending.SendError(f"--source: source {name!r} is a {source.provider} source, not {provider}")
        return source
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if "webhooks" in parts:
        i = parts.index("webhooks")
        if i + 1 < len(parts):
            source = config.sources.get(parts[i + 1])
            if source is not None and source.provider == provider:
                return source
    candidates = [s for s in config.sources.values() if s.provider == provider]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise sending.SendError(f"no {provider} source in {config.path}: pass --secret-env / --token, "
                                f"or --config with one")
    raise sending.SendError(f"several {provider} sources in {config.path} "
                            f"({', '.join(s.name for s in candidates)}): pick one with --source")


# --------------------------------------------------------------------------- helpers


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    # Nearest rank: always a latency that was actually observed.
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return round(sorted_values[int(rank) - 1], 3)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _safe_url(url: str) -> str:
    # The URL may carry a token (?token= or a path segment after the source): print scheme, host and path head.
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if len(segments) > 3 and segments[1] == "webhooks":
        segments = segments[:3] + ["***"]
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{'/'.join(segments)}"
