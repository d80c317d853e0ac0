"""`create_app(settings)`: the chat server, wired from settings through `chatledger.compose`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from chatledger.agents import Agent
from chatledger.api.auth import Authenticator
from chatledger.api.errors import install_error_handlers
from chatledger.api.guards import StreamLimiter, VerifyFirstMiddleware
from chatledger.api.logs import configure_logging
from chatledger.api.mcp import MCPEndpoint, metadata_router, serve_mcp
from chatledger.api.metrics import Metrics
from chatledger.api.middleware import RequestContextMiddleware
from chatledger.api.openapi import install_schema
from chatledger.api.routes import (
    chat,
    chatkit,
    conversations,
    dev,
    health,
    openai_conversations,
    search,
    tasks,
    transfer,
    usage,
    users,
)
from chatledger.api.routes.transfer import IMPORT_PATH
from chatledger.compose import AgentSetup, compose, purge
from chatledger.errors import UnavailableError
from chatledger.settings import Settings
from chatledger.store import SQLAlchemyStore
from chatledger.tools import AnyToolset
from chatledger.web import mount_web

__all__ = [
    "create_app",
    "create_app_from_environment",
    "create_dev_app_from_environment",
]


def _authorization_servers(settings: Settings) -> list[str]:
    # The issuer of the tokens is where an OAuth client gets them, when it is a URL.
    issuer = settings.jwt_issuer
    return [issuer] if issuer and issuer.startswith(("https://", "http://")) else []


def _cursor_key(settings: Settings) -> bytes:
    # Every replica must verify every other's listing cursors, so the key is derived
    # from configuration they share rather than drawn at random.
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    return hashlib.sha256(
        b"chatledger cursor key\0" + (secret or settings.database_url).encode()
    ).digest()


def create_app(
    settings: Settings,
    *,
    setup: AgentSetup | None = None,
    agent: Agent | None = None,
    toolsets: Sequence[AnyToolset] | None = None,
    store: SQLAlchemyStore | None = None,
    dev_login: bool = False,
) -> FastAPI:
    """The chat server for `settings`.

    Args:
        settings: everything configurable; see `chatledger.settings.Settings`.
        setup: the agent, toolsets and system prompt to serve; by default the factory
            `settings.app` names, or the built-in agent with the task tools.
        agent: shorthand for `AgentSetup(agent=agent, toolsets=toolsets)`, with the task
            tools and the built-in system prompt.
        toolsets: tools besides the task tools (and the configured MCP servers).
        store: the store to use (and leave open); by default one for
            `settings.database_url`, opened and closed with the app.
        dev_login: serve `POST /auth/dev-token`, a token for any user id to whoever asks.
            Only for a server whose JWT secret is its own (`chatledger serve --dev`
            makes one up): with a shared secret, those tokens would open every replica.

    Raises:
        ConfigurationError: unsafe or incomplete authentication settings.
        ValueError: both `setup` and `agent` or `toolsets`.
    """
    if agent is not None or toolsets is not None:
        if setup is not None:
            raise ValueError("pass a setup, or an agent and toolsets: not both")
        setup = AgentSetup(agent=agent, toolsets=toolsets or ())
    configure_logging(settings.log_level)
    if dev_login:
        structlog.get_logger("chatledger.api").warning(
            "dev sign-in is on: anyone who can reach this server can sign in as any user"
        )
    authenticator = Authenticator.from_settings(settings)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with compose(
            settings, setup=setup, store=store, cursor_key=_cursor_key(settings)
        ) as parts:
            app.state.store = parts.store
            app.state.service = parts.service
            chores = [
                asyncio.create_task(_purge(parts.store, settings)),
                asyncio.create_task(_close_dead_turns(parts.store, settings)),
            ]
            try:
                async with serve_mcp(parts.store) as app.state.mcp:
                    yield
            finally:
                for chore in chores:
                    chore.cancel()
                await asyncio.gather(*chores, return_exceptions=True)

    app = FastAPI(
        title="chatledger",
        summary="A stateless chat server for a tool-calling task agent.",
        version="0.1.0",
        lifespan=lifespan,
        # Swagger UI is served from the package (web/), ReDoc not at all: FastAPI's own
        # pages load their scripts from a CDN.
        docs_url=None,
        redoc_url=None,
        # Operation ids are the route functions' names: `chat`, `list_conversations`.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.authenticator = authenticator
    app.state.max_message_chars = settings.max_message_chars
    app.state.metrics = metrics
    app.state.metrics_token = (
        settings.metrics_token.get_secret_value() if settings.metrics_token else None
    )
    install_error_handlers(app)
    install_schema(app)
    app.include_router(chat.router)
    routes = (chatkit, conversations, openai_conversations, search, tasks, transfer, usage, users)
    app.include_router(health.router)
    for module in routes:
        app.include_router(module.router)
    if dev_login:
        app.include_router(dev.router)
    mcp = MCPEndpoint(authenticator)
    for path in ("/mcp", "/mcp/"):  # both, so that neither redirects to the other
        app.router.routes.append(Route(path, mcp, include_in_schema=False))
    app.include_router(metadata_router)
    app.state.authorization_servers = _authorization_servers(settings)
    mount_web(app, dev_login=dev_login)
    app.state.streams = StreamLimiter(settings.max_streams_per_user)
    # Inside CORS, which answers preflight requests (they carry no token) by itself.
    app.add_middleware(VerifyFirstMiddleware, authenticator=authenticator)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Idempotent-Replayed", "Retry-After"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        body_timeout=settings.request_body_timeout,
        max_requests=settings.max_concurrent_requests,
        body_limits=[(IMPORT_PATH, settings.max_import_bytes)],
    )
    return app


async def _purge(store: SQLAlchemyStore, settings: Settings) -> None:
    # Every replica purges, which is harmless: each delete takes what is due, once.
    while True:
        await asyncio.sleep(settings.retention_interval)
        with contextlib.suppress(UnavailableError):
            await purge(store, settings)


async def _close_dead_turns(store: SQLAlchemyStore, settings: Settings) -> None:
    # A turn whose replica died is closed by the next request on its conversation; this
    # closes the others, so a conversation nobody comes back to still reads as it
    # happened within seconds. Every replica sweeps; closing a turn is safe to race.
    # Stream events outlive their turn by a while, for clients still catching up.
    keep_events = timedelta(seconds=settings.agent_timeout) + timedelta(minutes=5)
    while True:
        await asyncio.sleep(settings.lease_seconds / 2)
        try:
            await store.turns.close_expired()
        except UnavailableError:
            continue
        except Exception:
            # A turn that cannot be closed is a bug to see in the log; it must not end
            # this loop, which every other dead turn (and the purge below) waits on.
            structlog.get_logger("chatledger.api").exception("closing dead turns failed")
        with contextlib.suppress(UnavailableError):
            await store.turns.purge_events(older_than=keep_events)


def create_app_from_environment() -> FastAPI:
    """`create_app` with settings read from the environment (uvicorn's factory for workers)."""
    return create_app(Settings())


def create_dev_app_from_environment() -> FastAPI:
    """The same with dev sign-in, for `chatledger serve --dev` only, which made up the JWT
    secret its workers find in their environment."""
    return create_app(Settings(), dev_login=True)
