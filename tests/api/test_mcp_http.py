"""The task tools over MCP's streamable HTTP at /mcp, with the SDK's own client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from chatledger.api.mcp import MCPServer
from chatledger.errors import UnavailableError
from chatledger.store import SQLAlchemyStore
from chatledger.testing import ScriptedAgent
from chatledger.tools import TASK_TOOLS
from tests.api.conftest import Server, auth
from tests.factories import snapshot


@asynccontextmanager
async def mcp_client(server: Server, headers: dict[str, str]) -> AsyncIterator[Client]:
    """An MCP client of the app at /mcp, over real HTTP semantics through ASGI."""
    http = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=server.app),
        base_url="http://chatledger",
        headers=headers,
    )
    async with (
        http,
        Client(streamable_http_client("http://chatledger/mcp/", http_client=http)) as client,
    ):
        yield client


def result(call: CallToolResult) -> Any:
    return call.structured_content


async def test_the_tools_act_for_the_tokens_user(server: Server, connector) -> None:
    async with mcp_client(server, auth("alice")) as alice:
        listed = await alice.list_tools()
        assert sorted(tool.name for tool in listed.tools) == sorted(s.name for s in TASK_TOOLS)
        added = await alice.call_tool("add_task", {"title": "buy milk"})
        assert not added.is_error
        assert result(added) == {"task_id": 1, "status": "created", "title": "buy milk"}
        done = await alice.call_tool("complete_task", {"task_id": 1})
        assert result(done)["status"] == "completed"

    bob_before = await snapshot(connector, "bob")
    async with mcp_client(server, auth("bob")) as bob:
        listed = await bob.call_tool("list_tasks", {})
        assert result(listed) == {"tasks": [], "total": 0, "omitted": 0}
        refused = await bob.call_tool("delete_task", {"task_id": 1})
        assert refused.is_error and result(refused)["code"] == "not_found"
        smuggled = await bob.call_tool("add_task", {"title": "x", "user_id": "alice"})
        assert smuggled.is_error and result(smuggled)["code"] == "invalid_arguments"
    assert await snapshot(connector, "bob") == bob_before
    [task] = await server.app.state.store.tasks.list("alice")
    assert (task.title, task.completed) == ("buy milk", True)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWxpY2U6cHc="}],
    ids=["none", "garbage", "basic"],
)
async def test_without_a_valid_token_it_is_401(server: Server, headers: dict[str, str]) -> None:
    response = await server.client.post(
        "/mcp/",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={**headers, "Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"


async def test_an_unreachable_database_is_a_tool_error_not_a_crash(
    make_server: Callable[..., Any], default_agent: ScriptedAgent
) -> None:
    async with (
        make_server(
            default_agent, database_url="postgresql://postgres@127.0.0.1:1/nowhere"
        ) as server,
        mcp_client(server, auth("alice")) as alice,
    ):
        call = await alice.call_tool("list_tasks", {})
    assert call.is_error
    assert result(call)["code"] == "unavailable"


async def test_clients_arriving_together_start_one_mcp_server(server: Server) -> None:
    # The SDK's session manager starts on the first request to /mcp, not with the app:
    # the first requests, side by side, all wait for the same one.
    async def add(user: str) -> Any:
        async with mcp_client(server, auth(user)) as client:
            return result(await client.call_tool("add_task", {"title": f"{user}'s"}))

    users = [f"user{n}" for n in range(4)]
    added = await asyncio.gather(*(add(user) for user in users))
    assert [a["title"] for a in added] == [f"{user}'s" for user in users]
    assert len([t for t in asyncio.all_tasks() if _is_start(t)]) == 1


async def test_a_first_request_cancelled_while_the_server_starts_does_not_stop_it(
    store: SQLAlchemyStore,
) -> None:
    # Found red-teaming: a client gone while the session manager started cancelled the
    # start with it, which died on the next request's behalf, and that one began another.
    server = MCPServer(store)
    try:
        first = asyncio.create_task(server.manager())
        await asyncio.sleep(0)  # the start is under way
        [starting] = [t for t in asyncio.all_tasks() if _is_start(t)]
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await server.manager()
        assert [t for t in asyncio.all_tasks() if _is_start(t)] == [starting]
    finally:
        await server.close()
    assert starting.done() and starting.exception() is None


async def test_a_request_while_the_server_stops_is_unavailable(store: SQLAlchemyStore) -> None:
    server = MCPServer(store)
    await server.manager()
    await server.close()
    with pytest.raises(UnavailableError):
        await server.manager()


def _is_start(task: asyncio.Task[Any]) -> bool:
    return task.get_coro().__qualname__ == "MCPServer._run"
