"""`GET /api/{user_id}/usage` on the real app, on SQLite and PostgreSQL: exact sums of
known turns, per UTC day and per conversation, for the user alone; periods checked."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from chatledger.agents import OpenAIAgent
from chatledger.store import Connector
from chatledger.store.schema import turns
from chatledger.testing import (
    CallTool,
    FakeModelServer,
    FunctionCall,
    ReportedUsage,
    Say,
    ScriptedAgent,
    Text,
    ToolCalls,
)
from chatledger.usage import TokenUsage
from tests.api.conftest import Server, auth

MakeServer = Callable[..., Any]


def totals(
    input_tokens: int,
    output_tokens: int,
    turns: int,
    *,
    estimated_turns: int = 0,
    unknown_turns: int = 0,
) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "turns": turns,
        "estimated_turns": estimated_turns,
        "unknown_turns": unknown_turns,
    }


@pytest.fixture
def metered() -> ScriptedAgent:
    """A tool loop of two model requests, each reporting its usage: 220 in, 15 out."""
    return ScriptedAgent(
        [
            TokenUsage(100, 10, "model-a"),
            CallTool("add_task", {"title": "buy milk"}),
            TokenUsage(120, 5, "model-a"),
            Say("Added buy milk."),
        ]
    )


async def usage(server: Server, user: str, query: str = "") -> Any:
    response = await server.client.get(f"/api/{user}/usage{query}", headers=auth(user))
    assert response.status_code == 200, response.text
    return response.json()


async def started_at(connector: Connector, conversation_id: str, when: datetime) -> None:
    """Move the conversation's turns to `when`, as if they had run then."""
    statement = update(turns).where(turns.c.conversation_id == conversation_id)
    await connector.write(lambda conn: conn.execute(statement.values(started_at=when)))


async def test_the_users_turns_are_summed_exactly_over_the_last_30_days_by_default(
    make_server: MakeServer, metered: ScriptedAgent
) -> None:
    async with make_server(metered) as server:
        first = (await server.chat("alice", "add buy milk")).json()["conversation_id"]
        second = (await server.chat("alice", "add buy milk")).json()["conversation_id"]
        await server.chat("alice", "add buy milk", conversation_id=second)
        report = await usage(server, "alice")

    today = datetime.now(UTC).date()
    assert report["from"] == (today - timedelta(days=29)).isoformat()
    assert report["to"] == today.isoformat()
    assert report["total"] == totals(660, 45, 3)
    assert report["days"] == [{"day": today.isoformat(), **totals(660, 45, 3)}]
    assert report["conversations"] == [
        {"conversation_id": second, "title": "add buy milk", **totals(440, 30, 2)},
        {"conversation_id": first, "title": "add buy milk", **totals(220, 15, 1)},
    ]


async def test_days_are_utc_days_and_both_ends_are_included(
    make_server: MakeServer, metered: ScriptedAgent, connector: Connector
) -> None:
    async with make_server(metered) as server:
        late = (await server.chat("alice", "late")).json()["conversation_id"]
        early = (await server.chat("alice", "early")).json()["conversation_id"]
        before = (await server.chat("alice", "before")).json()["conversation_id"]
        await started_at(connector, late, datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC))
        await started_at(connector, early, datetime(2026, 3, 2, 0, 0, tzinfo=UTC))
        await started_at(connector, before, datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC))

        both = await usage(server, "alice", "?from=2026-03-01&to=2026-03-02")
        first_only = await usage(server, "alice", "?from=2026-03-01&to=2026-03-01")
        second_only = await usage(server, "alice", "?from=2026-03-02&to=2026-03-02")
        without_to = await usage(server, "alice", "?from=2026-03-02")

    assert both["days"] == [
        {"day": "2026-03-01", **totals(220, 15, 1)},
        {"day": "2026-03-02", **totals(220, 15, 1)},
    ]
    assert {c["conversation_id"] for c in both["conversations"]} == {late, early}
    assert [c["conversation_id"] for c in first_only["conversations"]] == [late]
    assert second_only["total"] == totals(220, 15, 1)
    assert [c["conversation_id"] for c in second_only["conversations"]] == [early]
    assert without_to["to"] == datetime.now(UTC).date().isoformat()
    assert without_to["total"] == totals(220, 15, 1)


