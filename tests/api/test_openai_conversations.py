"""The OpenAI Conversations API under `/v1`, against hostile and careless input, over ASGI on
both databases: every refusal is an OpenAI-shaped 4xx, and the database holds afterwards
exactly what it held before."""

from __future__ import annotations

from typing import Any

import httpx

from chatledger.store import Connector
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
