"""/mcp as MCP clients meet it, against a real `chatledger serve`: the official SDK's client
and the OpenAI Agents SDK's `MCPServerStreamableHttp`, with no redirect on the way; tools
with titles and annotations; protocol errors where MCP wants them; the OAuth metadata a
401 points to (RFC 9728)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from agents.mcp import MCPServerStreamableHttp
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.process.conftest import StartServer
from tests.process.servers import SECRET, ServerProcess, auth, child_env

pytestmark = pytest.mark.slow


@asynccontextmanager
async def sdk_client(
    server: ServerProcess, path: str, statuses: list[int]
) -> AsyncIterator[Client]:
    async def note(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = httpx2.AsyncClient(
        headers=auth("alice"), event_hooks={"response": [note]}, trust_env=False, timeout=30
    )
    async with (
        http,
        Client(streamable_http_client(server.base_url + path, http_client=http)) as client,
    ):
        yield client


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
async def test_the_sdk_client_is_served_without_a_redirect(
    serve: StartServer, sqlite_url: str, path: str
) -> None:
    server = await serve(sqlite_url)
    statuses: list[int] = []
    async with sdk_client(server, path, statuses) as client:
        listed = await client.list_tools()
        added = await client.call_tool("add_task", {"title": "buy milk"})
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("drop_tables", {})
    assert statuses and not [s for s in statuses if 300 <= s < 400], statuses
    assert added.structured_content == {"task_id": 1, "status": "created", "title": "buy milk"}
    assert unknown.value.code == -32602
    tools = {tool.name: tool for tool in listed.tools}
    assert all(tool.title and tool.annotations for tool in tools.values())
    hints = {
        name: (
            tool.annotations.read_only_hint,
            tool.annotations.destructive_hint,
            tool.annotations.idempotent_hint,
            tool.annotations.open_world_hint,
        )
        for name, tool in tools.items()
        if tool.annotations is not None
    }
    assert hints == {
        "add_task": (False, False, False, False),
        "list_tasks": (True, False, True, False),
        "complete_task": (False, False, True, False),
        "delete_task": (False, True, True, False),
        "update_task": (False, True, True, False),
    }


async def test_the_agents_sdks_mcp_client_lists_and_calls_the_tools(
    serve: StartServer, sqlite_url: str
) -> None:
    server = await serve(sqlite_url)
    mcp = MCPServerStreamableHttp(
        {"url": server.base_url + "/mcp", "headers": auth("alice"), "timeout": 30},
        name="chatledger",
    )
    async with mcp:
        tools = await mcp.list_tools()
        result = await mcp.call_tool("add_task", {"title": "from the agents sdk"})
    assert {tool.name for tool in tools} >= {"add_task", "list_tasks"}
    assert result.structured_content == {
        "task_id": 1,
        "status": "created",
        "title": "from the agents sdk",
    }


async def test_a_401_points_oauth_clients_to_the_resource_metadata(
    serve: StartServer, sqlite_url: str
) -> None:
    issuer = "https://auth.example.com"
    server = await serve(sqlite_url, env=child_env(JWT_SECRET=SECRET, JWT_ISSUER=issuer))
    async with server.client() as client:
        refused = await client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        bad = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Authorization": "Bearer nope"},
        )
        metadata = await client.get("/.well-known/oauth-protected-resource/mcp")
        root = await client.get("/.well-known/oauth-protected-resource")
        stream = await client.get("/mcp", headers=auth("alice"))
    assert refused.status_code == 401 and bad.status_code == 401
    expected = f'resource_metadata="{server.base_url}/.well-known/oauth-protected-resource/mcp"'
    assert refused.headers["WWW-Authenticate"] == f"Bearer {expected}"
    assert bad.headers["WWW-Authenticate"] == f'Bearer error="invalid_token", {expected}'
    assert metadata.status_code == 200 and metadata.json() == root.json()
    assert metadata.json() == {
        "resource": f"{server.base_url}/mcp",
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "chatledger",
    }
    # No standing event stream: this server sends nothing of its own accord.
    assert (stream.status_code, stream.headers["Allow"]) == (405, "POST")
