"""Crashes, takeovers and outages, with real `chatledger serve` processes.

The kill matrix: SIGKILL a server at each step of a turn — while the model thinks, right
after a tool call is recorded, halfway through the reply, while its closing write waits on
the database — then start it again and retry the identical request with the same
Idempotency-Key, honouring `Retry-After`, as a client should. Each time the retry answers
with the interrupted turn's record (200, `interrupted: true`) and runs nothing: one user
message, one conversation, each tool effect once, the turn closed, no orphan pair.

The model is a `FakeModelServer` in this process; the servers run the OpenAI agent
against it, so a turn can be held at exactly the step a test kills it in.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from chatledger.domain import Message, Role
from chatledger.store import connect
from chatledger.testing import FakeModelServer, FunctionCall, Stall, Text, ToolCalls
from tests.factories import assert_invariants
from tests.process.conftest import StartServer
from tests.process.postgres import PrivatePostgres
from tests.process.servers import (
    SECRET,
    ServerProcess,
    TcpProxy,
    auth,
    child_env,
    eventually,
    start_server,
)

pytestmark = pytest.mark.slow

ADD_MILK = FunctionCall("add_task", {"title": "milk"})
# Short leases keep the matrix quick; the takeover test below runs the default.
LEASE_SECONDS = "2"
RETRY_FOR = 30.0


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def model_env(model: FakeModelServer, **settings: str) -> dict[str, str]:
    env = child_env(JWT_SECRET=SECRET, **settings)
    env.update(OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="test")
    return env


async def send_until_answered(
    client: httpx.AsyncClient, user: str, body: dict[str, Any], key: str, *, stream: bool = False
) -> httpx.Response:
    """POST the turn until it has an answer, waiting `Retry-After` after a 409 or 503."""
    path = f"/api/{user}/chat/stream" if stream else f"/api/{user}/chat"
    deadline = time.monotonic() + RETRY_FOR
    while True:
        response = await client.post(path, json=body, headers={"Idempotency-Key": key})
        if response.status_code not in (409, 503):
            return response
        assert response.json()["code"] in ("idempotency_in_flight", "unavailable")
        assert time.monotonic() < deadline, f"no answer within {RETRY_FOR} s: {response.text}"
        await asyncio.sleep(float(response.headers["Retry-After"]))


async def stored(database_url: str, user: str) -> tuple[list[Message], list[str], int]:
    """The user's one conversation's messages, task titles, and how many conversations."""
    from chatledger.store import SQLAlchemyStore

    store = SQLAlchemyStore.from_url(database_url)
    try:
        conversations = (await store.list_conversations(user)).items
        messages = await store.history(user, conversations[0].id, limit=1000)
        titles = [task.title for task in await store.tasks.list(user)]
    finally:
        await store.close()
    return messages, titles, len(conversations)


@asynccontextmanager
async def blocked(database_url: str, proxy: TcpProxy | None) -> AsyncIterator[None]:
    """The database accepts no write for the block's span: SQLite's write lock held by
    another connection, or PostgreSQL's traffic held at the proxy."""
    if proxy is not None:
        proxy.pause()
        try:
            yield
        finally:
            proxy.resume()
        return
    holder = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_database(request: pytest.FixtureRequest, sqlite_url: str) -> tuple[str, TcpProxy | None]:
    """A database for the server (PostgreSQL through a proxy a test can hold)."""
    if request.param == "sqlite":
        return sqlite_url, None
    proxy: TcpProxy = request.getfixturevalue("proxy")
    url: str = request.getfixturevalue("proxied_postgres_url")
    return url, proxy


Step = Callable[[FakeModelServer, str, str, TcpProxy | None], Awaitable[None]]


async def model_thinking(model: FakeModelServer, *_: Any) -> None:
    await eventually(lambda: _true(len(model.requests) == 1), within=15, what="the model asked")


async def tool_recorded(model: FakeModelServer, *_: Any) -> None:
    # The agent sends the tool's output back to the model only once the toolbox returned,
    # and the toolbox returns only once the call and its result are committed.
    await eventually(lambda: _true(len(model.requests) == 2), within=15, what="tool recorded")


