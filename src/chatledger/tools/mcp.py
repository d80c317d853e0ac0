"""The task tools over MCP: `chatledger mcp` serves them on stdio, the chat server over HTTP.

server = create_mcp_server(store.tasks, resolve_user=lambda ctx: "alice")
await serve_stdio(server)

The server is the SDK's low-level `Server`, not `MCPServer`: `MCPServer` derives each
schema from a Python signature and validates arguments with pydantic before the tool
runs, so clients would see a different schema than the one the agent's model gets, and a
bad argument as pydantic's text instead of the `{"error", "code"}` object. Here the
schemas are `TASK_TOOLS` as written, and every argument reaches `TaskTools.call`, which
refuses unknown ones and answers every mistake the same way on every face of the tools.

The user is never an argument. `resolve_user` names it for each call from the request
context: a fixed user on stdio; over HTTP, the subject of the request's verified token
(`ctx.request` is the Starlette request there).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, TypeAlias

from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)

from chatledger.errors import UnavailableError
from chatledger.tools.tasks import TASK_TOOLS, TaskRepository, TaskTools

__all__ = ["RequestContext", "UserResolver", "create_mcp_server", "serve_stdio"]

RequestContext: TypeAlias = ServerRequestContext[Any, Any]
"""What a tool call knows of its request: `request` is the HTTP request, None on stdio."""

UserResolver: TypeAlias = Callable[[RequestContext], str]
"""Names the verified user a tool call acts for; raising refuses the call."""


def create_mcp_server(tasks: TaskRepository, *, resolve_user: UserResolver) -> Server[Any]:
    """An MCP server exposing the five task tools of `TASK_TOOLS`, and nothing else.

    A tool's result is its JSON object, as structured content and as JSON text. A result
    with `"error"` is a tool error (`isError: true`) the model can read and correct, not
    a protocol error; so is `unavailable` when the database cannot be reached.

    Args:
        tasks: where tasks live, e.g. `SQLAlchemyStore.tasks`.
        resolve_user: called on every tool call, never once per connection, so that
            each HTTP request acts for the user its own token names.

    Returns:
        A low-level `Server`: `serve_stdio(server)`, or mount
        `server.streamable_http_app(...)` in an ASGI app.
    """
    schemas = {spec.name: dict(spec.parameters) for spec in TASK_TOOLS}
    tools = [
        Tool(
            name=spec.name,
            title=spec.title,
            description=spec.description,
            input_schema=schemas[spec.name],
            annotations=ToolAnnotations(
                title=spec.title,
                read_only_hint=spec.read_only,
                destructive_hint=spec.destructive,
                idempotent_hint=spec.idempotent,
                open_world_hint=spec.open_world,
            ),
        )
        for spec in TASK_TOOLS
    ]

    async def list_tools(
        ctx: RequestContext, params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=tools)

    async def call_tool(ctx: RequestContext, params: CallToolRequestParams) -> CallToolResult:
        if params.name not in schemas:
            # A protocol error, as MCP asks: no such tool is a bad request, not a result.
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        task_tools = TaskTools(tasks, resolve_user(ctx))
        try:
            result = await task_tools.call(params.name, params.arguments or {})
        except UnavailableError as error:
            # Tell the model, which can say so or retry, instead of failing the request.
            result = {"error": error.message, "code": error.code}
        return CallToolResult(
            content=[TextContent(text=json.dumps(result, ensure_ascii=False))],
            structured_content=result,
            is_error="error" in result,
        )

    return Server(
        "chatledger",
        version=version("chatledger"),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        # Streamable HTTP checks Mcp-Param headers against a tool's schema; this spares
        # it a tools/list round per call.
        get_tool_input_schema=schemas.get,
    )


async def serve_stdio(server: Server[Any]) -> None:
    """Serve `server` on this process's stdin and stdout until stdin closes.

    While it serves, the SDK points file descriptor 1 at stderr, so stray output from
    anything in the process cannot corrupt the protocol.
    """
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
