"""Deleting a user removes every row the user owns, and nobody else's."""

from __future__ import annotations

from datetime import timedelta

from chatledger.domain import ChatMessage
from chatledger.store import Lease, SQLAlchemyStore
from tests.factories import row_counts, snapshot


async def _populate(store: SQLAlchemyStore, user: str) -> None:
    conversation = await store.create_conversation(user, title=f"{user}'s")
    await store.append(
        user, conversation.id, [ChatMessage.user("hi"), ChatMessage.assistant("hello")]
    )
    await store.tasks.add(user, title="milk")
    await store.idempotency.claim(user, "k", request_hash="h")
    # A turn left running, with a stream event: every table holds a row of the user's.
    lease = Lease.new(timedelta(minutes=1))
    await store.turns.start(
        user,
        conversation.id,
        ChatMessage.user("go"),
        turn_id=lease.id,
        lease_expires_at=lease.expires_at,
        idempotency_key="k",
    )
    await store.turns.add_events(
        user, conversation.id, lease.id, [("delta", {"text": "."})], first_seq=2
    )
    await store.summaries.save(user, conversation.id, content="hi", upto_seq=1)
    await store.rate_limits.take(user, limit=10, window=timedelta(minutes=1))


async def test_delete_user_removes_everything_of_that_user_only(
    store: SQLAlchemyStore, connector
) -> None:
    await _populate(store, "alice")
    await _populate(store, "bob")
    bobs = await snapshot(connector, "bob")

    await store.delete_user("alice")

    assert 0 not in (await row_counts(connector, "bob")).values()
    assert set((await row_counts(connector, "alice")).values()) == {0}
    assert await snapshot(connector, "bob") == bobs


async def test_a_deleted_user_starts_again_from_scratch(store: SQLAlchemyStore) -> None:
    await _populate(store, "alice")
    await store.delete_user("alice")
    task = await store.tasks.add("alice", title="fresh")
    assert task.id == 1
    assert (await store.list_conversations("alice")).items == []
