"""Broken object-level authorization, hunted with canaries.

Bob's data is planted first, full of unique random strings (canaries): conversation titles
and metadata, his messages and the agent's replies, tool results, tasks, and the response
stored under his idempotency key. Then Alice, with her own valid token and through a fresh
app on the same database (as another replica would be), tries every way in: Bob's path,
Bob's ids in her own path, Bob's listing cursor, Bob's idempotency key, and Bob's task ids
through the agent. Each attempt must be refused (403/404/422) or stay within Alice's own
data; afterwards Bob's rows are exactly as they were, and no canary appears in any body or
header Alice received.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import pytest
from fastapi import FastAPI

from chatledger.domain import ChatMessage
from chatledger.store import Connector
from chatledger.testing import CallTool, Say, ScriptedAgent, Step
from tests.api.conftest import auth
from tests.factories import snapshot

ALICE: Final = "alice"
BOB: Final = "bob"
IDEMPOTENT_BODY: Final = {"message": "what is on my list?"}
FORBIDDEN: Final = {
    "error": "forbidden",
    "message": "this token is for another user",
    "code": "forbidden",
}


def canary() -> str:
    return f"canary-{secrets.token_hex(8)}"


@dataclass
class Planted:
    """Bob's data, and every canary hidden in it."""

    conversation_ids: list[str] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)
    cursor: str = ""
    idempotency_key: str = ""
    canaries: set[str] = field(default_factory=set)

    def new_canary(self) -> str:
        value = canary()
        self.canaries.add(value)
        return value


@pytest.fixture
async def planted(make_server: Callable[..., Any]) -> Planted:
    """Bob's conversations, messages, tool results, tasks and a stored idempotent turn."""
    bobs = Planted()

    def script(_: Sequence[ChatMessage]) -> list[Step]:
        # Every turn of Bob's stores fresh canaries in a task, a tool result and a reply.
        task = {"title": bobs.new_canary(), "description": bobs.new_canary()}
        return [CallTool("add_task", task), CallTool("list_tasks"), Say(bobs.new_canary())]

    async with make_server(ScriptedAgent(script)) as server:
        client, headers = server.client, auth(BOB)
        for _ in range(2):
            created = await client.post(
                f"/api/{BOB}/conversations",
                json={
                    "title": bobs.new_canary(),
                    "metadata": {"note": bobs.new_canary(), bobs.new_canary(): True},
                },
                headers=headers,
            )
            assert created.status_code == 201, created.text
            conversation_id = created.json()["id"]
            turn = await server.chat(
                BOB, f"remember {bobs.new_canary()}", conversation_id=conversation_id
            )
            assert turn.status_code == 200, turn.text
            bobs.conversation_ids.append(conversation_id)

        bobs.idempotency_key = f"key-{uuid.uuid4()}"
        stored = await client.post(
            f"/api/{BOB}/chat",
            json=IDEMPOTENT_BODY,
            headers={**headers, "Idempotency-Key": bobs.idempotency_key},
        )
        assert stored.status_code == 200, stored.text
        bobs.conversation_ids.append(stored.json()["conversation_id"])

        for conversation_id in bobs.conversation_ids:
            messages = await client.get(
                f"/api/{BOB}/conversations/{conversation_id}/messages", headers=headers
            )
            bobs.canaries.update(message["id"] for message in messages.json()["items"])
        listing = await client.get(f"/api/{BOB}/conversations?limit=1", headers=headers)
        bobs.cursor = listing.json()["next_cursor"]
        tasks = await client.get(f"/api/{BOB}/tasks", headers=headers)
        bobs.task_ids = [task["id"] for task in tasks.json()["items"]]

    assert bobs.cursor and bobs.task_ids == [1, 2, 3]
    assert any(canary in stored.text for canary in bobs.canaries)  # the stored reply
    return bobs


@dataclass
class Alice:
    """Alice's client: every request carries her own valid token and is kept for inspection."""

    app: FastAPI
    client: httpx.AsyncClient
    agent: ScriptedAgent
    received: list[httpx.Response] = field(default_factory=list)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**auth(ALICE), **kwargs.pop("headers", {})}
        response = await self.client.request(method, url, headers=headers, **kwargs)
        self.received.append(response)
        return response


@contextlib.asynccontextmanager
async def alice_attacks(
    make_server: Callable[..., Any],
    connector: Connector,
    planted: Planted,
    agent: ScriptedAgent | None = None,
) -> AsyncIterator[Alice]:
    """Alice on a fresh app; on the way out, Bob's rows must be unchanged and no canary may
    be in anything Alice received."""
    bobs_rows = await snapshot(connector, BOB)
    # Room for every tool call a test's script makes in one turn.
    async with make_server(
        agent or ScriptedAgent([Say("done")]), max_tool_calls_per_turn=50
    ) as server:
        alice = Alice(server.app, server.client, server.agent)
        yield alice
    assert await snapshot(connector, BOB) == bobs_rows
    assert alice.received
    for response in alice.received:
        seen = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        leaked = sorted(canary for canary in planted.canaries if canary in seen)
        assert not leaked, f"{response.request.method} {response.request.url} leaked {leaked}"


