"""POST /api/{user_id}/chat/stream: the turn as server-sent events, and stopping it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from chatledger.api import create_app
from chatledger.errors import ModelError
from chatledger.testing import Block, CallTool, Fail, Say, ScriptedAgent, Signal
from tests.api.conftest import Server, auth, settings_for
from tests.factories import assert_invariants


def parse(stream: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each event in an event stream; comments are skipped."""
    events = []
    for block in stream.replace("\r\n", "\n").strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "event" in fields:
            events.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return events


async def stream(server: Server, user: str, message: str, **extra: Any) -> httpx.Response:
    headers = {**auth(user), **extra.pop("headers", {})}
    return await server.client.post(
        f"/api/{user}/chat/stream", json={"message": message, **extra}, headers=headers
    )


async def test_the_turn_streams_in_order_with_ids(make_server: Callable[..., Any]) -> None:
    agent = ScriptedAgent([CallTool("add_task", {"title": "milk"}), Say("Added milk.", chunks=3)])
    async with make_server(agent) as server:
        response = await stream(server, "alice", "add milk")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        events = parse(response.text)
        names = [name for _, name, _ in events]
        assert names == [
            "conversation",
            "tool_call",
            "tool_result",
            "delta",
            "delta",
            "delta",
            "done",
        ]
        assert [int(event_id) for event_id, _, _ in events] == list(range(1, 8))
        _, _, started = events[0]
        _, _, call = events[1]
        _, _, result = events[2]
        _, _, done = events[-1]
        assert call == {"id": call["id"], "name": "add_task", "arguments": {"title": "milk"}}
        assert result == {
            "id": call["id"],
            "result": {"task_id": 1, "status": "created", "title": "milk"},
        }
        assert "".join(data["text"] for _, name, data in events if name == "delta") == "Added milk."
        assert done["conversation_id"] == started["conversation_id"]
        assert (done["response"], done["stopped"]) == ("Added milk.", False)
        history = await server.app.state.store.history("alice", done["conversation_id"])
        assert done["message_ids"] == [m.id for m in history]
        assert history[0].id == started["user_message_id"]


async def test_refusals_before_the_turn_starts_are_json_errors(server: Server) -> None:
    no_token = await server.client.post("/api/alice/chat/stream", json={"message": "hi"})
    assert (no_token.status_code, no_token.json()["error"]) == (401, "unauthorized")
    missing = await stream(server, "alice", "hi", conversation_id="nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    empty = await stream(server, "alice", "  ")
    assert (empty.status_code, empty.json()["field"]) == (422, "message")
    wrong_user = await server.client.post(
        "/api/bob/chat/stream", json={"message": "hi"}, headers=auth("alice")
    )
    assert wrong_user.status_code == 403


async def test_a_failure_after_the_start_is_an_error_event(make_server: Callable[..., Any]) -> None:
    agent = ScriptedAgent([Say("Thinking", chunks=2), Fail(ModelError("the model failed"))])
    async with make_server(agent) as server:
        response = await stream(server, "alice", "hi")
        events = parse(response.text)
        assert [name for _, name, _ in events] == ["conversation", "delta", "delta", "error"]
        _, _, error = events[-1]
        assert error == {
            "error": "agent_failed",
            "message": "the model failed",
            "code": "model_error",
            "conversation_id": events[0][2]["conversation_id"],
        }
        history = await server.app.state.store.history("alice", error["conversation_id"])
        assert_invariants(history)
        assert history[-1].content == "Thinking"


async def test_a_streamed_turn_replays_for_its_key(server: Server) -> None:
    headers = {"Idempotency-Key": "stream-1"}
    first = parse((await stream(server, "alice", "add buy milk", headers=headers)).text)
    again = parse((await stream(server, "alice", "add buy milk", headers=headers)).text)
    assert [name for _, name, _ in again] == [
        "conversation",
        "tool_call",
        "tool_result",
        "delta",
        "done",
    ]
    assert again[-1][2] == first[-1][2]
    assert server.agent.runs == 1  # type: ignore[attr-defined]


# -- with a real server: the connection is the point --------------------------------------


@asynccontextmanager
async def real_server(
    database_url: str, agent: ScriptedAgent
) -> AsyncIterator[tuple[FastAPI, str]]:
    """The app under uvicorn on 127.0.0.1, on this test's event loop; yields it and its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(settings_for(database_url, stop_poll_interval=0.02), agent=agent)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    running = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
            await asyncio.sleep(0.01)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await running


async def first_events(
    chunks: AsyncIterator[str], count: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """The first `count` events read from a stream's chunks (which stay open for more)."""
    text = ""
    async for chunk in chunks:
        text += chunk.replace("\r\n", "\n")
        events = parse(text) if text.endswith("\n\n") else []
        if len(events) >= count:
            return events
    raise AssertionError(f"the stream ended after {text!r}")


async def test_a_dropped_connection_does_not_stop_the_turn(database_url: str) -> None:
    release = asyncio.Event()
    agent = ScriptedAgent(
        [
            Say("Working on it."),
            Block(release),
            CallTool("add_task", {"title": "milk"}),
            Say("Added."),
        ]
    )
    async with (
        real_server(database_url, agent) as (app, url),
        httpx.AsyncClient(base_url=url) as client,
    ):
        async with client.stream(
            "POST", "/api/alice/chat/stream", json={"message": "add milk"}, headers=auth("alice")
        ) as response:
            [(_, _, started)] = await first_events(response.aiter_text(), 1)
        # The client is gone; now let the agent go on, and wait for it to finish.
        release.set()
        await app.state.service.drain()
        conversation_id = started["conversation_id"]
        url_messages = f"/api/alice/conversations/{conversation_id}/messages"
        page = (await client.get(url_messages, headers=auth("alice"))).json()
        assert [m["role"] for m in page["items"]] == ["user", "assistant", "tool", "assistant"]
        assert page["items"][1]["content"] == "Working on it."
        tasks = (await client.get("/api/alice/tasks", headers=auth("alice"))).json()["items"]
        assert [t["title"] for t in tasks] == ["milk"]


async def test_stop_mid_turn_keeps_the_partial_reply_and_the_tool_steps(database_url: str) -> None:
    reached = asyncio.Event()
    agent = ScriptedAgent(
        [
            CallTool("add_task", {"title": "milk"}),
            Say("Now the long part", chunks=2),
            Signal(reached),
            Block(asyncio.Event()),
        ]
    )
    async with (
        real_server(database_url, agent) as (_, url),
        httpx.AsyncClient(base_url=url) as client,
    ):
        async with client.stream(
            "POST", "/api/alice/chat/stream", json={"message": "add milk"}, headers=auth("alice")
        ) as response:
            chunks = response.aiter_text()
            [(_, _, started)] = await first_events(chunks, 1)
            await reached.wait()
            conversation_id = started["conversation_id"]
            stop = await client.post(
                f"/api/alice/conversations/{conversation_id}/stop", headers=auth("alice")
            )
            assert (stop.status_code, stop.json()) == (202, {"stopping": True})
            rest = parse("".join([chunk async for chunk in chunks]))
        done = rest[-1][2]
        assert rest[-1][1] == "done"
        assert (done["stopped"], done["response"]) == (True, "Now the long part")
        again = await client.post(
            f"/api/alice/conversations/{conversation_id}/stop", headers=auth("alice")
        )
        assert (again.status_code, again.json()) == (200, {"stopping": False})
        messages = (
            await client.get(
                f"/api/alice/conversations/{conversation_id}/messages", headers=auth("alice")
            )
        ).json()["items"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[-1]["metadata"] == {"status": "stopped"}
