"""`GET /api/{user_id}/search` through the real app, on SQLite and PostgreSQL: a turn's
messages are found as soon as it answers, every query is either searched or a 422 with
its code (never a 500), and pages visit every hit once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from chatledger.domain import ChatMessage
from chatledger.testing import CallTool, Say, ScriptedAgent
from tests.api.conftest import Server, auth
from tests.search_queries import HOSTILE_QUERIES


async def _search(server: Server, user: str, **params: Any) -> httpx.Response:
    return await server.client.get(f"/api/{user}/search", params=params, headers=auth(user))


async def test_a_turn_is_found_once_it_answers_tool_results_only_when_asked(
    server: Server,
) -> None:
    turn = await server.chat("alice", "Please remember to buy milk")
    assert turn.status_code == 200, turn.text
    conversation_id = turn.json()["conversation_id"]

    found = await _search(server, "alice", q="MILK")
    assert found.status_code == 200
    body = found.json()
    assert body["next_cursor"] is None
    title = (await server.client.get(
        f"/api/alice/conversations/{conversation_id}", headers=auth("alice")
    )).json()["title"]  # fmt: skip
    assert sorted(body["items"], key=lambda hit: hit["seq"]) == [
        {
            "conversation_id": conversation_id,
            "title": title,
            "seq": 1,
            "role": "user",
            "snippet": "Please remember to buy milk",
            "marks": [[23, 27]],
        },
        {
            "conversation_id": conversation_id,
            "title": title,
            "seq": 4,
            "role": "assistant",
            "snippet": "Added buy milk.",
            "marks": [[10, 14]],
        },
    ]
    with_tools = await _search(server, "alice", q="milk", tools="true")
    assert sorted((hit["seq"], hit["role"]) for hit in with_tools.json()["items"]) == [
        (1, "user"),
        (3, "tool"),
        (4, "assistant"),
    ]


async def test_only_the_owner_may_search(server: Server) -> None:
    await server.chat("bob", "buy milk")
    no_token = await server.client.get("/api/bob/search", params={"q": "milk"})
    alices_token = await server.client.get(
        "/api/bob/search", params={"q": "milk"}, headers=auth("alice")
    )
    assert (no_token.status_code, alices_token.status_code) == (401, 403)
    assert (await _search(server, "alice", q="milk")).json()["items"] == []


async def test_hostile_queries_are_searched_or_422_never_500(server: Server) -> None:
    await server.chat("alice", "near a b and or not drop table messages café 東京 same")
    for query, code in HOSTILE_QUERIES:
        if "\ud800" in query:
            continue  # no URL can carry a lone surrogate; below, as broken UTF-8
        response = await _search(server, "alice", q=query, tools="true")
        if code is None:
            assert response.status_code == 200, (query, response.text)
            assert set(response.json()) == {"items", "next_cursor"}
        else:
            assert response.status_code == 422, (query, response.text)
            assert (response.json()["code"], response.json()["field"]) == (code, "q"), query
    for raw in ("%00", "a%00b", "a%ED%A0%80b", "%FF%FE", "%E2%80%AE", "%", "%%", "%2"):
        response = await server.client.get(f"/api/alice/search?q={raw}", headers=auth("alice"))
        assert response.status_code in (200, 422), (raw, response.text)
    missing = await server.client.get("/api/alice/search", headers=auth("alice"))
    assert (missing.status_code, missing.json()["field"]) == (422, "q")


async def test_pages_visit_every_hit_once(make_server: Callable[..., Any]) -> None:
    async with make_server(ScriptedAgent([Say("ok")])) as server:
        store = server.app.state.store
        conversation = await store.create_conversation("alice")
        await store.append(
            "alice",
            conversation.id,
            [ChatMessage.user(" ".join(["lemur"] * (n % 5 + 1) + [str(n)])) for n in range(25)],
        )
        whole = (await _search(server, "alice", q="lemur", limit=50)).json()["items"]
        seen: list[dict[str, Any]] = []
        params: dict[str, Any] = {"q": "lemur", "limit": 10}
        while True:
            page = (await _search(server, "alice", **params)).json()
            seen += page["items"]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert len(whole) == 25 and seen == whole
        other = await _search(server, "alice", q="lemur 3", cursor=params["cursor"])
        assert (other.status_code, other.json()["field"]) == (422, "cursor")
        too_many = await _search(server, "alice", q="lemur", limit=1000)
        assert len(too_many.json()["items"]) == 25
        assert (await _search(server, "alice", q="lemur", limit=0)).status_code == 422


async def test_a_deleted_conversation_is_no_longer_found(server: Server) -> None:
    turn = await server.chat("alice", "the tapir")
    conversation_id = turn.json()["conversation_id"]
    assert len((await _search(server, "alice", q="tapir")).json()["items"]) == 1
    deleted = await server.client.delete(
        f"/api/alice/conversations/{conversation_id}", headers=auth("alice")
    )
    assert deleted.status_code == 204
    assert (await _search(server, "alice", q="tapir")).json()["items"] == []


async def test_tool_arguments_are_not_searched(make_server: Callable[..., Any]) -> None:
    agent = ScriptedAgent([CallTool("add_task", {"title": "okapi"}), Say("done")])
    async with make_server(agent) as server:
        await server.chat("alice", "add one")
        hits = (await _search(server, "alice", q="okapi", tools="true")).json()["items"]
        # The task tool's result names the task; the call's arguments are not text.
        assert [hit["role"] for hit in hits] == ["tool"]