def user_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every documented route under a user's path, so a route
    added later is attacked too."""
    return sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if "{user_id}" in path
        for method in operations
    )


# An export with nothing in it: the smallest valid import.
EMPTY_EXPORT: Final = (
    '{"format": "chatledger.export", "version": 1, "exported_at": "2026-01-01T00:00:00+00:00"}\n'
    '{"type": "end", "conversations": 0, "messages": 0, "tasks": 0}\n'
)


def body_for(method: str, template: str, conversation_id: str) -> dict[str, Any]:
    """A valid body for the route (as request arguments), so only ownership can be the
    reason for a refusal."""
    if template.endswith("/import"):
        return {"content": EMPTY_EXPORT}
    body = _json_body_for(method, template, conversation_id)
    return {} if body is None else {"json": body}


def _json_body_for(method: str, template: str, conversation_id: str) -> dict[str, Any] | None:
    if template.endswith("/chat"):
        return {"message": "hello", "conversation_id": conversation_id}
    if template.endswith("/edit"):
        return {"message": "hello"}
    if template.endswith("/head"):
        return {"seq": 1}
    if template.endswith(("/fork", "/regenerate")):
        return {}
    if method in ("POST", "PATCH"):
        return {"title": "renamed by alice", "metadata": {"by": ALICE}}
    return None


def targets(template: str, planted: Planted) -> list[str]:
    """Bob's conversation ids to try on a route: all of them where it takes one."""
    takes_one = "{conversation_id}" in template or template.endswith("/chat")
    return planted.conversation_ids if takes_one else planted.conversation_ids[:1]


