"""A small MCP server for the tests of `MCPServersToolset`, built on the SDK's low-level
`Server` so that every result, annotation and notification is exactly what a test says.

    python mcp_fixture_server.py [options]            serve on stdio
    python mcp_fixture_server.py [options] --http     serve streamable HTTP on 127.0.0.1

With `--http` it binds a free port itself (or `--port`) and prints it as the first line on
stdout, so a test never races another process for a port. `--prefix` goes before every
tool name, so two copies can run side by side without a name clash (or with one, on
purpose); `--extra` names the tool that `grow` adds. `--pidfile` gets a line with the
process id, so a test can see which processes are still alive.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from typing import Any

import anyio
import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ImageContent,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
SECONDS = {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]}


def tools(prefix: str, extra: str | None) -> list[Tool]:
    listed = [
        Tool(
            name=f"{prefix}echo",
            title="Echo",
            description="Says the text back.",
            input_schema={
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
            annotations=ToolAnnotations(
                read_only_hint=True,
                destructive_hint=False,
                idempotent_hint=True,
                open_world_hint=False,
            ),
        ),
        Tool(
            name=f"{prefix}weather",
            description="The weather in a city, as data.",
            input_schema={"type": "object", "properties": {"city": {"type": "string"}}},
            annotations=ToolAnnotations(title="Weather", read_only_hint=True),
        ),
        Tool(
            name=f"{prefix}chart", description="A chart and its caption.", input_schema=NO_ARGUMENTS
        ),
        Tool(name=f"{prefix}fail", description="Always fails.", input_schema=NO_ARGUMENTS),
        Tool(name=f"{prefix}refuse", description="Refuses the call.", input_schema=NO_ARGUMENTS),
        Tool(
            name=f"{prefix}misshape",
            description="Breaks its own output schema.",
            input_schema=NO_ARGUMENTS,
            output_schema={
                "type": "object",
                "properties": {"count": {"type": "integer"}},
                "required": ["count"],
            },
        ),
        Tool(name=f"{prefix}pid", description="This process's id.", input_schema=NO_ARGUMENTS),
        Tool(name=f"{prefix}crash", description="Exits mid-call.", input_schema=NO_ARGUMENTS),
        Tool(name=f"{prefix}sleep", description="Waits, then answers.", input_schema=SECONDS),
        Tool(name=f"{prefix}freeze", description="Blocks the server.", input_schema=SECONDS),
        Tool(name=f"{prefix}grow", description="Adds a tool.", input_schema=NO_ARGUMENTS),
        Tool(
            name=f"{prefix}env",
            description="An environment variable of this process.",
            input_schema={"type": "object", "properties": {"name": {"type": "string"}}},
        ),
        Tool(
            name=f"{prefix}header", description="The X-Api-Key it got.", input_schema=NO_ARGUMENTS
        ),
        Tool(name=f"{prefix}garble", description="Answers nonsense.", input_schema=NO_ARGUMENTS),
    ]
    if extra is not None:
        listed.append(Tool(name=extra, description="Added later.", input_schema=NO_ARGUMENTS))
    return listed


def create_server(prefix: str, extra: str) -> Server[Any]:
    grown: list[str] = []

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=tools(prefix, grown[0] if grown else None))

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult:
        name = params.name.removeprefix(prefix)
        arguments = params.arguments or {}
        if name == "echo":
            return CallToolResult(content=[TextContent(text=arguments["text"])])
        if name == "weather":
            city = arguments.get("city", "Oslo")
            return CallToolResult(
                content=[TextContent(text=f"{city}: 21 °C"), TextContent(text="sunny")],
                structured_content={"city": city, "celsius": 21},
            )
        if name == "chart":
            return CallToolResult(
                content=[
                    ImageContent(data="iVBORw0KGgo=", mime_type="image/png"),
                    TextContent(text="sales"),
                ]
            )
        if name == "fail":
            return CallToolResult(content=[TextContent(text="the disk is full")], is_error=True)
        if name == "refuse":
            # A protocol error, not a tool result: what a server says to a bad request.
            raise MCPError(code=INVALID_PARAMS, message="refused: no arguments expected")
        if name == "misshape":
            return CallToolResult(
                content=[TextContent(text="many")], structured_content={"count": "many"}
            )
        if name == "pid":
            return CallToolResult(content=[TextContent(text=str(os.getpid()))])
        if name == "crash":
            os._exit(3)
        if name == "sleep":
            await anyio.sleep(arguments["seconds"])
            return CallToolResult(content=[TextContent(text="awake")])
        if name == "freeze":
            # Blocks the event loop on purpose: the server answers nothing, not even a ping.
            time.sleep(arguments["seconds"])  # noqa: ASYNC251
            return CallToolResult(content=[TextContent(text="thawed")])
        if name == "grow":
            grown.append(extra)
            await ctx.session.send_tool_list_changed()
            return CallToolResult(content=[TextContent(text="grown")])
        if name == "env":
            value = os.environ.get(arguments["name"], "<unset>")
            return CallToolResult(content=[TextContent(text=value)])
        if name == "header":
            key = ctx.request.headers.get("x-api-key", "<none>") if ctx.request else "<stdio>"
            return CallToolResult(content=[TextContent(text=key)])
        return CallToolResult(content=[TextContent(text=f"no tool {params.name}")], is_error=True)

    return Server("fixture", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def garbling(app: ASGIApp, tool: str) -> ASGIApp:
    """`app`, except that a call of `tool` is answered with a result that is not a
    CallToolResult (its content is not a list): a server the SDK cannot understand."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        if request.get("method") == "tools/call" and request["params"]["name"] == tool:
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"content": "nonsense"}}
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
            return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return wrapped


def serve_http(server: Server[Any], prefix: str, port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    app = garbling(server.streamable_http_app(), f"{prefix}garble")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", default="")
    parser.add_argument("--extra")
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pidfile")
    options = parser.parse_args()
    if options.pidfile:
        with open(options.pidfile, "a") as pidfile:
            print(os.getpid(), file=pidfile)
    server = create_server(options.prefix, options.extra or f"{options.prefix}extra")
    if options.http:
        serve_http(server, options.prefix, options.port)
    else:
        anyio.run(serve_stdio, server)


if __name__ == "__main__":
    main()
