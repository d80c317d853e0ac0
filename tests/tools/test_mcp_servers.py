"""`MCPServersToolset` against real MCP servers: `mcp_fixture_server.py` as subprocesses,
on stdio and on streamable HTTP (127.0.0.1 only), and the server file it reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from chatledger.errors import ConfigurationError
from chatledger.tools import ManagedToolset, ToolSpec
from chatledger.tools.mcp_servers import (
    HTTPServerConfig,
    MCPServerConfig,
    MCPServersToolset,
    StdioServerConfig,
    load_mcp_servers,
)

FIXTURE = Path(__file__).with_name("mcp_fixture_server.py")
USER = "alice"
# Every test that starts processes is over within this, or fails.
WITHIN = 60.0
BASE_TOOLS = [
    "echo",
    "weather",
    "chart",
    "fail",
    "refuse",
    "misshape",
    "pid",
    "crash",
    "sleep",
    "freeze",
    "grow",
    "env",
    "header",
    "garble",
]


def stdio(*options: str) -> StdioServerConfig:
    return StdioServerConfig(sys.executable, (str(FIXTURE), *options))


def unavailable(server: str, reason: str) -> dict[str, str]:
    return {
        "error": f"MCP server {server!r} is unavailable: {reason}",
        "code": "server_unavailable",
    }


def pids(pidfile: Path) -> list[int]:
    return [int(line) for line in pidfile.read_text().split()]


def running(pid: int) -> bool:
    """Whether `pid` exists, a zombie included: a process nobody reaped counts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def eventually(probe: Callable[[], bool], *, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def started(
    servers: dict[str, MCPServerConfig], *, tool_timeout: float = 10.0
) -> AsyncIterator[MCPServersToolset]:
    toolset = MCPServersToolset(servers, tool_timeout=tool_timeout)
    try:
        async with asyncio.timeout(WITHIN):
            await toolset.start()
            yield toolset
    finally:
        await toolset.aclose()


@asynccontextmanager
async def http_server(*options: str) -> AsyncIterator[str]:
    """The fixture server on streamable HTTP; yields its URL. Killed by pid when done."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(FIXTURE), "--http", *options, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WITHIN):
            port = int(await process.stdout.readline())
            url = f"http://127.0.0.1:{port}/mcp"
            async with httpx.AsyncClient(trust_env=False) as client:
                # Any answer will do: the server is up.
                await client.get(url, headers={"Accept": "text/event-stream"})
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await process.communicate()


@pytest.fixture(params=["stdio", "http"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[MCPServerConfig]:
    """The fixture server, started by the toolset (stdio) or already running (HTTP)."""
    if request.param == "stdio":
        yield stdio()
        return
    async with http_server() as url:
        yield HTTPServerConfig(url)


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """The warnings the toolset logs, whatever else configured the chatledger loggers."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("chatledger.tools.mcp_servers")
    handler = Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# The server file.


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(document))
    return path


def test_reads_the_servers_mcp_hosts_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "mcpServers": {
                "files": {"command": "npx", "args": ["-y", "files"], "env": {"ROOT": "/srv"}},
                "issues": {
                    "type": "http",
                    "url": "https://mcp.example.com/mcp",
                    "headers": {"Authorization": "Bearer t0ken"},
                    "alwaysAllow": ["search"],
                },
                "plain": {"type": "stdio", "command": "plain-server"},
            }
        },
    )
    assert load_mcp_servers(str(path)) == {
        "files": StdioServerConfig("npx", ("-y", "files"), {"ROOT": "/srv"}),
        "issues": HTTPServerConfig(
            "https://mcp.example.com/mcp", {"Authorization": "Bearer t0ken"}
        ),
        "plain": StdioServerConfig("plain-server"),
    }


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigurationError) as error:
        load_mcp_servers(path)
    assert error.value.message == f"MCP servers file {path}: no such file"


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_mcp_servers(tmp_path)
    assert error.value.message == (
        f"MCP servers file {tmp_path}: cannot read it: [Errno 21] Is a directory: '{tmp_path}'"
    )


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"files": {"command": "npx",}}}')
    with pytest.raises(ConfigurationError) as error:
        load_mcp_servers(path)
    assert error.value.message == (
        f"MCP servers file {path}: not valid JSON: "
        "Expecting property name enclosed in double quotes at line 1"
    )


