"""An app per test, on SQLite and PostgreSQL, reached over ASGI with real HTTP semantics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger.agents import Agent
from chatledger.api import create_app
from chatledger.api.auth import Authenticator
from chatledger.settings import Settings
from chatledger.testing import CallTool, Say, ScriptedAgent

SECRET = "test-secret-that-is-long-enough-for-hs256"


def token_for(user_id: str, *, ttl: timedelta = timedelta(minutes=5)) -> str:
    authenticator = Authenticator(secret=SECRET, algorithms=["HS256"])
    return authenticator.issue(user_id, ttl=ttl)[0]


def auth(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user_id)}"}


@dataclass
class Server:
    """A running app and a client for it."""

    app: FastAPI
    client: httpx.AsyncClient
    agent: Agent

    async def chat(self, user: str, message: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            f"/api/{user}/chat", json={"message": message, **body}, headers=auth(user)
        )


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": SECRET,
        "agent_timeout": 5,
    }
    return Settings(**{**values, **overrides})


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan, entered and left in one task of its own, as a server runs it.

    (A fixture's setup and teardown run in different tasks, and the MCP session manager's
    task group must be left in the task that entered it.)
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        await task  # start-up failed: raise its error here
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
def default_agent() -> ScriptedAgent:
    return ScriptedAgent([CallTool("add_task", {"title": "buy milk"}), Say("Added buy milk.")])


@pytest.fixture
def make_server(
    database_url: str,
) -> Callable[..., Any]:
    """`async with make_server(agent, dev_login=False, **settings) as server:` an app on the
    test database."""

    @contextlib.asynccontextmanager
    async def make(
        agent: Agent, *, dev_login: bool = False, **overrides: Any
    ) -> AsyncIterator[Server]:
        url = overrides.pop("database_url", database_url)
        app = create_app(settings_for(url, **overrides), agent=agent, dev_login=dev_login)
        async with lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://chatledger"
            ) as client:
                yield Server(app, client, agent)

    return make


@pytest.fixture
async def server(
    make_server: Callable[..., Any], default_agent: ScriptedAgent
) -> AsyncIterator[Server]:
    async with make_server(default_agent) as running:
        yield running
