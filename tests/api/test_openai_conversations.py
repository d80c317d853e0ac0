"""The OpenAI Conversations API under `/v1`, against hostile and careless input, over ASGI on
both databases: every refusal is an OpenAI-shaped 4xx, and the database holds afterwards
exactly what it held before."""

from __future__ import annotations

from typing import Any

import httpx

from chatledger.domain import ChatMessage, ToolCall
from chatledger.store import Connector, SQLAlchemyStore
from tests.api.conftest import Server, auth
from tests.factories import snapshot

USER = "alice"


async def _conversation(server: Server, items: list[Any]) -> str:
    created = await server.client.post(
        "/v1/conversations", json={"items": items}, headers=auth(USER)
    )
    assert created.status_code == 200, created.text
    conversation_id: str = created.json()["id"]
    return conversation_id


def _refused(response: httpx.Response, status: int, param: str | None, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error" and error["message"]
    assert (error["param"], error["code"]) == (param, code), error


async def test_a_role_that_is_not_a_string_is_a_400_not_a_500(
    server: Server, connector: Connector
) -> None:
    conversation_id = await _conversation(server, [{"role": "user", "content": "kept"}])
    before = await snapshot(connector, USER)
    for role in (["user"], {"user": 1}):
        item = {"role": role, "content": "x"}
        added = await server.client.post(
            f"/v1/conversations/{conversation_id}/items", json={"items": [item]}, headers=auth(USER)
        )
        _refused(added, 400, "items[0]", "invalid")
        created = await server.client.post(
            "/v1/conversations", json={"items": [item]}, headers=auth(USER)
        )
        _refused(created, 400, "items[0]", "invalid")
    assert await snapshot(connector, USER) == before


async def test_a_call_id_or_tool_name_longer_than_the_database_keeps_is_a_400(
    server: Server, connector: Connector
) -> None:
    # A tool message keeps its call id and its tool's name in columns of 255 characters:
    # PostgreSQL refused longer ones with an error that became a 500 (SQLite kept them).
    conversation_id = await _conversation(server, [{"role": "user", "content": "kept"}])
    before = await snapshot(connector, USER)
    long_id = {"type": "function_call_output", "call_id": "c" * 256, "output": "1"}
    call = {"type": "function_call", "call_id": "c1", "name": "n" * 256, "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "1"}
    for items, param in (([long_id], "items[0]"), ([call, output], "items[0]")):
        added = await server.client.post(
            f"/v1/conversations/{conversation_id}/items", json={"items": items}, headers=auth(USER)
        )
        _refused(added, 400, param, "too_large")
        created = await server.client.post(
            "/v1/conversations", json={"items": items}, headers=auth(USER)
        )
        _refused(created, 400, param, "too_large")
    assert await snapshot(connector, USER) == before
    # At the limit, both are kept.
    fits = [
        {"type": "function_call", "call_id": "c" * 255, "name": "n" * 255, "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c" * 255, "output": "1"},
    ]
    added = await server.client.post(
        f"/v1/conversations/{conversation_id}/items", json={"items": fits}, headers=auth(USER)
    )
    assert added.status_code == 200, added.text
    listed = await server.client.get(
        f"/v1/conversations/{conversation_id}/items", params={"order": "asc"}, headers=auth(USER)
    )
    assert [item["call_id"] for item in listed.json()["data"][1:]] == ["c" * 255] * 2


async def test_every_item_id_a_listing_gives_can_be_read_and_paged_after(
    server: Server, store: SQLAlchemyStore
) -> None:
    # A message chatledger wrote reads as its text and one function_call per tool call;
    # its 10 000th call's id has a five-digit place, which ids were refused (400) for.
    conversation_id = await _conversation(server, [{"role": "user", "content": "go"}])
    calls = tuple(ToolCall(f"c{n}", "add_task", "{}") for n in range(10_000))
    await store.append(
        USER,
        conversation_id.removeprefix("conv_"),
        [ChatMessage.assistant("On it.", tool_calls=calls), ChatMessage.assistant("Done.")],
    )
    items = f"/v1/conversations/{conversation_id}/items"
    page = await server.client.get(items, params={"limit": 2}, headers=auth(USER))
    assert [item["id"] for item in page.json()["data"]] == ["msg_3", "fc_2_10000"]
    one = await server.client.get(f"{items}/fc_2_10000", headers=auth(USER))
    assert one.status_code == 200, one.text
    assert one.json()["call_id"] == "c9999"
    after = await server.client.get(
        items, params={"limit": 2, "after": "fc_2_10000"}, headers=auth(USER)
    )
    assert after.status_code == 200, after.text
    assert [item["id"] for item in after.json()["data"]] == ["fc_2_9999", "fc_2_9998"]
    deleted = await server.client.delete(f"{items}/fc_2_10000", headers=auth(USER))
    assert deleted.status_code == 200, deleted.text
    history = await store.history(USER, conversation_id.removeprefix("conv_"))
    assert [call.id for call in history[-2].tool_calls] == [f"c{n}" for n in range(9_999)]


async def test_a_message_given_with_a_null_type_comes_back_as_a_message(server: Server) -> None:
    # Taken as the easy form (a role, no type), it was shown with the `type: null` it came
    # with, which no OpenAI item has.
    conversation_id = await _conversation(server, [{"type": None, "role": "user", "content": "hi"}])
    listed = await server.client.get(
        f"/v1/conversations/{conversation_id}/items", headers=auth(USER)
    )
    assert listed.json()["data"] == [
        {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
    ]
