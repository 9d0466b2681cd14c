"""Ingest over HTTP for retell, telnyx and standardwebhooks sources: 200 with the exact bytes queued, and the
inputs their SDKs raise on answered 401 with a reason, never 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from conftest import TELNYX_SIGNING_KEY, TEST_ENV
from test_ingest_fuzz import MORE_SOURCES, QUEUE

from hooklane.ingest.app import create_app
from hooklane.operators import sending
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery
from hooklane.workers.jobs import normalize

NOW = 1_750_000_000
CONFIG = "[redis]\nurl = \"redis://127.0.0.1:6379/15\"\n" + MORE_SOURCES
SIGNING = {"rt": ("retell", TEST_ENV["RETELL_API_KEY"].encode()), "tx": ("telnyx", TELNYX_SIGNING_KEY),
           "sw": ("standardwebhooks", TEST_ENV["SW_SECRET"].encode())}


@pytest.fixture
def app(make_config: Callable[..., Config]) -> tuple[Any, fakeredis.FakeRedis]:
    conn = fakeredis.FakeRedis()
    return create_app(make_config(CONFIG), conn, clock=lambda: NOW).test_client(), conn


def queued(conn: fakeredis.FakeRedis) -> list[Delivery]:
    return [Delivery.from_dict(json.loads(conn.hget(f"rq:job:{job.decode()}", "data"))[2][0])
            for job in conn.lrange(QUEUE, 0, -1)]


@pytest.mark.parametrize("source", sorted(SIGNING))
def test_a_signed_sample_is_accepted_and_queued_byte_for_byte(source: str, app: Any) -> None:
    client, conn = app
    provider, secret = SIGNING[source]
    wire = sending.build_delivery(provider, None, seq=0, run="t", secret=secret, timestamp=NOW)
    resp = client.post(f"/webhooks/{source}", data=wire.body, headers=wire.headers)
    assert resp.status_code == 200, resp.get_json()
    (delivery,) = queued(conn)
    assert delivery.body == wire.body
    assert delivery.delivery_id == (wire.headers["webhook-id"] if provider == "standardwebhooks" else None)


@pytest.mark.parametrize(("source", "headers", "reason"), [
    ("sw", {"webhook-signature": "v1 garbage"}, "signature entry is not '<version>,<base64>'"),  # SDK: ValueError
    ("sw", {"webhook-signature": "v1,abc"}, "v1 signature is not base64"),  # SDK: binascii.Error
    ("sw", {"webhook-timestamp": f"{NOW}.9"}, "timestamp is not unix seconds"),  # SDK: accepted
    ("rt", {"x-retell-signature": "v=" + "1" * 5000 + ",d=" + "0" * 64}, "signature is not 'v=<unix ms>,d=<64"),
    ("tx", {"telnyx-signature-ed25519": "%%%"}, "signature is not base64"),
    ("tx", {"telnyx-signature-ed25519": None}, "missing telnyx-signature-ed25519 header"),
])
def test_what_the_sdks_raise_on_is_a_401_with_a_reason(source: str, headers: dict[str, str | None], reason: str,
                                                       app: Any) -> None:
    client, conn = app
    provider, secret = SIGNING[source]
    wire = sending.build_delivery(provider, None, seq=0, run="t", secret=secret, timestamp=NOW)
    sent = {k.lower(): v for k, v in wire.headers.items()}
    sent.update(headers)
    resp = client.post(f"/webhooks/{source}", data=wire.body, headers={k: v for k, v in sent.items() if v is not None})
    assert resp.status_code == 401
    assert resp.get_json()["reason"].startswith(reason)
    assert queued(conn) == []


@pytest.mark.parametrize("spelling", ["webhook-", "svix-"])
def test_a_standard_webhooks_message_reaches_the_worker_identified_by_its_signed_id(spelling: str, app: Any) -> None:
    client, conn = app
    provider, secret = SIGNING["sw"]
    first = sending.build_delivery(provider, None, seq=0, run="t", secret=secret, timestamp=NOW, delivery_id="msg_1")
    # Another message with the same bytes: a different event, though a body hash could not tell them apart.
    second = sending.build_delivery(provider, None, body=first.body, secret=secret, timestamp=NOW,
                                    delivery_id="msg_2")
    for wire in (first, first, second):  # the first message, its retry, the second message
        sent = {k.lower().replace("webhook-", spelling): v for k, v in wire.headers.items()}
        assert client.post("/webhooks/sw", data=wire.body, headers=sent).status_code == 200
    deliveries = queued(conn)
    assert [delivery.delivery_id for delivery in deliveries] == ["msg_1", "msg_1", "msg_2"]
    assert [normalize(delivery).id for delivery in deliveries] == ["sw:msg_1", "sw:msg_1", "sw:msg_2"]
