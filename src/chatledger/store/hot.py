"""The hot path, on the driver: every append, the reads of the head's run, and a running
turn's lease (`renew_lease`, `stop_requested`, read every few hundred milliseconds).

These are the two statements of an agent session's turn (`ChatLedgerSession`, the `/v1`
Conversations API: read the latest items, add the new ones), of every history read, and
the writes of a chat turn (its start, each tool step, its end: `ledger.Writer`) and its
context read. They are sent as the driver's own SQL (`engine.Statement`), not compiled by
SQLAlchemy, whose statement and result machinery cost more than the database does
(docs/benchmarks.md, "Issue 13"). On PostgreSQL, outside a transaction, each is sent on
the asyncpg connection itself (`Connector.fetch`), SQLAlchemy only lending it from its
pool; in a transaction, and on SQLite, through `Connection.exec_driver_sql` in the unit of
work. Everything else, and every case these leave to it (a conversation that is missing
or held by a turn, a window that reaches past the head's run), goes through SQLAlchemy
Core in `ledger.py`; the store's suite runs through both.

- The append is an UPDATE of the conversation that reserves the seqs (and takes, keeps or
  gives up its lease, as `use` says: `_LEASE_USES`) and the messages' and search
  entries' INSERTs, and a chat turn's own records (`TurnStep`: its row, its stream
  events, its end and its idempotency key's answer): on PostgreSQL one statement
  (data-modifying CTEs over the batch given as arrays), which outside a transaction is
  sent without BEGIN or COMMIT: one round trip; on SQLite a statement each, each one call.
- The reads join the conversation's head to a range scan of its run (`ledger.read_path`
  for a branch never edited, in one statement; for a turn's context, after the run's
  newest summary) and decode only what a `Message` holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

from sqlalchemy import Connection

from chatledger.domain import MAX_JSON_DEPTH, Message, Role, StreamEvent, Summary, ToolCall
from chatledger.store.core import MAX_BIGINT, LeaseUse, readable_metadata
from chatledger.store.engine import Connector, Statement
from chatledger.store.schema import utc_of_text
from chatledger.store.search import document_of, index_body, row_keys

__all__ = [
    "TurnEnd",
    "TurnStep",
    "append_alone",
    "append_batch",
    "append_statement_pg",
    "read_context_run",
    "read_head_run",
    "renew_lease",
    "stop_requested",
    "write_step",
]

_COLUMNS: Final = (
    "m.seq, m.id, m.role, m.content, m.tool_calls, m.tool_call_id, m.name, m.metadata,"
    " m.token_count, m.created_at, m.parent_seq, c.head_run_start, c.head_run_parent"
)
# The head's run between the bounds (`after` < seq < `before`): no row when there is no
# conversation, no head, or nothing of the run in the window.
_HEAD_RUN_WHERE: Final = """
FROM conversations AS c
JOIN messages AS m
  ON m.user_id = c.user_id AND m.conversation_id = c.id AND c.head_seq IS NOT NULL
 AND m.seq >= CASE WHEN c.head_run_start > {after} THEN c.head_run_start ELSE {after} + 1 END
 AND m.seq <= CASE WHEN c.head_seq < {before} THEN c.head_seq ELSE {before} - 1 END
