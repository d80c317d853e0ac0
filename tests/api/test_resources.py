"""Conversations, messages, tasks, user deletion, health, metrics and dev sign-in over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from chatledger.testing import CallTool, Say, ScriptedAgent
from tests.api.conftest import Server, auth
from tests.factories import row_counts, snapshot


async def test_conversation_crud(server: Server) -> None:
    headers = auth("alice")
    created = await server.client.post(
        "/api/alice/conversations",
        json={"title": "Plans", "metadata": {"pinned": True}},
        headers=headers,
    )
    assert created.status_code == 201
    conversation = created.json()
    assert (conversation["title"], conversation["metadata"], conversation["message_count"]) == (
        "Plans",
        {"pinned": True},
        0,
    )
    url = f"/api/alice/conversations/{conversation['id']}"
    detail = (await server.client.get(url, headers=headers)).json()
    assert detail == {
        **conversation,
        "context_tokens": detail["context_tokens"],
        "summary_upto_seq": None,
    }
    assert detail["context_tokens"] > 0  # the system prompt alone

    renamed = await server.client.patch(url, json={"title": "Weekend"}, headers=headers)
    assert (renamed.json()["title"], renamed.json()["metadata"]) == ("Weekend", {"pinned": True})
    cleared = await server.client.patch(url, json={"title": None}, headers=headers)
    assert cleared.json()["title"] is None

    deleted = await server.client.delete(url, headers=headers)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await server.client.get(url, headers=headers)).status_code == 404


async def test_listing_pages_newest_first_without_message_bodies(server: Server) -> None:
    headers = auth("alice")
    ids = []
    for n in range(5):
        response = await server.client.post(
            "/api/alice/conversations", json={"title": f"c{n}"}, headers=headers
        )
        ids.append(response.json()["id"])
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = (
            await server.client.get("/api/alice/conversations", params=params, headers=headers)
        ).json()
        assert set(page) == {"items", "next_cursor"}
        assert all("messages" not in item and "content" not in item for item in page["items"])
        seen.extend(item["id"] for item in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == ids[::-1]


async def test_pin_and_archive_over_http(server: Server, connector) -> None:
    headers = auth("alice")
    ids = []
    for n in range(4):
        response = await server.client.post(
            "/api/alice/conversations", json={"title": f"c{n}"}, headers=headers
        )
        ids.append(response.json()["id"])

    async def listed(**params: Any) -> list[str]:
        response = await server.client.get(
            "/api/alice/conversations", params=params, headers=headers
        )
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    pinned = await server.client.patch(
        f"/api/alice/conversations/{ids[0]}", json={"pinned": True}, headers=headers
    )
    assert (pinned.json()["pinned"], pinned.json()["archived"]) == (True, False)
    archived = await server.client.patch(
        f"/api/alice/conversations/{ids[3]}", json={"archived": True}, headers=headers
    )
    assert archived.json()["archived"] is True
    assert await listed() == [ids[0], ids[2], ids[1]]
    assert await listed(archived="true") == [ids[3]]
    assert await listed(pinned="false") == [ids[2], ids[1]]

    before = await snapshot(connector, "alice")
    for body in ({"pinned": "yes"}, {"archived": 1}, {"pinned": True, "colour": "red"}):
        refused = await server.client.patch(
            f"/api/alice/conversations/{ids[1]}", json=body, headers=headers
        )
        assert refused.status_code == 422, body
        assert refused.json()["error"] == "invalid"
    # Another user's conversation cannot be pinned, and nothing changed on the way.
    bobs = await server.client.patch(
        f"/api/bob/conversations/{ids[1]}", json={"pinned": True}, headers=auth("bob")
    )
    assert bobs.status_code == 404
    assert await snapshot(connector, "alice") == before
    assert await listed() == [ids[0], ids[2], ids[1]]


async def test_bad_cursors_and_limits_are_422(server: Server) -> None:
    headers = auth("alice")
    for params in ({"cursor": "garbage"}, {"limit": 0}, {"limit": "ten"}, {"cursor": "x" * 600}):
        response = await server.client.get(
            "/api/alice/conversations", params=params, headers=headers
        )
        assert response.status_code == 422, params
        assert response.json()["error"] == "invalid"


async def test_messages_page_backwards_with_tool_calls(server: Server) -> None:
    conversation_id = (await server.chat("alice", "add buy milk")).json()["conversation_id"]
    for _ in range(2):
        await server.chat("alice", "more", conversation_id=conversation_id)
    url = f"/api/alice/conversations/{conversation_id}/messages"
    latest = (await server.client.get(url, params={"limit": 5}, headers=auth("alice"))).json()
    assert latest["has_more"] is True
    assert [m["seq"] for m in latest["items"]] == [8, 9, 10, 11, 12]
    older = (
        await server.client.get(url, params={"limit": 10, "before": 8}, headers=auth("alice"))
    ).json()
    assert [m["seq"] for m in older["items"]] == list(range(1, 8))
    assert older["has_more"] is False
    tool_call = older["items"][1]
    assert tool_call["role"] == "assistant"
    assert tool_call["tool_calls"][0]["name"] == "add_task"
    assert older["items"][2]["tool_call_id"] == tool_call["tool_calls"][0]["id"]


async def test_tasks_by_status(server: Server) -> None:
    await server.chat("alice", "add buy milk")
    response = await server.client.get(
        "/api/alice/tasks", params={"status": "pending"}, headers=auth("alice")
    )
    assert [t["title"] for t in response.json()["items"]] == ["buy milk"]
    done = await server.client.get(
        "/api/alice/tasks", params={"status": "completed"}, headers=auth("alice")
    )
    assert done.json()["items"] == []
    bad = await server.client.get(
        "/api/alice/tasks", params={"status": "urgent"}, headers=auth("alice")
    )
    assert (bad.status_code, bad.json()["field"]) == (422, "status")


async def test_deleting_a_user_removes_everything_they_own(server: Server, connector) -> None:
    for user in ("alice", "bob"):
        await server.client.post(
            f"/api/{user}/chat",
            json={"message": "add buy milk"},
            headers={**auth(user), "Idempotency-Key": "k"},
        )
    response = await server.client.delete("/api/alice", headers=auth("alice"))
    assert (response.status_code, response.content) == (204, b"")
    assert set((await row_counts(connector, "alice")).values()) == {0}
    assert (await row_counts(connector, "bob"))["messages"] == 4


async def test_health_readiness_and_metrics(server: Server) -> None:
    assert (await server.client.get("/healthz")).json() == {"status": "ok"}
    assert (await server.client.get("/readyz")).json() == {"status": "ready"}
    await server.chat("alice", "add buy milk")
    await server.client.get("/api/alice/tasks")
    text = (await server.client.get("/metrics")).text
    assert 'chatledger_turns_total{outcome="completed"} 1.0' in text
    assert 'chatledger_tool_calls_total{result="ok",tool="add_task"} 1.0' in text
    assert (
        'chatledger_http_requests_total{method="POST",route="/api/{user_id}/chat",status="200"} 1.0'
        in text
    )
    # Tokens are checked before routing, so a refusal has no route of its own.
    assert 'route="/api/{user_id}/…",status="401"' in text
    assert "alice" not in text
    await server.client.get("/static/app.js")
    await server.client.get("/no/such/page")
    text = (await server.client.get("/metrics")).text
    assert 'route="/static/{path}",status="200"' in text  # a mount, not the raw path
    assert 'route="unmatched",status="404"' in text


async def test_readiness_fails_with_503_when_the_database_is_unreachable(
    make_server: Callable[..., Any], default_agent: ScriptedAgent
) -> None:
    async with make_server(
        default_agent, database_url="postgresql://postgres@127.0.0.1:1/nowhere"
    ) as server:
        ready = await server.client.get("/readyz")
        chat = await server.chat("alice", "hi")
    for response in (ready, chat):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == "unavailable"
        assert "127.0.0.1" not in response.text and "postgres" not in response.text


async def test_dev_sign_in_issues_working_tokens(
    make_server: Callable[..., Any], default_agent: ScriptedAgent
) -> None:
    async with make_server(default_agent, dev_login=True) as server:
        issued = await server.client.post("/auth/dev-token", json={"user_id": "carol"})
        assert issued.status_code == 200
        token = issued.json()["token"]
        listed = await server.client.get(
            "/api/carol/conversations", headers={"Authorization": f"Bearer {token}"}
        )
        assert listed.status_code == 200
        for body in ({}, {"user_id": ""}, {"user_id": "x" * 256}, {"user_id": "a", "admin": True}):
            assert (await server.client.post("/auth/dev-token", json=body)).status_code == 422


async def test_dev_sign_in_does_not_exist_without_dev_mode(
    make_server: Callable[..., Any], default_agent: ScriptedAgent
) -> None:
    async with make_server(default_agent, dev_login=False) as server:
        response = await server.client.post("/auth/dev-token", json={"user_id": "carol"})
    assert response.status_code == 404


@pytest.mark.parametrize("origin", ["https://app.example", "https://evil.example"])
async def test_cors_allows_only_configured_origins(
    make_server: Callable[..., Any], origin: str
) -> None:
    agent = ScriptedAgent([CallTool("list_tasks"), Say("ok")])
    async with make_server(agent, cors_origins=["https://app.example"]) as server:
        response = await server.client.options(
            "/api/alice/chat",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    allowed = response.headers.get("access-control-allow-origin")
    assert allowed == (origin if origin == "https://app.example" else None)


async def test_the_openapi_schema_documents_the_error_body(server: Server) -> None:
    schema = (await server.client.get("/openapi.json")).json()
    chat = schema["paths"]["/api/{user_id}/chat"]["post"]
    for status in ("401", "403", "404", "409", "413", "422", "502", "503", "504"):
        assert chat["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }, status


async def test_a_client_never_sees_a_request_without_an_id(server: Server) -> None:
    response = await server.client.get("/healthz")
    assert len(response.headers["x-request-id"]) == 32


# An export that holds one task: its import has to write.
ONE_TASK_EXPORT = "".join(
    json.dumps(record) + "\n"
    for record in (
        {"format": "chatledger.export", "version": 1, "exported_at": "2026-12-01T00:00:00+00:00"},
        {"type": "task", "id": 1, "title": "milk", "description": None, "completed": False,
         "created_at": "2026-12-01T00:00:00+00:00", "updated_at": "2026-12-01T00:00:00+00:00"},
        {"type": "end", "conversations": 0, "messages": 0, "tasks": 1},
    )
).encode()  # fmt: skip


async def test_every_users_route_is_503_when_the_database_is_unreachable(
    make_server: Callable[..., Any], default_agent: ScriptedAgent
) -> None:
    """Every route under a user's path (those added later too): a clean 503, never a 500
    or a stream that breaks off."""
    async with make_server(
        default_agent, database_url="postgresql://postgres@127.0.0.1:1/nowhere"
    ) as server:
        paths = server.app.openapi()["paths"]
        routes = sorted((m.upper(), p) for p, ops in paths.items() if "{user_id}" in p for m in ops)
        assert len(routes) >= 20
        answered = {}
        for method, template in routes:
            url = template.format(user_id="alice", conversation_id="c1", seq=1)
            body: Any = {"message": "hi", "seq": 1} if method in ("POST", "PUT", "PATCH") else None
            if template.endswith(("/chat", "/chat/stream")):
                body = {"message": "hi"}
            elif template.endswith("/head"):
                body = {"seq": 1}
            elif template.endswith(("/fork", "/regenerate")):
                body = {}
            elif template.endswith("/edit"):
                body = {"message": "hi"}
            elif method in ("POST", "PATCH") and template.endswith(("/conversations", "}")):
                body = {"title": "t"}
            params = {"q": "word"} if template.endswith("/search") else None
            kwargs: dict[str, Any] = {"params": params, "headers": auth("alice")}
            if template.endswith("/import"):
                kwargs["content"] = ONE_TASK_EXPORT
            elif body is not None:
                kwargs["json"] = body
            response = await server.client.request(method, url, **kwargs)
            answered[method, template] = (response.status_code, response.headers.get("retry-after"))
    assert {route: status for route, status in answered.items() if status != (503, "1")} == {}
