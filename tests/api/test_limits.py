"""Data limits over HTTP, on both databases: refused before anything is stored, with the
field named; what older versions stored beyond them still reads; long lists page whole;
deleted text leaves the SQLite file."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from chatledger.api import create_app
from chatledger.domain import MAX_JSON_DEPTH
from chatledger.testing import CallTool, Say, ScriptedAgent
from tests.api.conftest import Server, auth, lifespan, settings_for
from tests.factories import row_counts


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_metadata_nested_too_deep_is_422_and_nothing_is_stored(
    server: Server, connector
) -> None:
    deep = nested(300)
    created = await server.client.post(
        "/api/alice/conversations", json={"metadata": deep}, headers=auth("alice")
    )
    assert (created.status_code, created.json()["field"]) == (422, "metadata")
    assert "deeper than 32" in created.json()["message"]
    assert (await row_counts(connector, "alice"))["conversations"] == 0

    fine = await server.client.post(
        "/api/alice/conversations", json={"metadata": nested(MAX_JSON_DEPTH)}, headers=auth("alice")
    )
    assert fine.status_code == 201
    patched = await server.client.patch(
        f"/api/alice/conversations/{fine.json()['id']}",
        json={"metadata": deep},
        headers=auth("alice"),
    )
    assert (patched.status_code, patched.json()["field"]) == (422, "metadata")
    listed = await server.client.get("/api/alice/conversations", headers=auth("alice"))
    assert listed.status_code == 200
    assert listed.json()["items"][0]["metadata"] == nested(MAX_JSON_DEPTH)


async def test_metadata_an_older_version_stored_too_deep_still_reads(
    server: Server, connector
) -> None:
    created = await server.client.post("/api/alice/conversations", json={}, headers=auth("alice"))
    conversation_id = created.json()["id"]
    await server.chat("alice", "hi", conversation_id=conversation_id)

    def store_deep(conn: Any) -> None:
        deep = json.dumps(nested(300))
        cast = "CAST(:m AS JSONB)" if conn.dialect.name == "postgresql" else ":m"
        for table, key in (("conversations", "id"), ("messages", "conversation_id")):
            conn.execute(
                text(f"UPDATE {table} SET metadata = {cast} WHERE {key} = :c"),
                {"m": deep, "c": conversation_id},
            )

    await connector.write(store_deep)
    listed = await server.client.get("/api/alice/conversations", headers=auth("alice"))
    one = await server.client.get(
        f"/api/alice/conversations/{conversation_id}", headers=auth("alice")
    )
    messages = await server.client.get(
        f"/api/alice/conversations/{conversation_id}/messages", headers=auth("alice")
    )
    assert (listed.status_code, one.status_code, messages.status_code) == (200, 200, 200)
    assert "unreadable" in listed.json()["items"][0]["metadata"]
    assert all("unreadable" in m["metadata"] for m in messages.json()["items"])


async def test_conversation_metadata_over_16_kib_is_413(server: Server, connector) -> None:
    response = await server.client.post(
        "/api/alice/conversations", json={"metadata": {"k": "x" * 17_000}}, headers=auth("alice")
    )
    assert (response.status_code, response.json()["field"]) == (413, "metadata")
    assert (await row_counts(connector, "alice"))["conversations"] == 0


@pytest.mark.parametrize("control", ["\x1b[2J", "\x07", "\r", "\x9b31m", "\x7f", "\x08"])
async def test_control_characters_are_refused_in_messages_and_titles(
    server: Server, connector, control: str
) -> None:
    said = await server.chat("alice", f"add milk{control}")
    titled = await server.client.post(
        "/api/alice/conversations", json={"title": f"x{control}"}, headers=auth("alice")
    )
    assert (said.status_code, said.json()["field"]) == (422, "message")
    assert (titled.status_code, titled.json()["field"]) == (422, "title")
    assert "control character" in said.json()["message"]
    assert set((await row_counts(connector, "alice")).values()) == {0}


async def test_newlines_and_tabs_are_text(server: Server) -> None:
    said = await server.chat("alice", "add milk\n\tand bread")
    titled = await server.client.post(
        "/api/alice/conversations", json={"title": "a\tb"}, headers=auth("alice")
    )
    assert (said.status_code, titled.status_code) == (200, 201)


async def test_a_model_cannot_name_a_task_with_escape_sequences(
    make_server: Callable[..., Any],
) -> None:
    agent = ScriptedAgent([CallTool("add_task", {"title": "\x1b[31mred"}), Say("ok")])
    async with make_server(agent) as server:
        answer = (await server.chat("alice", "add red")).json()
        tasks = await server.client.get("/api/alice/tasks", headers=auth("alice"))
    [call] = answer["tool_calls"]
    assert call["result"]["code"] == "invalid_arguments"
    assert tasks.json()["items"] == []


async def test_tool_arguments_nested_too_deep_are_shown_as_their_text(
    make_server: Callable[..., Any],
) -> None:
    arguments = json.dumps(nested(400))
    agent = ScriptedAgent([CallTool("list_tasks", arguments), Say("ok")])
    async with make_server(agent) as server:
        response = await server.chat("alice", "list")
    assert response.status_code == 200
    assert response.json()["tool_calls"][0]["arguments"] == arguments


@pytest.mark.slow
async def test_1250_tasks_page_whole_and_the_tool_says_what_it_left_out(
    make_server: Callable[..., Any],
) -> None:
    agent = ScriptedAgent([CallTool("list_tasks", {}), Say("ok")])
    async with make_server(agent) as server:
        store = server.app.state.store
        for start in range(0, 1250, 250):
            await asyncio.gather(
                *(store.tasks.add("alice", title=f"task {n}") for n in range(start, start + 250))
            )
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor is not None:
                params["cursor"] = cursor
            page = (
                await server.client.get("/api/alice/tasks", params=params, headers=auth("alice"))
            ).json()
            pages += 1
            seen += [task["id"] for task in page["items"]]
            if pages == 3:  # tasks added mid-way come at the end, not in the middle
                await store.tasks.add("alice", title="late")
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
        answer = (await server.chat("alice", "show my tasks")).json()
        bad = await server.client.get(
            "/api/alice/tasks", params={"cursor": "-1"}, headers=auth("alice")
        )
    assert seen == list(range(1, 1252))
    assert pages == 13
    result = answer["tool_calls"][0]["result"]
    assert (len(result["tasks"]), result["total"], result["omitted"]) == (100, 1251, 1151)
    assert (bad.status_code, bad.json()["field"]) == (422, "cursor")


async def test_deleted_text_is_gone_from_the_sqlite_file(
    tmp_path: Path, sqlite_template: Path
) -> None:
    # SQLite only: PostgreSQL keeps dead rows until VACUUM, as documented.
    path = tmp_path / "scrubbed.db"
    shutil.copy(sqlite_template, path)
    canaries = {"alice": "canary-alice-7f3e9b", "bob": "canary-bob-2c81d4"}
    agent = ScriptedAgent([CallTool("add_task", {"title": "x"}), Say("ok")])
    app = create_app(settings_for(f"sqlite:///{path}"), agent=agent)
    async with (
        lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://chatledger"
        ) as client,
    ):
        ids = {}
        for user, canary in canaries.items():
            answer = await client.post(
                f"/api/{user}/chat", json={"message": f"remember {canary}"}, headers=auth(user)
            )
            ids[user] = answer.json()["conversation_id"]
        await app.state.service.drain()
        deleted_user = await client.delete("/api/alice", headers=auth("alice"))
        deleted_conversation = await client.delete(
            f"/api/bob/conversations/{ids['bob']}", headers=auth("bob")
        )
        assert (deleted_user.status_code, deleted_conversation.status_code) == (204, 204)
        files = [path, path.with_name(path.name + "-wal")]
        on_disk = b"".join(f.read_bytes() for f in files if f.exists())
    assert len(on_disk) > 0
    for canary in canaries.values():
        assert canary.encode() not in on_disk


async def test_turns_beyond_the_rate_limit_are_429_and_replays_are_free(
    make_server: Callable[..., Any], connector
) -> None:
    agent = ScriptedAgent([Say("ok")])
    async with make_server(agent, rate_limit_turns=2, rate_limit_seconds=300) as server:
        keyed = {**auth("alice"), "Idempotency-Key": "k1"}
        first = await server.client.post("/api/alice/chat", json={"message": "one"}, headers=keyed)
        second = await server.chat("alice", "two")
        replay = await server.client.post("/api/alice/chat", json={"message": "one"}, headers=keyed)
        refused = await server.chat("alice", "three")
        bobs = await server.chat("bob", "hello")
    assert [r.status_code for r in (first, second, replay, bobs)] == [200, 200, 200, 200]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 300
    assert (await row_counts(connector, "alice"))["conversations"] == 2


async def test_no_rate_limit_unless_configured(server: Server) -> None:
    for n in range(30):
        assert (await server.chat("alice", f"message {n}")).status_code == 200


async def test_a_temporary_conversation_says_when_it_goes(server: Server) -> None:
    created = await server.client.post(
        "/api/alice/conversations", json={"temporary": True}, headers=auth("alice")
    )
    kept = await server.client.post("/api/alice/conversations", json={}, headers=auth("alice"))
    assert created.status_code == 201 and created.json()["expires_at"] is not None
    assert kept.json()["expires_at"] is None
