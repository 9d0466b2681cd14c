"""shared/redisconn.connect against a real Redis: what every process's connections are set up with."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from hooklane.operators.cli.local_redis import find_redis_server, redis_server_argv
from hooklane.shared.redisconn import KEEPALIVE, connect

LINUX_KEEPALIVE = hasattr(socket, "TCP_KEEPIDLE")


def live_socket(client: Redis) -> socket.socket:
    client.ping()
    pinned = getattr(client, "connection", None)
    conn = pinned if pinned is not None else client.connection_pool.get_connection()
    try:
        assert conn._sock is not None, "the connection is not connected"
        return conn._sock
    finally:
        if pinned is None:
            client.connection_pool.release(conn)


@pytest.mark.parametrize("make", [
    lambda url: connect(url),  # the CLI's and admin's
    lambda url: connect(url, socket_timeout=None, max_connections=8),  # a threaded worker's
    lambda url: connect(url, single_connection=True),  # an ingest worker's
], ids=["pool", "bounded-pool", "single-connection"])
def test_every_tcp_connection_detects_a_silently_vanished_redis_with_keepalive(
    redis_server, make: Callable[[str], Redis],
) -> None:
    # A worker waits without a socket timeout: only TCP keepalive ends a wait on a peer that sent no FIN or RST.
    client = make(redis_server.url)  # held: a collected client closes its connections
    sock = live_socket(client)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    if LINUX_KEEPALIVE:
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert (idle, interval, count) == (30, 10, 3)  # declared dead a minute after it went silent


def test_a_sentinel_url_sets_up_the_primarys_connections_with_keepalive() -> None:
    client = connect("redis+sentinel://127.0.0.1:1/mymaster/0", socket_timeout=None, max_connections=4)
    kwargs = client.connection_pool.connection_kwargs  # made on first use: nothing listens on port 1
    assert kwargs["socket_keepalive"] is True and kwargs["socket_keepalive_options"] == KEEPALIVE[
        "socket_keepalive_options"]


def test_a_unix_socket_url_connects_without_tcp_options(tmp_path: Path) -> None:
    binary = find_redis_server()
    assert binary is not None, "the tests need a redis-server (make test installs one)"
    path = tmp_path / "redis.sock"
    # Port 0: no TCP listener, the unix socket only.
    server = subprocess.Popen([*redis_server_argv(binary, 0, tmp_path), "--unixsocket", str(path)],
                              stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        client = connect(f"unix://{path}", socket_timeout=None, max_connections=4)
        assert client.ping() is True
        assert "socket_keepalive" not in client.connection_pool.connection_kwargs
    finally:
        server.terminate()
        server.wait(timeout=10)
