"""Real `chatledger serve` processes and a TCP proxy a test can cut, for tests/process.

Everything listens on and connects to 127.0.0.1 only. Ports come from the kernel (bind
port 0). Every process started here is in a session of its own, so that stopping it also
stops the workers it forked; the fixtures in conftest.py stop whatever a test leaves running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import httpx

from chatledger.api.auth import Authenticator

SECRET: Final = "process-test-secret-that-is-long-enough-for-hs256"
# A cold start imports the web stack and migrates the database: about a second here.
READY_WITHIN: Final = 30.0
STOP_WITHIN: Final = 15.0
# uvicorn shuts down gracefully on SIGTERM, then raises the signal again with its default
# action, so that whoever started it sees how it ended: a clean stop is this status.
STOPPED: Final = -signal.SIGTERM
# The environment a developer's shell might carry that would change what a child does.
_INHERITED_SETTINGS: Final = ("DATABASE_URL", "BETTER_AUTH_SECRET", "OPENAI_API_KEY")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def token_for(user_id: str, *, ttl: timedelta = timedelta(minutes=10)) -> str:
    return Authenticator(secret=SECRET, algorithms=["HS256"]).issue(user_id, ttl=ttl)[0]


def auth(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user_id)}"}


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without chatledger settings, plus `settings`
    (`JWT_SECRET="..."` becomes `CHATLEDGER_JWT_SECRET`)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CHATLEDGER_") and name not in _INHERITED_SETTINGS
    }
    env.update({f"CHATLEDGER_{name}": value for name, value in settings.items()})
    return env


async def eventually(
    probe: Callable[[], Awaitable[bool]], *, within: float, what: str, every: float = 0.05
) -> None:
    """Return once `probe()` is true; fail with `what` if it is not within `within` seconds."""
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(every)


async def _collect(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
    # Reading as the child writes keeps a full pipe from ever blocking it.
    assert stream is not None
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


@dataclass
class ServerProcess:
    """A running `chatledger serve` and what it has written so far."""

    process: asyncio.subprocess.Process
    port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **options: Any) -> httpx.AsyncClient:
        """A client for this server; each call gets its own connections."""
        # trust_env=False: no proxy from the environment between the test and 127.0.0.1.
        options = {"timeout": 30, "trust_env": False, **options}
        return httpx.AsyncClient(base_url=self.base_url, **options)

    def output(self) -> str:
        """Everything the process printed so far, for failure messages."""
        return "".join(self.stdout) + "".join(self.stderr)

    async def wait_ready(self, within: float = READY_WITHIN) -> None:
        """Return once GET /readyz answers 200; fail if the process exits or time runs out."""
        async with self.client(timeout=2) as client:

            async def ready() -> bool:
                if self.process.returncode is not None:
                    raise AssertionError(f"the server exited with {self.process.returncode}")
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            try:
                await eventually(ready, within=within, what="GET /readyz answers 200")
            except AssertionError as error:
                raise AssertionError(f"{error}; the server said:\n{self.output()}") from None

    async def wait_until_listening_stops(self, within: float = STOP_WITHIN) -> None:
        """Return once the port refuses new connections: the server is shutting down."""

        async def refused() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except ConnectionRefusedError:
                return True
            writer.close()
            await writer.wait_closed()
            return False

        await eventually(refused, within=within, what="the server stops listening")

    async def wait(self, within: float = STOP_WITHIN) -> int:
        """The exit status, once the process has exited by itself within `within` seconds."""
        async with asyncio.timeout(within):
            status = await self.process.wait()
            await asyncio.gather(*self._readers)
        return status

    async def stop(self, within: float = STOP_WITHIN) -> int:
        """SIGTERM, and SIGKILL to the whole session if it is not gone within `within` s.

        Returns the exit status: `STOPPED` after a graceful shutdown, -SIGKILL if it hung.
        """
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await self.wait(within)
        except TimeoutError:
            return await self.kill()

    async def kill(self) -> int:
        """SIGKILL this process and its workers (they share its session) at once."""
        if self.process.returncode is None:
            # Not reaped yet, so the session id is still ours and names only our processes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        status = await self.process.wait()
        await asyncio.gather(*self._readers)
        return status


async def start_server(
    database_url: str,
    *,
    cwd: Path,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    agent: str = "rules",
    app: str | None = None,
    dev: bool = False,
) -> ServerProcess:
    """Start `chatledger serve` (the rules agent unless told, or `--app app`) on a free port
    (not yet ready)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatledger",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--agent",
        agent,
        "--workers",
        str(workers),
        *(["--dev"] if dev else []),
        *(["--app", app] if app else []),
        cwd=cwd,
        env=dict(env) if env is not None else child_env(JWT_SECRET=SECRET),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    server = ServerProcess(process, port)
    server._readers = [
        asyncio.create_task(_collect(process.stdout, server.stdout)),
        asyncio.create_task(_collect(process.stderr, server.stderr)),
    ]
    return server


class TcpProxy:
    """Forwards connections to 127.0.0.1:`port` to `upstream`, until told otherwise.

    `stop()` closes the listening socket and cuts every connection, as a database that
    goes away would; `start()` listens again on the same port. `pause()` holds whatever
    clients send (counting it in `held`) until `resume()`, as a database that hangs would.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.held = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        # Each cut connection's forwarder sees its end and finishes.
        await asyncio.gather(*self._connections)

    def pause(self) -> None:
        self.held = 0
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _forward(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        this = asyncio.current_task()
        assert this is not None
        self._connections.add(this)
        writers = {client}
        self._writers.add(client)
        pumps: list[asyncio.Task[None]] = []
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.upstream)
            writers.add(upstream)
            self._writers.add(upstream)
            pumps = [
                asyncio.create_task(self._pump(client_reader, upstream, holding=True)),
                asyncio.create_task(self._pump(upstream_reader, client, holding=False)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except OSError:
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in writers:
                # abort, not close: a connection that is cut does not say goodbye.
                writer.transport.abort()
            self._writers -= writers
            await asyncio.gather(*pumps, return_exceptions=True)
            self._connections.discard(this)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, holding: bool
    ) -> None:
        while data := await reader.read(65536):
            if holding and not self._flowing.is_set():
                self.held += len(data)
                await self._flowing.wait()
            writer.write(data)
            await writer.drain()
