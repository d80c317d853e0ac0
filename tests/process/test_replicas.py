"""What only real `chatledger serve` processes can show.

Replicas that share one database, a restart between two turns, a database that goes away
and comes back under a running server, worker processes, a graceful shutdown with a turn
in flight, and what the server writes to its log. Every server runs the offline rules
agent and is reached over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from chatledger.store import SQLAlchemyStore, connect
from chatledger.store.schema import conversations
from tests.process.conftest import StartServer
from tests.process.servers import (
    SECRET,
    STOPPED,
    TcpProxy,
    auth,
    child_env,
    eventually,
    token_for,
)

pytestmark = pytest.mark.slow

# A database that answers again should be used again at once; this is generous.
RECOVER_WITHIN = 15.0


def unique(name: str) -> str:
    # Other tests truncate the shared PostgreSQL database between tests, not during them;
    # unique user ids keep these tests from seeing anyone else's rows either way.
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def chat(
    client: httpx.AsyncClient, user: str, message: str, conversation_id: str | None = None
) -> dict[str, Any]:
    body = {"message": message, "conversation_id": conversation_id}
    response = await client.post(f"/api/{user}/chat", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def history(client: httpx.AsyncClient, user: str, conversation_id: str) -> list[dict]:
    response = await client.get(
        f"/api/{user}/conversations/{conversation_id}/messages", params={"limit": 200}
    )
    assert response.status_code == 200, response.text
    assert response.json()["has_more"] is False
    messages: list[dict] = response.json()["items"]
    return messages


async def task_titles(client: httpx.AsyncClient, user: str) -> dict[str, bool]:
    """Each task's title and whether it is completed."""
    response = await client.get(f"/api/{user}/tasks")
    assert response.status_code == 200, response.text
    return {task["title"]: task["completed"] for task in response.json()["items"]}


def assert_whole(messages: list[dict], *, turns: int) -> None:
    """seq runs 1..n without gaps, and the history is `turns` contiguous turns, each
    user -> (assistant tool call -> its tool result)* -> assistant reply."""
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    remaining = list(messages)
    for number in range(1, turns + 1):
        user = remaining.pop(0)
        assert user["role"] == "user", f"turn {number} starts with {user}"
        while (step := remaining.pop(0))["tool_calls"]:
            assert step["role"] == "assistant"
            called = [call["id"] for call in step["tool_calls"]]
            results = [remaining.pop(0) for _ in called]
            assert [(r["role"], r["tool_call_id"]) for r in results] == [
                ("tool", call_id) for call_id in called
            ], f"turn {number}: tool calls without their results"
        assert step["role"] == "assistant", f"turn {number} ends with {step}"
    assert remaining == [], f"more than {turns} turns: {remaining}"


