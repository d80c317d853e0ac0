"""A user's token usage from the store, on SQLite and PostgreSQL: turns recorded with
known usage at chosen times, summed per UTC day, per conversation and in all."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from chatledger.domain import ChatMessage, Message, TurnStatus
from chatledger.errors import ValidationError
from chatledger.storage import Ending, new_id, utcnow
from chatledger.store import Connector, SQLAlchemyStore
from chatledger.store.schema import turns
from chatledger.usage import (
    MAX_USAGE_DAYS,
    ConversationUsage,
    DayUsage,
    TokenUsage,
    UsageReport,
    UsageTotals,
)

MARCH_1 = date(2026, 3, 1)
MARCH_2 = date(2026, 3, 2)


def at(day: date, hour: int = 12, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=UTC)


async def started(
    store: SQLAlchemyStore, user: str, conversation_id: str, *, ttl: timedelta = timedelta(1)
) -> tuple[str, list[Message]]:
    turn_id = new_id()
    message, _ = await store.turns.start(
        user,
        conversation_id,
        ChatMessage.user("go"),
        turn_id=turn_id,
        lease_expires_at=utcnow() + ttl,
    )
    return turn_id, [message]


async def backdate(connector: Connector, turn_id: str, when: datetime) -> None:
    statement = update(turns).where(turns.c.id == turn_id).values(started_at=when)
    await connector.write(lambda conn: conn.execute(statement))


async def turn(
    store: SQLAlchemyStore,
    connector: Connector,
    conversation_id: str,
    when: datetime,
    usage: TokenUsage | None,
    *,
    user: str = "alice",
    status: TurnStatus = TurnStatus.COMPLETED,
) -> str:
    """A turn that started at `when` and ended, recording `usage`, as the service ends one."""
    turn_id, earlier = await started(store, user, conversation_id)
    await store.turns.finish(
        user,
        conversation_id,
        turn_id,
        [ChatMessage.assistant("done")],
        earlier=earlier,
        ending=Ending(status),
        usage=usage,
        idempotency_key=None,
        events=[],
        first_event_seq=2,
    )
    await backdate(connector, turn_id, when)
    return turn_id


async def test_sums_per_utc_day_across_midnight_per_conversation_and_in_all(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    groceries = await store.create_conversation("alice", title="groceries")
    letters = await store.create_conversation("alice", title="letters")
    await turn(store, connector, groceries.id, at(MARCH_1, 9), TokenUsage(60, 6, "gpt-x"))
    # The last microsecond of March 1 and the first of March 2, a turn on each side.
    await turn(
        store, connector, groceries.id, at(MARCH_1, 23, 59, 59, 999_999), TokenUsage(40, 4, "m")
    )
    await turn(
        store,
        connector,
        groceries.id,
        at(MARCH_2, 0),
        TokenUsage(40, 5, "rules", estimated=True),
    )
    await turn(
        store, connector, letters.id, at(MARCH_2, 23, 59, 59, 999_999), TokenUsage(7, 3, "gpt-x")
    )
    # Just outside the period, on both ends.
    await turn(
        store, connector, letters.id, at(date(2026, 2, 28), 23, 59, 59, 999_999), TokenUsage(1, 1)
    )
    await turn(store, connector, letters.id, at(date(2026, 3, 3), 0), TokenUsage(1, 1))

    report = await store.token_usage("alice", first_day=MARCH_1, last_day=MARCH_2)

    assert report == UsageReport(
        first_day=MARCH_1,
        last_day=MARCH_2,
        total=UsageTotals(147, 18, turns=4, estimated_turns=1),
        days=[
            DayUsage(MARCH_1, UsageTotals(100, 10, turns=2)),
            DayUsage(MARCH_2, UsageTotals(47, 8, turns=2, estimated_turns=1)),
        ],
        conversations=[
            ConversationUsage(
                groceries.id, "groceries", UsageTotals(140, 15, turns=3, estimated_turns=1)
            ),
            ConversationUsage(letters.id, "letters", UsageTotals(7, 3, turns=1)),
        ],
    )
    # One day is a period too: its first and last microsecond both count.
    assert (await store.token_usage("alice", first_day=MARCH_2, last_day=MARCH_2)).total == (
        UsageTotals(47, 8, turns=2, estimated_turns=1)
    )


async def test_a_turn_whose_usage_is_not_known_counts_as_a_turn_not_as_zero_tokens(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    conversation = await store.create_conversation("alice")
    today = utcnow().date()
    await turn(store, connector, conversation.id, at(today, 0), TokenUsage(10, 2))
    # An agent that reported nothing, and a turn failed by its model after a report.
    await turn(store, connector, conversation.id, at(today, 0), None)
    await turn(
        store,
        connector,
        conversation.id,
        at(today, 0),
        TokenUsage(5, 0, estimated=True),
        status=TurnStatus.FAILED,
    )
    # A turn whose server died: whoever closes it cannot know what it used.
    dead, _ = await started(store, "alice", conversation.id, ttl=-timedelta(seconds=1))
    assert await store.turns.take_over("alice", conversation.id) is False
    recorded = select(turns.c.status, turns.c.input_tokens, turns.c.output_tokens).where(
        turns.c.id == dead
    )
    row = await connector.read(lambda conn: conn.execute(recorded).one())
    assert tuple(row) == ("interrupted", None, None)
    # A turn still running has used what nobody can count yet: it is not in the report.
    await started(store, "alice", conversation.id)

    report = await store.token_usage("alice", first_day=today, last_day=today)

    assert report.total == UsageTotals(15, 2, turns=4, estimated_turns=1, unknown_turns=2)


async def test_another_users_turns_never_count(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    mine = await store.create_conversation("alice")
    theirs = await store.create_conversation("bob")
    await turn(store, connector, mine.id, at(MARCH_1), TokenUsage(10, 1))
    await turn(store, connector, theirs.id, at(MARCH_1), TokenUsage(1000, 100), user="bob")

    alice = await store.token_usage("alice", first_day=MARCH_1, last_day=MARCH_1)
    bob = await store.token_usage("bob", first_day=MARCH_1, last_day=MARCH_1)

    assert alice.total == UsageTotals(10, 1, turns=1)
    assert [c.conversation_id for c in alice.conversations] == [mine.id]
    assert bob.total == UsageTotals(1000, 100, turns=1)
    assert [c.conversation_id for c in bob.conversations] == [theirs.id]
    nobody = await store.token_usage("carol", first_day=MARCH_1, last_day=MARCH_1)
    assert nobody == UsageReport(first_day=MARCH_1, last_day=MARCH_1)


async def test_a_deleted_conversations_usage_is_deleted_with_it(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    kept = await store.create_conversation("alice")
    deleted = await store.create_conversation("alice")
    await turn(store, connector, kept.id, at(MARCH_1), TokenUsage(10, 1))
    await turn(store, connector, deleted.id, at(MARCH_1), TokenUsage(500, 50))

    await store.delete_conversation("alice", deleted.id)

    report = await store.token_usage("alice", first_day=MARCH_1, last_day=MARCH_1)
    assert report.total == UsageTotals(10, 1, turns=1)
    assert [c.conversation_id for c in report.conversations] == [kept.id]


async def test_the_model_name_is_kept_within_its_column(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    conversation = await store.create_conversation("alice")
    turn_id = await turn(
        store, connector, conversation.id, at(MARCH_1), TokenUsage(1, 1, "m\x00" + "x" * 300)
    )
    query = select(turns.c.model).where(turns.c.id == turn_id)
    assert await connector.read(lambda conn: conn.execute(query).scalar()) == "m" + "x" * 254


@pytest.mark.parametrize(
    ("first_day", "last_day", "code"),
    [
        (MARCH_2, MARCH_1, "invalid_range"),
        (MARCH_1, MARCH_1 + timedelta(days=MAX_USAGE_DAYS), "range_too_long"),
        (at(MARCH_1), MARCH_2, "invalid_date"),
        (MARCH_1, "2026-03-02", "invalid_date"),
    ],
)
async def test_a_period_that_is_not_whole_days_in_order_and_at_most_a_year_is_refused(
    store: SQLAlchemyStore, first_day: object, last_day: object, code: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await store.token_usage("alice", first_day=first_day, last_day=last_day)  # type: ignore[arg-type]
    assert refused.value.code == code


async def test_the_longest_period_and_the_ends_of_the_calendar_are_answered(
    store: SQLAlchemyStore,
) -> None:
    last = MARCH_1 + timedelta(days=MAX_USAGE_DAYS - 1)
    assert (await store.token_usage("alice", first_day=MARCH_1, last_day=last)).days == []
    for first_day, last_day in ((date.min, date.min), (date.max, date.max)):
        report = await store.token_usage("alice", first_day=first_day, last_day=last_day)
        assert report.total == UsageTotals()
