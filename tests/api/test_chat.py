"""POST /api/{user_id}/chat: the seeds' contract, with idempotency and every failure mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from chatledger.errors import ModelError
from chatledger.store import SQLAlchemyStore
from chatledger.testing import Block, CallTool, Fail, Say, ScriptedAgent, Signal
from tests.api.conftest import Server, auth
from tests.factories import assert_invariants, row_counts


async def stored(server: Server, user: str, conversation_id: str) -> list[Any]:
    store: SQLAlchemyStore = server.app.state.store
    history = await store.history(user, conversation_id, limit=10_000)
    assert_invariants(history)
    return history


async def test_a_turn_answers_with_the_seeds_contract(server: Server) -> None:
    response = await server.chat("alice", "add buy milk")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "conversation_id": body["conversation_id"],
        "response": "Added buy milk.",
        "tool_calls": [
            {
                "id": body["tool_calls"][0]["id"],
                "name": "add_task",
                "arguments": {"title": "buy milk"},
                "result": {"task_id": 1, "status": "created", "title": "buy milk"},
            }
        ],
    }
    assert len(await stored(server, "alice", body["conversation_id"])) == 4
    assert response.headers["x-request-id"]


async def test_continuing_a_conversation(server: Server) -> None:
    first = (await server.chat("alice", "add buy milk")).json()
    second = await server.chat("alice", "again", conversation_id=first["conversation_id"])
    assert second.status_code == 200
    assert second.json()["conversation_id"] == first["conversation_id"]
    assert len(await stored(server, "alice", first["conversation_id"])) == 8


async def test_someone_elses_conversation_is_404_like_a_missing_one(server: Server) -> None:
    bobs = (await server.chat("bob", "bob's")).json()["conversation_id"]
    foreign = await server.chat("alice", "hi", conversation_id=bobs)
    missing = await server.chat("alice", "hi", conversation_id="no-such-id")
    assert foreign.status_code == missing.status_code == 404
    assert (
        foreign.json()
        == missing.json()
        == {
            "error": "not_found",
            "message": "conversation not found",
            "code": "not_found",
        }
    )


async def test_a_retry_with_the_same_key_replays_status_and_body(server: Server) -> None:
    headers = {**auth("alice"), "Idempotency-Key": "retry-1"}
    first = await server.client.post(
        "/api/alice/chat", json={"message": "add milk"}, headers=headers
    )
    again = await server.client.post(
        "/api/alice/chat", json={"message": "add milk"}, headers=headers
    )
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert server.agent.runs == 1  # type: ignore[attr-defined]


async def test_the_same_key_with_another_body_is_422(server: Server, connector) -> None:
    headers = {**auth("alice"), "Idempotency-Key": "k"}
    await server.client.post("/api/alice/chat", json={"message": "add milk"}, headers=headers)
    counts = await row_counts(connector, "alice")
    other = await server.client.post(
        "/api/alice/chat", json={"message": "add eggs"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_mismatch"
    assert await row_counts(connector, "alice") == counts


async def test_twenty_concurrent_requests_with_one_key(
    make_server: Callable[..., Any], connector
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent(
        [Signal(started), Block(release), CallTool("add_task", {"title": "m"}), Say("ok")]
    )
    async with make_server(agent) as server:
        headers = {**auth("alice"), "Idempotency-Key": "same"}

        async def send() -> httpx.Response:
            return await server.client.post(
                "/api/alice/chat", json={"message": "m"}, headers=headers
            )

        first = asyncio.create_task(send())
        await started.wait()
        in_flight = await asyncio.gather(*(send() for _ in range(19)))
        release.set()
        done = await first
        replays = await asyncio.gather(*(send() for _ in range(3)))

    assert {r.status_code for r in in_flight} == {409}
    assert {r.json()["code"] for r in in_flight} == {"idempotency_in_flight"}
    assert done.status_code == 200
    assert all(r.json() == done.json() for r in replays)
    assert agent.runs == 1
    counts = await row_counts(connector, "alice")
    assert (counts["messages"], counts["tasks"]) == (4, 1)


async def test_a_busy_conversation_is_409(make_server: Callable[..., Any]) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([Signal(started), Block(release), Say("ok")])
    async with make_server(agent) as server:
        created = await server.client.post(
            "/api/alice/conversations", json={}, headers=auth("alice")
        )
        conversation_id = created.json()["id"]
        first = asyncio.create_task(server.chat("alice", "one", conversation_id=conversation_id))
        await started.wait()
        second = await server.chat("alice", "two", conversation_id=conversation_id)
        release.set()
        assert (await first).status_code == 200
    assert second.status_code == 409
    assert second.json()["code"] == "conversation_busy"


async def test_a_message_over_the_limit_is_413_before_the_agent_runs(
    make_server: Callable[..., Any], default_agent: ScriptedAgent, connector
) -> None:
    async with make_server(default_agent, max_message_chars=1000) as server:
        response = await server.chat("alice", "x" * 1001)
    assert response.status_code == 413
    assert response.json()["field"] == "message"
    assert default_agent.runs == 0
    assert set((await row_counts(connector, "alice")).values()) == {0}


async def test_a_body_over_1_mib_is_413_without_being_read(server: Server) -> None:
    declared = await server.client.post(
        "/api/alice/chat",
        content=b"{" + b" " * (1024 * 1024) + b"}",
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    assert declared.json()["code"] == "too_large"

    chunks_sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(10_000):
            chunks_sent += 1
            yield b" " * 65536

    streamed = await server.client.post(
        "/api/alice/chat",
        content=endless(),
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert chunks_sent < 40  # stopped soon after the first MiB, not after 640 MiB


async def test_nul_and_lone_surrogates_are_422(server: Server, connector) -> None:
    for raw in ('{"message": "a\\u0000b"}', '{"message": "\\ud800"}'):
        response = await server.client.post(
            "/api/alice/chat",
            content=raw,
            headers={**auth("alice"), "Content-Type": "application/json"},
        )
        assert response.status_code == 422, raw
        assert response.json()["field"] == "message"
    assert set((await row_counts(connector, "alice")).values()) == {0}


async def test_malformed_bodies_are_422_naming_the_field(server: Server) -> None:
    cases = [
        (b"not json", "body"),
        (b'{"message": 42}', "message"),
        (b"{}", "message"),
        (b'{"message": "hi", "user_id": "bob"}', "user_id"),
        (b'["message"]', "body"),
    ]
    for raw, field in cases:
        response = await server.client.post(
            "/api/alice/chat",
            content=raw,
            headers={**auth("alice"), "Content-Type": "application/json"},
        )
        assert response.status_code == 422, raw
        body = response.json()
        assert (body["error"], body["field"]) == ("invalid", field), raw


async def test_agent_timeout_is_504_with_the_conversation_id(
    make_server: Callable[..., Any],
) -> None:
    agent = ScriptedAgent([Say("thinking"), Block(asyncio.Event())])
    async with make_server(agent, agent_timeout=0.2) as server:
        response = await server.chat("alice", "hi")
        assert response.status_code == 504
        body = response.json()
        assert body["code"] == "agent_timeout"
        history = await stored(server, "alice", body["conversation_id"])
        assert history[-1].metadata["status"] == "failed"


async def test_model_error_is_502_with_the_conversation_id(make_server: Callable[..., Any]) -> None:
    agent = ScriptedAgent([Fail(ModelError("the model endpoint failed"))])
    async with make_server(agent) as server:
        response = await server.chat("alice", "hi")
    assert response.status_code == 502
    assert response.json()["code"] == "model_error"
    assert response.json()["conversation_id"]


async def test_an_unexpected_error_is_a_bare_500(make_server: Callable[..., Any], capsys) -> None:
    agent = ScriptedAgent([Fail(RuntimeError("secret-canary SELECT * FROM messages"))])
    async with make_server(agent) as server:
        response = await server.chat("alice", "hi")
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal",
        "message": "internal server error",
        "code": "internal",
    }
    logged = capsys.readouterr().err
    assert "secret-canary" not in logged and "Traceback" not in logged
    assert '"error_type": "RuntimeError"' in logged


async def test_unknown_routes_and_methods_have_json_bodies(server: Server) -> None:
    missing = await server.client.get("/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = await server.client.get("/api/alice/chat", headers=auth("alice"))
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")
    assert "POST" in wrong.headers["allow"]


async def test_request_ids_are_echoed_and_logged_without_content(
    make_server: Callable[..., Any], default_agent: ScriptedAgent, capsys
) -> None:
    async with make_server(default_agent) as server:
        response = await server.client.post(
            "/api/alice/chat",
            json={"message": "my-private-words"},
            headers={**auth("alice"), "X-Request-ID": "req-123"},
        )
        hostile = await server.client.get("/healthz", headers={"X-Request-ID": "bad id;" * 50})
    assert response.headers["x-request-id"] == "req-123"
    assert hostile.headers["x-request-id"] != "bad id;" * 50
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    request_line = next(line for line in lines if line.get("request_id") == "req-123")
    assert (request_line["user_id"], request_line["route"]) == ("alice", "/api/{user_id}/chat")
    text = json.dumps(lines)
    assert "my-private-words" not in text
    assert "Bearer" not in text and "eyJ" not in text


async def test_a_numeric_conversation_id_is_an_id_like_any_other(server: Server) -> None:
    # Seeds-style clients send their autoincrement ids as numbers.
    for conversation_id in (123, "123"):
        response = await server.chat("alice", "hi", conversation_id=conversation_id)
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    for not_an_id in (True, 1.5, ["x"], {"id": 1}):
        response = await server.chat("alice", "hi", conversation_id=not_an_id)
        assert (response.status_code, response.json()["field"]) == (422, "conversation_id")


async def test_requests_beyond_the_concurrency_limit_are_503_with_retry_after(
    make_server: Callable[..., Any],
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([Signal(started), Block(release), Say("ok")])
    async with make_server(agent, max_concurrent_requests=1) as server:
        first = asyncio.create_task(server.chat("alice", "hi"))
        await started.wait()
        busy = await server.client.get("/api/alice/conversations", headers=auth("alice"))
        probe = await server.client.get("/healthz")  # never shed
        release.set()
        assert (await first).status_code == 200
        after = await server.client.get("/api/alice/conversations", headers=auth("alice"))
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert busy.json() == {
        "error": "unavailable",
        "message": "the server is too busy; try again",
        "code": "too_busy",
    }
    assert (after.status_code, probe.status_code) == (200, 200)
