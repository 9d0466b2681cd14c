"""The admin API on the ingest app: dead letters and stats over HTTP, for operators' own tooling.

    GET    /admin/dead-letters                 filters + limit/offset, newest first
    GET    /admin/dead-letters/<id>            the entry in full, secrets redacted
    POST   /admin/dead-letters/<id>/replay     {"dry_run": true} optional
    POST   /admin/dead-letters/replay          {"all": true} and/or filters, "dry_run", "limit"
    DELETE /admin/dead-letters/<id>
    GET    /admin/stats

Every route needs ``Authorization: Bearer $HOOKLANE_ADMIN_TOKEN``. The token is
read once, when the app is created; without one the routes are not registered
at all, so an instance nobody configured for administration exposes nothing
(404). Filters mean exactly what they mean in `hooklane dlq` (operators.actions).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

import redis as redis_lib
from flask import Blueprint, Flask, Response, request

from hooklane.operators.actions import (
    FILTER_FIELDS,
    NOT_FOUND,
    WOULD_REPLAY,
    OperatorError,
    collect_stats,
    entry_row,
    has_filters,
    matching_ids,
    parse_filters,
    present_entry,
    redactor_for,
    replay_many,
    replay_one,
)
from hooklane.shared import deadletters, logs
from hooklane.shared.config import Config

log = logs.get_logger("hooklane.admin")

TOKEN_ENV = "HOOKLANE_ADMIN_TOKEN"
DEFAULT_PAGE = 50
MAX_PAGE = 1000


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False), status=status,
                    mimetype="application/json")


def _refused(status: int, reason: str) -> Response:
    # The same shape as ingest's own refusals, so a client reads every error one way.
    return _json(status, {"status": "refused", "reason": reason})


def register_admin(app: Flask, config: Config, conn: redis_lib.Redis, *, token: str | None = None) -> bool:
    """Add the admin routes when a token is configured; True if they were added."""
    token = os.environ.get(TOKEN_ENV, "") if token is None else token
    token = token.strip()
    if not token:
        return False
    if len(token) < 16:
        log.warning("admin.weak_token", hint=f"{TOKEN_ENV} is shorter than 16 characters")
    app.register_blueprint(admin_blueprint(config, conn, hashlib.sha256(token.encode("utf-8")).digest()))
    return True


def admin_blueprint(config: Config, conn: redis_lib.Redis, token_sha256: bytes) -> Blueprint:
    bp = Blueprint("hooklane_admin", __name__, url_prefix="/admin")
    redactor = redactor_for(config)

    @bp.before_request
    def authenticate() -> Response | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return _unauthorized("missing bearer token", invalid=False)
        # Digests of equal length, compared in constant time: the timing says nothing about how much
        # of the token, or what length of it, matched. latin-1 gives back the header's bytes as sent.
        digest = hashlib.sha256(given.encode("latin-1", "replace")).digest()
        if not hmac.compare_digest(digest, token_sha256):
            log.warning("admin.refused", reason="invalid token", client_ip=request.remote_addr,
                        path=request.path, method=request.method)
            return _unauthorized("invalid bearer token", invalid=True)
        return None

    @bp.errorhandler(OperatorError)
    def bad_input(exc: OperatorError) -> Response:
        return _refused(400, str(exc))

    @bp.errorhandler(redis_lib.RedisError)
    def redis_down(exc: redis_lib.RedisError) -> Response:
        log.error("admin.redis_unavailable", error=type(exc).__name__)
        resp = _refused(503, "redis unavailable, retry later")
        resp.headers["Retry-After"] = str(config.ingest.retry_after_seconds)
        return resp

    @bp.get("/dead-letters")
    def list_dead_letters() -> Response:
        args = request.args
        unknown = sorted(set(args) - {*FILTER_FIELDS, "limit", "offset"})
        if unknown:
            # A typo ("hander=crm") must not silently list everything.
            raise OperatorError(f"unknown parameter(s): {', '.join(unknown)} "
                                f"(filters: {', '.join(FILTER_FIELDS)}; paging: limit, offset)")
        filters = parse_filters({k: args[k] for k in FILTER_FIELDS if k in args})
        limit = _int_param(args.get("limit"), "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        offset = _int_param(args.get("offset"), "offset", 0, 0, None)
        # One extra row tells whether a next page exists without counting every match.
        page = deadletters.list_entries(conn, config, filters, limit=limit + 1, offset=offset)
        more = len(page) > limit
        page = page[:limit]
        return _json(200, {
            "entries": [entry_row(e) for e in page],
            "count": len(page),
            "limit": limit,
            "offset": offset,
            "next_offset": offset + len(page) if more else None,
        })

    @bp.get("/dead-letters/<entry_id>")
    def show_dead_letter(entry_id: str) -> Response:
        entry = deadletters.get(conn, config, entry_id)
        if entry is None:
            return _refused(404, "no such dead letter (replayed, purged or expired?)")
        return _json(200, present_entry(entry, redactor))

    @bp.post("/dead-letters/<entry_id>/replay")
    def replay_dead_letter(entry_id: str) -> Response:
        body = _body(required=False)
        _only(body, ("dry_run",))
        dry_run = _bool(body, "dry_run")
        result = replay_one(conn, config, entry_id, dry_run=dry_run)
        if result["status"] == NOT_FOUND:
            return _refused(404, result["reason"])
        if result["status"] not in ("replayed", WOULD_REPLAY):
            return _json(409, {"status": "refused", "reason": result["reason"], "result": result})
        log.info("admin.replay", entry_id=entry_id, job_id=result.get("job_id"), dry_run=dry_run,
                 client_ip=request.remote_addr)
        return _json(200, result)

    @bp.post("/dead-letters/replay")
    def replay_bulk() -> Response:
        body = _body(required=True)
        _only(body, (*FILTER_FIELDS, "all", "dry_run", "limit"))
        replay_all = _bool(body, "all")
        dry_run = _bool(body, "dry_run")
        limit = _int_param(body.get("limit"), "limit", None, 1, None)
        filters = parse_filters(body)
        if not (replay_all or has_filters(filters)):
            raise OperatorError('give at least one filter, or "all": true to replay every dead letter')
        ids = matching_ids(conn, config, filters, limit=limit)
        result = replay_many(conn, config, ids, dry_run=dry_run)
        log.info("admin.replay_bulk", matched=len(ids), counts=result.counts, dry_run=dry_run,
                 client_ip=request.remote_addr)
        return _json(200, result.to_dict())

    @bp.delete("/dead-letters/<entry_id>")
    def delete_dead_letter(entry_id: str) -> Response:
        if not deadletters.remove(conn, config, entry_id):
            return _refused(404, "no such dead letter (replayed, purged or expired?)")
        log.info("admin.purge", entry_id=entry_id, client_ip=request.remote_addr)
        return _json(200, {"status": "purged", "id": entry_id})

    @bp.get("/stats")
    def stats() -> Response:
        return _json(200, collect_stats(conn, config))

    return bp


def _unauthorized(reason: str, *, invalid: bool) -> Response:
    resp = _refused(401, reason)
    # RFC 6750: name the scheme; say invalid_token only when a token was actually sent.
    resp.headers["WWW-Authenticate"] = 'Bearer realm="hooklane-admin"' + (', error="invalid_token"' if invalid else "")
    return resp


def _body(*, required: bool) -> dict[str, Any]:
    raw = request.get_data(cache=False)
    if not raw.strip():
        if required:
            raise OperatorError("body must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OperatorError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise OperatorError("body must be a JSON object")
    return body


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise OperatorError(f"unknown field(s): {', '.join(unknown)} (allowed: {', '.join(allowed)})")


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise OperatorError(f"{key}: must be true or false")
    return value


def _int_param(value: Any, name: str, default: int | None, minimum: int, maximum: int | None) -> Any:
    if value is None:
        return default
    if isinstance(value, bool):
        raise OperatorError(f"{name}: must be an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise OperatorError(f"{name}: must be an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise OperatorError(f"{name}: must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise OperatorError(f"{name}: must be {bound}, got {value}")
    return value
