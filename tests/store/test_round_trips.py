"""Round trips to PostgreSQL, counted: an append and a chat turn send exactly these.

Each round trip wakes the server and waits for its answer (on a shared machine, the
costliest part of a small statement), so a change that adds one to the hot path fails
here and has to say why. The transcripts are what the client sends on a warm connection.
"""

from __future__ import annotations

import pytest

from chatledger.domain import ChatMessage
from chatledger.service import ChatService
from chatledger.store import SQLAlchemyStore
from chatledger.testing import CallTool, Say, ScriptedAgent
from tests.factories import count_round_trips

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


async def test_an_append_is_one_round_trip_whatever_its_size(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append("alice", conversation.id, [ChatMessage.user("warm")])
    for size in (1, 4, 100):
        batch = [ChatMessage.user(f"m{i}") for i in range(size)]
        async with count_round_trips(store.sync_engine) as sent:
            await store.append("alice", conversation.id, batch)
        assert sent == ["WITH reserved AS"]


async def test_a_read_of_the_latest_messages_is_one_round_trip(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append("alice", conversation.id, [ChatMessage.user(str(n)) for n in range(80)])
    await store.history("alice", conversation.id, limit=50)
    async with count_round_trips(store.sync_engine) as sent:
        latest = await store.history("alice", conversation.id, limit=50)
    assert len(latest) == 50
    assert sent == ["SELECT m.seq, m.id,"]


# A turn with one task tool call: the claim (user message, lease, turn, first event),
# the context read (the head's run after its newest summary), the tool's own statements
# with its recorded pair and events, and the finish (reply, lease freed, turn ended,
# events). The claim and the finish are one
# statement each (sent without BEGIN or COMMIT); the tool step is the one transaction,
# which the tool's own statements need; each of those appends is one statement that
# reserves the seqs, uses the lease and stores the rows and the turn's records.
TURN_WITH_A_TOOL = [
    *["WITH reserved AS"],
    *["WITH head AS"],
    *["BEGIN", "INSERT INTO task_counters", "INSERT INTO tasks", "WITH reserved AS", "COMMIT"],
    *["WITH reserved AS"],
]


async def test_a_turn_with_a_tool_call_sends_exactly_its_transcript(
    store: SQLAlchemyStore,
) -> None:
    agent = ScriptedAgent([CallTool("add_task", {"title": "buy milk"}), Say("Added.")])
    service = ChatService(store, agent)
    try:
        first = await service.turn("alice", None, "add buy milk")  # warms the connections
        async with count_round_trips(store.sync_engine) as sent:
            await service.turn("alice", first.conversation_id, "add buy milk")
    finally:
        await service.drain()
    assert sent == TURN_WITH_A_TOOL
    assert len(sent) == 8
