"""Hostile HTTP requests, generated, sent as raw bytes: what an attacker or a broken client puts on the wire.

Every request starts from a genuine, signed delivery and breaks one thing: the chunked framing, a header,
the signature headers, the body. Signed bodies that are valid HTTP but poison for a normalizer are real
deliveries (ingest may accept them), so they are built through the Ledger and accounted like any other.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from faults.ledger import Ledger, Sent
from hooklane.operators import sending

# Size lines a chunked body must never be answered 500 for (issue 9, item 5), and their neighbours.
BAD_SIZE_LINES = [b"zz", b"-5", b"3 4", b"", b"ffffffffffffffff", b"0x5", b"+5", b" 5", b"5 ", b"5;\x00",
                  b"1" * 40, b"\xff", b"5;" + b"e" * 5000]
BAD_FRAMINGS = {
    "bad-terminator": b"5\r\nhelloXX0\r\n\r\n",
    "bad-trailer": b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n",
    "nul-trailer": b"5\r\nhello\r\n0\r\nX-T: \x00\r\n\r\n",
    "eof-mid-chunk": b"10\r\nabc",
    "eof-before-last-chunk": b"5\r\nhello\r\n",
    "eof-after-last-chunk": b"0\r\n",
    "huge-chunk-then-eof": b"fffffff\r\nabc",
    "lf-only": b"5\nhello\n0\n\n",
}
BAD_TRANSFER_ENCODINGS = [b"chunked, chunked", b"gzip", b"xchunked", b"chunked\x00", b"\tchunked", b"identity"]
BAD_CONTENT_LENGTHS = [b"-1", b"abc", b"1e3", b"99999999999999999999", b"5, 6", b" ", b"0x10", b"\xd9\xa1"]
BAD_SIGNATURES = [b"", b"sha256=", b"sha256=zz", b"sha256=" + b"0" * 63, b"md5=abc", b"sha256=\xef\xbd\x86",
                  b"sha256=" + b"a" * 8000, b"sha256=" + b"0" * 64 + b",sha256=", b"\x00"]
BAD_TIMESTAMPS = [b"", b"abc", b"-1", b"1e400", b"9" * 400, "١٧٠٠٠٠٠٠٠٠".encode(), b"nan", b"inf", b"0x10",
                  b" 12 "]
# Valid call ids (well under any id length limit) that no HTTP header can carry as they are.
NON_ASCII_IDS = ["日本-1", "📞-2", "a\r\nb-3", "é" * 100, "\u202eevil-5"]
NON_ASCII_CASE = "voicekit-non-ascii-id-"
BAD_HEADER_LINES = {
    "no-colon": b"X-Broken-Header-Line",
    "space-before-colon": b"X-Webhook-Signature : sha256=00",
    "obs-fold": b"X-A: a\r\n folded",
    "nul-value": b"X-A: a\x00b",
    "cr-value": b"X-A: a\rb",
    "non-ascii-value": b"X-A: \xff\xfe",
    "utf8-name": "X-Ünïcode: 1".encode(),
    "huge-value": b"X-A: " + b"v" * 70000,
    "huge-name": b"X-" + b"N" * 10000 + b": 1",
    "empty-name": b": empty",
}


@dataclass
class Hostile:
    name: str
    raw: bytes
    item: Sent | None = None  # a signed delivery that ingest may accept: accounted through the ledger


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an HTTP answer
    body: bytes
    seconds: float


def request_bytes(path: str, headers: dict[str, str] | list[tuple[bytes, bytes]], body: bytes = b"", *,
                  method: bytes = b"POST", version: bytes = b"HTTP/1.1", raw_headers: bytes = b"",
                  content_length: bool = True) -> bytes:
    pairs = [(k.encode(), v.encode()) for k, v in headers.items()] if isinstance(headers, dict) else headers
    lines = [method + b" " + path.encode("latin-1") + b" " + version, b"Host: 127.0.0.1"]
    lines += [k + b": " + v for k, v in pairs if k.lower() != b"content-length"]
    if content_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if raw_headers:
        lines.append(raw_headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(port: int, raw: bytes, timeout: float = 10) -> Answer:
    """Send `raw`, close our side (a truncated body ends in EOF), read the answer until the server closes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before reading everything: its answer is still there
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return Answer(parse_status(data), data.partition(b"\r\n\r\n")[2], time.monotonic() - started)


