"""Turns in the store: one at a time per conversation, leases that die with their replica,
dead turns closed from their record, and the stream events any replica can replay."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import text

from chatledger.domain import ChatMessage, Role, ToolCall, TurnStatus
from chatledger.errors import ConflictError, NotFoundError
from chatledger.store import Connector, Lease, SQLAlchemyStore
from chatledger.store.core import utcnow
from chatledger.store.turns import Ending, RunningTurn
from tests.factories import assert_invariants, start_turn, tool_exchange, turns_refuse_updates

MINUTE = timedelta(minutes=1)


async def turn_status(db: Connector, conversation_id: str, turn_id: str) -> str:
    status: str = await db.read(
        lambda conn: conn.execute(
            text("SELECT status FROM turns WHERE conversation_id = :c AND id = :t"),
            {"c": conversation_id, "t": turn_id},
        ).scalar_one()
    )
    return status


async def test_a_running_turn_keeps_every_other_writer_out(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    turn = await start_turn(store, conversation.id)

    with pytest.raises(ConflictError) as busy:
        await store.append("alice", conversation.id, [ChatMessage.user("me too")])
    assert busy.value.code == "conversation_busy"
    assert 1 <= (busy.value.retry_after or 0) <= 60
    with pytest.raises(ConflictError) as second:
        await start_turn(store, conversation.id)
    assert second.value.code == "conversation_busy"
    stranger = Lease.new(MINUTE)
    with pytest.raises(ConflictError) as lost:
        await store.append("alice", conversation.id, [ChatMessage.user("x")], lease=stranger)
    assert lost.value.code == "lease_lost"

    await store.append("alice", conversation.id, tool_exchange("c1"), lease=turn)
    await store.append(
        "alice", conversation.id, [ChatMessage.assistant("done")], lease=turn, release_lease=True
    )
    await store.append("alice", conversation.id, [ChatMessage.user("free again")])
    history = await store.history("alice", conversation.id)
    assert [m.content for m in history][-2:] == ["done", "free again"]


async def test_the_conversation_says_which_turn_runs(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    assert (await store.get_conversation("alice", conversation.id)).running_turn_id is None
    turn = await start_turn(store, conversation.id)
    assert (await store.get_conversation("alice", conversation.id)).running_turn_id == turn.id
    [listed] = (await store.list_conversations("alice")).items
    assert listed.running_turn_id == turn.id
    running = await store.turns.running("alice", conversation.id)
    assert running == RunningTurn(turn.id, running.expires_at if running else utcnow())
    # A dead turn is not running, though it holds the lease until someone closes it.
    dead_conversation = await store.create_conversation("alice")
    await start_turn(store, dead_conversation.id, ttl=-MINUTE)
    assert (await store.get_conversation("alice", dead_conversation.id)).running_turn_id is None


async def test_a_dead_turn_is_closed_as_interrupted_by_the_next_append(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    conversation = await store.create_conversation("alice")
    dead = await start_turn(store, conversation.id, ttl=-MINUTE, key="k1")
    await store.append("alice", conversation.id, tool_exchange("c1"), lease=dead)
    await store.turns.add_events(
        "alice", conversation.id, dead.id, [("delta", {"text": "before "})], first_seq=2
    )
    await store.turns.add_events(
        "alice",
        conversation.id,
        dead.id,
        [
            ("tool_call", {"id": "c1", "name": "add_task", "arguments": {}}),
            ("tool_result", {"id": "c1", "result": {}}),
            ("delta", {"text": "Added "}),
            ("delta", {"text": "milk"}),
        ],
        first_seq=3,
    )

    await store.append("alice", conversation.id, [ChatMessage.user("hello?")])

    history = await store.history("alice", conversation.id)
    assert [m.role for m in history] == [
        Role.USER,
        Role.ASSISTANT,
        Role.TOOL,
        Role.ASSISTANT,
        Role.USER,
    ]
    closing = history[3]
    # Only the text streamed after the last tool step: what came before is in the call.
    assert closing.content == "Added milk"
    assert closing.metadata == {"status": "interrupted"}
    assert await turn_status(connector, conversation.id, dead.id) == "interrupted"
    record = await store.idempotency.claim("alice", "k1", request_hash="h")
    assert record is not None and record.status_code == 200
    assert record.response["interrupted"] is True
    assert record.response["response"] == "Added milk"
    assert [call["id"] for call in record.response["tool_calls"]] == ["c1"]
    assert record.response["message_ids"] == [m.id for m in history[:4]]
    events = await store.turns.events("alice", conversation.id, dead.id, after=0)
    assert [e.name for e in events][-1] == "done"
    assert events[-1].data == record.response
    assert [e.id for e in events] == [f"{dead.id}:{n}" for n in range(1, 8)]


async def test_a_tool_call_left_without_its_result_gets_an_interrupted_one(
    store: SQLAlchemyStore,
) -> None:
    # A tool outside our database is recorded before it runs; its process died.
    conversation = await store.create_conversation("alice")
    dead = await start_turn(store, conversation.id, ttl=-MINUTE)
    call = ToolCall("ext-1", "search", '{"q": "x"}')
    await store.append(
        "alice",
        conversation.id,
        [ChatMessage.assistant("Searching.", tool_calls=[call])],
        lease=dead,
    )
    assert await store.turns.take_over("alice", conversation.id) is False
    history = await store.history("alice", conversation.id)
    assert_invariants(history)
    result = history[2]
    assert (result.role, result.tool_call_id) == (Role.TOOL, "ext-1")
    assert json.loads(result.content)["code"] == "interrupted"


async def test_of_many_that_find_one_dead_turn_exactly_one_closes_it(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await start_turn(store, conversation.id, ttl=-MINUTE)
    outcomes = await asyncio.gather(
        *(store.append("alice", conversation.id, [ChatMessage.user(f"m{n}")]) for n in range(10)),
        return_exceptions=True,
    )
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    history = await store.history("alice", conversation.id, limit=100)
    closings = [m for m in history if m.metadata.get("status") == "interrupted"]
    assert len(closings) == 1 and closings[0].seq == 2
    assert_invariants(history[:2])


# A turn the database refuses to close (a stand-in for any bug that makes closing one
# turn fail): the sweep still closes the others, then says which failed.
async def test_a_dead_turn_that_cannot_be_closed_does_not_keep_the_others_open(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    dead = {}
    for user in ("mallory", "alice", "bob"):
        conversation = await store.create_conversation(user)
        lease = await start_turn(store, conversation.id, user=user, ttl=-MINUTE)
        dead[user] = (conversation.id, lease)
    async with turns_refuse_updates(connector, "mallory"):
        with pytest.raises(ExceptionGroup) as raised:
            await store.turns.close_expired()
        [error] = raised.value.exceptions
        assert "refused" in str(error)
        for user, (conversation_id, lease) in dead.items():
            expected = "running" if user == "mallory" else "interrupted"
            assert await turn_status(connector, conversation_id, lease.id) == expected
    assert await store.turns.close_expired() == 1


async def test_resolve_tells_running_from_dead(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    live = await start_turn(store, conversation.id, key="live")
    outcome = await store.turns.resolve("alice", conversation.id, live.id)
    assert isinstance(outcome, RunningTurn) and outcome.turn_id == live.id
    assert 1 <= outcome.retry_after(utcnow()) <= 60

    other = await store.create_conversation("alice")
    dead = await start_turn(store, other.id, ttl=-MINUTE, key="dead")
    result = await store.turns.resolve("alice", other.id, dead.id)
    assert not isinstance(result, RunningTurn) and result is not None
    assert result.status is TurnStatus.INTERRUPTED
    # Closed now: resolving again finds nothing running.
    assert await store.turns.resolve("alice", other.id, dead.id) is None
    assert await store.turns.resolve("bob", conversation.id, live.id) is None


async def test_close_expired_closes_only_dead_turns_of_every_user(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    dead = {}
    for user in ("alice", "bob"):
        conversation = await store.create_conversation(user)
        lease = await start_turn(store, conversation.id, user=user, ttl=-MINUTE)
        dead[user] = (conversation.id, lease)
    alive = await store.create_conversation("carol")
    live = await start_turn(store, alive.id, user="carol")

    assert await store.turns.close_expired() == 2
    assert await store.turns.close_expired() == 0
    for user, (conversation_id, lease) in dead.items():
        assert await turn_status(connector, conversation_id, lease.id) == "interrupted"
        assert (await store.turns.running(user, conversation_id)) is None
    assert await turn_status(connector, alive.id, live.id) == "running"


async def test_renewing_keeps_a_turn_alive_and_reports_a_stop(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    turn = await start_turn(store, conversation.id, ttl=timedelta(seconds=1))
    later = utcnow() + MINUTE
    assert await store.turns.renew("alice", conversation.id, turn.id, expires_at=later) is False
    running = await store.turns.running("alice", conversation.id)
    assert running is not None and running.expires_at == later

    assert await store.request_stop("alice", conversation.id) is True
    assert await store.stop_requested("alice", conversation.id, turn) is True
    assert await store.turns.renew("alice", conversation.id, turn.id, expires_at=later) is True
    # Another lease never sees the request.
    assert await store.stop_requested("alice", conversation.id, Lease.new(MINUTE)) is False


async def test_a_turn_closed_by_someone_else_finds_its_lease_lost(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    turn = await start_turn(store, conversation.id, ttl=-MINUTE)
    await store.turns.take_over("alice", conversation.id)
    later = utcnow() + MINUTE
    assert await store.turns.renew("alice", conversation.id, turn.id, expires_at=later) is None
    with pytest.raises(ConflictError) as lost:
        await store.turns.finish(
            "alice",
            conversation.id,
            turn.id,
            [ChatMessage.assistant("too late")],
            earlier=[],
            ending=Ending(TurnStatus.COMPLETED),
            idempotency_key=None,
            events=[],
            first_event_seq=2,
        )
    assert lost.value.code == "lease_lost"
    assert "too late" not in [m.content for m in await store.history("alice", conversation.id)]
    # Nor can it add to the stream whose `done` the closer wrote: its text, flushed late,
    # would take that event's number (found racing the sweeper on PostgreSQL).
    closed = await store.turns.events("alice", conversation.id, turn.id, after=0)
    with pytest.raises(ConflictError) as late:
        await store.turns.add_events(
            "alice", conversation.id, turn.id, [("delta", {"text": "late"})], first_seq=2
        )
    assert late.value.code == "lease_lost"
    assert await store.turns.events("alice", conversation.id, turn.id, after=0) == closed


async def test_a_stop_request_belongs_to_its_turn(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    assert await store.request_stop("alice", conversation.id) is False  # nothing running
    turn = await start_turn(store, conversation.id)
    assert await store.request_stop("alice", conversation.id) is True
    await store.append(
        "alice", conversation.id, [ChatMessage.assistant("stopped")], lease=turn, release_lease=True
    )
    following = await start_turn(store, conversation.id)
    assert await store.stop_requested("alice", conversation.id, following) is False


async def test_stopping_a_dead_turn_says_nothing_runs_and_closes_it(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    conversation = await store.create_conversation("alice")
    dead = await start_turn(store, conversation.id, ttl=-MINUTE)
    assert await store.request_stop("alice", conversation.id) is False
    assert await turn_status(connector, conversation.id, dead.id) == "interrupted"
    await start_turn(store, conversation.id)  # free at once


async def test_events_read_back_in_order_after_any_point(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    turn = await start_turn(store, conversation.id)
    await store.turns.add_events(
        "alice",
        conversation.id,
        turn.id,
        [("delta", {"text": str(n)}) for n in range(5)],
        first_seq=2,
    )
    events = await store.turns.events("alice", conversation.id, turn.id, after=0)
    assert [e.name for e in events] == ["conversation", *["delta"] * 5]
    assert events[0].data["turn_id"] == turn.id
    later = await store.turns.events("alice", conversation.id, turn.id, after=4)
    assert [e.data["text"] for e in later] == ["3", "4"]
    assert await store.turns.purge_events(older_than=timedelta(hours=1)) == 0
    assert await store.turns.purge_events(older_than=timedelta(0)) == 6


async def test_someone_elses_conversation_is_not_found_for_every_turn_operation(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    bobs = await store.create_conversation("bob")
    turn = await start_turn(store, bobs.id, user="bob")
    with pytest.raises(NotFoundError):
        await start_turn(store, bobs.id)
    with pytest.raises(NotFoundError):
        await store.turns.running("alice", bobs.id)
    with pytest.raises(NotFoundError):
        await store.turns.take_over("alice", bobs.id)
    with pytest.raises(NotFoundError):
        await store.request_stop("alice", bobs.id)
    assert await store.turns.events("alice", bobs.id, turn.id, after=0) == []
    assert await store.turns.renew("alice", bobs.id, turn.id, expires_at=utcnow()) is None
    assert await turn_status(connector, bobs.id, turn.id) == "running"


# A dead turn's closing message holds the text it streamed after its last step, read
# back from its stored events: cut, and marked, past the longest a message may be; an
# escaped NUL in it replaced, as a live turn replaces it (else no closer could ever
# close the turn, and every new turn on the conversation would fail taking it over).
@pytest.mark.parametrize("case", ["too long", "NUL"])
async def test_a_dead_turns_streamed_text_is_closed_as_a_message_may_hold_it(
    store: SQLAlchemyStore, case: str
) -> None:
    limit = store.max_message_chars
    streamed, content, marked = (
        ("x" * (limit + 5), "x" * limit, {"truncated": True})
        if case == "too long"
        else ("ab\x00cd", "ab\ufffdcd", {})
    )
    conversation = await store.create_conversation("alice")
    lease = await start_turn(store, conversation.id)
    await store.turns.add_events(
        "alice", conversation.id, lease.id, [("delta", {"text": streamed})], first_seq=2
    )
    await store.turns.renew("alice", conversation.id, lease.id, expires_at=utcnow() - MINUTE)
    assert await store.turns.close_expired() == 1
    closing = (await store.history("alice", conversation.id))[-1]
    assert (closing.content, closing.metadata) == (content, {"status": "interrupted", **marked})


# The sweep takes the most recently expired turns first: turns it cannot close sink
# behind those that die after them, however many there are.
async def test_turns_that_cannot_be_closed_do_not_crowd_out_the_others(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    refused = await store.create_conversation("mallory")
    await start_turn(store, refused.id, user="mallory", ttl=-2 * MINUTE)
    conversation = await store.create_conversation("alice")
    await start_turn(store, conversation.id, ttl=-MINUTE)
    async with turns_refuse_updates(connector, "mallory"):
        assert await store.turns.close_expired(limit=1) == 1
        assert await store.turns.running("alice", conversation.id) is None
