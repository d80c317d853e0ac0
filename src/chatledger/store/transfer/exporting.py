"""Export: a user's conversations, their messages and summaries, and tasks, written as the
file's lines a page of rows at a time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, select

from chatledger.store.core import check_user_id, readable_metadata, utcnow
from chatledger.store.engine import Connector
from chatledger.store.ledger import MESSAGE_COLUMNS, message_of
from chatledger.store.schema import conversations, messages as message_table, summaries, tasks
from chatledger.store.transfer.lines import FORMAT, MESSAGE_PAGE, PAGE, VERSION

__all__ = ["export_lines"]

_c = conversations.c
_m = message_table.c
_s = summaries.c
_t = tasks.c


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def export_lines(db: Connector, user_id: str) -> AsyncIterator[str]:
    """The user's data as the file's lines, each string one or more whole lines.

    The first is yielded only once the first page is read: a database that is away
    fails the export before it starts (a 503), not as a file cut short.
    """
    user_id = check_user_id(user_id)
    header = _line({"format": FORMAT, "version": VERSION, "exported_at": utcnow().isoformat()})
    counts = {"conversations": 0, "messages": 0, "tasks": 0}
    page = await db.read(partial(_conversations, user_id=user_id, after=""))
    yield header
    while True:
        for row in page:
            counts["conversations"] += 1
            count = row.next_seq - 1
            yield _line(
                {
                    "type": "conversation",
                    "id": row.id,
                    "title": row.title,
                    "metadata": readable_metadata(row.metadata),
                    "created_at": _time(row.created_at),
                    "updated_at": _time(row.updated_at),
                    "expires_at": _time(row.expires_at),
                    "pinned": row.pinned,
                    "archived": row.archived,
                    "head_seq": row.head_seq,
                    "message_count": count,
                }
            )
            # Messages are never changed, only added: those up to the count read
            # with the conversation are the ones it had then, whatever runs meanwhile.
            seq = 0
            while seq < count:
                lines = await db.read(
                    partial(
                        _messages,
                        user_id=user_id,
                        conversation_id=row.id,
                        after=seq,
                        upto=count,
                    )
                )
                if not lines:
                    break  # deleted meanwhile: the import will say it is cut short
                seq += len(lines)
                counts["messages"] += len(lines)
                yield "".join(lines)
            notes = await db.read(
                partial(_summaries, user_id=user_id, conversation_id=row.id, upto=count)
            )
            if notes:
                yield "".join(notes)
        if len(page) < PAGE:
            break
        page = await db.read(partial(_conversations, user_id=user_id, after=page[-1].id))
    last_task = 0
    while True:
        rows = await db.read(partial(_tasks, user_id=user_id, after=last_task))
        counts["tasks"] += len(rows)
        if rows:
            yield "".join(
                _line(
                    {
                        "type": "task",
                        "id": task.id,
                        "title": task.title,
                        "description": task.description,
                        "completed": task.completed,
                        "created_at": _time(task.created_at),
                        "updated_at": _time(task.updated_at),
                    }
                )
                for task in rows
            )
        if len(rows) < PAGE:
            break
        last_task = rows[-1].id
    yield _line({"type": "end", **counts})


def _conversations(conn: Connection, user_id: str, after: str) -> list[Any]:
    query = (
        select(
            _c.id, _c.title, _c.metadata, _c.created_at, _c.updated_at, _c.expires_at,
            _c.pinned, _c.archived, _c.head_seq, _c.next_seq,
        )
        .where(_c.user_id == user_id, _c.id > after)
        .order_by(_c.id)
        .limit(PAGE)
    )  # fmt: skip
    return list(conn.execute(query))


def _messages(
    conn: Connection, user_id: str, conversation_id: str, after: int, upto: int
) -> list[str]:
    query = (
        select(*MESSAGE_COLUMNS)
        .where(
            _m.user_id == user_id,
            _m.conversation_id == conversation_id,
            _m.seq > after,
            _m.seq <= upto,
        )
        .order_by(_m.seq)
        .limit(MESSAGE_PAGE)
    )
    lines = []
    for row in conn.execute(query):
        m = message_of(row)
        lines.append(
            _line(
                {
                    "type": "message",
                    "conversation_id": conversation_id,
                    "seq": m.seq,
                    "parent_seq": m.parent_seq,
                    "id": m.id,
                    "role": m.role.value,
                    "content": m.content,
                    "tool_calls": [
                        {"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls
                    ],
                    "tool_call_id": m.tool_call_id,
                    "name": m.name,
                    "metadata": dict(m.metadata),
                    "created_at": _time(m.created_at),
                }
            )
        )
    return lines


def _summaries(conn: Connection, user_id: str, conversation_id: str, upto: int) -> list[str]:
    query = (
        select(_s.upto_seq, _s.content, _s.updated_at)
        .where(
            _s.user_id == user_id,
            _s.conversation_id == conversation_id,
            _s.upto_seq <= upto,
        )
        .order_by(_s.upto_seq)
    )
    return [
        _line(
            {
                "type": "summary",
                "conversation_id": conversation_id,
                "upto_seq": row.upto_seq,
                "content": row.content,
                "updated_at": _time(row.updated_at),
            }
        )
        for row in conn.execute(query)
    ]


def _tasks(conn: Connection, user_id: str, after: int) -> list[Any]:
    query = (
        select(_t.id, _t.title, _t.description, _t.completed, _t.created_at, _t.updated_at)
        .where(_t.user_id == user_id, _t.id > after)
        .order_by(_t.id)
        .limit(PAGE)
    )
    return list(conn.execute(query))