async def test_two_replicas_serve_one_conversation_in_turns(
    serve: StartServer, postgres_url: str
) -> None:
    # Started together, so their start-up migrations also race (and must both succeed).
    replicas = await asyncio.gather(serve(postgres_url), serve(postgres_url))
    user = unique("alice")
    async with (
        replicas[0].client(headers=auth(user)) as a,
        replicas[1].client(headers=auth(user)) as b,
    ):
        clients = (a, b)
        conversation_id = None
        added: list[str] = []
        for turn in range(10):
            client = clients[turn % 2]
            if turn % 2 == 0:
                reply = await chat(client, user, f"add errand {turn}", conversation_id)
                added.append(f"errand {turn}")
                [call] = reply["tool_calls"]
                assert (call["name"], call["result"]["title"]) == ("add_task", added[-1])
            else:
                # The other replica lists what this one added a moment ago.
                reply = await chat(client, user, "show my tasks", conversation_id)
                [call] = reply["tool_calls"]
                assert call["name"] == "list_tasks"
                assert [task["title"] for task in call["result"]["tasks"]] == added
            conversation_id = reply["conversation_id"]
        assert conversation_id is not None

        seen_by_a, seen_by_b = (
            await history(a, user, conversation_id),
            await history(b, user, conversation_id),
        )
        assert seen_by_a == seen_by_b
        assert_whole(seen_by_a, turns=10)
        assert [m["content"] for m in seen_by_a if m["role"] == "user"] == [
            f"add errand {n}" if n % 2 == 0 else "show my tasks" for n in range(10)
        ]
        assert (
            await task_titles(a, user) == await task_titles(b, user) == dict.fromkeys(added, False)
        )

        for title in ("groceries", "holiday"):
            response = await b.post(f"/api/{user}/conversations", json={"title": title})
            assert response.status_code == 201
        listings = [
            (await client.get(f"/api/{user}/conversations", params={"limit": 100})).json()
            for client in clients
        ]
        assert listings[0] == listings[1]
        everything = [c["id"] for c in listings[0]["items"]]
        assert len(everything) == 3 and conversation_id in everything

        # One conversation a page; each cursor, handed out by both, is used on both.
        paged: list[str] = []
        params: dict[str, Any] = {"limit": 1}
        for _ in everything:
            answers = [await c.get(f"/api/{user}/conversations", params=params) for c in clients]
            assert [r.status_code for r in answers] == [200, 200], answers[-1].text
            page, same_page = (r.json() for r in answers)
            assert page == same_page
            paged += [c["id"] for c in page["items"]]
            params["cursor"] = page["next_cursor"]
        assert paged == everything
        assert params["cursor"] is None


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_restart_between_turns_loses_nothing(
    serve: StartServer, database: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue("sqlite_url" if database == "sqlite" else "postgres_url")
    user = unique("bob")
    first = await serve(url)
    async with first.client(headers=auth(user)) as client:
        added = await chat(client, user, "add buy milk")
    assert await first.stop() == STOPPED

    second = await serve(url)
    async with second.client(headers=auth(user)) as client:
        # "it" is resolved from the history, which the new process reads from the database.
        done = await chat(client, user, "mark it done", added["conversation_id"])
        [call] = done["tool_calls"]
        assert call["name"] == "complete_task"
        assert call["result"] == {"task_id": 1, "status": "completed", "title": "buy milk"}
        assert await task_titles(client, user) == {"buy milk": True}
        assert_whole(await history(client, user, added["conversation_id"]), turns=2)


async def test_the_same_process_answers_503_while_the_database_is_away_then_recovers(
    serve: StartServer, proxy: TcpProxy, proxied_postgres_url: str
) -> None:
    """The server reaches PostgreSQL only through a TCP proxy in this test. Stopping the
    proxy (closing its listening socket and cutting every connection) is, to the server,
    PostgreSQL going away: its pooled connections die and new ones are refused. Stopping
    the real cluster instead would break every other test that shares it.
    """
    server = await serve(proxied_postgres_url)
    user = unique("carol")
    async with server.client(headers=auth(user)) as client:
        added = await chat(client, user, "add buy milk")
        conversation_id = added["conversation_id"]

        await proxy.stop()
        attempts = [
            client.build_request("GET", "/readyz"),
            client.build_request(
                "POST",
                f"/api/{user}/chat",
                json={"message": "show my tasks", "conversation_id": conversation_id},
            ),
            client.build_request("POST", f"/api/{user}/chat", json={"message": "add eggs"}),
            client.build_request("GET", f"/api/{user}/conversations"),
            client.build_request("GET", f"/api/{user}/tasks"),
            client.build_request("GET", "/readyz"),
        ]
        for attempt in attempts:
            response = await client.send(attempt)
            where = f"{attempt.method} {attempt.url.path}"
            assert response.status_code == 503, f"{where}: {response.status_code} {response.text}"
            assert response.headers["Retry-After"].isdigit(), where
            assert response.json() == {
                "error": "unavailable",
                "message": "the database is unavailable",
                "code": "unavailable",
            }, where
        assert server.process.returncode is None

        await proxy.start()

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, within=RECOVER_WITHIN, what="/readyz is 200 again")
        done = await chat(client, user, "mark it done", conversation_id)
        assert [call["name"] for call in done["tool_calls"]] == ["complete_task"]
        # The refused turns left nothing behind: no message, no task, no held lease.
        assert_whole(await history(client, user, conversation_id), turns=2)
        assert await task_titles(client, user) == {"buy milk": True}
        conversations = (await client.get(f"/api/{user}/conversations")).json()["items"]
        assert [c["id"] for c in conversations] == [conversation_id]
    # The outage is in the log as refused requests, not as tracebacks naming the database.
    log = "".join(server.stderr)
    assert all(json.loads(line) for line in log.splitlines())
    for leak in ("Traceback", "postgresql", f":{proxy.port}", "asyncpg"):
        assert leak not in log