WHERE c.user_id = {user} AND c.id = {conversation}
ORDER BY m.seq DESC
LIMIT {limit}
"""
# JSON as its text on both databases (SQLite stores it so already): decoded here, where
# its depth is known to be small without a walk.
_COLUMNS_AS_TEXT: Final = _COLUMNS.replace("m.tool_calls", "CAST(m.tool_calls AS TEXT)").replace(
    "m.metadata", "CAST(m.metadata AS TEXT)"
)
_HEAD_RUN: Final = Statement(
    "SELECT "
    + _COLUMNS_AS_TEXT
    + _HEAD_RUN_WHERE.format(
        after=":after", before=":before", user=":user", conversation=":conversation", limit=":limit"
    )
)

# What each use of the lease adds to the reserving UPDATE: the row it may touch, and the
# columns it sets besides the seqs (a stop request belongs to the turn it was made for).
_LEASE_USES: Final = {
    LeaseUse.NONE: ("lease_id IS NULL", ""),
    LeaseUse.TAKE: (
        "lease_id IS NULL",
        ", lease_id = :lease, lease_expires_at = :expires, stop_requested = false",
    ),
    LeaseUse.HOLD: ("lease_id = :lease", ", lease_expires_at = :expires"),
    LeaseUse.RELEASE: (
        "lease_id = :lease",
        ", lease_id = NULL, lease_expires_at = NULL, stop_requested = false",
    ),
}


def _reserve(use: LeaseUse) -> str:
    # Every value is computed from the row as it was (SQL evaluates all of SET against the
    # old row), and RETURNING gives the new one: the appended messages' run, and the
    # parent of that run's first message, come back with the seqs. Appending right after
    # the newest message extends the head's run; after any other (an edit, a
    # regeneration, an older head) it starts a new one.
    where, also = _LEASE_USES[use]
    return f"""
    UPDATE conversations
    SET next_seq = next_seq + :count,
        head_seq = next_seq + :count - 1,
        head_run_start = CASE WHEN head_seq = next_seq - 1 THEN head_run_start ELSE next_seq END,
        head_run_parent = CASE WHEN head_seq = next_seq - 1 THEN head_run_parent ELSE head_seq END,
        updated_at = :now{also}
    WHERE user_id = :user AND id = :conversation AND {where}
    RETURNING next_seq - :count AS first_seq, head_run_start, head_run_parent
"""


# The append on PostgreSQL, after the reservation: the batch comes as one array per
# column, and each message's seq and parent follow from its place in it. Every array is
# text: asyncpg has text[] built in, but looks an integer array's type up in the catalog
# on each new connection (three more round trips, on every connection the pool opens).
_APPEND_PG: Final = """),
batch AS (
    SELECT r.first_seq + b.ord - 1 AS seq,
           CASE WHEN b.ord > 1 THEN r.first_seq + b.ord - 2
                WHEN r.head_run_start < r.first_seq THEN r.first_seq - 1
                ELSE r.head_run_parent END AS parent_seq,
           r.head_run_start AS run_start,
           b.id, b.role, b.content, b.tool_calls, b.tool_call_id, b.name, b.metadata,
           b.token_count::integer AS token_count, b.document
    FROM reserved AS r,
         unnest(:ids::text[], :roles::text[], :contents::text[], :tool_calls::text[],
                :tool_call_ids::text[], :names::text[], :metadata::text[],
                :token_counts::text[], :documents::text[])
           WITH ORDINALITY AS b(id, role, content, tool_calls, tool_call_id, name, metadata,
                                token_count, document, ord)
),
stored AS (
    INSERT INTO messages (user_id, conversation_id, seq, id, role, content, tool_calls,
                          tool_call_id, name, metadata, token_count, created_at, parent_seq,
                          run_start)
    SELECT :user, :conversation, seq, id, role, content, tool_calls::jsonb, tool_call_id,
           name, metadata::jsonb, token_count, :now, parent_seq, run_start
    FROM batch
),
indexed AS (
    INSERT INTO message_search (user_id, conversation_id, seq, role, document)
    SELECT :user, :conversation, seq, role, document::tsvector FROM batch
    WHERE document IS NOT NULL
)"""
_PG_ARRAYS: Final = (
    "ids", "roles", "contents", "tool_calls", "tool_call_ids", "names", "metadata",
    "token_counts", "documents",
)  # fmt: skip

# A turn's records (`TurnStep`). On PostgreSQL each is a further CTE of the append, done
# only if the reservation was (`EXISTS`, or a join with `reserved`): so a turn's claim,
# each of its tool steps and its finish are one statement each. Elsewhere, and for a
# step that appends nothing, they are statements of their own after the append.
_START_TURN: Final = """
INSERT INTO turns (user_id, conversation_id, id, user_seq, idempotency_key, status, started_at)
VALUES (:user, :conversation, :turn, :user_seq, :key, 'running', :now)
"""
_LINK_KEY: Final = """
UPDATE idempotency_keys SET conversation_id = :conversation, turn_id = :turn
WHERE user_id = :user AND key = :key
"""
_END_TURN: Final = """
UPDATE turns
SET status = :status, ended_at = :now, input_tokens = :input_tokens,
    output_tokens = :output_tokens, usage_estimated = :usage_estimated, model = :model
