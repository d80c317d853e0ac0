"""The task tools over MCP's streamable HTTP, at /mcp, for the user of the bearer token.

The same JWT as the REST API is checked before MCP sees the request; the tools act for
the token's subject (the MCP server asks for the user on every call, from the request).
Stateless mode keeps no session in memory, so any replica answers any request.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from chatledger.api.auth import Authenticator, bearer_token
from chatledger.api.errors import domain_error_response
from chatledger.errors import AuthenticationError, ChatLedgerError
from chatledger.store import SQLAlchemyStore
from chatledger.tools.mcp import RequestContext, create_mcp_server

__all__ = ["MCPEndpoint", "serve_mcp"]


def _user_of(ctx: RequestContext) -> str:
    # Over HTTP the request is always there; `MCPEndpoint` put the verified user in it.
    request: Request | None = ctx.request
    if request is None:
        raise AuthenticationError("MCP over HTTP needs a request to know its user")
    user_id: str = request.state.user_id
    return user_id


@contextlib.asynccontextmanager
async def serve_mcp(store: SQLAlchemyStore) -> AsyncIterator[ASGIApp]:
    """The MCP app for `store`, with its session manager running for the block's span."""
    server = create_mcp_server(store.tasks, resolve_user=_user_of)
    app = server.streamable_http_app(
        streamable_http_path="/",
        stateless_http=True,
        json_response=True,
        # DNS-rebinding protection guards servers that trust whoever can reach them;
        # every request here must carry a bearer token, which a rebinding page lacks.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    async with server.session_manager.run():
        yield app


class MCPEndpoint:
    """Mounted at /mcp: authenticates, then hands the request to the running MCP app."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        try:
            user_id = await self._authenticator.verify(bearer_token(headers.get("authorization")))
        except ChatLedgerError as error:
            # Refused here, before MCP sees the request, with the API's own JSON errors.
            await domain_error_response(error)(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["user_id"] = user_id
        mcp_app: ASGIApp = scope["app"].state.mcp_app
        await mcp_app(scope, receive, send)
