"""The hot path, on the driver: every append, and a read of the head's run.

These are the two statements of an agent session's turn (`ChatLedgerSession`, the `/v1`
Conversations API: read the latest items, add the new ones), of every history read, and
the appends of a chat turn (its user message, each tool pair, its reply: `ledger.Writer`).
They are sent as the driver's own SQL (`Connection.exec_driver_sql`, in the same unit of
work): not compiled, and their rows not processed, by SQLAlchemy, whose statement and
result machinery cost more than the database does (docs/benchmarks.md, "Issue 13");
errors and events stay SQLAlchemy's. Everything else, and every case these leave to it (a
conversation that is missing or held by a turn, a window that reaches past the head's
run), goes through SQLAlchemy Core in `ledger.py`; the store's suite runs through both.

- The append is an UPDATE of the conversation that reserves the seqs (and takes, keeps or
  gives up its lease, as `use` says: `_LEASE_USES`) and the messages' and search
  entries' INSERTs: on PostgreSQL one statement (data-modifying CTEs over the batch given
  as arrays), which outside a turn is sent without BEGIN or COMMIT: one round trip; on
  SQLite three statements, each one call.
- The read joins the conversation's head to a range scan of its run (`ledger.read_path`
  for a branch never edited, in one statement) and decodes only what a `Message` holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection

from chatledger.domain import MAX_JSON_DEPTH, Message, Role, ToolCall
from chatledger.store.core import MAX_BIGINT, LeaseUse, readable_metadata
from chatledger.store.schema import utc_of_text
from chatledger.store.search import document_of, index_body, row_keys

__all__ = ["append_batch", "read_head_run"]

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
_HEAD_RUN_PG: Final = (
    # JSON as its text: decoded here, where its depth is known to be small without a walk.
    "SELECT "
    + _COLUMNS.replace("m.tool_calls", "m.tool_calls::text").replace(
        "m.metadata", "m.metadata::text"
    )
    + _HEAD_RUN_WHERE.format(after="$3", before="$4", user="$1", conversation="$2", limit="$5")
)
_HEAD_RUN_SQLITE: Final = (
    "SELECT "
    + _COLUMNS
    + _HEAD_RUN_WHERE.format(
        after=":after", before=":before", user=":user", conversation=":conversation", limit=":limit"
    )
)

# What each use of the lease adds to the reserving UPDATE: the row it may touch, and the
# columns it sets besides the seqs (a stop request belongs to the turn it was made for).
# `{lease}` and `{expires}` are the parameters after the append's own.
_LEASE_USES: Final = {
    LeaseUse.NONE: ("lease_id IS NULL", ""),
    LeaseUse.TAKE: (
        "lease_id IS NULL",
        ", lease_id = {lease}, lease_expires_at = {expires}, stop_requested = false",
    ),
    LeaseUse.HOLD: ("lease_id = {lease}", ", lease_expires_at = {expires}"),
    LeaseUse.RELEASE: (
        "lease_id = {lease}",
        ", lease_id = NULL, lease_expires_at = NULL, stop_requested = false",
    ),
}
# How many of the lease's parameters (its id, its expiry) each use sends: a prepared
# statement on PostgreSQL takes exactly the parameters it names.
_LEASE_PARAMS: Final = {LeaseUse.NONE: 0, LeaseUse.TAKE: 2, LeaseUse.HOLD: 2, LeaseUse.RELEASE: 1}


def _reserve(use: LeaseUse, *, count: str, now: str, user: str, conversation: str) -> str:
    # Every value is computed from the row as it was (SQL evaluates all of SET against the
    # old row), and RETURNING gives the new one: the appended messages' run, and the
    # parent of that run's first message, come back with the seqs. Appending right after
    # the newest message extends the head's run; after any other (an edit, a
    # regeneration, an older head) it starts a new one.
    where, also = _LEASE_USES[use]
    return f"""
    UPDATE conversations
    SET next_seq = next_seq + {count},
        head_seq = next_seq + {count} - 1,
        head_run_start = CASE WHEN head_seq = next_seq - 1 THEN head_run_start ELSE next_seq END,
        head_run_parent = CASE WHEN head_seq = next_seq - 1 THEN head_run_parent ELSE head_seq END,
        updated_at = {now}{also}
    WHERE user_id = {user} AND id = {conversation} AND {where}
    RETURNING next_seq - {count} AS first_seq, head_run_start, head_run_parent
