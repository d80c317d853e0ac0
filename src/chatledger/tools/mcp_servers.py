"""The tools of the user's own MCP servers, as one toolset.

    servers = load_mcp_servers("mcp.json")
    toolset = MCPServersToolset(servers, tool_timeout=30)
    await toolset.start()     # ConfigurationError: a server that cannot start, a name clash
    result = await toolset.call("alice", "search_issues", {"query": "flaky"})
    await toolset.aclose()

The servers come from the file MCP hosts keep (`chatledger.tools.mcp_config`, re-exported
here). Each is a subprocess on stdio or a streamable HTTP endpoint, reached with the
official SDK through the `initialize` handshake that every server speaks.

Lifetime. Each connection is held open by a task of its own: it enters the transport and
the `ClientSession`, waits until it is told to stop or the server goes away, and exits
them. anyio requires a task group or cancel scope to be left by the task that entered it,
and a connection is opened by `start`, reopened by whichever turn's call finds its server
gone, and closed by `aclose`: three different tasks. Calls do not go through that task,
though: the session matches concurrent requests to their answers from any task, so each
call runs in its caller's task, under its caller's deadline and cancellation, and a slow
call holds up nothing else.

Failures are results, never exceptions, so the model can explain them:

- a call with no answer within `tool_timeout` is cancelled (`notifications/cancelled`)
  and the server kept, since it may hold state a restart would lose (a browser, a
  shell); but before its next call it must answer a ping within `tool_timeout`, or it
  is restarted. A wedged server cannot hang every later call.
- a server that exits, closes the connection or answers what the SDK cannot parse is
  `server_unavailable`, and is restarted (new process or session, tools listed anew) on
  the next call to one of its tools.

The turn's user id is not sent: these servers are the user's own infrastructure, acting
with the credentials of their own `env` or `headers`; chatledger's ids mean nothing there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Final

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_REQUEST,
    PARSE_ERROR,
    AudioContent,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    Implementation,
    PaginatedRequestParams,
    ResourceLink,
    TextContent,
    Tool,
    ToolAnnotations,
    ToolListChangedNotification,
)
from pydantic import ValidationError

from chatledger.errors import ConfigurationError
from chatledger.tools.base import ToolSpec
from chatledger.tools.mcp_config import (
    HTTPServerConfig,
    MCPServerConfig,
    StdioServerConfig,
    load_mcp_servers,
)

__all__ = [
    "HTTPServerConfig",
    "MCPServerConfig",
    "MCPServersToolset",
    "StdioServerConfig",
    "load_mcp_servers",
]

log = logging.getLogger("chatledger.tools.mcp_servers")


# Errors that say the connection, not the tool, is broken: the server is restarted. The
# SDK words them by the path that noticed (a closed pipe, an SSE stream cut short...);
# the model gets one wording per cause, the log the SDK's.
_GONE: Final = {
    CONNECTION_CLOSED: "the connection closed",
    PARSE_ERROR: "its answer could not be parsed",
    INVALID_REQUEST: "it refused the request",
}
# Connect and write bounds; the read bound spans the quiet stream that carries server
# notifications, since calls have `tool_timeout` of their own.
_HTTP_TIMEOUT: Final = httpx2.Timeout(30.0, read=300.0)
_MAX_PAGES: Final = 100
_DEFAULT_SPEC: Final = ToolSpec(name="", description="")


class _ConnectError(Exception):
    """A server that could not be started, initialized or listed; the message says why."""


class _Connection:
    """One session with one server, held open by a task of its own (`run`)."""

    def __init__(
        self,
        name: str,
        config: MCPServerConfig,
        *,
        tool_timeout: float,
        on_tools: Callable[[_Connection], None],
    ) -> None:
        self.name = name
        self.tools: list[Tool] = []
        # False once the session is gone or going; the next call then starts another.
        self.alive = False
        # True after a call timed out: the server must answer a ping before it gets more.
        self.suspect = False
        self._config = config
        self._tool_timeout = tool_timeout
        self._on_tools = on_tools
        self._session: ClientSession | None = None
        self._stop = anyio.Event()
        self._listing = anyio.Lock()

    async def run(self, ready: asyncio.Future[None], connect_timeout: float) -> None:
        """Connect, initialize and list the tools, then resolve `ready` and hold the session
        until `stop`; `ready` gets a `_ConnectError` if any of that fails."""
        try:
            async with AsyncExitStack() as stack:
                session = await self._open(stack)
                try:
                    with anyio.fail_after(connect_timeout):
                        await session.initialize()
                        self.tools = await _list_tools(session)
                except TimeoutError:
                    raise _ConnectError(
                        f"no answer to initialize and tools/list within {connect_timeout:g} s"
                    ) from None
                self._session = session
                self.alive = not self._stop.is_set()
                if not ready.done():
                    ready.set_result(None)
                await self._stop.wait()
        except Exception as error:
            if ready.done():
                log.warning("MCP server %r: connection lost: %s", self.name, _reason(error))
            else:
                ready.set_exception(_ConnectError(_reason(error)))
        finally:
            self.alive = False
            if not ready.done():
                ready.set_exception(_ConnectError("stopped before it was ready"))

    async def _open(self, stack: AsyncExitStack) -> ClientSession:
        client_info = Implementation(name="chatledger", version=version("chatledger"))
        if isinstance(self._config, HTTPServerConfig):
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=dict(self._config.headers), timeout=_HTTP_TIMEOUT)
            )
            read, write = await stack.enter_async_context(
                streamable_http_client(self._config.url, http_client=http)
            )
            # A server that goes away fails the transport, and so this task, by itself.
            return await stack.enter_async_context(
                ClientSession(
                    read, write, message_handler=self._on_message, client_info=client_info
                )
            )
        parameters = StdioServerParameters(
            command=self._config.command, args=list(self._config.args), env=dict(self._config.env)
        )
        read, write = await stack.enter_async_context(stdio_client(parameters))
        # The session reads through a relay that sees the end of the server's output, so a
        # server that exits between calls is restarted before the next one, not failed.
        relay_in, relay_out = anyio.create_memory_object_stream[SessionMessage | Exception]()
        stack.enter_context(relay_in)
        stack.enter_context(relay_out)
        relays = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(relays.cancel_scope.cancel)
        relays.start_soon(self._relay, read, relay_in)
        return await stack.enter_async_context(
            ClientSession(
                relay_out, write, message_handler=self._on_message, client_info=client_info
            )
        )

    async def _relay(
        self,
        source: AsyncIterator[SessionMessage | Exception],
        sink: MemoryObjectSendStream[SessionMessage | Exception],
    ) -> None:
        with sink:
            try:
                async for item in source:
                    await sink.send(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            if self.alive:
                log.warning("MCP server %r has gone away; the next call starts it again", self.name)
            self.stop()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            log.warning("MCP server %r sent something that is not MCP: %s", self.name, message)
        elif isinstance(message, ToolListChangedNotification):
            await self._relist()

    async def _relist(self) -> None:
        assert self._session is not None
        # One listing at a time: the last to finish began after the latest notification.
        async with self._listing:
            try:
                with anyio.fail_after(self._tool_timeout):
                    self.tools = await _list_tools(self._session)
            except Exception as error:
                log.warning(
                    "MCP server %r: cannot list its changed tools: %s", self.name, _reason(error)
                )
                return
        self._on_tools(self)

    def stop(self) -> None:
        self.alive = False
        self._stop.set()

    async def responds(self) -> bool:
        """Whether the server answers a ping within the time a call gets."""
        assert self._session is not None
        with anyio.move_on_after(self._tool_timeout):
            try:
                await self._session.send_ping()
            except MCPError:
                return False
            return True
        return False

    async def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        try:
            with anyio.fail_after(self._tool_timeout):
                result = await self._session.call_tool(name, dict(arguments))
        except TimeoutError:
            self.suspect = True
            message = f"MCP server {self.name!r} did not answer within {self._tool_timeout:g} s"
            return {"error": message, "code": "tool_timeout"}
        except MCPError as error:
            if error.code in _GONE:
                return self._gone(_GONE[error.code], error.message)
            # The server refused the call (bad arguments, a tool it no longer has).
            return {"error": error.message, "code": "tool_error"}
        except ValidationError as error:
            return self._gone("its answer is not a valid tool result", str(error))
        except RuntimeError as error:
            # The SDK's verdict on a parsed answer: structured content that breaks the
            # tool's output schema, or a request for input no one here can give. Its
            # first line says what; the rest quotes the schema.
            return {"error": str(error).partition("\n")[0], "code": "tool_error"}
        return _result(result)

    def _gone(self, reason: str, detail: str) -> dict[str, Any]:
        log.warning("MCP server %r is unavailable: %s (%s)", self.name, reason, detail)
        self.stop()
        return {
            "error": f"MCP server {self.name!r} is unavailable: {reason}",
            "code": "server_unavailable",
        }


@dataclass(eq=False)
class _Server:
    name: str
    config: MCPServerConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The latest connection, alive or not: its tools stay on offer while it is down.
    connection: _Connection | None = None

    @property
    def tools(self) -> list[Tool]:
        return self.connection.tools if self.connection is not None else []


class MCPServersToolset:
    """The tools of several MCP servers, as one `ManagedToolset` named "mcp".

    A call returns `{"content": text}` (text blocks joined by newlines, other blocks
    described, e.g. `[image/png]`) plus `"structured"` when the tool gave structured
    content, or `{"error", "code"}` with code `tool_error`, `unknown_tool`,
    `tool_timeout` or `server_unavailable`.

    Args:
        servers: by name, as `load_mcp_servers` returns them; a tool offered by two
            is refused at start-up, and left with its first owner if the clash comes later.
        tool_timeout: seconds a call may take before it is `tool_timeout`.
        connect_timeout: seconds a server may take to initialize and list its tools, at
            start-up and at each restart.
    """

    def __init__(
        self,
        servers: Mapping[str, MCPServerConfig],
        *,
        tool_timeout: float,
        connect_timeout: float = 30.0,
    ) -> None:
        self._servers = [_Server(name, config) for name, config in servers.items()]
        self._tool_timeout = tool_timeout
        self._connect_timeout = connect_timeout
        self._owners: dict[str, _Server] = {}
        self._specs: tuple[ToolSpec, ...] = ()
        self._running: dict[_Connection, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def name(self) -> str:
        return "mcp"

    @property
    def specs(self) -> Sequence[ToolSpec]:
        return self._specs

    async def start(self) -> None:
        """Start every server, initialize it and list its tools.

        Raises:
            ConfigurationError: a server could not be started, initialized or listed
                (the message names each such server and why), or two servers offer a
                tool of the same name (it names both and the tool). Every server
                started is stopped again before it raises.
        """
        try:
            outcomes = await asyncio.gather(
                *(self._connect(server) for server in self._servers), return_exceptions=True
            )
            failures = []
            for server, outcome in zip(self._servers, outcomes, strict=True):
                if isinstance(outcome, _ConnectError):
                    failures.append(f"MCP server {server.name!r} could not start: {outcome}")
                elif isinstance(outcome, BaseException):
                    raise outcome
            if failures:
                raise ConfigurationError("; ".join(failures))
            owners: dict[str, _Server] = {}
            if clashes := _assign(self._servers, owners):
                tool, owner, other = clashes[0]
                servers = f"MCP servers {owner.name!r} and {other.name!r}"
                raise ConfigurationError(f"{servers} both offer a tool named {tool!r}")
        except BaseException:
            await self.aclose()
            raise
        self._owners = owners
        self._specs = self._build_specs()

    async def call(self, user_id: str, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run tool `name` on the server that offers it; `user_id` is not sent (see the
        module docstring). Never raises for the server's trouble: see the class docstring."""
        server = self._owners.get(name)
        if server is None:
            return {"error": f"there is no tool named {name!r}", "code": "unknown_tool"}
        try:
            connection = await self._ready(server)
        except _ConnectError as error:
            message = f"MCP server {server.name!r} is unavailable: {error}"
            return {"error": message, "code": "server_unavailable"}
        if self._owners.get(name) is not server:
            # Restarted without that tool.
            return {"error": f"there is no tool named {name!r}", "code": "unknown_tool"}
        return await connection.call(name, arguments)

    async def aclose(self) -> None:
        """Close every session and stop every process this toolset started."""
        self._closed = True
        for connection in self._running:
            connection.stop()
        await asyncio.gather(*self._running.values())

    async def _ready(self, server: _Server) -> _Connection:
        """The server's live connection, after a ping if a call to it timed out, and a
        restart if it is gone or does not answer that ping."""
        async with server.lock:
            connection = server.connection
            if connection is not None and connection.alive and connection.suspect:
                connection.suspect = False
                if not await connection.responds():
                    log.warning("MCP server %r does not answer a ping; restarting it", server.name)
                    connection.stop()
            if connection is None or not connection.alive:
                log.info("restarting MCP server %r", server.name)
                connection = await self._connect(server)
                self._tools_changed(connection)
            return connection

    async def _connect(self, server: _Server) -> _Connection:
        if self._closed:
            raise _ConnectError("the toolset is closed")
        connection = _Connection(
            server.name,
            server.config,
            tool_timeout=self._tool_timeout,
            on_tools=self._tools_changed,
        )
        ready = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(connection.run(ready, self._connect_timeout))
        self._running[connection] = task
        task.add_done_callback(lambda _: self._running.pop(connection, None))
        try:
            await ready
        except BaseException:
            connection.stop()
            raise
        server.connection = connection
        return connection

    def _tools_changed(self, connection: _Connection) -> None:
        """Take a server's new tool list. A tool that clashes with another server's keeps
        its current owner (the other is left out and logged), so no tool changes hands
        behind a conversation's back."""
        changed = next(server for server in self._servers if server.name == connection.name)
        if changed.connection is not connection:
            return
        names = {tool.name for tool in changed.tools}
        owners = {
            tool: server
            for tool, server in self._owners.items()
            if server is not changed or tool in names
        }
        for tool, owner, other in _assign(self._servers, owners):
            if changed in (owner, other):
                log.warning(
                    "MCP servers %r and %r both offer a tool named %r; %r keeps it",
                    owner.name,
                    other.name,
                    tool,
                    owner.name,
                )
        self._owners = owners
        self._specs = self._build_specs()

    def _build_specs(self) -> tuple[ToolSpec, ...]:
        return tuple(
            _spec(tool)
            for server in self._servers
            for tool in server.tools
            if self._owners.get(tool.name) is server
        )


