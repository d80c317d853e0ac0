"""The tables. Every primary key leads with `user_id`, the tenant key.

That makes a cross-user read impossible to write by accident (every index is useless
without the user), and it is exactly the distribution column a sharded PostgreSQL needs.
These definitions are the source of truth for Alembic's autogenerate; the database itself
is only ever created by the migrations in `migrations/` (tests check the two agree).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.types import TypeDecorator

__all__ = [
    "autogenerate_filters",
    "conversations",
    "idempotency_keys",
    "message_search",
    "messages",
    "metadata",
    "rate_limits",
    "summaries",
    "task_counters",
    "tasks",
    "turn_events",
    "turns",
    "utc_of_text",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases.

    PostgreSQL stores `timestamptz` (asyncpg returns aware datetimes); SQLite has no time
    zones, so UTC is stored as naive text and made aware again on the way out. Naive input
    is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite stores the text SQLAlchemy itself would, microseconds always written, so
        # that comparing the text compares the times; written and parsed here with one C
        # call each (isoformat, fromisoformat) instead of SQLAlchemy's regex-based ones.
        def to_text(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return to_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def from_text(value: str | None) -> datetime | None:
            return None if value is None else utc_of_text(value)

        return from_text


def utc_of_text(value: str) -> datetime:
    """The aware UTC datetime of the naive UTC text `UTCDateTime` stores on SQLite (or of
    any other form of a time the column may hold: a date alone, or a time with an offset,
    written by plain SQL)."""
    if len(value) == _STORED_CHARS:
        # As `UTCDateTime` writes it: parsed with its offset written out, a third of the
        # time of parsing it naive and then replacing the time zone, which matters at fifty
        # of these per history read.
        return datetime.fromisoformat(value + "+00:00")
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# "2026-12-07 16:16:52.498173": what `UTCDateTime` writes, microseconds always.
_STORED_CHARS = len("YYYY-MM-DD HH:MM:SS.ffffff")


class JSONValue(TypeDecorator[Any]):
    """JSON on both databases: JSONB on PostgreSQL, text on SQLite; None is SQL NULL.

    A NULL is never the JSON text 'null' (which would have to be parsed back on every
    read), and on SQLite a value is decoded with one `json.loads`, only when there is one.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def to_text(value: Any) -> str | None:
            return None if value is None else json.dumps(value, ensure_ascii=False)

        return to_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def from_text(value: str | None) -> Any:
            return None if value is None else json.loads(value)

        return from_text


def _json() -> Any:
    return JSONValue()


USER_ID = 255
ID = 64
MODEL_NAME_CHARS = 255

metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s"})

