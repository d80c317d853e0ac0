"""Edit, regenerate, switch and fork over HTTP: every version kept, the conversation going
on from the one chosen, retries and hostile input answered without a trace in the data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from chatledger.agents import RulesAgent
from chatledger.store import Connector
from tests.api.conftest import Server, auth
from tests.factories import snapshot


@pytest.fixture
async def rules(make_server: Callable[..., Any]) -> AsyncIterator[Server]:
    async with make_server(RulesAgent()) as running:
        yield running


async def messages(server: Server, conversation_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await server.client.get(
        f"/api/alice/conversations/{conversation_id}/messages", params=params, headers=auth("alice")
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def said(items: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in items if m["role"] in ("user", "assistant") and m["content"]]


async def post(server: Server, path: str, body: Any = None, **headers: str) -> httpx.Response:
    return await server.client.post(
        f"/api/alice/conversations/{path}", json=body, headers={**auth("alice"), **headers}
    )


async def test_edit_regenerate_switch_and_fork(rules: Server, connector: Connector) -> None:
    first = (await rules.chat("alice", "add milk")).json()
    cid = first["conversation_id"]
    await rules.chat("alice", "add eggs", conversation_id=cid)
    before = await messages(rules, cid)
    eggs = next(m for m in before if m["content"] == "add eggs")

    edited = await post(rules, f"{cid}/messages/{eggs['seq']}/edit", {"message": "add bread"})
    assert edited.status_code == 200, edited.text
    assert [c["name"] for c in edited.json()["tool_calls"]] == ["add_task"]
    now = await messages(rules, cid)
    assert "add bread" in said(now) and "add eggs" not in said(now)
    bread = next(m for m in now if m["content"] == "add bread")
    assert (bread["sibling_count"], bread["sibling_index"]) == (2, 1)
    assert bread["sibling_seqs"] == [eggs["seq"], bread["seq"]]
    assert bread["parent_seq"] == eggs["parent_seq"]

    # Regenerate: the tool runs again, the first answer stays as a sibling.
    again = await post(rules, f"{cid}/messages/{bread['seq']}/regenerate")
    assert again.status_code == 200, again.text
    assert [c["name"] for c in again.json()["tool_calls"]] == ["add_task"]
    tasks = (await rules.client.get("/api/alice/tasks", headers=auth("alice"))).json()["items"]
    assert [t["title"] for t in tasks] == ["milk", "eggs", "bread", "bread"]
    latest = await messages(rules, cid)
    reply = latest[-1]
    answer = next(m for m in latest if m["parent_seq"] == bread["seq"])
    assert (answer["role"], answer["sibling_count"], answer["sibling_index"]) == ("assistant", 2, 1)

    # Back to the first version: its whole branch shows, and the next turn continues it.
    switched = await rules.client.put(
        f"/api/alice/conversations/{cid}/head", json={"seq": eggs["seq"]}, headers=auth("alice")
    )
    assert switched.status_code == 200, switched.text
    assert said(await messages(rules, cid)) == said(before)
    await rules.chat("alice", "show my tasks", conversation_id=cid)
    assert said(await messages(rules, cid))[: len(said(before))] == said(before)
    # The other branch is still readable as it was.
    assert said(await messages(rules, cid, head=reply["seq"])) == said(latest)

    forked = await post(rules, f"{cid}/fork", {"upto_seq": reply["seq"]})
    assert forked.status_code == 201, forked.text
    copy = forked.json()
    assert copy["id"] != cid and copy["message_count"] == len(latest)
    assert said(await messages(rules, copy["id"])) == said(latest)
    assert [m["seq"] for m in await messages(rules, copy["id"])] == list(range(1, len(latest) + 1))

    # Nothing was ever rewritten: every message written is still there.
    rows = await snapshot(connector, "alice")
    texts = [row for row in rows["messages"] if row[1] == cid]
    assert len(texts) == (await rules.client.get(
        f"/api/alice/conversations/{cid}", headers=auth("alice")
    )).json()["message_count"]  # fmt: skip


async def test_an_edit_retried_with_its_key_replays_and_a_changed_one_is_refused(
    rules: Server, connector: Connector
) -> None:
    cid = (await rules.chat("alice", "add milk")).json()["conversation_id"]
    key = {"Idempotency-Key": "edit-1"}
    first = await post(rules, f"{cid}/messages/1/edit", {"message": "add tea"}, **key)
    rows = await snapshot(connector, "alice")
    replay = await post(rules, f"{cid}/messages/1/edit", {"message": "add tea"}, **key)
    assert (replay.status_code, replay.json()) == (200, first.json())
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await snapshot(connector, "alice") == rows
    for path, body in (
        (f"{cid}/messages/1/edit", {"message": "add coffee"}),
        (f"{cid}/messages/1/regenerate", None),
    ):
        changed = await post(rules, path, body, **key)
        assert changed.status_code == 422, changed.text
        assert changed.json()["code"] == "idempotency_mismatch"
    regenerated = await post(rules, f"{cid}/messages/1/regenerate", **{"Idempotency-Key": "r"})
    replayed = await post(rules, f"{cid}/messages/1/regenerate", **{"Idempotency-Key": "r"})
    assert replayed.json() == regenerated.json()
    assert await snapshot(connector, "alice") != rows


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("messages/2/edit", {"message": "x"}, 422, "not_a_user_message"),
        ("messages/2/regenerate", None, 422, "not_a_user_message"),
        ("messages/99/edit", {"message": "x"}, 404, "not_found"),
        ("messages/0/edit", {"message": "x"}, 422, None),
        ("messages/-1/regenerate", None, 422, None),
        ("messages/abc/regenerate", None, 422, None),
        (f"messages/{2**63}/regenerate", None, 422, None),
        ("messages/1/edit", {"message": ""}, 422, None),
        ("messages/1/edit", {"message": "a\x00b"}, 422, None),
        ("messages/1/edit", {}, 422, None),
        ("messages/1/edit", {"message": "x", "seq": 3}, 422, None),
        ("fork", {"upto_seq": 0}, 422, None),
        ("fork", {"upto_seq": "1"}, 422, None),
        ("fork", {"upto_seq": 2**63}, 422, None),
        ("fork", {"upto_seq": 99}, 404, "not_found"),
    ],
)
async def test_bad_branch_requests_are_refused_and_change_nothing(
    rules: Server, connector: Connector, path: str, body: Any, status: int, code: str | None
) -> None:
    cid = (await rules.chat("alice", "add milk")).json()["conversation_id"]
    rows = await snapshot(connector, "alice")
    response = await post(rules, f"{cid}/{path}", body)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code
    assert await snapshot(connector, "alice") == rows


@pytest.mark.parametrize("body", [{"seq": 0}, {"seq": "1"}, {"seq": 2**63}, {"seq": True}, {}])
async def test_a_bad_head_is_refused(rules: Server, connector: Connector, body: Any) -> None:
    cid = (await rules.chat("alice", "add milk")).json()["conversation_id"]
    rows = await snapshot(connector, "alice")
    response = await rules.client.put(
        f"/api/alice/conversations/{cid}/head", json=body, headers=auth("alice")
    )
    assert response.status_code == 422, response.text
    missing = await rules.client.put(
        f"/api/alice/conversations/{cid}/head", json={"seq": 50}, headers=auth("alice")
    )
    assert missing.status_code == 404
    assert await snapshot(connector, "alice") == rows


async def test_a_branch_read_of_a_missing_message_is_404(rules: Server) -> None:
    cid = (await rules.chat("alice", "add milk")).json()["conversation_id"]
    response = await rules.client.get(
        f"/api/alice/conversations/{cid}/messages", params={"head": 77}, headers=auth("alice")
    )
    assert response.status_code == 404