@pytest.mark.parametrize(
    "document",
    [[], {"servers": {}}, {"mcpServers": ["npx"]}, {"mcpServers": None}],
    ids=["a list", "no mcpServers", "a list of servers", "null"],
)
def test_a_file_without_an_mcp_servers_object_is_refused(tmp_path: Path, document: Any) -> None:
    path = write(tmp_path, document)
    with pytest.raises(ConfigurationError) as error:
        load_mcp_servers(path)
    assert error.value.message == (
        f'MCP servers file {path}: expected an object {{"mcpServers": {{name: server}}}}'
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("npx", 'expected an object with "command" or "url"'),
        ({}, 'needs exactly one of "command" (stdio) and "url" (streamable HTTP)'),
        (
            {"command": "npx", "url": "http://127.0.0.1:1/mcp"},
            'needs exactly one of "command" (stdio) and "url" (streamable HTTP)',
        ),
        ({"command": ""}, '"command" must be a non-empty string'),
        ({"command": ["npx", "files"]}, '"command" must be a non-empty string'),
        ({"command": "npx", "args": "-y files"}, '"args" must be a list of strings'),
        ({"command": "npx", "args": ["-y", 1]}, '"args" must be a list of strings'),
        ({"command": "npx", "env": {"PORT": 8080}}, '"env" must be an object of strings'),
        ({"command": "npx", "env": ["PORT=8080"]}, '"env" must be an object of strings'),
        (
            {"url": "http://h/mcp", "headers": [["A", "b"]]},
            '"headers" must be an object of strings',
        ),
        ({"url": "ftp://h/mcp"}, '"url" must be an http:// or https:// URL'),
        (
            {"type": "sse", "url": "http://h/sse"},
            "\"type\" 'sse' is not supported: only stdio and streamable HTTP are",
        ),
        ({"type": "stdio", "url": "http://h/mcp"}, '"type" is \'stdio\' but the server has "url"'),
    ],
)
def test_a_bad_server_entry_names_the_file_and_the_server(
    tmp_path: Path, entry: Any, problem: str
) -> None:
    path = write(tmp_path, {"mcpServers": {"good": {"command": "npx"}, "files": entry}})
    with pytest.raises(ConfigurationError) as error:
        load_mcp_servers(path)
    assert error.value.message == f"MCP servers file {path}: server 'files': {problem}"


def test_a_server_needs_a_name(tmp_path: Path) -> None:
    path = write(tmp_path, {"mcpServers": {" ": {"command": "npx"}}})
    with pytest.raises(ConfigurationError) as error:
        load_mcp_servers(path)
    assert error.value.message == f"MCP servers file {path}: a server has an empty name"


# Calls.


async def test_is_a_managed_toolset_named_mcp() -> None:
    toolset = MCPServersToolset({}, tool_timeout=1)
    assert isinstance(toolset, ManagedToolset)
    assert toolset.name == "mcp"


@pytest.mark.slow
async def test_calls_return_text_and_structured_content(transport: MCPServerConfig) -> None:
    async with started({"fixture": transport}) as toolset:
        assert await toolset.call(USER, "echo", {"text": "hello"}) == {"content": "hello"}
        assert await toolset.call(USER, "weather", {"city": "Rome"}) == {
            "content": "Rome: 21 °C\nsunny",
            "structured": {"city": "Rome", "celsius": 21},
        }
        assert await toolset.call(USER, "chart", {}) == {"content": "[image/png]\nsales"}


