"""The ingest WSGI app: authenticate, enqueue the raw delivery, answer.

Per request: look up the source, check method and size, authenticate over the
raw bytes, then one atomic Redis command (shared.queueing.DeliveryEnqueuer), one log
line, and the answer. No JSON parsing beyond a first-byte sanity check, no
handler code, no outbound calls: everything else happens in the workers.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import redis
from flask import Flask, Response, g, request
from gunicorn.http.errors import (
    ChunkMissingTerminator,
    InvalidChunkExtension,
    InvalidChunkSize,
    NoMoreData,
    ParseException,
)
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.routing import Rule
from werkzeug.wsgi import get_content_length

from hooklane.ingest import http_metrics
from hooklane.ingest.auth import authenticate, client_ip
from hooklane.shared import logs
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery, log_delivery_id, utc_now_iso
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import Request, VerificationError
from hooklane.shared.queueing import DeliveryEnqueuer
from hooklane.shared.redaction import Redactor
from hooklane.shared.redisconn import connect

log = logs.get_logger("hooklane.ingest")

_HERE = os.path.dirname(os.path.abspath(__file__))
_JSON = "application/json"
_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # built once, not per answer


def _answer(status: int, reason: str, **extra: Any) -> Response:
    body = {"status": "accepted" if status < 300 else "refused", "reason": reason, **extra}
    return Response(_compact_json(body), status=status, mimetype=_JSON)


class _EnvironHeaders(Mapping[str, str]):
    """The request headers by lower-case name, read from the WSGI environ on demand.

    The verifiers look up two or three headers; copying all of them into a dict per
    request (werkzeug's EnvironHeaders, lower-cased) cost more than the HMAC.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        return self._environ[_environ_key(name)]

    def get(self, name: str, default: Any = None) -> Any:  # the hot path: no KeyError round trip
        return self._environ.get(_environ_key(name), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _environ_key(name) in self._environ

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].lower().replace("_", "-")
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.lower().replace("_", "-")

    def __len__(self) -> int:
        return sum(1 for _ in self)


@functools.lru_cache(maxsize=256)
def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def _request_view(req: Any) -> Request:
    # QUERY_STRING is the raw query as latin-1 text (PEP 3333): back to bytes, then UTF-8 as signed.
    query = req.environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8", "surrogateescape")
    return Request(method=req.method, url=req.base_url, query=query)


class BodyError(Exception):
    """The request body cannot be read as framed (400): the client's mistake, reported with its reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# gunicorn decodes a chunked body while the app reads it, so its framing errors surface here.
_CHUNKED_ERRORS: dict[type[Exception], str] = {
    InvalidChunkSize: "malformed chunked body: invalid chunk size",
    ChunkMissingTerminator: "malformed chunked body: chunk data not followed by CRLF",
    InvalidChunkExtension: "malformed chunked body: invalid chunk extension",
    NoMoreData: "incomplete body: the input ended before the last chunk",
}


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The raw body, or RequestEntityTooLarge (413) past `limit` bytes, with or without Content-Length.

    Read from wsgi.input directly: werkzeug's wrapper streams cost more than the HMAC,
    and enforce MAX_CONTENT_LENGTH on a chunked body (no Content-Length) by silently
    truncating it at the limit, so a truncated body would be queued as if it were the
    delivery. Reading one byte past the limit tells the two apart. A body whose framing
    is broken raises BodyError (400).
    """
    length = get_content_length(environ)  # None for chunked or absent
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        want = length
    elif environ.get("wsgi.input_terminated"):
        want = limit + 1
    else:
        return b""  # a server that does not frame chunked bodies: nothing can be read safely
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    remaining = want
    try:
        while remaining > 0:
            chunk = stream.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except (NoMoreData, ParseException) as exc:  # the rest (trailers) are header errors
        raise BodyError(_CHUNKED_ERRORS.get(type(exc), "malformed chunked body: invalid trailer")) from None
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if length is None:
        if len(body) > limit:
            raise RequestEntityTooLarge()
    elif len(body) < length:
        raise ClientDisconnected()  # 400: the client promised more than it sent
    return body


def create_app(
    config: Config,
    redis_client: redis.Redis | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> Flask:
    # Paths given: Flask's own lookup fails for a namespace package (hooklane.*) under an editable install.
    app = Flask("hooklane.ingest", root_path=_HERE, instance_path=_HERE)
    app.config["MAX_CONTENT_LENGTH"] = config.ingest.max_body_bytes
    # werkzeug would answer /webhooks//x with an HTML 308 to /webhooks/x; a webhook sender wants a plain 404.
    app.url_map.merge_slashes = False
    conn = redis_client if redis_client is not None else connect(config.redis.url, socket_timeout=2.0,
                                                                 single_connection=True)
    enqueue = DeliveryEnqueuer(config)
    # Ingest never logs a secret itself (tested), but a library's free text might (a werkzeug or redis
    # error quoting a URL): mask the configured values in every line, as the workers do.
    logs.add_secret_values(Redactor.from_config(config).values)
    app.extensions["hooklane"] = {"config": config, "redis": conn}
    retry_after = str(config.ingest.retry_after_seconds)
    max_body = config.ingest.max_body_bytes
    # Labelled children resolved once: `.labels()` costs a lock and a dict lookup per call.
    accepted_metrics = {name: (http_metrics.BODY_BYTES.labels(name), http_metrics.LATENCY.labels(name))
                        for name in config.sources}
    answered: dict[tuple[str, int], Any] = {}

    def webhook(source: str, path_token: str | None = None) -> Response:
        started = time.perf_counter()
        src = config.sources.get(source)
        if src is None:
            return _answer(404, "unknown source")
        provider = PROVIDERS[src.provider]
        g.source = src.name
        allowed = src.methods or provider.methods
        method = request.method
        if method not in allowed:
            resp = _answer(405, f"method {method} not accepted by source {src.name}")
            resp.headers["Allow"] = ", ".join(allowed)
            return resp
        environ = request.environ
        try:
            body = _read_body(environ, max_body)
        except BodyError as exc:
            log.warning("delivery.refused", status=400, reason=exc.reason, source=src.name)
            return _answer(400, exc.reason)
        headers = _EnvironHeaders(environ)
        remote_addr = environ.get("REMOTE_ADDR") or ""
        ip = client_ip(remote_addr, headers.get("x-forwarded-for"), config.ingest.trusted_proxies)
        args = request.args
        token = path_token if path_token is not None else args.get("token")
        delivery_id = None
        for id_header in src.delivery_id_headers:
            if (delivery_id := headers.get(id_header)) is not None:
                break
        logs.bind(source=src.name, provider=provider.name)
        try:
            authenticate(src, provider, body=body, headers=headers, token=token, ip=ip, now=clock,
                         request=_request_view(request) if provider.takes_context else None)
        except VerificationError as exc:
            http_metrics.VERIFICATION_FAILURES.labels(src.name, exc.reason).inc()
            log.warning("delivery.refused", status=exc.status, reason=exc.reason, client_ip=ip,
                        bytes=len(body), delivery_id=delivery_id)
            return _answer(exc.status, exc.reason)
        reason = provider.check_body(body, method)
        if reason is not None:
            log.warning("delivery.refused", status=400, reason=reason, bytes=len(body), delivery_id=delivery_id)
            return _answer(400, reason)

        delivery = Delivery(
            id=uuid.uuid4().hex,
            source=src.name,
            provider=provider.name,
            received_at=utc_now_iso(),
            body=body,
            method=method,
            path=f"/webhooks/{src.name}" + ("/***" if path_token is not None else ""),
            query={k: v for k, v in args.items() if k != "token"} if args else {},
            headers={k: v for k in (*src.forward_headers, "content-type", "user-agent")
                     if (v := headers.get(k)) is not None},
            remote_addr=remote_addr,
            client_ip=ip,
            delivery_id=delivery_id,
        )
        logs.bind(request_id=delivery.id, delivery_id=log_delivery_id(delivery_id, body))
        try:
            enqueue(conn, delivery)
        except redis.RedisError as exc:
            log.error("delivery.unavailable", status=503, error=type(exc).__name__, bytes=len(body))
            resp = _answer(503, "queue unavailable, retry later")
            resp.headers["Retry-After"] = retry_after
            return resp
        latency_ms = (time.perf_counter() - started) * 1000
        log.info("delivery.accepted", status=200, bytes=len(body), latency_ms=round(latency_ms, 3))
        body_bytes, latency = accepted_metrics[src.name]
        body_bytes.observe(len(body))
        latency.observe(latency_ms / 1000)
        return _answer(200, "queued", id=delivery.id)

    # Rules without a method list match every method (TRACE, PROPFIND, ...), so the view answers 404 for an
    # unknown source and 405 with the source's own Allow, instead of werkzeug's list of the rule's methods.
    app.url_map.add(Rule("/webhooks/<source>", endpoint="webhook"))
    app.url_map.add(Rule("/webhooks/<source>/<path_token>", endpoint="webhook"))
    app.view_functions["webhook"] = webhook

    # No automatic OPTIONS: its empty text/html 200 would be the one non-JSON answer.
    @app.get("/healthz", provide_automatic_options=False)
    def healthz() -> Response:
        return _answer(200, "alive")

    @app.get("/readyz", provide_automatic_options=False)
    def readyz() -> Response:
        try:
            conn.ping()
        except redis.RedisError as exc:
            resp = _answer(503, f"redis unavailable: {type(exc).__name__}")
            resp.headers["Retry-After"] = retry_after
            return resp
        return _answer(200, "ready")

    @app.get("/metrics", provide_automatic_options=False)
    def metrics_view() -> Response:
        data, content_type = http_metrics.render(conn, config, request.headers.get("Accept", ""))
        return Response(data, content_type=content_type)  # as given: `mimetype=` would append a second charset

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        resp = _answer(exc.code or 400, (exc.name or "bad request").lower())
        if exc.code == 405 and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # A bug, never a client's doing: log it whole, answer without details.
        log.exception("ingest.unexpected_error")
        return _answer(500, "internal error")

    @app.after_request
    def observe(resp: Response) -> Response:
        source = getattr(g, "source", None)
        if source is not None:
            key = (source, resp.status_code)
            counter = answered.get(key)
            if counter is None:
                counter = answered[key] = http_metrics.DELIVERIES.labels(source, str(resp.status_code))
            counter.inc()
        return resp

    app.wsgi_app = logs.context_per_request(app.wsgi_app)  # type: ignore[method-assign]
    return app