WHERE user_id = :user AND conversation_id = :conversation AND id = :turn
"""
_ANSWER_KEY: Final = """
UPDATE idempotency_keys
SET conversation_id = :conversation, status_code = :status_code, response = :response
WHERE user_id = :user AND key = :key
"""
_ADD_EVENTS: Final = """
INSERT INTO turn_events (user_id, conversation_id, turn_id, seq, name, data, created_at)
VALUES (:user, :conversation, :turn, :seq, :name, :data, :now)
"""
_SEPARATE: Final = {
    "start": Statement(_START_TURN),
    "link": Statement(_LINK_KEY),
    "end": Statement(_END_TURN),
    "answer": Statement(_ANSWER_KEY),
    "events": Statement(_ADD_EVENTS),
}
_STEP_PG: Final = {
    "start": """,
started AS (
    INSERT INTO turns (user_id, conversation_id, id, user_seq, idempotency_key, status,
                       started_at)
    SELECT :user, :conversation, :turn, first_seq, :key, 'running', :now FROM reserved
),
linked AS ("""
    + _LINK_KEY
    + """  AND EXISTS (SELECT FROM reserved)
)""",
    "end": """,
ended AS ("""
    + _END_TURN
    + """  AND EXISTS (SELECT FROM reserved)
),
answered AS ("""
    + _ANSWER_KEY.replace(":response", ":response::jsonb")
    + """  AND EXISTS (SELECT FROM reserved)
)""",
    "events": """,
evented AS (
    INSERT INTO turn_events (user_id, conversation_id, turn_id, seq, name, data, created_at)
    SELECT :user, :conversation, :turn, :first_event + e.ord - 1, e.name, e.data, :now
    FROM reserved, unnest(:event_names::text[], :event_data::text[])
                     WITH ORDINALITY AS e(name, data, ord)
)""",
}


# A running turn's lease, kept alive and read for a stop request (`turns.Turn.keep_alive`,
# on every turn every few hundred milliseconds).
_RENEW: Final = Statement(
    """
UPDATE conversations SET lease_expires_at = :expires
WHERE user_id = :user AND id = :conversation AND lease_id = :lease
RETURNING stop_requested
"""
)
_STOP_REQUESTED: Final = Statement(
    """
SELECT stop_requested FROM conversations
WHERE user_id = :user AND id = :conversation AND lease_id = :lease
"""
)


async def renew_lease(
    db: Connector, user_id: str, conversation_id: str, lease_id: str, expires_at: datetime
) -> bool | None:
    """Push the lease `lease_id` forward: whether its turn has been asked to stop, None
    if it no longer holds the conversation."""
    expires = _sqlite_time(expires_at) if db.dialect == "sqlite" else expires_at
    params = {"user": user_id, "conversation": conversation_id, "lease": lease_id}
    rows = await db.fetch(_RENEW, {**params, "expires": expires}, writes=True)
    return bool(rows[0][0]) if rows else None


async def stop_requested(db: Connector, user_id: str, conversation_id: str, lease_id: str) -> bool:
    """Whether the turn holding the lease `lease_id` has been asked to stop."""
    params = {"user": user_id, "conversation": conversation_id, "lease": lease_id}
    rows = await db.fetch(_STOP_REQUESTED, params)
    return bool(rows and rows[0][0])


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """How a turn ended, as its row and its idempotency key record it."""

    status: str
    input_tokens: int | None
    output_tokens: int | None
    usage_estimated: bool | None
    model: str | None
    key_status: int
    """The status code a retry with the turn's idempotency key is answered with."""
    key_response: Any


@dataclass(frozen=True, slots=True)
class TurnStep:
    """What a running turn records with the messages of one of its steps: the events it
    streams, and at its start or its end its own row and its idempotency key's."""

    turn_id: str
    events: Sequence[StreamEvent]
    first_event: int
    """The number of the first of `events` on the turn's stream."""
    starts: bool = False
    """The turn starts here: its row is stored, its user message the append's first."""
    ends: TurnEnd | None = None
    idempotency_key: str | None = None

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"turn": self.turn_id, "key": self.idempotency_key}
        if self.ends is not None:
            end = self.ends
            params.update(
                status=end.status,
                input_tokens=end.input_tokens,
                output_tokens=end.output_tokens,
                usage_estimated=end.usage_estimated,
                model=end.model,
                status_code=end.key_status,
                # Only with a key to answer: PostgreSQL casts it to JSONB even when the
                # UPDATE finds no row.
                response=None if self.idempotency_key is None else _json_text(end.key_response),
            )
        return params


