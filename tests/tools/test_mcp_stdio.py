"""The task tools over MCP on stdio: `chatledger mcp` as a real server process, driven by
the SDK's own client, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from chatledger.store import Connector, SQLAlchemyStore
from chatledger.tools import TASK_TOOLS
from tests.factories import row_counts, snapshot

pytestmark = pytest.mark.slow

INVALID_ID = {"error": "task_id must be a positive whole number", "code": "invalid_id"}
NOT_FOUND = {"error": "no such task", "code": "not_found"}


def invalid(message: str) -> dict[str, str]:
    return {"error": message, "code": "invalid_arguments"}


def command(user: str, database_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "chatledger",
        "mcp",
        "--user",
        user,
        "--database-url",
        database_url,
    ]


@asynccontextmanager
async def mcp_client(user: str, database_url: str, *, mode: str = "auto") -> AsyncIterator[Client]:
    """A client session with a `chatledger mcp --user USER` process of its own."""
    executable, *args = command(user, database_url)
    noise: list[Exception] = []

    async def on_message(message: IncomingMessage) -> None:
        # The stdio transport hands over, as exceptions, lines on stdout that are not
        # protocol messages: anything the server process printed by mistake.
        if isinstance(message, Exception):
            noise.append(message)

    server = StdioServerParameters(command=executable, args=args)
    async with Client(
        server, mode=mode, read_timeout_seconds=30, message_handler=on_message
    ) as client:
        yield client
    assert noise == []


def result_of(result: CallToolResult) -> dict[str, Any]:
    """The tool's JSON object, which must come both as structured content and as text."""
    [content] = result.content
    assert isinstance(content, TextContent)
    assert json.loads(content.text) == result.structured_content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def succeeds(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    return result_of(result)


async def fails(client: Client, tool: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    return result_of(result)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_lists_exactly_the_five_task_tools_with_their_schemas(
    database_url: str, mode: str
) -> None:
    async with mcp_client("alice", database_url, mode=mode) as client:
        listed = await client.list_tools()
    assert [(tool.name, tool.description, tool.input_schema) for tool in listed.tools] == [
        (spec.name, spec.description, spec.parameters) for spec in TASK_TOOLS
    ]
    for tool in listed.tools:
        assert not [name for name in tool.input_schema["properties"] if "user" in name]
        assert tool.input_schema["additionalProperties"] is False


async def test_each_tool_acts_on_the_users_tasks(database_url: str, store: SQLAlchemyStore) -> None:
    async with mcp_client("alice", database_url) as client:
        added = await succeeds(client, "add_task", {"title": "Buy milk", "description": "2 l"})
        assert added == {"task_id": 1, "status": "created", "title": "Buy milk"}
        milk = await store.tasks.get("alice", 1)
        assert (milk.title, milk.description, milk.completed) == ("Buy milk", "2 l", False)
        await succeeds(client, "add_task", {"title": "Call mom"})

        completed = await succeeds(client, "complete_task", {"task_id": "1"})
        assert completed == {"task_id": 1, "status": "completed", "title": "Buy milk"}
        assert (await store.tasks.get("alice", 1)).completed

        assert await succeeds(client, "list_tasks", {"status": "pending"}) == {
            "tasks": [{"task_id": 2, "title": "Call mom", "description": None, "completed": False}],
            "total": 1,
            "omitted": 0,
        }

        updated = await succeeds(client, "update_task", {"task_id": 2, "title": "Call dad"})
        assert updated == {"task_id": 2, "status": "updated", "title": "Call dad"}
        assert (await store.tasks.get("alice", 2)).title == "Call dad"

        deleted = await succeeds(client, "delete_task", {"task_id": 1})
        assert deleted == {"task_id": 1, "status": "deleted", "title": "Buy milk"}
        assert [task.id for task in await store.tasks.list("alice")] == [2]
        assert await succeeds(client, "list_tasks", {}) == {
            "tasks": [{"task_id": 2, "title": "Call dad", "description": None, "completed": False}],
            "total": 1,
            "omitted": 0,
        }


async def test_mistakes_are_tool_errors_and_the_server_keeps_serving(
    database_url: str, connector: Connector
) -> None:
    mistakes: list[tuple[str, dict[str, Any] | None, dict[str, str]]] = [
        ("add_task", {"title": ""}, invalid("title must not be empty")),
        ("add_task", None, invalid("missing argument(s): title")),
        ("add_task", {"title": "milk", "user_id": "bob"}, invalid("unknown argument(s): user_id")),
        (
            "add_task",
            {"title": "t" * 201},
            {"error": "title is longer than 200 characters", "code": "too_long"},
        ),
        ("list_tasks", {"status": "done"}, invalid("status must be all, pending or completed")),
        ("complete_task", {"task_id": 0}, INVALID_ID),
        ("delete_task", {"task_id": True}, INVALID_ID),
        ("update_task", {"task_id": 7, "title": "x"}, NOT_FOUND),
    ]
    async with mcp_client("alice", database_url) as client:
        for tool, arguments, expected in mistakes:
            assert await fails(client, tool, arguments) == expected, (tool, arguments)
        # A tool that does not exist is a protocol error (JSON-RPC -32602), as MCP asks.
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("drop_tables", {})
        assert (unknown.value.code, unknown.value.message) == (-32602, "Unknown tool: drop_tables")
        assert set((await row_counts(connector, "alice")).values()) == {0}
        added = await succeeds(client, "add_task", {"title": "Buy milk"})
        assert added == {"task_id": 1, "status": "created", "title": "Buy milk"}


async def test_another_user_cannot_see_or_change_alices_tasks(
    database_url: str, store: SQLAlchemyStore, connector: Connector
) -> None:
    await store.tasks.add("alice", title="Buy milk")
    await store.tasks.add("alice", title="Call mom")
    alices_rows = await snapshot(connector, "alice")
    async with mcp_client("bob", database_url) as client:
        assert await succeeds(client, "list_tasks", {"status": "all"}) == {
            "tasks": [],
            "total": 0,
            "omitted": 0,
        }
        for task_id in (1, 2):
            assert await fails(client, "complete_task", {"task_id": task_id}) == NOT_FOUND
            assert (
                await fails(client, "update_task", {"task_id": task_id, "title": "x"}) == NOT_FOUND
            )
            assert await fails(client, "delete_task", {"task_id": task_id}) == NOT_FOUND
        refused = await fails(client, "list_tasks", {"user_id": "alice"})
        assert refused == invalid("unknown argument(s): user_id")
        added = await succeeds(client, "add_task", {"title": "Bob's task"})
        assert added == {"task_id": 1, "status": "created", "title": "Bob's task"}
    assert await snapshot(connector, "alice") == alices_rows
    assert [task.title for task in await store.tasks.list("bob")] == ["Bob's task"]


async def test_the_server_migrates_a_new_database_and_keeps_stdout_for_the_protocol(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    process = await asyncio.create_subprocess_exec(
        *command("alice", url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    # No client: stdin ends at once, and the server stops without a word on stdout.
    assert (process.returncode, stdout) == (0, b""), stderr.decode()
    store = SQLAlchemyStore.from_url(url)
    try:
        assert await store.tasks.list("alice") == []
    finally:
        await store.close()


async def test_an_unreachable_database_is_a_clean_error_on_stderr() -> None:
    url = "postgresql://postgres@127.0.0.1:1/chatledger"
    process = await asyncio.create_subprocess_exec(
        *command("alice", url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert (process.returncode, stdout) == (1, b"")
    [line] = stderr.decode().splitlines()
    assert line.startswith(f"error: cannot use the database at {url}: "), line
    assert "Traceback" not in line