async def test_every_route_on_bobs_path_is_403_for_alice(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    async with alice_attacks(make_server, connector, planted) as alice:
        routes = user_routes(alice.app)
        assert {path for _, path in routes} >= {
            "/api/{user_id}",
            "/api/{user_id}/chat",
            "/api/{user_id}/conversations",
            "/api/{user_id}/conversations/{conversation_id}",
            "/api/{user_id}/conversations/{conversation_id}/messages",
            "/api/{user_id}/tasks",
        }
        for method, template in routes:
            for conversation_id in targets(template, planted):
                response = await alice.request(
                    method,
                    template.format(user_id=BOB, conversation_id=conversation_id, seq=1),
                    **body_for(method, template, conversation_id),
                    params={"cursor": planted.cursor},
                    headers={"Idempotency-Key": planted.idempotency_key},
                )
                assert (response.status_code, response.json()) == (403, FORBIDDEN), (
                    method,
                    template,
                )
        assert alice.agent.runs == 0


async def test_bobs_conversation_ids_in_alices_path_are_404_like_missing_ones(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    async with alice_attacks(make_server, connector, planted) as alice:
        # Alice has a conversation of her own: the 404 is not "Alice has nothing".
        own = await alice.request("POST", f"/api/{ALICE}/conversations", json={"title": "mine"})
        assert own.status_code == 201
        routes = [
            (method, template)
            for method, template in user_routes(alice.app)
            if "{conversation_id}" in template or template.endswith("/chat")
        ]
        assert len(routes) >= 5
        for method, template in routes:
            for conversation_id in targets(template, planted):
                responses = [
                    await alice.request(
                        method,
                        template.format(user_id=ALICE, conversation_id=target, seq=1),
                        **body_for(method, template, target),
                    )
                    for target in (conversation_id, uuid.uuid4().hex)
                ]
                foreign, missing = responses
                assert foreign.status_code == missing.status_code == 404, (method, template)
                assert foreign.json() == missing.json(), (method, template)
        assert alice.agent.runs == 0


async def test_bobs_listing_cursor_is_refused_like_a_forged_one(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    async with alice_attacks(make_server, connector, planted) as alice:
        for title in ("one", "two"):
            await alice.request("POST", f"/api/{ALICE}/conversations", json={"title": title})
        url = f"/api/{ALICE}/conversations"
        bobs = await alice.request("GET", url, params={"cursor": planted.cursor, "limit": 1})
        forged = await alice.request("GET", url, params={"cursor": "Zm9yZ2VkLWN1cnNvcg"})
        assert bobs.status_code == forged.status_code == 422
        assert bobs.json() == forged.json()
        assert bobs.json()["field"] == "cursor"


async def test_bobs_idempotency_key_gives_alice_a_turn_of_her_own(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    async with alice_attacks(make_server, connector, planted) as alice:
        url, key = f"/api/{ALICE}/chat", {"Idempotency-Key": planted.idempotency_key}
        first = await alice.request("POST", url, json=IDEMPOTENT_BODY, headers=key)
        again = await alice.request("POST", url, json=IDEMPOTENT_BODY, headers=key)
        assert first.status_code == 200, first.text
        assert "idempotent-replayed" not in first.headers
        assert first.json()["response"] == "done"
        assert first.json()["conversation_id"] not in planted.conversation_ids
        # The key is now Alice's too, and replays her turn, not Bob's.
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert alice.agent.runs == 1


async def test_bobs_task_ids_through_the_agent_reach_only_alices_tasks(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    steps: list[Step] = []
    for task_id in planted.task_ids:
        steps += [
            CallTool("complete_task", {"task_id": task_id}),
            CallTool("update_task", {"task_id": task_id, "title": "renamed by alice"}),
            CallTool("delete_task", {"task_id": str(task_id)}),
        ]
    steps += [
        CallTool("add_task", {"title": "for bob", "user_id": BOB}),
        CallTool("list_tasks", {"status": "all"}),
        Say("done"),
    ]
    async with alice_attacks(make_server, connector, planted, ScriptedAgent(steps)) as alice:
        # Alice owns a task 1 too: the number names her task, never Bob's.
        await alice.app.state.store.tasks.add(ALICE, title="alice's own")
        turn = await alice.request("POST", f"/api/{ALICE}/chat", json={"message": "tidy up"})
        assert turn.status_code == 200, turn.text
        results = [(call["name"], call["result"]) for call in turn.json()["tool_calls"]]
        not_found = {"error": "no such task", "code": "not_found"}
        assert results[:3] == [
            ("complete_task", {"task_id": 1, "status": "completed", "title": "alice's own"}),
            ("update_task", {"task_id": 1, "status": "updated", "title": "renamed by alice"}),
            ("delete_task", {"task_id": 1, "status": "deleted", "title": "renamed by alice"}),
        ]
        assert results[3:-2] == [
            (name, not_found)
            for _ in planted.task_ids[1:]
            for name in ("complete_task", "update_task", "delete_task")
        ]
        # No tool takes a user id: the model cannot choose whose tasks it touches.
        assert (results[-2][0], results[-2][1]["code"]) == ("add_task", "invalid_arguments")
        assert results[-1] == ("list_tasks", {"tasks": [], "total": 0, "omitted": 0})
        tasks = await alice.request("GET", f"/api/{ALICE}/tasks")
        assert tasks.json() == {"items": [], "next_cursor": None, "has_more": False}


async def test_alices_usage_counts_none_of_bobs_turns(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    async with alice_attacks(make_server, connector, planted) as alice:
        turn = await alice.request("POST", f"/api/{ALICE}/chat", json={"message": "hi"})
        usage = await alice.request("GET", f"/api/{ALICE}/usage")

    assert usage.status_code == 200, usage.text
    assert usage.json()["total"]["turns"] == 1
    assert [c["conversation_id"] for c in usage.json()["conversations"]] == [
        turn.json()["conversation_id"]
    ]
    assert not any(conversation_id in usage.text for conversation_id in planted.conversation_ids)


async def test_alices_export_and_import_never_reach_bobs_data(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    async with alice_attacks(make_server, connector, planted) as alice:
        await alice.request("POST", f"/api/{ALICE}/chat", json={"message": "mine"})
        exported = await alice.request("GET", f"/api/{ALICE}/export")
        assert exported.status_code == 200 and '"type":"conversation"' in exported.text
        # A file naming Bob's conversation ids imports as conversations of Alice's own,
        # with ids of her own: Bob's are neither found nor touched.
        lines = exported.text.splitlines()
        conversation = json.loads(lines[1])
        forged = exported.text.replace(conversation["id"], planted.conversation_ids[0])
        imported = await alice.request("POST", f"/api/{ALICE}/import", content=forged)
        assert imported.status_code == 200, imported.text
        [row] = imported.json()["conversations"]
        assert row["present"] is False and row["id"] not in planted.conversation_ids
        again = await alice.request("GET", f"/api/{ALICE}/export")
        assert again.text.count('"type":"conversation"') == 2


async def test_alices_search_finds_none_of_bobs_canaries(
    make_server: Callable[..., Any], connector: Connector, planted: Planted
) -> None:
    async with alice_attacks(make_server, connector, planted) as alice:
        # Alice's own message shares the word "canary" with every one of Bob's: her
        # search finds something, and only that.
        turn = await alice.request("POST", f"/api/{ALICE}/chat", json={"message": "a canary"})
        own = turn.json()["conversation_id"]
        url = f"/api/{ALICE}/search"
        for tools in ("false", "true"):
            found = await alice.request("GET", url, params={"q": "canary", "tools": tools})
            assert [hit["conversation_id"] for hit in found.json()["items"]] == [own]
            for canary in sorted(planted.canaries):
                word = canary.removeprefix("canary-")
                for query in (word, f"{word[:4]}*", f"canary {word}"):
                    response = await alice.request("GET", url, params={"q": query, "tools": tools})
                    assert response.json() == {"items": [], "next_cursor": None}, query