@pytest.mark.slow
async def test_tools_are_listed_with_their_annotations(transport: MCPServerConfig) -> None:
    async with started({"fixture": transport}) as toolset:
        specs = {spec.name: spec for spec in toolset.specs}
    assert [spec.name for spec in toolset.specs] == BASE_TOOLS
    assert specs["echo"] == ToolSpec(
        name="echo",
        description="Says the text back.",
        parameters={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
        title="Echo",
        read_only=True,
        destructive=False,
        idempotent=True,
        open_world=False,
    )
    # The title comes from the annotations when the tool has none; hints not given keep
    # ToolSpec's defaults.
    assert specs["weather"] == ToolSpec(
        name="weather",
        description="The weather in a city, as data.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        title="Weather",
        read_only=True,
        destructive=True,
        idempotent=False,
        open_world=True,
    )
    assert specs["chart"] == ToolSpec(
        name="chart",
        description="A chart and its caption.",
        parameters={"type": "object", "properties": {}},
    )


@pytest.mark.slow
async def test_tools_list_changed_refreshes_the_specs(transport: MCPServerConfig) -> None:
    async with started({"fixture": transport}) as toolset:
        assert await toolset.call(USER, "grow", {}) == {"content": "grown"}
        await eventually(
            lambda: "extra" in [spec.name for spec in toolset.specs], what="extra is listed"
        )
        assert [spec.name for spec in toolset.specs] == [*BASE_TOOLS, "extra"]


@pytest.mark.slow
async def test_tool_errors_and_unknown_tools_are_results() -> None:
    async with started({"fixture": stdio()}) as toolset:
        assert await toolset.call(USER, "fail", {}) == {
            "error": "the disk is full",
            "code": "tool_error",
        }
        assert await toolset.call(USER, "refuse", {}) == {
            "error": "refused: no arguments expected",
            "code": "tool_error",
        }
        # The SDK checks structured content against the tool's output schema.
        assert await toolset.call(USER, "misshape", {}) == {
            "error": "Invalid structured content returned by tool misshape: "
            "'many' is not of type 'integer'",
            "code": "tool_error",
        }
        assert await toolset.call(USER, "drop_tables", {}) == {
            "error": "there is no tool named 'drop_tables'",
            "code": "unknown_tool",
        }
        assert await toolset.call(USER, "echo", {"text": "still here"}) == {"content": "still here"}


@pytest.mark.slow
async def test_a_stdio_server_gets_its_env_and_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLEDGER_JWT_SECRET", "never-for-mcp-servers")
    config = StdioServerConfig(sys.executable, (str(FIXTURE),), {"FILES_ROOT": "/srv/files"})
    async with started({"files": config}) as toolset:
        assert await toolset.call(USER, "env", {"name": "FILES_ROOT"}) == {"content": "/srv/files"}
        assert await toolset.call(USER, "env", {"name": "CHATLEDGER_JWT_SECRET"}) == {
            "content": "<unset>"
        }
        assert await toolset.call(USER, "env", {"name": "PATH"}) == {"content": os.environ["PATH"]}


@pytest.mark.slow
async def test_an_http_server_gets_the_headers() -> None:
    async with http_server() as url:
        config = HTTPServerConfig(url, {"X-Api-Key": "k-123"})
        async with started({"web": config}) as toolset:
            assert await toolset.call(USER, "header", {}) == {"content": "k-123"}


# Failures.


@pytest.mark.slow
async def test_a_server_that_exits_mid_call_is_unavailable_then_restarted(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    async with started({"fixture": stdio("--pidfile", str(pidfile))}) as toolset:
        [first] = pids(pidfile)
        assert await toolset.call(USER, "pid", {}) == {"content": str(first)}
        assert await toolset.call(USER, "crash", {}) == unavailable(
            "fixture", "the connection closed"
        )
        assert pids(pidfile) == [first]  # restarted on the next call, not before
        answer = await toolset.call(USER, "pid", {})
        [_, second] = pids(pidfile)
        assert answer == {"content": str(second)}
        assert await toolset.call(USER, "echo", {"text": "back"}) == {"content": "back"}
    assert [pid for pid in pids(pidfile) if running(pid)] == []


@pytest.mark.slow
async def test_a_server_that_exits_between_calls_is_restarted_before_the_next(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    pidfile = tmp_path / "pids"
    async with started({"fixture": stdio("--pidfile", str(pidfile))}) as toolset:
        [first] = pids(pidfile)
        os.kill(first, signal.SIGKILL)
        gone = "MCP server 'fixture' has gone away; the next call starts it again"
        await eventually(lambda: gone in warnings_logged, what="the toolset sees it gone")
        answer = await toolset.call(USER, "pid", {})
        [_, second] = pids(pidfile)
        assert answer == {"content": str(second)}


@pytest.mark.slow
async def test_a_slow_call_times_out_and_the_server_answers_the_next(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    async with started({"fixture": stdio("--pidfile", str(pidfile))}, tool_timeout=0.5) as toolset:
        began = time.monotonic()
        assert await toolset.call(USER, "sleep", {"seconds": 30}) == {
            "error": "MCP server 'fixture' did not answer within 0.5 s",
            "code": "tool_timeout",
        }
        assert 0.5 <= time.monotonic() - began < 5
        # The same process: a server busy with one call is not restarted.
        assert await toolset.call(USER, "pid", {}) == {"content": str(pids(pidfile)[0])}
        assert len(pids(pidfile)) == 1


@pytest.mark.slow
async def test_a_slow_call_holds_up_no_other_call() -> None:
    async with started({"fixture": stdio()}, tool_timeout=1.5) as toolset:
        slow = asyncio.create_task(toolset.call(USER, "sleep", {"seconds": 30}))
        await asyncio.sleep(0)  # a yield, not a wait: the slow call goes out first
        assert await toolset.call(USER, "echo", {"text": "meanwhile"}) == {"content": "meanwhile"}
        assert not slow.done()
        assert await slow == {
            "error": "MCP server 'fixture' did not answer within 1.5 s",
            "code": "tool_timeout",
        }


@pytest.mark.slow
async def test_a_wedged_server_is_restarted_for_the_next_call(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    async with started({"fixture": stdio("--pidfile", str(pidfile))}, tool_timeout=0.5) as toolset:
        began = time.monotonic()
        assert await toolset.call(USER, "freeze", {"seconds": 30}) == {
            "error": "MCP server 'fixture' did not answer within 0.5 s",
            "code": "tool_timeout",
        }
        assert 0.5 <= time.monotonic() - began < 5
        # It cannot answer a ping, so the next call gets a new process.
        answer = await toolset.call(USER, "pid", {})
        [frozen, fresh] = pids(pidfile)
        assert answer == {"content": str(fresh)}
    assert not running(frozen)
    assert not running(fresh)


@pytest.mark.slow
async def test_an_http_server_that_goes_away_is_unavailable_until_it_is_back() -> None:
    async with http_server() as url:
        async with started({"web": HTTPServerConfig(url)}) as toolset:
            assert await toolset.call(USER, "crash", {}) == unavailable(
                "web", "the connection closed"
            )
            # The restart finds nobody there.
            assert await toolset.call(USER, "echo", {"text": "anyone?"}) == unavailable(
                "web", "All connection attempts failed"
            )
            async with http_server("--port", str(urlsplit(url).port)):
                assert await toolset.call(USER, "echo", {"text": "back"}) == {"content": "back"}


@pytest.mark.slow
async def test_an_answer_the_sdk_cannot_parse_makes_the_server_unavailable() -> None:
    async with http_server() as url:
        async with started({"web": HTTPServerConfig(url)}) as toolset:
            assert await toolset.call(USER, "garble", {}) == unavailable(
                "web", "its answer is not a valid tool result"
            )
            # A new session with the same server.
            assert await toolset.call(USER, "echo", {"text": "sane"}) == {"content": "sane"}


# Start-up.


@pytest.mark.slow
async def test_two_servers_with_the_same_tool_do_not_start(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    toolset = MCPServersToolset(
        {"one": stdio("--pidfile", str(pidfile)), "two": stdio("--pidfile", str(pidfile))},
        tool_timeout=5,
    )
    with pytest.raises(ConfigurationError) as error:
        async with asyncio.timeout(WITHIN):
            await toolset.start()
    assert error.value.message == "MCP servers 'one' and 'two' both offer a tool named 'echo'"
    assert len(pids(pidfile)) == 2
    assert [pid for pid in pids(pidfile) if running(pid)] == []


@pytest.mark.slow
async def test_servers_that_cannot_start_are_named_with_the_reason(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    toolset = MCPServersToolset(
        {
            "good": stdio("--pidfile", str(pidfile)),
            "ghost": StdioServerConfig("/nonexistent/mcp-server"),
            "quitter": StdioServerConfig(sys.executable, ("-c", "pass")),
        },
        tool_timeout=5,
    )
    with pytest.raises(ConfigurationError) as error:
        async with asyncio.timeout(WITHIN):
            await toolset.start()
    assert error.value.message == (
        "MCP server 'ghost' could not start: "
        "[Errno 2] No such file or directory: '/nonexistent/mcp-server'; "
        "MCP server 'quitter' could not start: the connection closed"
    )
    [good] = pids(pidfile)
    assert not running(good)


@pytest.mark.slow
async def test_a_clash_that_appears_later_is_logged_and_left_out(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    servers: dict[str, MCPServerConfig] = {
        "one": stdio("--pidfile", str(one)),
        "two": stdio("--pidfile", str(two), "--prefix", "b_", "--extra", "pid"),
    }
    async with started(servers) as toolset:
        before = list(toolset.specs)
        assert await toolset.call(USER, "b_grow", {}) == {"content": "grown"}
        clash = "MCP servers 'one' and 'two' both offer a tool named 'pid'; 'one' keeps it"
        await eventually(lambda: clash in warnings_logged, what="the clash is logged")
        assert list(toolset.specs) == before
        assert await toolset.call(USER, "pid", {}) == {"content": str(pids(one)[0])}
