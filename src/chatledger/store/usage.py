"""A user's token usage over a period, summed per UTC day and per conversation in SQL.

One grouped query reads the period's ended turns through `ix_turns_user_started`: its cost
grows with the turns in the period, which `check_period` bounds, and one statement sees
one snapshot, so the days, the conversations and the total always agree.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import BigInteger, Connection, Date, Integer, case, cast, func, select
from sqlalchemy.sql import ColumnElement

from chatledger.domain import TurnStatus
from chatledger.store.core import AnyRow
from chatledger.store.schema import conversations, turns
from chatledger.usage import ConversationUsage, DayUsage, UsageReport, UsageTotals

__all__ = ["read_usage"]

_t = turns.c
_c = conversations.c


def _utc_day(dialect: str) -> ColumnElement[Any]:
    """The UTC day a turn started on."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", _t.started_at), Date)
    # SQLite holds UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text (see `UTCDateTime`).
    return func.substr(_t.started_at, 1, 10)


def _day(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _totals(row: AnyRow) -> UsageTotals:
    # PostgreSQL sums BIGINT to NUMERIC; every sum is cast back, and None means no rows.
    return UsageTotals(
        input_tokens=int(row.input_tokens or 0),
        output_tokens=int(row.output_tokens or 0),
        turns=int(row.turns),
        estimated_turns=int(row.estimated_turns or 0),
        unknown_turns=int(row.unknown_turns or 0),
    )


def read_usage(
    conn: Connection, dialect: str, user_id: str, first_day: date, last_day: date
) -> UsageReport:
    """The usage of `user_id`'s turns that started from `first_day` to `last_day`
    (included), once ended; see `SQLAlchemyStore.token_usage`."""
    day = _utc_day(dialect).label("day")
    query = (
        select(
            day,
            _t.conversation_id,
            _c.title,
            cast(func.sum(_t.input_tokens), BigInteger).label("input_tokens"),
            cast(func.sum(_t.output_tokens), BigInteger).label("output_tokens"),
            func.count().label("turns"),
            cast(_count(_t.usage_estimated.is_(True)), Integer).label("estimated_turns"),
            cast(_count(_t.input_tokens.is_(None)), Integer).label("unknown_turns"),
        )
        .join(conversations, (_c.user_id == _t.user_id) & (_c.id == _t.conversation_id))
        .where(
            _t.user_id == user_id,
            _t.started_at >= datetime.combine(first_day, time.min, UTC),
            # Inclusive of the last day's last microsecond (both databases keep microseconds):
            # the day after `date.max` cannot be written.
            _t.started_at <= datetime.combine(last_day, time.max, UTC),
            # A running turn has spent tokens nobody can count yet.
            _t.status != TurnStatus.RUNNING.value,
        )
        .group_by(day, _t.conversation_id, _c.title)
    )
    by_day: dict[date, UsageTotals] = {}
    by_conversation: dict[str, tuple[str | None, UsageTotals]] = {}
    for row in conn.execute(query):
        totals = _totals(row)
        on = _day(row.day)
        by_day[on] = by_day.get(on, UsageTotals()) + totals
        title, so_far = by_conversation.get(row.conversation_id, (row.title, UsageTotals()))
        by_conversation[row.conversation_id] = (title, so_far + totals)
    conversation_usage = [
        ConversationUsage(conversation_id, title, totals)
        for conversation_id, (title, totals) in by_conversation.items()
    ]
    conversation_usage.sort(
        key=lambda c: (-(c.totals.input_tokens + c.totals.output_tokens), c.conversation_id)
    )
    total = UsageTotals()
    for totals in by_day.values():
        total += totals
    return UsageReport(
        first_day=first_day,
        last_day=last_day,
        total=total,
        days=[DayUsage(on, by_day[on]) for on in sorted(by_day)],
        conversations=conversation_usage,
    )
