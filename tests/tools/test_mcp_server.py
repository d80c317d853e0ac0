"""`create_mcp_server` in process, for what stdio cannot show: the user is resolved on
every call (as the HTTP mount needs), and an unreachable database is a tool error."""

from __future__ import annotations

import pytest
from mcp import Client, MCPError
from mcp.server import ServerRequestContext

from chatledger.store import Connector, SQLAlchemyStore
from chatledger.tools.mcp import RequestContext, create_mcp_server
from tests.factories import row_counts


async def test_the_user_is_resolved_on_every_call_from_its_request(
    store: SQLAlchemyStore,
) -> None:
    users = iter(["alice", "bob", "alice"])
    contexts: list[RequestContext] = []

    def resolve_user(ctx: RequestContext) -> str:
        contexts.append(ctx)
        return next(users)

    async with Client(create_mcp_server(store.tasks, resolve_user=resolve_user)) as client:
        await client.list_tools()
        added = await client.call_tool("add_task", {"title": "Buy milk"})
        as_bob = await client.call_tool("list_tasks", {})
        as_alice = await client.call_tool("list_tasks", {})
    assert added.structured_content == {"task_id": 1, "status": "created", "title": "Buy milk"}
    assert as_bob.structured_content == {"tasks": [], "total": 0, "omitted": 0}
    assert as_alice.structured_content == {
        "tasks": [{"task_id": 1, "title": "Buy milk", "description": None, "completed": False}],
        "total": 1,
        "omitted": 0,
    }
    assert len(contexts) == 3
    assert all(isinstance(ctx, ServerRequestContext) for ctx in contexts)
    assert {ctx.method for ctx in contexts} == {"tools/call"}


async def test_a_resolver_that_raises_refuses_the_call_and_changes_nothing(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    def no_user(ctx: RequestContext) -> str:
        raise PermissionError("no verified user")

    async with Client(create_mcp_server(store.tasks, resolve_user=no_user)) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("add_task", {"title": "Buy milk"})
    # The SDK answers with a generic protocol error: the reason stays on the server.
    assert "no verified user" not in str(refused.value)
    assert set((await row_counts(connector, "alice")).values()) == {0}


async def test_an_unreachable_database_is_a_tool_error_the_model_can_read() -> None:
    store = SQLAlchemyStore.from_url("postgresql://postgres@127.0.0.1:1/chatledger")
    try:
        server = create_mcp_server(store.tasks, resolve_user=lambda ctx: "alice")
        async with Client(server) as client:
            result = await client.call_tool("list_tasks", {})
    finally:
        await store.close()
    assert result.is_error
    assert result.structured_content == {
        "error": "the database is unavailable",
        "code": "unavailable",
    }