async def reply_halfway(model: FakeModelServer, database_url: str, user: str, _: Any) -> None:
    await tool_recorded(model)
    db = connect(database_url)
    try:

        async def delta_stored() -> bool:
            found = await db.read(
                lambda conn: conn.execute(
                    text("SELECT data FROM turn_events WHERE user_id = :u AND name = 'delta'"),
                    {"u": user},
                ).all()
            )
            return any(json.loads(row.data)["text"] == "Added milk" for row in found)

        await eventually(delta_stored, within=15, what="half the reply is stored")
    finally:
        await db.close()


async def store_titles(database_url: str, user: str) -> list[str]:
    db = connect(database_url)
    try:
        return await db.read(
            lambda conn: list(
                conn.execute(text("SELECT title FROM tasks WHERE user_id = :u"), {"u": user})
                .scalars()
                .all()
            )
        )
    finally:
        await db.close()


async def _true(value: bool) -> bool:
    return value


MATRIX: dict[str, tuple[list[Any], Step, list[str], str]] = {
    # step: (the model's script, where to kill, tasks left, the retry's `response`)
    "while the model thinks": ([Stall(then=Text("Hello."))], model_thinking, [], ""),
    "right after a tool call is recorded": (
        [ToolCalls([ADD_MILK]), Stall(then=Text("Added milk."))],
        tool_recorded,
        ["milk"],
        "",
    ),
    "halfway through the reply": (
        [ToolCalls([ADD_MILK]), Text("Added milk for you!!", chunks=2, pause_after=1)],
        reply_halfway,
        ["milk"],
        "Added milk",
    ),
}


@pytest.mark.parametrize("step", [*MATRIX, "while the closing write waits"])
@pytest.mark.parametrize("entry", ["chat", "chat/stream"])
async def test_a_turn_killed_at_any_step_is_answered_once_on_retry(
    serve: StartServer,
    crash_database: tuple[str, TcpProxy | None],
    step: str,
    entry: str,
) -> None:
    database_url, proxy = crash_database
    closing = step == "while the closing write waits"
    script, kill_after, tasks, response = (
        ([ToolCalls([ADD_MILK]), Stall(then=Text("Added milk."))], tool_recorded, ["milk"], "")
        if closing
        else MATRIX[step]
    )
    user, key = unique("alice"), unique("key")
    body = {"message": "please add milk"}
    async with FakeModelServer(script) as model:
        env = model_env(model, LEASE_SECONDS=LEASE_SECONDS)
        server = await serve(database_url, agent="openai", env=env)
        async with server.client(headers=auth(user)) as client:
            first = asyncio.create_task(
                client.post(f"/api/{user}/chat", json=body, headers={"Idempotency-Key": key})
            )
            await kill_after(model, database_url, user, proxy)
            if closing:
                async with blocked(database_url, proxy):
                    model.release()
                    await eventually(
                        lambda: _true(model.replies_sent == 2), within=15, what="reply sent"
                    )
                    await server.kill()
            else:
                await server.kill()
            with pytest.raises(httpx.TransportError):
                await first
        asked = len(model.requests)

        restarted = await serve(database_url, agent="openai", env=env)
        async with restarted.client(headers=auth(user)) as client:
            answer = await send_until_answered(
                client, user, body, key, stream=entry == "chat/stream"
            )
            again = await send_until_answered(client, user, body, key)
        assert len(model.requests) == asked, "the retry ran the agent again"

    assert answer.status_code == 200, answer.text
    if entry == "chat/stream":
        events = [
            json.loads(line[len("data: ") :])
            for line in answer.text.splitlines()
            if line.startswith("data: ")
        ]
        result = events[-1]
        assert result["replayed"] is True
    else:
        result = answer.json()
        assert answer.headers["Idempotent-Replayed"] == "true"
    assert result["interrupted"] is True
    assert result["response"] == response
    assert [call["name"] for call in result["tool_calls"]] == ["add_task"] * len(tasks)
    assert {k: again.json()[k] for k in ("response", "tool_calls", "interrupted")} == {
        k: result[k] for k in ("response", "tool_calls", "interrupted")
    }
    messages, titles, conversations = await stored(database_url, user)
    assert conversations == 1
    assert titles == tasks
    assert [m.content for m in messages if m.role is Role.USER] == ["please add milk"]
    assert_invariants(messages)
    assert messages[-1].metadata == {"status": "interrupted"}