def parse_status(data: bytes) -> int | None:
    parts = data.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    return int(parts[1])


def generate(ledger: Ledger) -> Iterator[Hostile]:
    """A few hundred hostile requests against every signing provider, each a variation of a real delivery.

    Each garbler gets a genuine delivery of its own to break; a variant the server reads as harmless
    (an unknown header, say) may be accepted, so that delivery is in the ledger and accounted.
    """
    garblers = [(source, g) for source in ("volumereach", "voxpria", "volubile")
                for g in (_framing, _headers, _signatures)]
    garblers += [("voipbin", _tokens), ("voicekit", _tokens)]
    for source, garble in garblers:
        base = ledger.new(source, must_accept=False)
        path = sending.with_suffix(f"/webhooks/{source}", base.wire.url_suffix)
        for case in garble(source, path, base.wire):
            yield Hostile(case.name, case.raw, case.item or base)
    yield from _framed_genuine(ledger)
    yield from _bodies(ledger)


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def _pairs(headers: dict[str, str], *, without: str = "") -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in headers.items() if k.lower() != without]


def _framing(source: str, path: str, wire: sending.WireDelivery) -> Iterator[Hostile]:
    te = [*_pairs(wire.headers), (b"Transfer-Encoding", b"chunked")]
    for i, size in enumerate(BAD_SIZE_LINES):
        for tail in (b"\r\nhello\r\n0\r\n\r\n", b"\r\n"):
            yield Hostile(f"{source}-size-line-{i}-{size[:12]!r}-{len(tail)}", request_bytes(
                path, te, size + tail, content_length=False))
    for name, body in BAD_FRAMINGS.items():
        yield Hostile(f"{source}-{name}", request_bytes(path, te, body, content_length=False))
    for value in BAD_TRANSFER_ENCODINGS:
        yield Hostile(f"{source}-te-{value!r}", request_bytes(
            path, [*te[:-1], (b"Transfer-Encoding", value)], _chunked(wire.body), content_length=False))
    yield Hostile(f"{source}-te-and-cl", request_bytes(
        path, [*te, (b"Content-Length", b"5")], _chunked(wire.body), content_length=False))
    for value in BAD_CONTENT_LENGTHS:
        yield Hostile(f"{source}-cl-{value!r}", request_bytes(
            path, wire.headers, wire.body, content_length=False, raw_headers=b"Content-Length: " + value))
    yield Hostile(f"{source}-cl-longer-than-body", request_bytes(
        path, wire.headers, wire.body, content_length=False,
        raw_headers=b"Content-Length: %d" % (len(wire.body) + 50)))


def _headers(source: str, path: str, wire: sending.WireDelivery) -> Iterator[Hostile]:
    for name, line in BAD_HEADER_LINES.items():
        yield Hostile(f"{source}-header-{name}", request_bytes(path, wire.headers, wire.body, raw_headers=line))
    yield Hostile(f"{source}-200-headers", request_bytes(
        path, wire.headers, wire.body, raw_headers=b"\r\n".join(b"X-H%d: %s" % (i, b"v" * 100) for i in range(200))))
    for name, (method, target, version) in {
        "garbage-request-line": (b"GARBAGE", "", b""),
        "http-9": (b"POST", path, b"HTTP/9.9"),
        "no-version": (b"POST", path, b""),
        "nul-method": (b"P\x00ST", path, b"HTTP/1.1"),
        "long-url": (b"POST", path + "?x=" + "a" * 20000, b"HTTP/1.1"),
        "nul-in-path": (b"POST", path.replace("/webhooks/", "/webhooks/%00"), b"HTTP/1.1"),
        "bad-utf8-path": (b"POST", "/webhooks/%ff%fe", b"HTTP/1.1"),
        "absolute-uri": (b"POST", "http://evil.example" + path, b"HTTP/1.1"),
        "double-slash": (b"POST", "//webhooks//" + source, b"HTTP/1.1"),
    }.items():
        yield Hostile(f"{source}-{name}", request_bytes(target, wire.headers, wire.body, method=method,
                                                        version=version))
    yield Hostile(f"{source}-http10-no-headers", b"POST " + path.encode() + b" HTTP/1.0\r\n\r\n")
    yield Hostile(f"{source}-only-crlf", b"\r\n\r\n\r\n")
    yield Hostile(f"{source}-binary-noise", bytes(range(256)) * 4)


