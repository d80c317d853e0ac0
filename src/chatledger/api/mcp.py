"""The task tools over MCP's streamable HTTP, at /mcp, for the user of the bearer token.

The same JWT as the REST API is checked before MCP sees the request; the tools act for
the token's subject (the MCP server asks for the user on every call, from the request).
Stateless mode keeps no session in memory, so any replica answers any request.

- `/mcp` and `/mcp/` both serve, without a redirect: a 307 breaks clients that do not
  follow redirects for POST (the Agents SDK's `MCPServerStreamableHttp` among them) and
  doubles every request of those that do.
- `GET` is 405, as the MCP specification allows a server that sends nothing of its own
  accord: in stateless mode the SDK would hold an event stream open per GET, forever.
- A 401 names this resource's metadata (RFC 9728), served at
  `/.well-known/oauth-protected-resource/mcp` (and without the suffix), so OAuth-capable
  clients learn where tokens come from instead of dead-ending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from chatledger.api.auth import Authenticator, bearer_token
from chatledger.api.errors import domain_error_response, error_response
from chatledger.errors import AuthenticationError, ChatLedgerError, UnavailableError
from chatledger.store import SQLAlchemyStore

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from chatledger.tools.mcp import RequestContext

__all__ = ["METADATA_PATH", "MCPEndpoint", "MCPServer", "metadata_router", "serve_mcp"]

METADATA_PATH: Final = "/.well-known/oauth-protected-resource"

metadata_router = APIRouter(tags=["mcp"])


def _user_of(ctx: RequestContext) -> str:
    # Over HTTP the request is always there; `MCPEndpoint` put the verified user in it.
    request: Request | None = ctx.request
    if request is None:
        raise AuthenticationError("MCP over HTTP needs a request to know its user")
    user_id: str = request.state.user_id
    return user_id


class MCPServer:
    """The MCP SDK's session manager for the task tools, started on the first request to
    /mcp rather than with the app: importing the SDK was a third of `chatledger serve`'s
    start (docs/benchmarks.md), and many deployments never speak MCP.

    The manager runs in a task of its own, whose span its task group needs, until
    `close`.
    """

    def __init__(self, store: SQLAlchemyStore) -> None:
        self._store = store
        self._starting = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[StreamableHTTPSessionManager] | None = None

    async def manager(self) -> StreamableHTTPSessionManager:
        """The running session manager, started by the first caller.

        Raises:
            UnavailableError: the server is stopping.
        """
        async with self._starting:
            if self._stopping.is_set():
                raise UnavailableError("the MCP server is stopping")
            if self._ready is None:
                self._ready = asyncio.get_running_loop().create_future()
                self._running = asyncio.create_task(self._run(self._ready))
        # Shielded: a request that goes away while the manager starts (its client gone)
        # must not cancel the start that every other request waits for.
        manager = await asyncio.shield(self._ready)
        if self._stopping.is_set():  # stopped while this request waited
            raise UnavailableError("the MCP server is stopping")
        return manager

    async def _run(self, ready: asyncio.Future[StreamableHTTPSessionManager]) -> None:
        try:
            from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
            from mcp.server.transport_security import TransportSecuritySettings

            from chatledger.tools.mcp import create_mcp_server

            manager = StreamableHTTPSessionManager(
                app=create_mcp_server(self._store.tasks, resolve_user=_user_of),
                stateless=True,
                json_response=True,
                # DNS-rebinding protection guards servers that trust whoever can reach
                # them; every request here must carry a bearer token, which a rebinding
                # page lacks.
                security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            )
            async with manager.run():
                ready.set_result(manager)
                await self._stopping.wait()
        except BaseException as error:
            if not ready.done():  # the request waiting for it gets the failure
                ready.set_exception(error)
            raise

    async def close(self) -> None:
        """Stop the session manager, if it was started."""
        self._stopping.set()
        if self._running is not None:
            # A start that failed gave its error to the requests that waited for it.
            await asyncio.gather(self._running, return_exceptions=True)


@contextlib.asynccontextmanager
async def serve_mcp(store: SQLAlchemyStore) -> AsyncIterator[MCPServer]:
    """The MCP server for `store`, for the block's span (started on its first request)."""
    server = MCPServer(store)
    try:
        yield server
    finally:
        await server.close()


def _resource(base_url: str) -> str:
    return base_url.rstrip("/") + "/mcp"


class MCPEndpoint:
    """Serves /mcp: authenticates, then hands the request to the running MCP server."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope)
        if request.method == "GET":
            refusal = error_response(
                405,
                "method_not_allowed",
                "this MCP server sends no messages of its own: POST requests",
                "method_not_allowed",
                headers={"Allow": "POST"},
            )
            await refusal(scope, receive, send)
            return
        try:
            user_id = await self._authenticator.verify(
                bearer_token(request.headers.get("authorization"))
            )
        except ChatLedgerError as error:
            # Refused here, before MCP sees the request, with the API's own JSON errors.
            response = domain_error_response(error)
            if isinstance(error, AuthenticationError):
                metadata = str(request.base_url).rstrip("/") + METADATA_PATH + "/mcp"
                challenge = response.headers["WWW-Authenticate"]
                # RFC 6750: the scheme, a space, then comma-separated parameters.
                joiner = " " if challenge == "Bearer" else ", "
                response.headers["WWW-Authenticate"] = (
                    f'{challenge}{joiner}resource_metadata="{metadata}"'
                )
            await response(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["user_id"] = user_id
        server: MCPServer = scope["app"].state.mcp
        try:
            manager = await server.manager()
        except UnavailableError as error:
            await domain_error_response(error)(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)


def _metadata(request: Request) -> JSONResponse:
    authorization_servers: list[str] = request.app.state.authorization_servers
    document: dict[str, Any] = {
        "resource": _resource(str(request.base_url)),
        "bearer_methods_supported": ["header"],
        "resource_name": "chatledger",
    }
    if authorization_servers:
        document["authorization_servers"] = authorization_servers
    return JSONResponse(document)


@metadata_router.get(METADATA_PATH + "/mcp", include_in_schema=False)
async def protected_resource_metadata(request: Request) -> JSONResponse:
    """RFC 9728 metadata of the /mcp resource."""
    return _metadata(request)


@metadata_router.get(METADATA_PATH, include_in_schema=False)
async def protected_resource_metadata_root(request: Request) -> JSONResponse:
    """The same, where clients look first for a resource at the server's root."""
    return _metadata(request)
