"""Fixtures that start real processes and stop them afterwards, whatever the test did."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.process.servers import ServerProcess, TcpProxy, start_server

StartServer = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[StartServer]:
    """`await serve(database_url, workers=1, ...)`: a ready `chatledger serve` process (in
    the test's temporary directory unless `cwd` says otherwise).

    Every process started through it is stopped at teardown (SIGTERM, then SIGKILL to its
    whole session), also when the test failed half-way.
    """
    started: list[ServerProcess] = []

    async def start(database_url: str, **options: Any) -> ServerProcess:
        options.setdefault("cwd", tmp_path)
        server = await start_server(database_url, **options)
        started.append(server)
        await server.wait_ready()
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An SQLite file that does not exist yet (the server creates and migrates it)."""
    return f"sqlite:///{tmp_path / 'chatledger.db'}"


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    """A running TCP proxy to the test PostgreSQL server."""
    url = make_url(postgres_url)
    forwarder = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await forwarder.start()
    yield forwarder
    forwarder.resume()
    await forwarder.stop()


@pytest.fixture
def proxied_postgres_url(postgres_url: str, proxy: TcpProxy) -> str:
    """The test database, reached through `proxy`."""
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)
