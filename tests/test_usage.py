"""What a turn records of its agent's token usage, through ChatService on both databases:
the sum of what the agent reported, however the turn ended; unknown when it reported
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from chatledger.errors import ModelError
from chatledger.service import ChatService
from chatledger.storage import utcnow
from chatledger.store import Connector, SQLAlchemyStore
from chatledger.store.schema import turns
from chatledger.testing import Block, CallTool, Fail, Say, ScriptedAgent, Signal
from chatledger.usage import TokenUsage, UsageTotals

_t = turns.c


@pytest.fixture
async def make_service(store: SQLAlchemyStore) -> AsyncIterator[Callable[..., ChatService]]:
    services: list[ChatService] = []

    def make(agent: ScriptedAgent, **options: Any) -> ChatService:
        services.append(ChatService(store, agent, summarize=False, **options))
        return services[-1]

    yield make
    for service in services:
        await service.drain()


async def recorded(connector: Connector, conversation_id: str) -> tuple[Any, ...]:
    """The turn's status and the usage recorded with it."""
    query = select(
        _t.status, _t.input_tokens, _t.output_tokens, _t.usage_estimated, _t.model
    ).where(_t.conversation_id == conversation_id)
    return tuple(await connector.read(lambda conn: conn.execute(query).one()))


def test_usage_adds_up_and_stays_a_count() -> None:
    total = TokenUsage(100, 10, "a") + TokenUsage(30, 7, None, estimated=True)
    assert total == TokenUsage(130, 17, "a", estimated=True)
    assert TokenUsage(1, 1, "a") + TokenUsage(1, 1, "b") == TokenUsage(2, 2, "b")
    for wrong in (-1, 2**53, 1.5, True):
        with pytest.raises(ValueError, match="token count"):
            TokenUsage(wrong, 0)  # type: ignore[arg-type]


async def test_a_turn_records_the_sum_of_every_report_of_its_agent(
    store: SQLAlchemyStore, connector: Connector, make_service: Callable[..., ChatService]
) -> None:
    # A tool loop: one model request before the tool call, one after, each reported.
    agent = ScriptedAgent(
        [
            TokenUsage(100, 10, "model-a"),
            CallTool("add_task", {"title": "buy milk"}),
            TokenUsage(130, 7, "model-a", estimated=True),
            Say("Added buy milk."),
        ]
    )
    result = await make_service(agent).turn("alice", None, "add buy milk")

    assert await recorded(connector, result.conversation_id) == (
        "completed",
        230,
        17,
        True,
        "model-a",
    )
    today = utcnow().date()
    report = await store.token_usage("alice", first_day=today, last_day=today)
    assert report.total == UsageTotals(230, 17, turns=1, estimated_turns=1)


async def test_a_failed_turn_records_what_was_reported_before_it_failed(
    connector: Connector, make_service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([TokenUsage(50, 5, "model-a"), Fail(ModelError("the model is down"))])
    with pytest.raises(ModelError) as failed:
        await make_service(agent).turn("alice", None, "hello")

    conversation_id = failed.value.conversation_id
    assert conversation_id is not None
    assert await recorded(connector, conversation_id) == ("failed", 50, 5, False, "model-a")


async def test_a_stopped_turn_records_what_was_reported_before_it_stopped(
    store: SQLAlchemyStore, connector: Connector, make_service: Callable[..., ChatService]
) -> None:
    reached, never = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([TokenUsage(20, 2, "model-a"), Signal(reached), Block(never)])
    service = make_service(agent, stop_poll_interval=0.01)
    running = asyncio.create_task(service.turn("alice", None, "hello"))
    await reached.wait()
    [conversation] = (await store.list_conversations("alice")).items
    assert await service.stop("alice", conversation.id)
    result = await running

    assert await recorded(connector, result.conversation_id) == (
        "stopped",
        20,
        2,
        False,
        "model-a",
    )


async def test_a_turn_whose_agent_reports_nothing_has_unknown_usage(
    store: SQLAlchemyStore, connector: Connector, make_service: Callable[..., ChatService]
) -> None:
    result = await make_service(ScriptedAgent([Say("Hi.")])).turn("alice", None, "hello")

    assert await recorded(connector, result.conversation_id) == (
        "completed",
        None,
        None,
        None,
        None,
    )
    today = utcnow().date()
    report = await store.token_usage("alice", first_day=today, last_day=today)
    assert report.total == UsageTotals(turns=1, unknown_turns=1)
