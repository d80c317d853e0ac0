"""Turns on branches, through the service: what the agent sees, tool pairs, leases across
replicas, and a regeneration whose replica dies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest

from chatledger.domain import Branch, ChatMessage, Message, Role, TurnResult
from chatledger.errors import ConflictError
from chatledger.service import ChatService, _request_hash
from chatledger.storage import Lease
from chatledger.store import Connector, SQLAlchemyStore
from chatledger.testing import Block, CallTool, Say, ScriptedAgent, Signal
from tests.factories import assert_invariants, row_counts, tool_exchange


def seen_by_agent(messages: Sequence[ChatMessage]) -> list[Say | CallTool]:
    """Answers with what the agent was given (its user and assistant texts), after adding
    a task: the reply shows which branch the turn read."""
    texts = [m.content for m in messages if m.role in (Role.USER, Role.ASSISTANT) and m.content]
    return [CallTool("add_task", {"title": texts[-1]}), Say(" | ".join(texts))]


@pytest.fixture
async def service(store: SQLAlchemyStore) -> AsyncIterator[ChatService]:
    running = ChatService(store, ScriptedAgent(seen_by_agent), summarize=False)
    yield running
    await running.drain()


async def branches(store: SQLAlchemyStore, conversation_id: str) -> list[list[Message]]:
    """Every branch of the conversation, one per leaf."""
    count = (await store.get_conversation("alice", conversation_id)).message_count
    parents = set()
    for seq in range(1, count + 1):
        [message] = await store.history("alice", conversation_id, limit=1, leaf=seq)
        parents.add(message.parent_seq)
    leaves = [seq for seq in range(1, count + 1) if seq not in parents]
    return [await store.history("alice", conversation_id, limit=1000, leaf=leaf) for leaf in leaves]


async def test_a_turn_on_a_branch_sees_only_that_branch(
    store: SQLAlchemyStore, service: ChatService
) -> None:
    first = await service.turn("alice", None, "milk")
    cid = first.conversation_id
    await service.turn("alice", cid, "eggs")
    edited = await service.turn("alice", cid, "bread", branch=Branch(5, edit=True))
    assert edited.response.endswith("milk | milk | bread")  # no eggs: another branch
    again = await service.turn("alice", cid, None, branch=Branch(1, edit=False))
    assert again.response == "milk"  # only the message it answers
    assert again.message_ids[0] == first.message_ids[0]  # the same user message, answered anew
    for branch in await branches(store, cid):
        assert_invariants(branch, branch=True)  # every tool call with its result
    tasks = [t.title for t in await store.tasks.list("alice")]
    assert tasks == ["milk", "eggs", "bread", "milk"]  # the regeneration ran its tool again


async def test_two_replicas_branching_at_once_run_one_turn_at_a_time(
    store: SQLAlchemyStore, database_url: str
) -> None:
    holding, release = asyncio.Event(), asyncio.Event()
    other_store = SQLAlchemyStore.from_url(database_url)
    first = ChatService(store, ScriptedAgent([Signal(holding), Block(release), Say("one")]))
    second = ChatService(other_store, ScriptedAgent([Say("two")]))
    try:
        cid = (
            await ChatService(store, ScriptedAgent([Say("hi")])).turn("alice", None, "q")
        ).conversation_id
        regenerating = asyncio.create_task(
            first.turn("alice", cid, None, branch=Branch(1, edit=False))
        )
        await holding.wait()
        for attempt in (
            second.turn("alice", cid, "q2", branch=Branch(1, edit=True)),
            second.turn("alice", cid, None, branch=Branch(1, edit=False)),
            second.turn("alice", cid, "next"),
        ):
            with pytest.raises(ConflictError) as busy:
                await attempt
            assert busy.value.code == "conversation_busy"
        release.set()
        assert (await regenerating).response == "one"
        assert (
            await second.turn("alice", cid, "q2", branch=Branch(1, edit=True))
        ).response == "two"
        all_branches = await branches(store, cid)
        assert sorted([m.content for m in b] for b in all_branches) == [
            ["q", "hi"], ["q", "one"], ["q2", "two"],
        ]  # fmt: skip
    finally:
        await first.drain()
        await second.drain()
        await other_store.close()


async def test_a_regeneration_whose_replica_died_is_closed_on_its_own_branch(
    store: SQLAlchemyStore, service: ChatService
) -> None:
    first = await service.turn("alice", None, "milk")  # 1 user, 2-3 its tool pair, 4 reply
    cid = first.conversation_id
    dead = Lease.new(timedelta(seconds=-1))
    await store.turns.start(
        "alice", cid, None, turn_id=dead.id, lease_expires_at=dead.expires_at,
        branch=Branch(1, edit=False),
    )  # fmt: skip
    await store.append("alice", cid, tool_exchange("c9"), lease=dead)  # 5, 6: then it died
    result = await store.turns.resolve("alice", cid, dead.id)
    assert isinstance(result, TurnResult)
    history = await store.history("alice", cid, limit=100)
    assert [m.seq for m in history] == [1, 5, 6, 7]
    assert result.message_ids == [m.id for m in history]  # not the first answer's messages
    assert history[-1].metadata["status"] == "interrupted"
    assert_invariants(history, branch=True)
    old = await store.history("alice", cid, leaf=4)
    assert [m.id for m in old] == first.message_ids  # the first answer, untouched


@pytest.mark.parametrize("edit", [True, False], ids=["edit", "regenerate"])
async def test_a_branch_turn_whose_server_died_is_answered_from_its_key_and_never_run_again(
    store: SQLAlchemyStore, connector: Connector, edit: bool
) -> None:
    # What a kill -9 after the branch's first tool call leaves: the key claimed for this
    # edit (or regeneration), the head moved, the turn's tool pair, a lease nobody renews.
    first = await ChatService(store, ScriptedAgent([Say("hi")])).turn("alice", None, "q")
    cid = first.conversation_id
    branch = Branch(1, edit=edit)
    message = "q, again" if edit else None
    dead = Lease.new(timedelta(seconds=-1))
    async with store.transaction() as tx:
        hashed = _request_hash(cid, message, branch)
        assert await tx.idempotency.claim("alice", "k", request_hash=hashed) is None
        await tx.turns.start(
            "alice", cid, None if message is None else ChatMessage.user(message),
            turn_id=dead.id, lease_expires_at=dead.expires_at, idempotency_key="k",
            branch=branch,
        )  # fmt: skip
    await store.append("alice", cid, tool_exchange("c9"), lease=dead)
    agent = ScriptedAgent([Say("must not run")])
    retry = ChatService(store, agent)
    replayed = await retry.turn("alice", cid, message, idempotency_key="k", branch=branch)
    assert (replayed.replayed, replayed.status.value) == (True, "interrupted")
    rows = await row_counts(connector, "alice")
    again = await retry.turn("alice", cid, message, idempotency_key="k", branch=branch)
    assert again.to_record() == replayed.to_record()
    assert agent.runs == 0 and await row_counts(connector, "alice") == rows
    history = await store.history("alice", cid)
    assert [m.id for m in history] == replayed.message_ids
    assert_invariants(history, branch=True)
    # The first version, and its answer, are still there.
    assert [m.id for m in await store.history("alice", cid, leaf=2)] == first.message_ids
    await retry.drain()