async def test_a_dead_replicas_conversation_is_taken_over_within_the_lease(
    tmp_path: Any, postgres_url: str
) -> None:
    """Two replicas on one PostgreSQL, default settings: the one running a turn is killed;
    the other accepts a new turn on that conversation within 10 s, having said when to
    come back, and closes the dead turn as interrupted first."""
    user = unique("bob")
    servers: list[ServerProcess] = []
    async with FakeModelServer([Stall(then=Text("late")), Text("I am here.")]) as model:
        try:
            for _ in range(2):
                servers.append(
                    await start_server(
                        postgres_url, cwd=tmp_path, agent="openai", env=model_env(model)
                    )
                )
            for server in servers:
                await server.wait_ready()
            a, b = servers
            async with a.client(headers=auth(user)) as client_a:
                created = await client_a.post(f"/api/{user}/conversations", json={})
                conversation_id = created.json()["id"]
                body = {"message": "think hard", "conversation_id": conversation_id}
                first = asyncio.create_task(client_a.post(f"/api/{user}/chat", json=body))
                await eventually(
                    lambda: _true(len(model.requests) == 1), within=15, what="turn running"
                )
                await a.kill()
                killed_at = time.monotonic()
                with pytest.raises(httpx.TransportError):
                    await first
            async with b.client(headers=auth(user)) as client_b:
                body = {"message": "are you there?", "conversation_id": conversation_id}
                refusals = []
                while (
                    answer := await client_b.post(f"/api/{user}/chat", json=body)
                ).status_code == 409:
                    assert answer.json()["code"] == "conversation_busy"
                    refusals.append(int(answer.headers["Retry-After"]))
                    await asyncio.sleep(refusals[-1])
                taken_over_in = time.monotonic() - killed_at
                idle_stop = await client_b.post(f"/api/{user}/conversations/{conversation_id}/stop")
                messages = await client_b.get(
                    f"/api/{user}/conversations/{conversation_id}/messages"
                )
        finally:
            for server in servers:
                await server.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"] == "I am here."
    assert taken_over_in < 10 + 1.5, f"took {taken_over_in:.1f} s"
    assert refusals and all(1 <= seconds <= 10 for seconds in refusals)
    assert (idle_stop.status_code, idle_stop.json()) == (200, {"stopping": False})
    roles = [(m["role"], m["metadata"].get("status")) for m in messages.json()["items"]]
    assert roles == [
        ("user", None),
        ("assistant", "interrupted"),
        ("user", None),
        ("assistant", None),
    ]


async def test_a_running_turn_is_followed_from_another_replica(
    serve: StartServer, crash_database: tuple[str, TcpProxy | None]
) -> None:
    """A client attached to replica B sees, event for event, what the client that started
    the turn on replica A is sent; one that reconnects with `Last-Event-ID` picks up after
    it; once the turn is over there is nothing to attach to (204)."""
    database_url, _ = crash_database
    user = unique("carol")
    script = [ToolCalls([ADD_MILK]), Text("Added milk for you!!", chunks=2, pause_after=1)]
    async with FakeModelServer(script) as model:
        env = model_env(model)
        a = await serve(database_url, agent="openai", env=env)
        b = await serve(database_url, agent="openai", env=env)
        async with (
            a.client(headers=auth(user)) as client_a,
            b.client(headers=auth(user)) as client_b,
        ):
            created = await client_a.post(f"/api/{user}/conversations", json={})
            conversation_id = created.json()["id"]
            follow = f"/api/{user}/conversations/{conversation_id}/stream"
            body = {"message": "add milk", "conversation_id": conversation_id}
            async with client_a.stream("POST", f"/api/{user}/chat/stream", json=body) as sent:
                await reply_halfway(model, database_url, user, None)
                async with client_b.stream("GET", follow) as followed:
                    follower = followed.aiter_text()
                    seen = ""
                    while seen.count("\n\n") < 4:  # conversation, tool_call, tool_result, delta
                        seen += (await anext(follower)).replace("\r\n", "\n")
                    last_id = [
                        line[len("id: ") :] for line in seen.split("\n") if line.startswith("id: ")
                    ][-1]
                    resume = {"Last-Event-ID": last_id}
                    async with client_b.stream("GET", follow, headers=resume) as resumed:
                        model.release()
                        picked_up = "".join([chunk async for chunk in resumed.aiter_text()])
                    seen += "".join([chunk async for chunk in follower])
                live = "".join([chunk async for chunk in sent.aiter_text()])
            over = await client_b.get(follow)

    def events(stream: str) -> list[str]:
        return [block for block in stream.replace("\r\n", "\n").split("\n\n") if "event:" in block]

    assert events(seen) == events(live)
    assert events(picked_up) == events(live)[4:]
    assert "event: done" in events(live)[-1]
    assert over.status_code == 204