@cache
def _append_statement(use: LeaseUse, starts: bool, ends: bool, events: bool) -> Statement:
    wanted = {"start": starts, "end": ends, "events": events}
    return Statement(
        "WITH reserved AS ("
        + _reserve(use)
        + _APPEND_PG
        + "".join(text for part, text in _STEP_PG.items() if wanted[part])
        + "\nSELECT first_seq, head_run_start, head_run_parent FROM reserved"
    )


def append_statement_pg() -> tuple[str, tuple[str, ...]]:
    """The statement an append outside a turn sends on PostgreSQL, with the names of its
    parameters in order (the arrays are one per column of `_PG_ARRAYS`): the store
    benchmark's floor sends it on asyncpg."""
    statement = _append_statement(LeaseUse.NONE, starts=False, ends=False, events=False)
    return statement.postgresql, tuple(statement.names)


_RESERVE_SQLITE: Final = {use: _reserve(use) for use in LeaseUse}
_INSERT_SQLITE: Final = """
INSERT INTO messages (user_id, conversation_id, seq, id, role, content, tool_calls,
                      tool_call_id, name, metadata, token_count, created_at, parent_seq,
                      run_start)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INDEX_SQLITE: Final = """
INSERT INTO message_search (body, keys, user_id, conversation_id, seq, role)
VALUES (?, ?, ?, ?, ?, ?)
"""

_ROLES: Final = {role.value: role for role in Role}
_NOTHING: Final[dict[str, Any]] = {}


def _sqlite_time(moment: datetime) -> str:
    # The text `schema.UTCDateTime` stores: naive UTC, microseconds always written.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _values(m: Message) -> tuple[Any, ...]:
    """A message's own columns, from `id` to `token_count`, as the driver takes them."""
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls]
    return (
        m.id,
        m.role.value,
        m.content,
        _json_text(calls or None),
        m.tool_call_id,
        m.name,
        _json_text(m.metadata or None),
        m.token_count,
    )


def _metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return _NOTHING
    value: dict[str, Any] = json.loads(text)
    # Only a text with more brackets than the limit can nest deeper: such a row (written
    # before 0.2) is what `ledger.readable_metadata` replaces with a note.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        return dict(readable_metadata(value))
    return value


def _message(conversation_id: str, row: Sequence[Any], created_at: datetime) -> Message:
    (seq, message_id, role, content, tool_calls, tool_call_id, name, metadata) = row[:8]
    return Message(
        conversation_id=conversation_id,
        seq=seq,
        id=message_id,
        role=_ROLES[role],
        content=content,
        tool_calls=tuple(ToolCall(**call) for call in json.loads(tool_calls)) if tool_calls else (),
        tool_call_id=tool_call_id,
        name=name,
        metadata=_metadata(metadata),
        token_count=row[8],
        created_at=created_at,
        parent_seq=row[10],
    )


async def read_head_run(
    db: Connector,
    user_id: str,
    conversation_id: str,
    *,
    limit: int,
    after: int,
    before: int | None,
) -> tuple[list[Message], int, int | None] | None:
    """The newest `limit` messages of the head's run after seq `after` and before
    `before`, newest first, with the run's first seq and that message's parent.

    Returns:
        None when there is nothing to read this way (no such conversation, no head, or
        nothing of the head's run in the window): `ledger.read_path` from the head says
        which.
    """
    params = {
        "user": user_id,
        "conversation": conversation_id,
        "after": after,
        "before": MAX_BIGINT if before is None else before,
        "limit": limit,
    }
    rows = await db.fetch(_HEAD_RUN, params)
    if not rows:
        return None
    return _messages(db, conversation_id, rows), rows[0][11], rows[0][12]


def _messages(db: Connector, conversation_id: str, rows: Sequence[Sequence[Any]]) -> list[Message]:
    if db.dialect == "sqlite":
        return [_message(conversation_id, row, utc_of_text(row[9])) for row in rows]
    return [_message(conversation_id, row, row[9]) for row in rows]


