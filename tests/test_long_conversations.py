"""Long conversations: the turn's cost stays flat, summaries fold history in exactly once,
and the agent's input is always valid for a real model API."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from chatledger import context
from chatledger.agents.openai import OpenAIAgent
from chatledger.agents.rules import RulesAgent
from chatledger.domain import Branch, ChatMessage, Message, Role, Summary
from chatledger.service import DEFAULT_SYSTEM_PROMPT, ChatService
from chatledger.store import SQLAlchemyStore
from chatledger.testing import (
    FakeModelServer,
    FunctionCall,
    ModelRequest,
    Say,
    ScriptedAgent,
    Text,
    ToolCalls,
)
from tests.factories import assert_invariants, count_statements, message_seqs


class CountingAgent(ScriptedAgent):
    """Says "ok"; its summary only counts what it folded, so it stays one size."""

    def __init__(self) -> None:
        super().__init__([Say("ok")])
        self.folded = 0
        self.told: list[str | None] = []  # the `previous` of each call

    async def summarize(self, messages: Sequence[ChatMessage], previous: str | None) -> str:
        self.folded += len(messages)
        self.told.append(previous)
        return f"{self.folded:09d} earlier messages"


class RecordingStore(SQLAlchemyStore):
    """Remembers how many messages each `load_context` read."""

    rows_read: list[int]

    async def load_context(
        self, user_id: str, conversation_id: str, *, limit: int
    ) -> tuple[Summary | None, list[Message]]:
        summary, messages = await super().load_context(user_id, conversation_id, limit=limit)
        self.rows_read.append(len(messages))
        return summary, messages


async def _conversation_of(store: SQLAlchemyStore, length: int) -> str:
    # Messages of one size whatever their number, so that two windows hold alike.
    conversation = await store.create_conversation("alice")
    for start in range(0, length, 2000):
        batch = [
            ChatMessage.user(f"message {n:06d}")
            if n % 2 == 0
            else ChatMessage.assistant(f"reply {n:06d}")
            for n in range(start, min(length, start + 2000))
        ]
        await store.append("alice", conversation.id, batch)
    return conversation.id


@pytest.mark.slow
@pytest.mark.parametrize("branched", [False, True], ids=["linear", "branched"])
async def test_a_turn_costs_the_same_at_100_000_messages_as_at_100(
    database_url: str, connector, branched: bool
) -> None:
    store = RecordingStore.from_url(database_url)
    store.rows_read = []
    try:
        short = await _conversation_of(store, 100)
        long = await _conversation_of(store, 100_000)
        # Bring both up to date the way the service does after each turn; branched, that
        # turn edits the last user message, so the measured one runs on a branch as deep.
        folding = ChatService(store, CountingAgent(), context_tokens=300)
        for conversation_id, length in ((short, 100), (long, 100_000)):
            branch = Branch(length - 1, edit=True) if branched else None
            await folding.turn("alice", conversation_id, "warm up", branch=branch)
        await folding.drain()

        measured = ChatService(store, CountingAgent(), context_tokens=300, summarize=False)
        statements = {}
        for conversation_id in (short, long):
            store.rows_read.clear()
            async with count_statements(store.sync_engine) as sent:
                await measured.turn("alice", conversation_id, "how long is this?")
            statements[conversation_id] = (len(sent), tuple(store.rows_read))

        assert statements[short] == statements[long]
        assert statements[long][1][0] < 100  # the window, not the conversation
        seqs = await message_seqs(connector, "alice", long)
        assert seqs == list(range(1, 100_005))  # two turns of two messages; nothing lost
        if branched:
            [edited] = await store.history("alice", long, limit=1, leaf=100_001)
            assert (edited.content, edited.parent_seq) == ("warm up", 99_998)
    finally:
        await store.close()


@pytest.mark.slow
async def test_summaries_fold_each_message_in_exactly_once(store: SQLAlchemyStore) -> None:
    service = ChatService(store, RulesAgent(), context_tokens=1500)
    conversation_id = None
    for n in range(1, 301):
        result = await service.turn("alice", conversation_id, f'add "errand {n}"')
        conversation_id = result.conversation_id
        await service.drain()  # the summary of turn n is written before turn n + 1
    assert conversation_id is not None

    summary, history = await store.load_context("alice", conversation_id, limit=10_000)
    assert summary is not None
    window = context.build(
        history,
        system_prompt=DEFAULT_SYSTEM_PROMPT,
        budget_tokens=1500,
        summary=summary.content,
    )
    # The summary ends exactly where the window begins.
    assert window.first_seq == summary.upto_seq + 1

    everything = await store.history("alice", conversation_id, limit=100_000)
    assert_invariants(everything)
    added_at = {
        json.loads(m.content)["title"]: m.seq
        for m in everything
        if m.role is Role.TOOL and m.name == "add_task"
    }
    assert len(added_at) == 300
    added_line = summary.content.split("Added: ", 1)[1].split("\n")[0]
    listed = re.findall(r'#\d+ "(errand \d+)"', added_line)
    elided = sum(int(n) for n in re.findall(r"… (\d+) more …", added_line))
    folded = {title for title, seq in added_at.items() if seq <= summary.upto_seq}
    assert len(listed) == len(set(listed)), "a task was folded in twice"
    assert set(listed) <= folded, "the summary names a task the window still shows"
    assert len(listed) + elided == len(folded), "a folded task is missing from the summary"
    assert summary.token_count < 400  # bounded, whatever the length of the conversation
    answer = await service.turn("alice", conversation_id, "what did I add earlier?")
    await service.drain()  # the summary this turn folds in the background
    assert "errand 1" in answer.response
    assert "errand 2" in answer.response


@pytest.mark.slow
async def test_the_openai_agent_on_a_long_conversation_with_a_small_budget(
    store: SQLAlchemyStore,
) -> None:
    def model(request: ModelRequest) -> Any:
        if not request.tool_names:  # the agent asking for a summary
            return Text(f"The user added tasks; {len(request.messages)} messages so far.")
        if request.body["messages"][-1]["role"] == "tool":
            return Text("Added.")
        title = f"task {len(request.body['messages'])}"
        return ToolCalls([FunctionCall("add_task", json.dumps({"title": title}))])

    async with FakeModelServer(model) as server:
        agent = OpenAIAgent("fake-model", base_url=server.base_url, api_key="not-a-key")
        service = ChatService(store, agent, context_tokens=400)
        try:
            conversation_id = None
            for n in range(40):
                result = await service.turn("alice", conversation_id, f"add task {n} " + "x" * 200)
                conversation_id = result.conversation_id
                await service.drain()
        finally:
            await service.drain()
            await agent.aclose()
    assert conversation_id is not None
    refused = [request.orphan() for request in server.requests if request.orphan()]
    assert refused == []
    assert len(await store.tasks.list("alice")) == 40
    assert (await store.load_context("alice", conversation_id, limit=1))[0] is not None


async def test_a_long_backlog_is_folded_from_its_recent_end_in_a_few_calls(
    store: SQLAlchemyStore,
) -> None:
    conversation_id = await _conversation_of(store, 5_000)  # never summarized
    agent = CountingAgent()
    service = ChatService(store, agent, context_tokens=300)
    await service.turn("alice", conversation_id, "and now?")
    await service.drain()
    summary, history = await store.load_context("alice", conversation_id, limit=10_000)
    assert summary is not None
    # Only what the turn loaded (its window's rows, 75) is folded, in one call; the rest
    # of the backlog is skipped, and the summary says so.
    assert agent.folded <= 75
    assert agent.told[0] == "(earlier messages are not summarized.)"
    # From the first message the turn loaded (the window of 75 before its own, 5,001).
    assert summary.upto_seq - agent.folded + 1 == 5_001 - 75 + 1
    assert history[0].seq == summary.upto_seq + 1  # the window begins where the summary ends
