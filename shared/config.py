"""hooklane.toml, read and validated once at start-up into typed, frozen objects.

Every error names the key that caused it (``sources[1].secrets[0]: ...``) so a
bad deploy fails on start with a message an operator can act on, not on the
thousandth delivery. Secrets are only ever referenced as ``env:NAME``; a literal
secret in the file is refused, and resolved values never appear in ``repr()``.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hooklane.shared.redaction import safe_url

DEFAULT_PATH = "./hooklane.toml"
HANDLER_TYPES = ("http", "suppression", "python", "log")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PATTERN_RE = re.compile(r"^[a-z0-9_*.-]+$")
# Chosen by measurement (docs/benchmarks.md, "Concurrent workers"); docs/operations.md says how to pick N.
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 512


class ConfigError(ValueError):
    """The configuration cannot be used; the message starts with the offending key."""


class Secret:
    """A resolved secret whose value never leaks through repr/str/logging."""

    __slots__ = ("_value", "ref")

    def __init__(self, value: bytes, ref: str) -> None:
        self._value = value
        self.ref = ref  # "env:NAME", safe to print

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.ref})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)


@dataclass(frozen=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    # Every key hooklane writes (its own and RQ's queue name) starts with this.
    prefix: str = "hooklane"


@dataclass(frozen=True)
class IngestConfig:
    max_body_bytes: int = 1024 * 1024
    # How many reverse proxies in front of ingest append to X-Forwarded-For.
    trusted_proxies: int = 0
    retry_after_seconds: int = 5
    # A client must send its whole request (head and body) within this many seconds of connecting, or get
    # 408: a slow client cannot hold ingest (ingest/gunicorn_worker.py). Providers wait 10-20 s for an answer.
    request_read_timeout_seconds: float = 10.0
    # Request bytes (heads and bodies) one ingest worker process holds for connections still sending. Past
    # it, those that sent nothing for longest are answered 503 + Retry-After: many clients each sending most
    # of a large body and then stalling cannot grow ingest until the kernel kills it. At least max_body_bytes.
    max_buffered_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class WorkerConfig:
    dedupe_window_seconds: int = 7 * 24 * 3600
    # Wall-clock limit of one job; also bounds how long a dead worker's job stays claimed.
    job_timeout_seconds: int = 60
    # Extra seconds past the job timeout before a silent worker's job counts as abandoned.
    abandoned_grace_seconds: int = 30
    # How often some worker sweeps for abandoned jobs (RQ's maintenance interval).
    maintenance_interval_seconds: int = 30
    # Delivery jobs retried when a worker dies or Redis blips mid-job, after these waits (seconds).
    delivery_max_attempts: int = 5
    delivery_retry_intervals: tuple[float, ...] = (5, 30, 120, 600)
    # Backoff for handler retries: base * multiplier**n, capped, ±jitter (shared/backoff.py).
    backoff_base_seconds: float = 60.0
    backoff_multiplier: float = 4.0
    backoff_cap_seconds: float = 8 * 3600.0
    backoff_jitter: float = 0.2
    worker_class: str = "simple"  # "simple" (in-process) or "fork" (a process per job)
    # Jobs one "simple" worker process runs at once, in threads (workers/threaded.py); 1 = one at a time.
    concurrency: int = DEFAULT_CONCURRENCY
    metrics_port: int | None = None


@dataclass(frozen=True)
class DeadLetterConfig:
    # 0 keeps entries until an operator removes them.
    retention_days: int = 30


@dataclass(frozen=True)
class SourceConfig:
    name: str
    provider: str
    secrets: tuple[Secret, ...] = ()
    tokens: tuple[Secret, ...] = ()
    allow_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tolerance_seconds: int = 300
    insecure: bool = False
    methods: tuple[str, ...] = ()  # empty = every method the provider may use
    # The provider's own settings (its `option_keys`), parsed by its `options`; None for providers without.
    options: Any = None
    # Filled at load from the provider and its options: the headers carrying the delivery id (the first present
    # wins), the headers kept for the workers.
    delivery_id_headers: tuple[str, ...] = ()
    forward_headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class HandlerConfig:
    name: str
    type: str
    url: str | None = None
    timeout_seconds: float = 10.0
    connect_timeout_seconds: float = 3.05
    max_attempts: int = 8
    target: str | None = None
    outcomes: tuple[str, ...] = ()
    secret: Secret | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    suppression_key: str = "suppression"
    # For `python` handlers: false serializes the callable (one call at a time per worker process).
    concurrency_safe: bool = True
    # For `python` handlers: resolved at load time so a bad target fails the config check.
    callable: Callable[[dict], Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RouteConfig:
    events: tuple[str, ...]
    handlers: tuple[str, ...]
    sources: tuple[str, ...] = ()  # empty = every source

    def matches(self, event_type: str, source: str) -> bool:
        if self.sources and source not in self.sources:
            return False
        return any(pattern_matches(p, event_type) for p in self.events)


@dataclass(frozen=True)
class Config:
    redis: RedisConfig
    ingest: IngestConfig
    worker: WorkerConfig
    dead_letters: DeadLetterConfig
    sources: Mapping[str, SourceConfig]
    handlers: Mapping[str, HandlerConfig]
    routes: tuple[RouteConfig, ...]
    path: str = ""

    def handlers_for(self, event_type: str, source: str) -> list[HandlerConfig]:
        """Handlers routed for an event, each once, in route order."""
        names: dict[str, None] = {}
        for route in self.routes:
            if route.matches(event_type, source):
                for name in route.handlers:
                    names.setdefault(name, None)
        return [self.handlers[n] for n in names]


def pattern_matches(pattern: str, event_type: str) -> bool:
    """`*` matches everything, `call.*` every type under `call.`, otherwise exact."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