"""


_APPEND_PG_TAIL: Final = """),
batch AS (
    SELECT r.first_seq + b.ord - 1 AS seq,
           CASE WHEN b.ord > 1 THEN r.first_seq + b.ord - 2
                WHEN r.head_run_start < r.first_seq THEN r.first_seq - 1
                ELSE r.head_run_parent END AS parent_seq,
           r.head_run_start AS run_start,
           b.id, b.role, b.content, b.tool_calls, b.tool_call_id, b.name, b.metadata,
           b.token_count, b.document
    FROM reserved AS r,
         unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                $11::text[], $12::integer[], $13::text[])
           WITH ORDINALITY AS b(id, role, content, tool_calls, tool_call_id, name, metadata,
                                token_count, document, ord)
),
stored AS (
    INSERT INTO messages (user_id, conversation_id, seq, id, role, content, tool_calls,
                          tool_call_id, name, metadata, token_count, created_at, parent_seq,
                          run_start)
    SELECT $1, $2, seq, id, role, content, tool_calls::jsonb, tool_call_id, name,
           metadata::jsonb, token_count, $4, parent_seq, run_start
    FROM batch
),
indexed AS (
    INSERT INTO message_search (user_id, conversation_id, seq, role, document)
    SELECT $1, $2, seq, role, document::tsvector FROM batch WHERE document IS NOT NULL
)
SELECT first_seq, head_run_start, head_run_parent FROM reserved
"""
_APPEND_PG: Final = {
    use: "WITH reserved AS ("
    + _reserve(use, count="$3", now="$4", user="$1", conversation="$2").format(
        lease="$14", expires="$15"
    )
    + _APPEND_PG_TAIL
    for use in LeaseUse
}
_RESERVE_SQLITE: Final = {
    use: _reserve(
        use, count=":count", now=":now", user=":user", conversation=":conversation"
    ).format(lease=":lease", expires=":expires")
    for use in LeaseUse
}
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


def read_head_run(
    conn: Connection,
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
    before = MAX_BIGINT if before is None else before
    if conn.dialect.name == "sqlite":
        params: Any = {
            "user": user_id,
            "conversation": conversation_id,
            "after": after,
            "before": before,
            "limit": limit,
        }
        rows = conn.exec_driver_sql(_HEAD_RUN_SQLITE, params).all()
        messages = [_message(conversation_id, row, utc_of_text(row[9])) for row in rows]
    else:
        params = (user_id, conversation_id, after, before, limit)
        rows = conn.exec_driver_sql(_HEAD_RUN_PG, params).all()
        messages = [_message(conversation_id, row, row[9]) for row in rows]
    if not rows:
        return None
    return messages, rows[0][11], rows[0][12]


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
) -> tuple[int, int, int | None] | None:
    """Reserve seqs for `batch` (messages not numbered yet) at the head of a conversation,
    doing with its lease what `use` says, and store them with their search entries, all
    or none.

    On PostgreSQL this is one statement, atomic by itself: run it outside a transaction
    (`Connector.write_statement`), or in one that has already begun.

    Returns:
        The first seq, the run the batch continues and that run's parent; None, with
        nothing stored, when the conversation is not this user's, or its lease is not as
        `use` needs it (held by a turn, live or dead; not held by `lease_id`):
        `ledger.Writer.append` says which, and closes a dead turn first.
    """
    if conn.dialect.name == "sqlite":
        return _append_sqlite(
            conn, user_id, conversation_id, batch, now, use, lease_id, lease_expires_at
        )
    lease = (lease_id, lease_expires_at)[: _LEASE_PARAMS[use]]
    arrays: list[list[Any]] = [[] for _ in range(9)]
    for m in batch:
        for array, value in zip(arrays, (*_values(m), document_of(m)), strict=True):
            array.append(value)
    params = (user_id, conversation_id, len(batch), now, *arrays, *lease)
    reserved = conn.exec_driver_sql(_APPEND_PG[use], params).first()
    return None if reserved is None else (reserved[0], reserved[1], reserved[2])


def _append_sqlite(
    conn: Connection,
    user_id: str,
    conversation_id: str,
    batch: Sequence[Message],
    now: datetime,
    use: LeaseUse,
    lease_id: str | None,
    lease_expires_at: datetime | None,
) -> tuple[int, int, int | None] | None:
    stamp = _sqlite_time(now)
    reserve = {
        "user": user_id,
        "conversation": conversation_id,
        "count": len(batch),
        "now": stamp,
        "lease": lease_id,
        "expires": None if lease_expires_at is None else _sqlite_time(lease_expires_at),
    }
    reserved = conn.exec_driver_sql(_RESERVE_SQLITE[use], reserve).first()
    if reserved is None:
        return None
    first_seq, run_start, run_parent = reserved
    first_parent = first_seq - 1 if run_start < first_seq else run_parent
    rows = []
    entries = []
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
    return first_seq, run_start, run_parent