# A turn's context from the head's run: its newest summary in that run (if any), and the
# newest `limit` messages after it. No row when there is no head, or no message after
# the summary: `SQLAlchemyStore.load_context` reads those cases, and earlier runs.
_CONTEXT_RUN: Final = Statement(
    """
WITH head AS (
    SELECT user_id, id, head_seq, head_run_start, head_run_parent FROM conversations
    WHERE user_id = :user AND id = :conversation AND head_seq IS NOT NULL
),
summary AS (
    SELECT s.upto_seq, s.content, s.token_count, s.updated_at
    FROM head AS c JOIN summaries AS s
      ON s.user_id = c.user_id AND s.conversation_id = c.id
     AND s.upto_seq >= c.head_run_start AND s.upto_seq <= c.head_seq
    ORDER BY s.upto_seq DESC
    LIMIT 1
)
SELECT """
    + _COLUMNS_AS_TEXT
    + """, s.upto_seq, s.content, s.token_count, s.updated_at
FROM head AS c
LEFT JOIN summary AS s ON 1 = 1
JOIN messages AS m
  ON m.user_id = c.user_id AND m.conversation_id = c.id
 AND m.seq >= CASE WHEN s.upto_seq IS NULL THEN c.head_run_start ELSE s.upto_seq + 1 END
 AND m.seq <= c.head_seq
ORDER BY m.seq DESC
LIMIT :limit
"""
)


async def read_context_run(
    db: Connector, user_id: str, conversation_id: str, *, limit: int
) -> tuple[list[Message], Summary | None, int | None] | None:
    """What a turn's context takes from the head's run, in one statement: the newest
    `limit` messages after the run's newest summary (newest first), that summary, and
    the run's parent (where the context goes on, when the run holds fewer messages and
    no summary).

    Returns:
        None when there is nothing to read this way: no such conversation, no head, or
        no message after the summary.
    """
    params = {"user": user_id, "conversation": conversation_id, "limit": limit}
    rows = await db.fetch(_CONTEXT_RUN, params)
    if not rows:
        return None
    upto_seq, content, token_count, updated_at = rows[0][13:17]
    summary = None
    if upto_seq is not None:
        updated = utc_of_text(updated_at) if db.dialect == "sqlite" else updated_at
        summary = Summary(
            upto_seq=upto_seq, content=content, token_count=token_count, updated_at=updated
        )
    return _messages(db, conversation_id, rows), summary, rows[0][12]


def append_batch(
    conn: Connection,
    user_id: str,
    conversation_id: str,
    batch: Sequence[Message],
    *,
    now: datetime,
    use: LeaseUse = LeaseUse.NONE,
    lease_id: str | None = None,
    lease_expires_at: datetime | None = None,
    step: TurnStep | None = None,
) -> tuple[int, int, int | None] | None:
    """Reserve seqs for `batch` (messages not numbered yet) at the head of a conversation,
    doing with its lease what `use` says, and store them with their search entries and
    the records of the turn `step` they belong to (if any), all or none, in the unit of
    work `conn` is in (`append_alone` is the same as a unit of its own).

    Returns:
        The first seq, the run the batch continues and that run's parent; None, with
        nothing stored, when the conversation is not this user's, or its lease is not as
        `use` needs it (held by a turn, live or dead; not held by `lease_id`):
        `ledger.Writer.append` says which, and closes a dead turn first.
    """
    params = _append_params(user_id, conversation_id, batch, now, lease_id, lease_expires_at, step)
    if conn.dialect.name == "sqlite":
        return _append_sqlite(conn, params, batch, use, step)
    statement = _append_pg(params, batch, use, step)
    return _reserved(statement.run(conn, params).all())


async def append_alone(
    db: Connector,
    user_id: str,
    conversation_id: str,
    batch: Sequence[Message],
    *,
    now: datetime,
    use: LeaseUse = LeaseUse.NONE,
    lease_id: str | None = None,
    lease_expires_at: datetime | None = None,
    step: TurnStep | None = None,
) -> tuple[int, int, int | None] | None:
    """`append_batch` as a unit of work by itself: on PostgreSQL one statement, atomic by
    itself, which outside a transaction `Connector.fetch` sends on the driver without
    BEGIN or COMMIT (one round trip)."""
    params = _append_params(user_id, conversation_id, batch, now, lease_id, lease_expires_at, step)
    if db.dialect == "sqlite":
        return await db.write(lambda conn: _append_sqlite(conn, params, batch, use, step))
    statement = _append_pg(params, batch, use, step)
    return _reserved(await db.fetch(statement, params, writes=True))