conversations = Table(
    "conversations",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("title", Text),
    Column("metadata", _json(), nullable=False),
    # The seq the next appended message gets; bumped inside every append transaction.
    Column("next_seq", BigInteger, nullable=False),
    # One turn at a time per conversation, across replicas: the running turn's id and
    # when its claim lapses (so a crashed replica cannot lock a conversation forever).
    Column("lease_id", String(ID)),
    Column("lease_expires_at", UTCDateTime()),
    # Set by a stop request (from any replica) while a turn runs; the turn polls it.
    Column("stop_requested", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # When a temporary conversation is deleted, however active it is (NULL: never).
    Column("expires_at", UTCDateTime()),
    # Pinned ones come first in the list; archived ones are listed only when asked for.
    Column("pinned", Boolean, nullable=False, server_default=false()),
    Column("archived", Boolean, nullable=False, server_default=false()),
    # The head: the message the next turn continues from (NULL: none yet). With it, the
    # run of consecutive seqs that ends at it and the parent of that run's first message
    # (see `messages.run_start`), kept in the one statement that reserves seqs, so that
    # an append needs no read first and a turn reads its history without a lookup.
    Column("head_seq", BigInteger),
    Column("head_run_start", BigInteger),
    Column("head_run_parent", BigInteger),
    PrimaryKeyConstraint("user_id", "id"),
    Index("ix_conversations_user_list", "user_id", "archived", "pinned", "updated_at", "id"),
    # The listing by age (ChatKit's thread list) pages along this.
    Index("ix_conversations_user_created", "user_id", "archived", "created_at", "id"),
    Index(
        "ix_conversations_expires",
        "expires_at",
        postgresql_where=text("expires_at IS NOT NULL"),
        sqlite_where=text("expires_at IS NOT NULL"),
    ),
    # Finds the turns whose replica died (their lease ran out) without scanning every
    # conversation; only conversations with a turn running are in it.
    Index(
        "ix_conversations_lease",
        "lease_expires_at",
        postgresql_where=text("lease_id IS NOT NULL"),
        sqlite_where=text("lease_id IS NOT NULL"),
    ),
)

messages = Table(
    "messages",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("id", String(ID), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("tool_calls", _json()),
    Column("tool_call_id", String(255)),
    Column("name", String(255)),
    # NULL when empty, which almost every message's is: nothing to parse on read.
    Column("metadata", _json()),
    Column("token_count", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # The message this one follows (NULL: the first of its branch). Messages form a tree:
    # an edit or a regeneration adds a sibling, and nothing is ever rewritten.
    Column("parent_seq", BigInteger),
    # The first seq of the run this message ends: each of run_start .. seq is the parent
    # of the next. A branch is read back as one range scan per run, so a history read
    # costs O(limit) however many messages and branches there are.
    Column("run_start", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "conversation_id", "seq"),
    ForeignKeyConstraint(
        ["user_id", "conversation_id"],
        ["conversations.user_id", "conversations.id"],
        ondelete="CASCADE",
        name="fk_messages_conversation",
    ),
    # The messages that start a run (whose parent is not the message before them: an
    # edit, a regeneration, a first message), by parent: with the run that goes on from a
    # message (its next seq), they are its children. Partial, so it holds one row per
    # branch, costs an ordinary append nothing, and is never a planner's pick for a query
    # by seq (a full index on the parent was, on PostgreSQL without statistics).
    Index(
        "ix_messages_run_starts",
        "user_id",
        "conversation_id",
        "parent_seq",
        postgresql_where=text("run_start = seq"),
        sqlite_where=text("run_start = seq"),
    ),
    CheckConstraint("role IN ('system', 'user', 'assistant', 'tool')", name="ck_messages_role"),
)

# Full-text search (`chatledger.store.search`). On PostgreSQL this table: a row per
# searchable message, its folded words as a tsvector under a GIN index, deleted with its
# message. On SQLite the same name is an FTS5 virtual table, which SQLAlchemy cannot
# describe: migration 0009 creates it, and `autogenerate_filters` leaves it out of the
# comparison with the migrations there.
message_search = Table(
    "message_search",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("role", String(16), nullable=False),
    Column("document", TSVECTOR, nullable=False),
    PrimaryKeyConstraint("user_id", "conversation_id", "seq"),
    ForeignKeyConstraint(
        ["user_id", "conversation_id", "seq"],
        ["messages.user_id", "messages.conversation_id", "messages.seq"],
        ondelete="CASCADE",
        name="fk_message_search_message",
    ),
    Index("ix_message_search_document", "document", postgresql_using="gin"),
)

# Rolling summaries of a conversation's older messages: each stands in, in the agent's
# input, for the branch up to message `upto_seq`; a turn uses the newest on its branch.
# The messages themselves are never changed.
summaries = Table(
    "summaries",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("upto_seq", BigInteger, nullable=False),
    Column("content", Text, nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("user_id", "conversation_id", "upto_seq"),
    ForeignKeyConstraint(
        ["user_id", "conversation_id"],
        ["conversations.user_id", "conversations.id"],
        ondelete="CASCADE",
        name="fk_summaries_conversation",
    ),
)

tasks = Table(
    "tasks",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("id", BigInteger, nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", String(1000)),
    Column("completed", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("user_id", "id"),
)

# Task ids count per user (1, 2, 3 ...) so people can say "task 3"; never reused, so
# "task 3" in an old message cannot silently come to mean a different task.
task_counters = Table(
    "task_counters",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("next_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id"),
)

# One row per turn: which user message started it, under which idempotency key, and how
# it ended. While it runs, the conversation's lease names it; whoever finds that lease
# expired closes the turn as interrupted from what this row and the messages record.
turns = Table(
    "turns",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("user_seq", BigInteger, nullable=False),
    Column("idempotency_key", String(255)),
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime()),
    # The tokens its model requests took in and gave out (summed), whether those are our
    # estimate rather than the model's report, and the model. NULL, never zero, when not
    # known: a turn still running, one that ended before usage was recorded, one whose
    # server died (whoever closes it cannot know), one whose agent reported none.
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("usage_estimated", Boolean),
    Column("model", String(MODEL_NAME_CHARS)),
    PrimaryKeyConstraint("user_id", "conversation_id", "id"),
    ForeignKeyConstraint(
        ["user_id", "conversation_id"],
        ["conversations.user_id", "conversations.id"],
        ondelete="CASCADE",
        name="fk_turns_conversation",
    ),
    CheckConstraint(
        "status IN ('running', 'completed', 'stopped', 'failed', 'interrupted')",
        name="ck_turns_status",
    ),
    # A user's usage over a period reads their turns by start time, a range of this index.
    Index("ix_turns_user_started", "user_id", "started_at"),
)

# What a running turn has streamed, in order, so that any replica can replay it to a
# client that attaches late or reconnects. Dropped a while after the turn ends: by then
# its messages hold everything.
turn_events = Table(
    "turn_events",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("turn_id", String(ID), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(16), nullable=False),
    # JSON as text, not JSONB: JSONB reorders keys, and a replayed event must be the same
    # bytes the live stream sent.
    Column("data", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("user_id", "conversation_id", "turn_id", "seq"),
    ForeignKeyConstraint(
        ["user_id", "conversation_id", "turn_id"],
        ["turns.user_id", "turns.conversation_id", "turns.id"],
        ondelete="CASCADE",
        name="fk_turn_events_turn",
    ),
    Index("ix_turn_events_created", "created_at"),
)

# Turns each user started in the current window (a fixed window per user), shared by
# every replica: see `RateLimitStore`.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("window_start", UTCDateTime(), nullable=False),
    Column("count", Integer, nullable=False),
    PrimaryKeyConstraint("user_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("conversation_id", String(ID)),
    # The turn the key started, set in the transaction that stores its user message: a
    # retry finds that turn instead of starting another.
    Column("turn_id", String(ID)),
    # NULL while the first request is still running.
    Column("status_code", Integer),
    Column("response", _json()),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("user_id", "key"),
    Index("ix_idempotency_keys_created", "created_at"),
)


def _sqlite_only(name: str | None) -> bool:
    # The FTS5 table and the shadow tables it keeps its index in.
    return name is not None and (name == "message_search" or name.startswith("message_search_"))


def autogenerate_filters(dialect: str) -> dict[str, Any]:
    """Alembic's `include_name` and `include_object` hooks for comparing this metadata
    with a database of `dialect`: on SQLite they leave out the search index, which is an
    FTS5 table there rather than the table declared here."""
    if dialect != "sqlite":
        return {}

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return not (type_ == "table" and _sqlite_only(name))

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return not _sqlite_only(table)

    return {"include_name": include_name, "include_object": include_object}