async def test_a_turn_in_flight_finishes_before_sigterm_ends_the_process(
    serve: StartServer, proxy: TcpProxy, proxied_postgres_url: str, postgres_url: str
) -> None:
    """The rules agent answers at once, so the turn is held in flight by pausing the
    proxy between the server and PostgreSQL: its next statement waits in the proxy."""
    server = await serve(proxied_postgres_url)
    user = unique("dave")
    async with server.client(headers=auth(user)) as client:
        added = await chat(client, user, "add buy milk")
        proxy.pause()
        in_flight = asyncio.create_task(
            chat(client, user, "mark it done", added["conversation_id"])
        )

        async def turn_waits_on_the_database() -> bool:
            return proxy.held > 0

        await eventually(turn_waits_on_the_database, within=10, what="the turn reaches the db")
        server.process.send_signal(signal.SIGTERM)
        await server.wait_until_listening_stops()
        assert not in_flight.done()
        proxy.resume()
        done = await in_flight

    assert [call["name"] for call in done["tool_calls"]] == ["complete_task"]
    assert await server.wait() == STOPPED
    # Read behind the stopped server's back: the turn it answered is stored whole.
    store = SQLAlchemyStore.from_url(postgres_url)
    try:
        messages = await store.history(user, added["conversation_id"], limit=50)
        assert [(m.seq, m.role.value) for m in messages] == [
            (1, "user"),
            (2, "assistant"),
            (3, "tool"),
            (4, "assistant"),
            (5, "user"),
            (6, "assistant"),
            (7, "tool"),
            (8, "assistant"),
        ]
        [task] = await store.tasks.list(user)
        assert (task.title, task.completed) == ("buy milk", True)
    finally:
        await store.close()