def _assign(
    servers: Sequence[_Server], owners: dict[str, _Server]
) -> list[tuple[str, _Server, _Server]]:
    """Give each unowned tool to the first server that offers it, in `servers` order; returns
    the clashes as (tool, its owner, the other server)."""
    clashes = []
    for server in servers:
        for tool in server.tools:
            owner = owners.setdefault(tool.name, server)
            if owner is not server:
                clashes.append((tool.name, owner, server))
    return clashes


async def _list_tools(session: ClientSession) -> list[Tool]:
    tools: dict[str, Tool] = {}
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        params = PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        page = await session.list_tools(params=params)
        for tool in page.tools:
            tools.setdefault(tool.name, tool)
        cursor = page.next_cursor
        if cursor is None:
            break
    return list(tools.values())


def _spec(tool: Tool) -> ToolSpec:
    hints = tool.annotations or ToolAnnotations()
    return ToolSpec(
        name=tool.name,
        description=tool.description or "",
        parameters=tool.input_schema,
        title=tool.title or hints.title,
        read_only=_either(hints.read_only_hint, _DEFAULT_SPEC.read_only),
        destructive=_either(hints.destructive_hint, _DEFAULT_SPEC.destructive),
        idempotent=_either(hints.idempotent_hint, _DEFAULT_SPEC.idempotent),
        open_world=_either(hints.open_world_hint, _DEFAULT_SPEC.open_world),
    )


def _either(hint: bool | None, default: bool) -> bool:
    return default if hint is None else hint


def _result(result: CallToolResult) -> dict[str, Any]:
    text = "\n".join(_text(block) for block in result.content)
    if result.is_error:
        return {"error": text or "the tool failed", "code": "tool_error"}
    if result.structured_content is None:
        return {"content": text}
    return {"content": text, "structured": result.structured_content}


def _text(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        return f"[{block.mime_type}]"
    if isinstance(block, ResourceLink):
        return f"[link: {block.uri}]"
    assert isinstance(block, EmbeddedResource)
    return f"[resource: {block.resource.uri}]"


def _reason(error: BaseException) -> str:
    """Why a connection failed, in a line: the one error inside anyio's task-group wrappers."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, MCPError) and error.code in _GONE:
        return _GONE[error.code]
    return str(error) or type(error).__name__
