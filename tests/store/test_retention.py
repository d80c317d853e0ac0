"""Retention and temporary conversations: exactly what is due goes, with all it holds, from
any number of replicas at once; and rate limits shared through the database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from chatledger.domain import ChatMessage
from chatledger.errors import RateLimitedError
from chatledger.store import Connector, Lease, SQLAlchemyStore
from chatledger.store.core import utcnow
from chatledger.store.schema import conversations
from tests.factories import row_counts

DAY = timedelta(days=1)


async def age(
    db: Connector, conversation_id: str, *, updated_days: float = 1, expired: bool = False
) -> None:
    """Make a conversation look idle for `updated_days`, or its expiry passed."""
    values: dict[str, Any] = {"updated_at": utcnow() - timedelta(days=updated_days)}
    if expired:
        values["expires_at"] = utcnow() - timedelta(seconds=1)
    statement = update(conversations).where(conversations.c.id == conversation_id).values(values)
    await db.write(lambda conn: conn.execute(statement))


async def test_purge_deletes_what_is_due_and_nothing_else(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    idle = await store.create_conversation("alice", title="idle")
    await store.append("alice", idle.id, [ChatMessage.user("old news")])
    await age(connector, idle.id, updated_days=31)
    recent = await store.create_conversation("alice", title="recent")
    temporary = await store.create_conversation("bob", title="temp", temporary=True)
    assert temporary.expires_at is not None
    assert abs(temporary.expires_at - temporary.created_at - DAY) < timedelta(seconds=1)
    expired = await store.create_conversation("bob", title="expired", temporary=True)
    await store.append("bob", expired.id, [ChatMessage.user("still chatting")])
    await age(connector, expired.id, expired=True)
    running = await store.create_conversation("carol", title="running and idle")
    lease = Lease.new(timedelta(minutes=1))
    await store.turns.start(
        "carol", running.id, ChatMessage.user("go"), turn_id=lease.id,
        lease_expires_at=lease.expires_at,
    )  # fmt: skip
    await age(connector, running.id, updated_days=40)

    # Without a retention period only expired temporaries go.
    assert await store.purge_conversations(idle_for=None) == 1
    assert await store.purge_conversations(idle_for=30 * DAY) == 1
    assert await store.purge_conversations(idle_for=30 * DAY) == 0
    left = {
        c.title
        for user in ("alice", "bob", "carol")
        for c in (await store.list_conversations(user)).items
    }
    assert left == {"recent", "temp", "running and idle"}
    assert recent.id in {c.id for c in (await store.list_conversations("alice")).items}
    counts = await row_counts(connector, "alice")
    assert (counts["conversations"], counts["messages"]) == (1, 0)
    assert (await row_counts(connector, "bob"))["messages"] == 0


@pytest.mark.slow
async def test_many_replicas_purging_at_once_delete_each_conversation_once(
    store: SQLAlchemyStore, connector: Connector, database_url: str
) -> None:
    for n in range(1200):  # more than two batches
        conversation = await store.create_conversation(f"user-{n % 7}", title=str(n))
        await age(connector, conversation.id, updated_days=10)
    replicas = [SQLAlchemyStore.from_url(database_url) for _ in range(3)]
    try:
        deleted = await asyncio.gather(
            *(replica.purge_conversations(idle_for=DAY) for replica in replicas)
        )
    finally:
        for replica in replicas:
            await replica.close()
    assert sum(deleted) == 1200
    for n in range(7):
        assert (await row_counts(connector, f"user-{n}"))["conversations"] == 0


async def test_turns_are_counted_per_user_in_fixed_windows(store: SQLAlchemyStore) -> None:
    window = timedelta(minutes=5)
    for _ in range(3):
        await store.rate_limits.take("alice", limit=3, window=window)
    with pytest.raises(RateLimitedError) as refused:
        await store.rate_limits.take("alice", limit=3, window=window)
    assert refused.value.code == "rate_limited"
    assert 1 <= (refused.value.retry_after or 0) <= 300
    await store.rate_limits.take("bob", limit=3, window=window)  # another user's count


async def test_a_refused_turn_inside_a_transaction_is_not_counted(store: SQLAlchemyStore) -> None:
    window = timedelta(minutes=5)
    await store.rate_limits.take("alice", limit=1, window=window)
    for _ in range(3):
        with pytest.raises(RateLimitedError):
            async with store.transaction() as tx:
                await tx.rate_limits.take("alice", limit=1, window=window)
    # The three refusals left the count at 1: one more fits under a limit of 2.
    await store.rate_limits.take("alice", limit=2, window=window)
    with pytest.raises(RateLimitedError):
        await store.rate_limits.take("alice", limit=2, window=window)
