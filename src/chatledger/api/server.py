"""Running an ASGI app factory under uvicorn, with any number of worker processes."""

from __future__ import annotations

import os
import socket
import tempfile

import uvicorn
from uvicorn.supervisors import Multiprocess

from chatledger.api.metrics import MULTIPROCESS_DIR

__all__ = ["run_server"]


def run_server(factory: str, *, host: str, port: int, workers: int) -> None:
    """Serve the app that `factory` ("module:function") builds, until stopped.

    Each request is logged by the app itself, as JSON, so uvicorn's access log is off.

    Raises:
        OSError: the address cannot be listened on.
    """
    config = uvicorn.Config(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
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
