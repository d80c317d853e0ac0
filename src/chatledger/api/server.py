"""Running an ASGI app factory under uvicorn, with any number of worker processes."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from chatledger.api.metrics import MULTIPROCESS_DIR

__all__ = ["HeaderDeadlineProtocol", "run_server"]


class _Config(uvicorn.Config):
    """uvicorn's configuration, carrying the header deadline to every connection: uvicorn
    hands its configuration to each connection's protocol (and pickles it whole to the
    worker processes it spawns)."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers do not
    arrive whole within `header_timeout` seconds.

    uvicorn times a connection out only between requests (keep-alive): a client that opens
    connections and sends headers a byte at a time holds them, and their file descriptors,
    for as long as it likes.
    """

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout = config.header_timeout if isinstance(config, _Config) else 10.0
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self._header_deadline is not None:
            self._header_deadline.cancel()  # a request's headers are in
            self._header_deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_headers()  # the next request's

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self._header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def run_server(
    factory: str,
    *,
    host: str,
    port: int,
    workers: int,
    header_timeout: float = 10.0,
    max_connections: int | None = None,
) -> None:
    """Serve the app that `factory` ("module:function") builds, until stopped.

    Each request is logged by the app itself, as JSON, so uvicorn's access log is off.

    Args:
        header_timeout: seconds a connection has to send a request's headers.
        max_connections: connections (and requests in progress) per process beyond which
            uvicorn answers 503 at once.

    Raises:
        OSError: the address cannot be listened on.
    """
    config = _Config(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        http=HeaderDeadlineProtocol,
        header_timeout=header_timeout,
        limit_concurrency=max_connections,
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    # Workers keep their metrics in files of one directory, so that a scrape of any of
    # them counts every worker's requests (prometheus_client's multiprocess mode). The
    # variable must be set before a worker imports prometheus_client.
    with tempfile.TemporaryDirectory(prefix="chatledger-metrics-") as shared:
        os.environ[MULTIPROCESS_DIR] = shared
        try:
            _run_workers(config, host=host, port=port)
        finally:
            del os.environ[MULTIPROCESS_DIR]


def _run_workers(config: uvicorn.Config, *, host: str, port: int) -> None:
    # uvicorn binds the shared socket of its workers without naming TCP as the protocol,
    # so asyncio never turns on TCP_NODELAY and every keep-alive response waits ~40 ms
    # for the client's delayed ACK (Kludex/uvicorn#3149). Bound here, it names it.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    Multiprocess(config, sockets=[listener]).run()