async def test_reported_and_estimated_usage_of_a_real_model_through_the_openai_agent(
    make_server: MakeServer,
) -> None:
    script = [
        ToolCalls([FunctionCall("add_task", {"title": "milk"})], usage=ReportedUsage(200, 12)),
        ToolCalls([FunctionCall("list_tasks")], usage=ReportedUsage(260, 9)),
        Text("Added milk; it is your only task.", usage=ReportedUsage(330, 3)),
        Text("Hello.", usage=False),  # a server that reports nothing: our estimate
    ]
    async with FakeModelServer(script) as model:
        agent = OpenAIAgent("fake-model", base_url=model.base_url, api_key="sk-test")
        async with contextlib.aclosing(agent), make_server(agent) as server:
            reported = (await server.chat("alice", "add milk, list my tasks")).json()
            estimated = (await server.chat("alice", "hello")).json()
            report = await usage(server, "alice")

    by_id = {c["conversation_id"]: c for c in report["conversations"]}
    assert by_id[reported["conversation_id"]] == {
        "conversation_id": reported["conversation_id"],
        "title": "add milk, list my tasks",
        **totals(790, 24, 1),
    }
    guess = by_id[estimated["conversation_id"]]
    assert (guess["turns"], guess["estimated_turns"]) == (1, 1)
    # "Hello." is 6 bytes: 2 tokens, and 4 for the message.
    assert guess["output_tokens"] == 6
    assert report["total"]["estimated_turns"] == 1


async def test_another_users_usage_never_appears(
    make_server: MakeServer, metered: ScriptedAgent
) -> None:
    async with make_server(metered) as server:
        mine = (await server.chat("alice", "mine")).json()["conversation_id"]
        theirs = (await server.chat("bob", "a secret plan")).json()["conversation_id"]
        alice = await server.client.get("/api/alice/usage", headers=auth("alice"))
        bob_by_alice = await server.client.get("/api/bob/usage", headers=auth("alice"))
        anonymous = await server.client.get("/api/bob/usage")
        bob = await usage(server, "bob")

    assert alice.status_code == 200
    assert [c["conversation_id"] for c in alice.json()["conversations"]] == [mine]
    assert alice.json()["total"] == totals(220, 15, 1)
    assert theirs not in alice.text and "a secret plan" not in alice.text
    assert bob_by_alice.status_code == 403 and bob_by_alice.json()["code"] == "forbidden"
    assert anonymous.status_code == 401
    assert theirs not in bob_by_alice.text + anonymous.text
    assert [c["conversation_id"] for c in bob["conversations"]] == [theirs]


async def test_a_deleted_conversations_usage_is_gone(
    make_server: MakeServer, metered: ScriptedAgent
) -> None:
    async with make_server(metered) as server:
        kept = (await server.chat("alice", "keep")).json()["conversation_id"]
        gone = (await server.chat("alice", "forget")).json()["conversation_id"]
        deleted = await server.client.delete(
            f"/api/alice/conversations/{gone}", headers=auth("alice")
        )
        assert deleted.status_code == 204
        report = await usage(server, "alice")

    assert report["total"] == totals(220, 15, 1)
    assert [c["conversation_id"] for c in report["conversations"]] == [kept]


@pytest.mark.parametrize(
    ("query", "field", "code"),
    [
        ("?from=2026-3-1", "from", "invalid_date"),
        ("?from=2026-02-30", "from", "invalid_date"),
        ("?to=20260301", "to", "invalid_date"),
        ("?to=2026-W09-1", "to", "invalid_date"),
        ("?from=yesterday", "from", "invalid_date"),
        ("?from=\u0662\u0660\u0662\u0666-\u0660\u0663-\u0660\u0661", "from", "invalid_date"),
        ("?from=2026-03-01T00:00:00", "from", "invalid_date"),
        ("?from=2026-03-02&to=2026-03-01", "to", "invalid_range"),
        ("?from=2025-01-01&to=2026-01-02", "to", "range_too_long"),
        ("?from=0001-01-01", "to", "range_too_long"),
    ],
)
async def test_a_bad_period_is_422_with_a_code_that_says_why(
    server: Server, query: str, field: str, code: str
) -> None:
    response = await server.client.get(f"/api/alice/usage{query}", headers=auth("alice"))

    assert response.status_code == 422
    body = response.json()
    assert (body["error"], body["code"], body["field"]) == ("invalid", code, field)
    assert body["message"]


@pytest.mark.parametrize(
    ("query", "first", "last"),
    [
        ("?from=2025-01-01&to=2026-01-01", "2025-01-01", "2026-01-01"),  # 366 days
        ("?to=0001-01-05", "0001-01-01", "0001-01-05"),
        ("?from=9999-12-31&to=9999-12-31", "9999-12-31", "9999-12-31"),
    ],
)
async def test_the_longest_period_and_the_ends_of_the_calendar_are_answered(
    server: Server, query: str, first: str, last: str
) -> None:
    report = await usage(server, "alice", query)

    assert (report["from"], report["to"]) == (first, last)
    assert report["total"] == totals(0, 0, 0)