async def test_postgresql_stopped_under_load_duplicates_nothing(tmp_path: Any) -> None:
    """20 clients for 30 s, each turn under a key of its own and retried with it after a 503
    or 409, as `Retry-After` says; PostgreSQL stops (fast shutdown) for a while and starts
    again. No 500; every 5xx is a 503 with Retry-After; every key ends with exactly one user
    message and at most one task, and a task exactly when its answer reports the tool call."""
    statuses: list[tuple[int, bool]] = []
    keys: dict[str, tuple[str, str, dict[str, Any]]] = {}  # key -> user, message, answer

    async def client_loop(server: ServerProcess, number: int, until: float) -> None:
        user = f"load-{number}"
        conversation_id: str | None = None
        async with server.client(headers=auth(user), timeout=60) as client:
            turn = 0
            while time.monotonic() < until:
                turn += 1
                message = f"add buy item {number}-{turn}"
                key = unique("k")
                body = {"message": message, "conversation_id": conversation_id}
                while True:
                    try:
                        response = await client.post(
                            f"/api/{user}/chat", json=body, headers={"Idempotency-Key": key}
                        )
                    except httpx.TransportError:
                        await asyncio.sleep(0.5)
                        continue
                    statuses.append(
                        (response.status_code, response.headers.get("Retry-After", "").isdigit())
                    )
                    if response.status_code in (409, 503):
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    break
                assert response.status_code == 200, response.text
                answer = response.json()
                conversation_id = answer["conversation_id"]
                keys[key] = (user, message, answer)

    async with PrivatePostgres() as pg:
        server = await start_server(pg.url, cwd=tmp_path)
        try:
            await server.wait_ready()
            until = time.monotonic() + 30
            load = [asyncio.create_task(client_loop(server, n, until)) for n in range(20)]
            await asyncio.sleep(8)
            await pg.stop()
            await asyncio.sleep(12)
            await pg.start()
            await asyncio.gather(*load)
            assert server.process.returncode is None
        finally:
            await server.stop()

        from chatledger.store import SQLAlchemyStore

        store = SQLAlchemyStore.from_url(pg.url)
        try:
            by_user: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for user, message, answer in keys.values():
                by_user.setdefault(user, []).append((message, answer))
            for user, turns in by_user.items():
                [conversation] = (await store.list_conversations(user)).items
                history = await store.history(user, conversation.id, limit=100_000)
                assert_invariants(history)
                said = [m.content for m in history if m.role is Role.USER]
                # Read whole: the store's task list stops at 100.
                titles = await store_titles(pg.url, user)
                for message, answer in turns:
                    assert said.count(message) == 1, (
                        f"{user}: {message!r} said {said.count(message)}x"
                    )
                    title = message.removeprefix("add ")
                    made = len(answer["tool_calls"])
                    assert titles.count(title) == made, f"{user}: {title!r} {titles.count(title)}x"
        finally:
            await store.close()
    codes = {status for status, _ in statuses}
    assert 500 not in codes
    assert all(has_retry for status, has_retry in statuses if status >= 500)
    assert {status for status in codes if status >= 500} <= {503}
    assert 503 in codes, "the outage was never seen: the test tested nothing"
    assert len(keys) > 100
