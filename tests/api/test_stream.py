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
        # The three pieces of text come in one go, so they are stored and sent as one.
        assert names == ["conversation", "tool_call", "tool_result", "delta", "done"]
        turn_id = events[0][2]["turn_id"]
        assert [event_id for event_id, _, _ in events] == [f"{turn_id}:{n}" for n in range(1, 6)]
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
        assert [name for _, name, _ in events] == ["conversation", "delta", "error"]
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
    assert again[-1][2] == {**first[-1][2], "replayed": True}
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


class Reader:
    """Reads a stream's events as they arrive, keeping all it has read."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_text()
        self.text = ""

    async def until(self, count: int) -> list[tuple[str, str, dict[str, Any]]]:
        """The events read so far, once there are at least `count` of them."""
        while len(events := self.events()) < count:
            self.text += (await anext(self._chunks)).replace("\r\n", "\n")
        return events

    async def to_the_end(self) -> list[tuple[str, str, dict[str, Any]]]:
        async for chunk in self._chunks:
            self.text += chunk.replace("\r\n", "\n")
        return self.events()

    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        complete = self.text[: self.text.rfind("\n\n") + 2] if "\n\n" in self.text else ""
        return parse(complete) if complete.strip() else []


async def test_another_client_follows_a_running_turn_and_resumes_after_last_event_id(
    database_url: str,
) -> None:
    halfway, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent(
        [
            CallTool("add_task", {"title": "milk"}),
            Say("Added milk, ", chunks=2),
            Signal(halfway),
            Block(release),
            Say("and that is all."),
        ]
    )
    async with (
        real_server(database_url, agent) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=10, headers=auth("alice")) as client,
    ):
        created = await client.post("/api/alice/conversations", json={})
        conversation_id = created.json()["id"]
        follow_url = f"/api/alice/conversations/{conversation_id}/stream"
        assert (await client.get(follow_url)).status_code == 204
        body = {"message": "add milk", "conversation_id": conversation_id}
        async with client.stream("POST", "/api/alice/chat/stream", json=body) as sent:
            live = Reader(sent)
            await live.until(1)
            await halfway.wait()
            read = (await client.get(f"/api/alice/conversations/{conversation_id}")).json()
            async with client.stream("GET", follow_url) as followed:
                follower = Reader(followed)
                early = await follower.until(3)
                resume = {"Last-Event-ID": early[1][0]}
                async with client.stream("GET", follow_url, headers=resume) as resumed:
                    release.set()
                    picked_up = await Reader(resumed).to_the_end()
                followed_all = await follower.to_the_end()
            sent_all = await live.to_the_end()
        after = (await client.get(f"/api/alice/conversations/{conversation_id}")).json()
        assert (await client.get(follow_url)).status_code == 204
    assert followed.headers["content-type"].startswith("text/event-stream")
    assert read["running"] is True and read["turn_id"] == sent_all[0][2]["turn_id"]
    assert after["running"] is False and after["turn_id"] is None
    assert [name for _, name, _ in sent_all][-1] == "done"
    # The same events, the same ids, the same text: the follower's stream is the sender's.
    assert followed_all == sent_all
    assert live.text.replace(": ping", "") == follower.text.replace(": ping", "")
    assert picked_up == sent_all[2:]


async def test_following_someone_elses_or_a_missing_conversation_is_404(server: Server) -> None:
    bobs = await server.client.post("/api/bob/conversations", json={}, headers=auth("bob"))
    for conversation_id in (bobs.json()["id"], "missing"):
        response = await server.client.get(
            f"/api/alice/conversations/{conversation_id}/stream", headers=auth("alice")
        )
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    forbidden = await server.client.get(
        f"/api/bob/conversations/{bobs.json()['id']}/stream", headers=auth("alice")
    )
    assert forbidden.status_code == 403


async def test_busy_and_in_flight_refusals_say_when_to_retry(
    make_server: Callable[..., Any],
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([Signal(started), Block(release), Say("ok")])
    async with make_server(agent, lease_seconds=4) as server:
        conversation_id = (
            await server.client.post("/api/alice/conversations", json={}, headers=auth("alice"))
        ).json()["id"]
        first = asyncio.create_task(
            server.client.post(
                "/api/alice/chat",
                json={"message": "one", "conversation_id": conversation_id},
                headers={**auth("alice"), "Idempotency-Key": "k"},
            )
        )
        await started.wait()
        busy = await server.chat("alice", "two", conversation_id=conversation_id)
        in_flight = await server.client.post(
            "/api/alice/chat",
            json={"message": "one", "conversation_id": conversation_id},
            headers={**auth("alice"), "Idempotency-Key": "k"},
        )
        release.set()
        assert (await first).status_code == 200
    assert (busy.status_code, busy.json()["code"]) == (409, "conversation_busy")
    assert (in_flight.status_code, in_flight.json()["code"]) == (409, "idempotency_in_flight")
    for refused in (busy, in_flight):
        assert 1 <= int(refused.headers["retry-after"]) <= 4