# --------------------------------------------------------------------------- loading


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the config file. Raises ConfigError naming the bad key."""
    env = os.environ if env is None else env
    # The error names where the path came from, so an operator knows which of the two to fix.
    if path:
        origin, hint = "--config", ""
    elif env.get("HOOKLANE_CONFIG"):
        origin, path, hint = "HOOKLANE_CONFIG", env["HOOKLANE_CONFIG"], ""
    else:
        origin, path = "config", DEFAULT_PATH
        hint = " (the default; name a file with --config or HOOKLANE_CONFIG)"
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{origin}: no config file at {path!r}{hint}") from None
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read {path!r}: {exc.strerror}{hint}") from None
    return loads(text, env=env, path=path)


def loads(text: str, env: Mapping[str, str] | None = None, path: str = "<string>") -> Config:
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(raw, env=env, path=path)


def from_dict(raw: Mapping[str, Any], env: Mapping[str, str] | None = None, path: str = "<dict>") -> Config:
    env = os.environ if env is None else env
    r = _Reader(raw, "", env)
    r.only("redis", "ingest", "worker", "dead_letters", "sources", "handlers", "routes")

    rd = r.table("redis")
    rd.only("url", "prefix")
    url = env.get("REDIS_URL") or rd.str("url", RedisConfig.url)
    if not url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
        # Blame where the value came from; never echo it (managed services put the password in it).
        where = "REDIS_URL" if env.get("REDIS_URL") else rd.key("url")
        raise ConfigError(f"{where}: must start with redis://, rediss://, unix:// or redis+sentinel://")
    redis = RedisConfig(url=url, prefix=rd.name("prefix", RedisConfig.prefix))

    ig = r.table("ingest")
    ig.only(*IngestConfig.__dataclass_fields__)
    read_timeout = ig.float("request_read_timeout_seconds", IngestConfig.request_read_timeout_seconds)
    if read_timeout <= 0:
        raise ConfigError(f"{ig.key('request_read_timeout_seconds')}: must be a number > 0, got {read_timeout!r}")
    ingest = IngestConfig(
        max_body_bytes=ig.int("max_body_bytes", IngestConfig.max_body_bytes, minimum=1),
        trusted_proxies=ig.int("trusted_proxies", 0, minimum=0),
        retry_after_seconds=ig.int("retry_after_seconds", 5, minimum=1),
        request_read_timeout_seconds=read_timeout,
        max_buffered_bytes=ig.int("max_buffered_bytes", IngestConfig.max_buffered_bytes, minimum=1),
    )
    if ingest.max_buffered_bytes < ingest.max_body_bytes:
        raise ConfigError(f"{ig.key('max_buffered_bytes')}: must be >= {ig.key('max_body_bytes')} "
                          f"({ingest.max_body_bytes}), got {ingest.max_buffered_bytes}")

    wk = r.table("worker")
    wk.only(*WorkerConfig.__dataclass_fields__)
    d = WorkerConfig()
    worker_class = wk.str("worker_class", d.worker_class)
    if worker_class not in ("simple", "fork"):
        raise ConfigError(f"{wk.key('worker_class')}: must be 'simple' or 'fork', got {worker_class!r}")
    jitter = wk.float("backoff_jitter", d.backoff_jitter, minimum=0.0)
    if jitter >= 1:
        raise ConfigError(f"{wk.key('backoff_jitter')}: must be below 1 (it is a ± fraction of each wait)")
    worker = WorkerConfig(
        dedupe_window_seconds=wk.int("dedupe_window_seconds", d.dedupe_window_seconds, minimum=1),
        job_timeout_seconds=wk.int("job_timeout_seconds", d.job_timeout_seconds, minimum=1),
        abandoned_grace_seconds=wk.int("abandoned_grace_seconds", d.abandoned_grace_seconds, minimum=1),
        maintenance_interval_seconds=wk.int(
            "maintenance_interval_seconds", d.maintenance_interval_seconds, minimum=1
        ),
        delivery_max_attempts=wk.int("delivery_max_attempts", d.delivery_max_attempts, minimum=1),
        delivery_retry_intervals=wk.float_list("delivery_retry_intervals", d.delivery_retry_intervals),
        backoff_base_seconds=wk.float("backoff_base_seconds", d.backoff_base_seconds, minimum=0.0),
        backoff_multiplier=wk.float("backoff_multiplier", d.backoff_multiplier, minimum=1.0),
        backoff_cap_seconds=wk.float("backoff_cap_seconds", d.backoff_cap_seconds, minimum=0.0),
        backoff_jitter=jitter,
        worker_class=worker_class,
        concurrency=check_concurrency(
            wk.int("concurrency", 1 if worker_class == "fork" else d.concurrency, minimum=1),
            worker_class, wk.key("concurrency")),
        metrics_port=wk.int("metrics_port", None, minimum=1) if "metrics_port" in wk.data else None,
    )

    dl = r.table("dead_letters")
    dl.only("retention_days")
    dead_letters = DeadLetterConfig(retention_days=dl.int("retention_days", 30, minimum=0))

    sources: dict[str, SourceConfig] = {}
    for s in r.array("sources"):
        src = _source(s)
        if src.name in sources:
            raise ConfigError(f"{s.key('name')}: duplicate source name {src.name!r}")
        sources[src.name] = src

    handlers: dict[str, HandlerConfig] = {}
    for name, h in r.subtables("handlers"):
        handlers[name] = _handler(name, h)

    routes: list[RouteConfig] = []
    for rt in r.array("routes"):
        rt.only("events", "sources", "handlers")
        events = rt.str_list("events", required=True)
        for i, p in enumerate(events):
            if not _PATTERN_RE.match(p) or ("*" in p and p != "*" and not p.endswith(".*")):
                raise ConfigError(f"{rt.key('events')}[{i}]: bad pattern {p!r} (use 'call.*', '*' or a type)")
        route_sources = rt.str_list("sources")
        for i, s_name in enumerate(route_sources):
            if s_name not in sources:
                raise ConfigError(f"{rt.key('sources')}[{i}]: unknown source {s_name!r}")
        route_handlers = rt.str_list("handlers", required=True)
        for i, h_name in enumerate(route_handlers):
            if h_name not in handlers:
                raise ConfigError(f"{rt.key('handlers')}[{i}]: unknown handler {h_name!r}")
        routes.append(RouteConfig(tuple(events), tuple(route_handlers), tuple(route_sources)))

    return Config(
        redis=redis,
        ingest=ingest,
        worker=worker,
        dead_letters=dead_letters,
        sources=sources,
        handlers=handlers,
        routes=tuple(routes),
        path=path,
    )


SOURCE_KEYS = ("name", "provider", "secrets", "token", "allow_ips", "tolerance_seconds", "insecure", "methods")


def check_concurrency(value: int, worker_class: str, key: str) -> int:
    """`[worker] concurrency` or `--concurrency` (named by `key`), checked against the worker class."""
    if value > MAX_CONCURRENCY:
        raise ConfigError(f"{key}: must be at most {MAX_CONCURRENCY}, got {value} (run more worker processes instead)")
    if worker_class == "fork" and value > 1:
        raise ConfigError(
            f"{key}: the fork worker runs one job at a time (a work horse per job); use worker_class = \"simple\" "
            f"to run {value} jobs at once in threads, or start more fork worker processes"
        )
    return value


def _source(s: _Reader) -> SourceConfig:
    from hooklane.shared.providers import PROVIDERS  # the registry; imported late to keep config importable alone
    from hooklane.shared.providers.base import OptionError

    name = s.name("name", None)
    provider_name = s.str("provider", None)
    if provider_name not in PROVIDERS:
        raise ConfigError(f"{s.key('provider')}: unknown provider {provider_name!r} (known: {', '.join(PROVIDERS)})")
    provider = PROVIDERS[provider_name]
    s.only(*SOURCE_KEYS, *provider.option_keys)
    options = None
    if provider.options is not None:
        try:
            options = provider.options(s.data)
        except OptionError as exc:
            raise ConfigError(f"{s.key(exc.key)}: {exc.message}") from None
    delivery_id_headers, forward_headers = provider.source_headers(options)
    secrets = tuple(s.secret_list("secrets"))
    tokens = tuple(s.secret_list("token"))
    allow_ips = []
    for i, cidr in enumerate(s.str_list("allow_ips")):
        try:
            allow_ips.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError(f"{s.key('allow_ips')}[{i}]: not an IP address or CIDR: {cidr!r}") from None
    insecure = s.bool("insecure", False)
    methods = tuple(m.upper() for m in s.str_list("methods"))
    for i, m in enumerate(methods):
        if m not in provider.methods:
            raise ConfigError(
                f"{s.key('methods')}[{i}]: {provider_name} never sends {m} (it may use {', '.join(provider.methods)})"
            )
    if provider.check_secret is not None:
        for i, secret in enumerate(secrets):
            try:
                provider.check_secret(secret.reveal())
            except ValueError as exc:
                raise ConfigError(f"{s.key('secrets')}[{i}]: {exc}") from None
    if secrets and not provider.signs:
        raise ConfigError(
            f"{s.key('secrets')}: {provider_name} does not sign its webhooks; use token and/or allow_ips"
        )
    if not (secrets or tokens or allow_ips or insecure):
        what = "secrets, token or allow_ips" if provider.signs else "token and/or allow_ips"
        raise ConfigError(
            f"{s.key('name')}: source {name!r} has no authentication; set {what}, "
            "or insecure = true to accept anything that reaches the URL"
        )
    return SourceConfig(
        name=name,
        provider=provider_name,
        secrets=secrets,
        tokens=tokens,
        allow_ips=tuple(allow_ips),
        tolerance_seconds=s.int("tolerance_seconds", 300, minimum=1),
        insecure=insecure,
        methods=methods,
        options=options,
        delivery_id_headers=delivery_id_headers,
        forward_headers=forward_headers,
    )


def _handler(name: str, h: _Reader) -> HandlerConfig:
    if not _NAME_RE.match(name):
        raise ConfigError(f"handlers.{name}: handler names are letters, digits, '_', '.', '-'")
    h.only(
        "type", "url", "timeout_seconds", "connect_timeout_seconds", "max_attempts",
        "target", "outcomes", "secret", "headers", "suppression_key", "concurrency_safe",
    )
    kind = h.str("type", None)
    if kind not in HANDLER_TYPES:
        raise ConfigError(f"{h.key('type')}: must be one of {', '.join(HANDLER_TYPES)}, got {kind!r}")
    url = h.str("url", None) if "url" in h.data else None
    if kind == "http":
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{h.key('url')}: an http handler needs an http:// or https:// url")
    secret_list = h.secret_list("secret")
    if secret_list:
        try:
            from hooklane.shared.providers.standardwebhooks import signing_key  # late, as the registry is

            signing_key(secret_list[0].reveal())
        except ValueError as exc:
            raise ConfigError(f"{h.key('secret')}: {exc} ({secret_list[0].ref})") from None
    target = h.str("target", None) if "target" in h.data else None
    func = None
    if kind == "python":
        if not target:
            raise ConfigError(f"{h.key('target')}: a python handler needs target = \"module:function\"")
        func = _import_target(target, h.key("target"))
    outcomes = tuple(h.str_list("outcomes"))
    if kind == "suppression" and not outcomes:
        raise ConfigError(f"{h.key('outcomes')}: a suppression handler needs the outcomes that suppress")
    if "concurrency_safe" in h.data and kind != "python":
        raise ConfigError(f"{h.key('concurrency_safe')}: only python handlers take it ({kind} handlers are safe)")
    headers = h.data.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{h.key('headers')}: must be a table of strings")
    return HandlerConfig(
        name=name,
        type=kind,
        url=url,
        timeout_seconds=h.float("timeout_seconds", 10.0, minimum=0.001),
        connect_timeout_seconds=h.float("connect_timeout_seconds", 3.05, minimum=0.001),
        max_attempts=h.int("max_attempts", 8, minimum=1),
        target=target,
        outcomes=outcomes,
        secret=secret_list[0] if secret_list else None,
        headers=dict(headers),
        suppression_key=h.name("suppression_key", "suppression"),
        concurrency_safe=h.bool("concurrency_safe", True),
        callable=func,
    )


def _import_target(target: str, key: str) -> Callable[[dict], Any]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}: must look like 'package.module:function', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any error at import time is the target's fault, reported by key
        raise ConfigError(f"{key}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{key}: {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise ConfigError(f"{key}: {target!r} is not callable")
    return obj


class _Reader:
    """Typed accessors over one TOML table that know their own dotted key."""

    def __init__(self, data: Any, prefix: str, env: Mapping[str, str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix or '<root>'}: must be a table")
        self.data = data
        self.prefix = prefix
        self.env = env

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def only(self, *allowed: str) -> None:
        for k in self.data:
            if k not in allowed:
                raise ConfigError(f"{self.key(k)}: unknown key (allowed: {', '.join(allowed)})")

    def table(self, k: str) -> _Reader:
        return _Reader(self.data.get(k, {}), self.key(k), self.env)

    def array(self, k: str) -> list[_Reader]:
        items = self.data.get(k, [])
        if not isinstance(items, list):
            raise ConfigError(f"{self.key(k)}: must be an array of tables ([[{k}]])")
        return [_Reader(item, f"{self.key(k)}[{i}]", self.env) for i, item in enumerate(items)]

    def subtables(self, k: str) -> list[tuple[str, _Reader]]:
        t = self.data.get(k, {})
        if not isinstance(t, dict):
            raise ConfigError(f"{self.key(k)}: must be a table of tables ([{k}.NAME])")
        return [(name, _Reader(v, f"{self.key(k)}.{name}", self.env)) for name, v in t.items()]

    def _get(self, k: str, default: Any) -> Any:
        if k not in self.data:
            if default is None:
                raise ConfigError(f"{self.key(k)}: required")
            return default
        return self.data[k]

    def str(self, k: str, default: str | None) -> str:
        v = self._get(k, default)
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{self.key(k)}: must be a non-empty string")
        return v

    def name(self, k: str, default: str | None) -> str:
        v = self.str(k, default)
        if not _NAME_RE.match(v):
            raise ConfigError(f"{self.key(k)}: {v!r} may only hold letters, digits, '_', '.', '-'")
        return v

    def bool(self, k: str, default: bool) -> bool:
        v = self.data.get(k, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.key(k)}: must be true or false")
        return v

    def int(self, k: str, default: int | None, minimum: int = 0) -> int:
        v = self._get(k, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{self.key(k)}: must be an integer >= {minimum}, got {v!r}")
        return v

    def float(self, k: str, default: float, minimum: float = 0.0) -> float:
        v = self.data.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < minimum:
            raise ConfigError(f"{self.key(k)}: must be a number >= {minimum}, got {v!r}")
        return float(v)

    def float_list(self, k: str, default: tuple[float, ...]) -> tuple[float, ...]:
        v = self.data.get(k, list(default))
        if (not isinstance(v, list) or not v
                or not all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in v)):
            raise ConfigError(f"{self.key(k)}: must be a non-empty list of numbers >= 0")
        return tuple(float(x) for x in v)

    def str_list(self, k: str, required: bool = False) -> list[str]:
        if k not in self.data:
            if required:
                raise ConfigError(f"{self.key(k)}: required")
            return []
        v = self.data[k]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"{self.key(k)}: must be a list of non-empty strings")
        if required and not v:
            raise ConfigError(f"{self.key(k)}: must not be empty")
        return v

    def secret_list(self, k: str) -> list[Secret]:
        out = []
        raw = self.data.get(k, [])
        many = isinstance(raw, list)
        for i, ref in enumerate(self.str_list(k)):
            where = f"{self.key(k)}[{i}]" if many else self.key(k)
            if not ref.startswith("env:") or len(ref) <= 4:
                raise ConfigError(f"{where}: secrets must be referenced as \"env:NAME\", never written in the file")
            var = ref[4:]
            value = self.env.get(var)
            if not value:
                raise ConfigError(f"{where}: environment variable {var} is not set or empty")
            out.append(Secret(value.encode("utf-8"), ref))
        return out


def describe(config: Config) -> str:
    """A human summary of what the config sets up; secrets shown only by reference."""
    lines = [f"config: {config.path}",
             f"redis: {safe_url(config.redis.url, keep_query=True)} (prefix {config.redis.prefix})",
             f"ingest: max_body_bytes={config.ingest.max_body_bytes} trusted_proxies={config.ingest.trusted_proxies}",
             f"worker: class={config.worker.worker_class} concurrency={config.worker.concurrency} "
             f"dedupe_window={config.worker.dedupe_window_seconds}s "
             f"job_timeout={config.worker.job_timeout_seconds}s",
             f"dead letters: retention={config.dead_letters.retention_days or 'forever'} days",
             f"sources ({len(config.sources)}):"]
    for s in config.sources.values():
        auth = []
        if s.secrets:
            auth.append(f"signature ({len(s.secrets)} secret{'s' if len(s.secrets) > 1 else ''}: "
                        f"{', '.join(x.ref for x in s.secrets)}; tolerance {s.tolerance_seconds}s)")
        if s.tokens:
            auth.append(f"URL token ({', '.join(x.ref for x in s.tokens)})")
        if s.allow_ips:
            auth.append(f"IPs {', '.join(str(n) for n in s.allow_ips)}")
        if s.insecure:
            auth.append("INSECURE: no authentication")
        if s.options is not None and hasattr(s.options, "describe"):
            auth.append(s.options.describe())  # the provider's own settings (twilio's URL, an HMAC scheme)
        lines.append(f"  /webhooks/{s.name}  provider={s.provider}  auth: {'; '.join(auth)}")
    lines.append(f"handlers ({len(config.handlers)}):")
    for h in config.handlers.values():
        extra = _describe_handler(h)
        lines.append(f"  {h.name}: {h.type} {extra}".rstrip())
    lines.append(f"routes ({len(config.routes)}):")
    for r in config.routes:
        lines.append(f"  {','.join(r.events)} from {','.join(r.sources) or 'any source'} -> {', '.join(r.handlers)}")
    return "\n".join(lines)


def _describe_handler(h: HandlerConfig) -> str:
    if h.type == "http":
        return f"url={safe_url(h.url or '')} max_attempts={h.max_attempts} signed={'yes' if h.secret else 'no'}"
    if h.type == "python":
        return f"target={h.target} max_attempts={h.max_attempts}"
    if h.type == "suppression":
        return f"outcomes={','.join(h.outcomes)} list={h.suppression_key}"
    return ""
