"""One way to get a Redis connection, for ingest, workers and the CLI.

URLs: ``redis://``, ``rediss://`` (TLS, managed services), ``unix://`` and
``redis+sentinel://host:26379,host2:26379/<service>/<db>`` for a
Sentinel-managed primary (failover follows the primary).
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool


def _keepalive_options() -> dict[int, int]:
    # Linux names the idle time TCP_KEEPIDLE, macOS TCP_KEEPALIVE; some platforms tune nothing.
    idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
    wanted = {idle: 30, getattr(socket, "TCP_KEEPINTVL", None): 10, getattr(socket, "TCP_KEEPCNT", None): 3}
    return {option: value for option, value in wanted.items() if option is not None}


# A worker waits on its connection without a socket timeout (a blocking dequeue, a job's command during an
# outage). When Redis vanishes without a FIN or RST (a failed-over host, a partition, a NAT that forgot the
# flow) nothing but TCP keepalive ends that wait: a silent peer is declared dead after 30 + 3 x 10 s and the
# command's connection error is retried like any outage (workers/resilience.py). Set here, not left to
# redis-py's default, which is off before redis-py 8.
KEEPALIVE: dict[str, Any] = {"socket_keepalive": True, "socket_keepalive_options": _keepalive_options()}


class _Blocking(BlockingConnectionPool):
    """A bounded pool that waits for a free connection (instead of "Too many connections")."""

    def set_retry(self, retry: Any) -> None:
        # redis-py 8.1's inherited set_retry walks ConnectionPool's lists, which this pool does not keep.
        self.connection_kwargs["retry"] = retry
        for conn in self._connections:
            conn.retry = retry


class _BlockingSentinelPool(SentinelConnectionPool, _Blocking):
    """Sentinel's primary discovery with the bounded, waiting pool."""

    set_retry = _Blocking.set_retry


def connect(url: str, *, socket_timeout: float | None = 5.0, connect_timeout: float = 2.0,
            single_connection: bool = False, max_connections: int | None = None) -> Redis:
    """A client; nothing is connected until its first command, so this never fails for an unreachable Redis.

    `single_connection` keeps one connection instead of a pool: for a process that serves one
    request at a time (a gunicorn sync worker) it saves the pool's get/release on every command
    (~20 µs of ~100, measured in docs/benchmarks.md); redis-py still locks it for threads.
    `max_connections` bounds the pool for a threaded process: a thread that finds them all in use
    waits for one (instead of redis-py's "Too many connections" error)."""
    if url.startswith("redis+sentinel://"):
        return _sentinel(url, socket_timeout, connect_timeout, max_connections)
    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
                               "health_check_interval": 30}
    if not url.startswith("unix://"):
        options.update(KEEPALIVE)
    if max_connections is not None:
        pool = _Blocking.from_url(url, max_connections=max_connections, timeout=30, **options)
        return Redis(connection_pool=pool)
    if not single_connection:
        return Redis.from_url(url, **options)
    # A pool checks the connection it hands out; the pinned one is not checked before use, so when Redis or a
    # proxy closed it while idle the next command fails. One more try on a new connection; not after a
    # timeout, which is a slow or unreachable Redis rather than a stale connection.
    client = Redis.from_url(url, retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)), **options)
    _pin_one_connection(client)
    return client


def _pin_one_connection(client: Redis) -> None:
    """What redis-py's `single_connection_client=True` sets up, without connecting.

    redis-py connects the pinned connection in the client's constructor, so a gunicorn worker
    (re)started while Redis is unreachable failed to boot and took the master down with it. An
    unconnected redis-py connection connects on its first command and again after any error.
    """
    pool = client.connection_pool
    client.connection = pool.make_connection()
    pool._in_use_connections.add(client.connection)  # so close() hands it back and the pool disconnects it
    client._single_connection_client = True  # redis-py's switch: lock the pinned connection per command


def _sentinel(url: str, socket_timeout: float | None, connect_timeout: float,
              max_connections: int | None = None) -> Redis:
    parts = urlsplit(url)
    hosts = []
    for hostport in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = hostport.rpartition(":")
        hosts.append((host or hostport, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("redis+sentinel:// URL needs the service name: redis+sentinel://h:26379/mymaster/0")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    password = parts.password or (parse_qs(parts.query).get("password") or [None])[0]
    sentinel = Sentinel(hosts, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout)
    if max_connections is None:
        return sentinel.master_for(service, db=db, password=password, socket_timeout=socket_timeout, **KEEPALIVE)
    return sentinel.master_for(service, db=db, password=password, socket_timeout=socket_timeout,
                               connection_pool_class=_BlockingSentinelPool, max_connections=max_connections,
                               timeout=30, **KEEPALIVE)