def _workers_of(pid: int) -> list[int]:
    """The multiprocessing children of `pid` that run uvicorn workers (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.mark.alone
async def test_two_worker_processes_serve_turns(serve: StartServer, sqlite_url: str) -> None:
    server = await serve(sqlite_url, workers=2)
    workers = _workers_of(server.process.pid)
    assert len(workers) == 2
    users = [unique(f"worker-user-{n}") for n in range(8)]

    async def converse(user: str) -> dict[str, Any]:
        # A client per user: separate connections, which the kernel hands to either worker.
        async with server.client(headers=auth(user)) as client:
            added = await chat(client, user, f"add call {user}")
            await chat(client, user, "mark it done", added["conversation_id"])
            return {
                "tasks": await task_titles(client, user),
                "history": await history(client, user, added["conversation_id"]),
            }

    results = await asyncio.gather(*(converse(user) for user in users))
    for user, result in zip(users, results, strict=True):
        assert result["tasks"] == {f"call {user}": True}
        assert_whole(result["history"], turns=2)

    # The supervisor stops its workers and exits 0 itself; it does not re-raise the signal.
    assert await server.stop() == 0
    assert not any(_exists(worker) for worker in workers)


async def test_every_worker_serves_the_same_metrics(serve: StartServer, sqlite_url: str) -> None:
    """Scraped through any worker, /metrics counts the requests every worker served."""
    server = await serve(sqlite_url, workers=2)

    async def healthz() -> None:
        async with server.client() as client:  # a connection of its own, to either worker
            assert (await client.get("/healthz")).status_code == 200

    await asyncio.gather(*(healthz() for _ in range(60)))

    async def counted() -> float:
        async with server.client() as client:
            scrape = (await client.get("/metrics")).text
        [line] = [
            line
            for line in scrape.splitlines()
            if line.startswith("chatledger_http_requests_total{")
            and 'route="/healthz"' in line
            and 'status="200"' in line
        ]
        return float(line.rsplit(" ", 1)[1])

    assert await asyncio.gather(*(counted() for _ in range(10))) == [60.0] * 10


async def test_two_workers_answer_keep_alive_requests_without_a_delayed_ack_stall(
    serve: StartServer, sqlite_url: str
) -> None:
    server = await serve(sqlite_url, workers=2)
    async with server.client() as client:
        timings = []
        for _ in range(20):
            began = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            timings.append(time.perf_counter() - began)
    # A worker answers /healthz in about a millisecond; Linux delays an ACK 40 ms at least.
    assert statistics.median(timings) < 0.02


async def test_logs_are_json_lines_with_request_ids_and_no_content_or_tokens(
    serve: StartServer, sqlite_url: str
) -> None:
    server = await serve(sqlite_url)
    user = unique("erin")
    token = token_for(user)
    secret_words = "zebra quartz lullaby"
    async with server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        responses = [
            await client.post(f"/api/{user}/chat", json={"message": f"add {secret_words}"}),
            await client.get(f"/api/{user}/tasks"),
            await client.post(f"/api/{unique('frank')}/chat", json={"message": secret_words}),
            await client.post(
                f"/api/{user}/chat",
                json={"message": secret_words},
                headers={"Authorization": f"Bearer {token}x"},
            ),
            await client.post(f"/api/{user}/chat", content=f'{{"message": "{secret_words}"'),
        ]
        assert [r.status_code for r in responses] == [200, 200, 403, 401, 422]
        request_ids = {r.headers["X-Request-ID"] for r in responses}
    assert await server.stop() == STOPPED

    log = "".join(server.stderr)
    records = [json.loads(line) for line in log.splitlines()]
    requests = [r for r in records if r.get("event") == "request"]
    assert {r["request_id"] for r in requests} >= request_ids
    assert all(r.get("request_id") for r in requests)
    for leak in (token, token.split(".")[2], "zebra", "quartz", "lullaby", "Bearer"):
        assert leak not in log


async def test_retention_across_two_replicas_deletes_exactly_what_is_due(
    serve: StartServer, postgres_url: str
) -> None:
    env = child_env(JWT_SECRET=SECRET, RETENTION_DAYS="30", RETENTION_INTERVAL="0.3")
    user = unique("retention")
    store = SQLAlchemyStore.from_url(postgres_url)
    try:
        due, kept = [], []
        for n in range(6):
            conversation = await store.create_conversation(user, title=f"idle {n}")
            due.append(conversation.id)
        for n in range(3):
            conversation = await store.create_conversation(user, title=f"fresh {n}")
            kept.append(conversation.id)
        expired = await store.create_conversation(user, title="temporary", temporary=True)
        due.append(expired.id)
        temporary = await store.create_conversation(user, title="temporary, young", temporary=True)
        kept.append(temporary.id)

        def backdate(conn: Any) -> None:
            month_ago = datetime.now(UTC) - timedelta(days=31)
            conn.execute(
                update(conversations)
                .where(conversations.c.id.in_(due[:-1]))
                .values(updated_at=month_ago)
            )
            conn.execute(
                update(conversations)
                .where(conversations.c.id == expired.id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )

        db = connect(postgres_url)
        try:
            await db.write(backdate)
        finally:
            await db.close()
        replicas = [await serve(postgres_url, env=env) for _ in range(2)]

        async def swept() -> bool:
            return len((await store.list_conversations(user, limit=100)).items) == len(kept)

        await eventually(swept, within=15, what="both replicas swept")
        left = {c.id for c in (await store.list_conversations(user, limit=100)).items}
    finally:
        await store.close()
    assert left == set(kept)
    for replica in replicas:
        assert "Traceback" not in replica.output()


async def test_rate_limits_hold_across_two_replicas(serve: StartServer, postgres_url: str) -> None:
    env = child_env(JWT_SECRET=SECRET, RATE_LIMIT_TURNS="5", RATE_LIMIT_SECONDS="600")
    a, b = [await serve(postgres_url, env=env) for _ in range(2)]
    user = unique("limited")
    statuses = []
    async with a.client(headers=auth(user)) as on_a, b.client(headers=auth(user)) as on_b:
        for n in range(8):
            client = on_a if n % 2 else on_b
            response = await client.post(f"/api/{user}/chat", json={"message": f"add item {n}"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["code"] == "rate_limited"
                assert 1 <= int(response.headers["Retry-After"]) <= 600
    assert statuses == [200] * 5 + [429] * 3