def _signatures(source: str, path: str, wire: sending.WireDelivery) -> Iterator[Hostile]:
    names = {k.lower(): k for k in wire.headers}
    signature = next(k for k in names if "signature" in k)
    for i, value in enumerate(BAD_SIGNATURES):
        yield Hostile(f"{source}-signature-{i}", request_bytes(
            path, [*_pairs(wire.headers, without=signature), (names[signature].encode(), value)], wire.body))
    timestamp = next((k for k in names if "timestamp" in k), None)
    for i, value in enumerate(BAD_TIMESTAMPS if timestamp else []):
        yield Hostile(f"{source}-timestamp-{i}", request_bytes(
            path, [*_pairs(wire.headers, without=timestamp), (names[timestamp].encode(), value)], wire.body))


def _tokens(source: str, path: str, wire: sending.WireDelivery) -> Iterator[Hostile]:
    for i, suffix in enumerate(["?token=%ff%fe", "?token=", "/%00", "/" + "t" * 5000, "?token=a&token=b",
                                "/%E2%80%AE", "?token=" + "%" * 3]):
        yield Hostile(f"{source}-token-{i}", request_bytes(f"/webhooks/{source}{suffix}", wire.headers, wire.body))


def _framed_genuine(ledger: Ledger) -> Iterator[Hostile]:
    """Genuine signed deliveries sent chunked: the framing must not matter to acceptance."""
    for source in ("volumereach", "voxpria", "volubile"):
        item = ledger.new(source)
        path = sending.with_suffix(f"/webhooks/{source}", item.wire.url_suffix)
        headers = [*_pairs(item.wire.headers), (b"Transfer-Encoding", b"chunked")]
        yield Hostile(f"{source}-valid-chunked", request_bytes(path, headers, _chunked(item.wire.body),
                                                               content_length=False), item)


def _deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def _bodies(ledger: Ledger) -> Iterator[Hostile]:
    limit = ledger.p.config.ingest.max_body_bytes
    poison = {
        "deep-1000": _deep(1000),
        "deep-50000": _deep(50000),
        "non-utf8": b'{"event":"call.completed","data":{"id":"\xff\xfe"}}',
        "lone-surrogate-id": b'{"event":"call.completed","data":{"id":"\\ud800"}}',
        "overflow-number": b'{"event":"call.completed","data":{"id":"n-1","x":1e400}}',
        "overflow-id": b'{"event":"call.completed","data":{"id":-1e400}}',
        "nan": b'{"event":"call.completed","data":{"id":"n-2","x":NaN}}',
        "truncated": b'{"event":"call.completed","data":{"id":"n-3"',
        "empty-object": b"{}",
        "too-large": b"{" + b" " * limit + b"}",
        "deep-500000": _deep(500000),
    }
    path = "/webhooks/volumereach"
    for name, body in poison.items():
        item = ledger.new("volumereach", poison=True, body=body)
        yield Hostile(f"signed-{name}", _raw(item), item)
        yield Hostile(f"unsigned-{name}", request_bytes(path, {"Content-Type": "application/json"}, body))
        yield Hostile(f"unsigned-chunked-{name}", request_bytes(
            path, [(b"Transfer-Encoding", b"chunked")], _chunked(body), content_length=False))
    # Valid events whose ids are not ASCII (issue 9, item 6): they must reach the sink, like any event.
    for i, call_id in enumerate(NON_ASCII_IDS):
        payload = {"event": "call_started", "data": {"call_id": f"{call_id}-{ledger.run}-{i}"}}
        item = ledger.new("voicekit", payload=payload)
        yield Hostile(f"{NON_ASCII_CASE}{i}", _raw(item), item)


def _raw(item: Sent) -> bytes:
    path = sending.with_suffix(f"/webhooks/{item.source}", item.wire.url_suffix)
    return request_bytes(path, item.wire.headers, item.wire.body)


def record(item: Sent, answer: Answer, at: float) -> None:
    """An answer to a ledger delivery sent raw, recorded as Ledger.post records its own."""
    status = answer.status if answer.status is not None else "closed"
    if answer.status is not None and 200 <= answer.status < 300:
        item.accepted_id = json.loads(answer.body)["id"]
        item.acked_at = at + answer.seconds
    item.attempts.append((at, status))