def _append_params(
    user_id: str,
    conversation_id: str,
    batch: Sequence[Message],
    now: datetime,
    lease_id: str | None,
    lease_expires_at: datetime | None,
    step: TurnStep | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "user": user_id,
        "conversation": conversation_id,
        "count": len(batch),
        "now": now,
        "lease": lease_id,
        "expires": lease_expires_at,
    }
    if step is not None:
        params.update(step.params())
    return params


def _append_pg(
    params: dict[str, Any], batch: Sequence[Message], use: LeaseUse, step: TurnStep | None
) -> Statement:
    """The append's one statement on PostgreSQL, its batch (and the step's events) added
    to `params` as one array per column."""
    arrays: list[list[Any]] = [[] for _ in _PG_ARRAYS]
    for m in batch:
        for array, value in zip(arrays, (*_values(m), document_of(m)), strict=True):
            array.append(value)
    params.update(zip(_PG_ARRAYS, arrays, strict=True))
    params["token_counts"] = [None if n is None else str(n) for n in params["token_counts"]]
    if step is not None:
        _, names, data = _event_columns(step)
        params.update(first_event=step.first_event, event_names=names, event_data=data)
    return _append_statement(
        use,
        starts=step is not None and step.starts,
        ends=step is not None and step.ends is not None,
        events=step is not None and bool(step.events),
    )


def _reserved(rows: Sequence[Sequence[Any]]) -> tuple[int, int, int | None] | None:
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def write_step(
    conn: Connection,
    user_id: str,
    conversation_id: str,
    step: TurnStep,
    *,
    user_seq: int | None,
    now: datetime,
) -> None:
    """Store the records of a turn's step as statements of their own, in the unit of work
    `conn` is in: for a step that appends nothing (a regeneration's start answers a user
    message stored before: `user_seq`), and on SQLite after the append."""
    params = {"user": user_id, "conversation": conversation_id, "now": now, **step.params()}
    if conn.dialect.name == "sqlite":
        params["now"] = _sqlite_time(now)
    keyed = step.idempotency_key is not None
    if step.starts:
        _SEPARATE["start"].run(conn, {**params, "user_seq": user_seq})
        if keyed:
            _SEPARATE["link"].run(conn, params)
    if step.ends is not None:
        _SEPARATE["end"].run(conn, params)
        if keyed:
            _SEPARATE["answer"].run(conn, params)
    if step.events:
        rows = [
            {**params, "seq": seq, "name": name, "data": data}
            for seq, name, data in zip(*_event_columns(step), strict=True)
        ]
        _SEPARATE["events"].run_many(conn, rows)


def _event_columns(step: TurnStep) -> tuple[list[int], list[str], list[str]]:
    seqs = [step.first_event + offset for offset in range(len(step.events))]
    names = [event.name for event in step.events]
    data = [json.dumps(event.data, ensure_ascii=False) for event in step.events]
    return seqs, names, data


def _append_sqlite(
    conn: Connection,
    params: dict[str, Any],
    batch: Sequence[Message],
    use: LeaseUse,
    step: TurnStep | None,
) -> tuple[int, int, int | None] | None:
    now: datetime = params["now"]
    stamp = _sqlite_time(now)
    expires: datetime | None = params["expires"]
    reserve = {
        **params,
        "now": stamp,
        "expires": None if expires is None else _sqlite_time(expires),
    }
    reserved = conn.exec_driver_sql(_RESERVE_SQLITE[use], reserve).first()
    if reserved is None:
        return None
    first_seq, run_start, run_parent = reserved
    first_parent = first_seq - 1 if run_start < first_seq else run_parent
    rows = []
    entries = []
    user_id, conversation_id = params["user"], params["conversation"]
    keys = row_keys(user_id, conversation_id)
    for offset, m in enumerate(batch):
        seq = first_seq + offset
        parent = first_parent if offset == 0 else seq - 1
        rows.append((user_id, conversation_id, seq, *_values(m), stamp, parent, run_start))
        if (body := index_body(m)) is not None:
            entries.append((body, keys, user_id, conversation_id, seq, m.role.value))
    conn.exec_driver_sql(_INSERT_SQLITE, rows)
    if entries:
        conn.exec_driver_sql(_INDEX_SQLITE, entries)
    if step is not None:
        write_step(conn, user_id, conversation_id, step, user_seq=first_seq, now=now)
    return first_seq, run_start, run_parent
