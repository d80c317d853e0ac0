"""Export and import: a user's conversations, summaries and tasks as JSON Lines.

The file is a header line, then per conversation one `conversation` line, its `message`
lines in seq order and its `summary` lines, then the `task` lines, then an `end` line
that counts what came before (a file without it was cut short):

    {"format": "chatledger.export", "version": 1, "exported_at": "..."}
    {"type": "conversation", "id": ..., "title": ..., "metadata": {...}, "created_at": ...,
     "updated_at": ..., "expires_at": ..., "pinned": ..., "archived": ...,
     "head_seq": ..., "message_count": n}
    {"type": "message", "conversation_id": ..., "seq": 1, "parent_seq": null, "id": ...,
     "role": ..., "content": ..., "tool_calls": [...], "tool_call_id": ..., "name": ...,
     "metadata": {...}, "created_at": ...}
    {"type": "summary", "conversation_id": ..., "upto_seq": ..., "content": ...,
     "updated_at": ...}
    {"type": "task", "id": ..., "title": ..., "description": ..., "completed": ...,
     "created_at": ..., "updated_at": ...}
    {"type": "end", "conversations": ..., "messages": ..., "tasks": ...}

What is derived is not in the file and is computed again on import: token counts, each
message's run and the head's. Operational rows (turns, their stream events, idempotency
keys, rate limits) are not exported.

An import is checked as the API checks what it is sent, and written one conversation per
transaction: a conversation with anything wrong in it is not written at all, and the
report names its line; the others go in. Ids are the importer's own: a conversation's is
derived from the importing user and the id in the file (so importing the same file again
finds it, and adds nothing), its messages get new ones. Tasks are numbered on from the
user's counter (a task id is never reused); a task with the same title and creation time
as one the user has is taken to be that one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Final

from sqlalchemy import Connection, func, insert, select

from chatledger.chatgpt import ChatGPTError, chatgpt_records
from chatledger.domain import (
    ChatMessage,
    Role,
    ToolCall,
    check_new_message,
    check_text,
)
from chatledger.errors import ChatLedgerError, ValidationError
from chatledger.store.core import (
    check_conversation_metadata,
    check_conversation_title,
    check_user_id,
    new_id,
    utcnow,
)
from chatledger.store.engine import Connector
from chatledger.store.ledger import MESSAGE_COLUMNS, message_of, readable_metadata
from chatledger.store.schema import (
    conversations,
    messages as message_table,
    summaries,
    task_counters,
    tasks,
)
from chatledger.store.tasks import check_task_description, check_task_title
from chatledger.tokens import TokenCounter, count_message_tokens

__all__ = [
    "FORMAT",
    "VERSION",
    "ImportFailure",
    "ImportReport",
    "ImportedConversation",
    "Transfer",
    "imported_conversation_id",
]

FORMAT: Final = "chatledger.export"
VERSION: Final = 1
# Rows read or written per statement: a user's history is streamed, never held whole.
_PAGE: Final = 500
_MESSAGE_PAGE: Final = 1_000
# Ids derived from (importing user, id in the file): the same pair always gives the same
# id, so a second import finds the first; two users never get the same one.
_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://chatledger.invalid/import")

_c = conversations.c
_m = message_table.c
_s = summaries.c
_t = tasks.c

_KEYS: Final = {
    "conversation": frozenset(
        {
            "type", "id", "title", "metadata", "created_at", "updated_at", "expires_at",
            "pinned", "archived", "head_seq", "message_count",
        }
    ),
    "message": frozenset(
        {
            "type", "conversation_id", "seq", "parent_seq", "id", "role", "content",
            "tool_calls", "tool_call_id", "name", "metadata", "created_at",
        }
    ),
    "summary": frozenset({"type", "conversation_id", "upto_seq", "content", "updated_at"}),
    "task": frozenset(
        {"type", "id", "title", "description", "completed", "created_at", "updated_at"}
    ),
    "end": frozenset({"type", "conversations", "messages", "tasks"}),
}  # fmt: skip


def imported_conversation_id(user_id: str, source_id: str) -> str:
    """The id a conversation with id `source_id` in a file gets when `user_id` imports it."""
    return str(uuid.uuid5(_NAMESPACE, f"{user_id}\x00{source_id}"))


@dataclass(frozen=True, slots=True)
class ImportedConversation:
    """A conversation of the file: its line, its id there and here, and whether it was
    there already (imported before)."""

    line: int
    source_id: str
    id: str
    present: bool


@dataclass(frozen=True, slots=True)
class ImportFailure:
    """What was not imported: the line at fault (for a ChatGPT export, the conversation's
    place in its list), the conversation it belongs to, and why."""

    line: int
    message: str
    source_id: str | None = None


@dataclass(slots=True)
class ImportReport:
    """What an import did. `complete`: the file's end was read (a file cut short is not)."""

    conversations: list[ImportedConversation] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)
    tasks_imported: int = 0
    tasks_present: int = 0
    complete: bool = False

    @property
    def ok(self) -> bool:
        return self.complete and not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversations_imported": sum(not c.present for c in self.conversations),
            "conversations_present": sum(c.present for c in self.conversations),
            "conversations_failed": len({(f.source_id, f.line) for f in self.failures}),
            "tasks_imported": self.tasks_imported,
            "tasks_present": self.tasks_present,
            "complete": self.complete,
            "conversations": [
                {"line": c.line, "source_id": c.source_id, "id": c.id, "present": c.present}
                for c in self.conversations
            ],
            "failures": [
                {"line": f.line, "conversation_id": f.source_id, "message": f.message}
                for f in self.failures
            ],
        }


class _LineError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Unreadable:
    """A line that could not be read as a JSON object."""

    def __init__(self, message: str) -> None:
        self.message = message


Located = tuple[int, "dict[str, Any] | _Unreadable"]


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# -- reading a file -------------------------------------------------------------------


async def _chunks(data: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, AsyncIterable):
        async for chunk in data:
            yield chunk
    else:
        for chunk in data:
            yield chunk


async def read_lines(
    data: AsyncIterable[bytes] | Iterable[bytes], *, max_line_bytes: int
) -> AsyncIterator[Located]:
    """The file's non-blank lines, numbered from 1, each a JSON object or why it is not.

    `data` is the file in chunks split anywhere. A line over `max_line_bytes` is never
    held whole: it is skipped to its end and reported.
    """
    number = 0
    pending = bytearray()
    skipping = False
    async for chunk in _chunks(data):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            number += 1
            piece = chunk[start:end]
            if skipping or len(pending) + len(piece) > max_line_bytes:
                yield number, _Unreadable(f"the line is longer than {max_line_bytes} bytes")
            elif pending or piece.strip():
                pending += piece
                yield number, _parse(bytes(pending))
            pending.clear()
            skipping = False
            start = end + 1
        if not skipping:
            pending += chunk[start:]
            if len(pending) > max_line_bytes:
                pending.clear()
                skipping = True
    if skipping:
        yield number + 1, _Unreadable(f"the line is longer than {max_line_bytes} bytes")
    elif pending.strip():
        yield number + 1, _parse(bytes(pending))


def _parse(raw: bytes) -> dict[str, Any] | _Unreadable:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _Unreadable("the line is not UTF-8")
    except (ValueError, RecursionError):
        return _Unreadable("the line is not JSON")
    if not isinstance(value, dict):
        return _Unreadable("the line is not a JSON object")
    return value


# -- checking -------------------------------------------------------------------------


def _fields(line: int, record: Mapping[str, Any], kind: str) -> None:
    keys = set(record)
    expected = _KEYS[kind]
    if keys != expected:
        missing = sorted(expected - keys)
        unknown = sorted(keys - expected)
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else "",
            )
            if part
        )
        raise _LineError(line, f"a {kind} line: {what}")


def _integer(line: int, name: str, value: object, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _LineError(line, f"{name} must be an integer")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and at most {high}"
        raise _LineError(line, f"{name} must be at least {low}{upper}")
    return value


def _boolean(line: int, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _LineError(line, f"{name} must be true or false")
    return value


def _timestamp(line: int, name: str, value: object, *, nullable: bool = False) -> datetime | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise _LineError(line, f"{name} must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _LineError(line, f"{name} must be an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise _LineError(line, f"{name} must say its time zone")
    return parsed


def _required_time(line: int, name: str, value: object) -> datetime:
    parsed = _timestamp(line, name, value)
    assert parsed is not None
    return parsed


def _source_id(line: int, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise _LineError(line, "id must be a non-empty string of at most 255 characters")
    try:
        return check_text("id", value)
    except ValidationError as error:
        raise _LineError(line, error.message) from None


@dataclass(slots=True)
class _Message:
    line: int
    seq: int
    parent_seq: int | None
    message: ChatMessage
    created_at: datetime


@dataclass(slots=True)
class _Conversation:
    """One conversation of a file, checked and ready to write."""

    line: int
    source_id: str
    row: dict[str, Any]
    messages: list[_Message]
    summaries: list[tuple[int, str, datetime]]


def _checked_message(line: int, record: Mapping[str, Any], max_chars: int) -> ChatMessage:
    try:
        role = Role(record["role"]) if isinstance(record["role"], str) else None
    except ValueError:
        role = None
    if role is None:
        raise _LineError(line, "role must be one of system, user, assistant, tool")
    calls = record["tool_calls"]
    if not isinstance(calls, list):
        raise _LineError(line, "tool_calls must be a list of {id, name, arguments}")
    metadata = record["metadata"]
    if not isinstance(metadata, Mapping):
        raise _LineError(line, "metadata must be a JSON object")
    try:
        return check_new_message(
            ChatMessage(
                role=role,
                content=record["content"],
                tool_calls=calls,
                tool_call_id=record["tool_call_id"],
                name=record["name"],
                metadata=metadata,
            ),
            max_chars=max_chars,
        )
    except ChatLedgerError as error:
        raise _LineError(line, error.message) from None


def _check_tool_results(messages: Sequence[_Message]) -> None:
    """Every tool result answers a call made on its own branch, in its own turn (after
    the user message the turn answers). In time linear in the messages: a file can make
    a conversation of any shape."""
    count = len(messages)
    children: list[list[int]] = [[] for _ in range(count + 1)]
    turn_of = [0] * (count + 1)
    callers: dict[str, list[int]] = {}
    for m in messages:
        parent = m.parent_seq or 0
        children[parent].append(m.seq)
        turn_of[m.seq] = m.seq if m.message.role is Role.USER else turn_of[parent]
        for call in m.message.tool_calls:
            callers.setdefault(call.id, []).append(m.seq)
    # Entry and exit times of a walk of the tree: a is an ancestor of b when b's entry
    # falls within a's.
    enter, leave = [0] * (count + 1), [0] * (count + 1)
    clock = 0
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:
        node, done = stack.pop()
        clock += 1
        if done:
            leave[node] = clock
            continue
        enter[node] = clock
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(children[node]))
    for m in messages:
        if m.message.role is not Role.TOOL:
            continue
        call_id = m.message.tool_call_id or ""
        if not any(
            enter[a] < enter[m.seq] <= leave[a] and turn_of[a] == turn_of[m.seq]
            for a in callers.get(call_id, ())
        ):
            raise _LineError(
                m.line,
                f"message {m.seq} answers tool call {call_id!r}, which no earlier message"
                " of its turn on its branch made",
            )


class _ConversationReader:
    """Collects and checks one conversation's lines."""

    def __init__(self, line: int, record: Mapping[str, Any], max_chars: int) -> None:
        self.line = line
        self.max_chars = max_chars
        raw_id = record.get("id")
        self.source_id = raw_id if isinstance(raw_id, str) and raw_id else None
        self.record = record
        self.messages: list[_Message] = []
        self.summaries: list[tuple[int, str, datetime]] = []
        self.failure: _LineError | None = None
        self.end_line = line

    def fail(self, error: _LineError) -> None:
        if self.failure is None:
            self.failure = error

    def head(self) -> dict[str, Any]:
        line, record = self.line, self.record
        _fields(line, record, "conversation")
        source_id = _source_id(line, record["id"])
        try:
            title = check_conversation_title(record["title"])
            metadata = check_conversation_metadata(record["metadata"])
        except ChatLedgerError as error:
            raise _LineError(line, error.message) from None
        return {
            "source_id": source_id,
            "title": title,
            "metadata": metadata,
            "created_at": _required_time(line, "created_at", record["created_at"]),
            "updated_at": _required_time(line, "updated_at", record["updated_at"]),
            "expires_at": _timestamp(line, "expires_at", record["expires_at"], nullable=True),
            "pinned": _boolean(line, "pinned", record["pinned"]),
            "archived": _boolean(line, "archived", record["archived"]),
            "message_count": _integer(line, "message_count", record["message_count"], low=0),
            "head_seq": None
            if record["head_seq"] is None
            else _integer(line, "head_seq", record["head_seq"], low=1),
        }

    def add(self, line: int, record: Mapping[str, Any], kind: str) -> None:
        self.end_line = line
        if self.failure is not None:
            return
        try:
            _fields(line, record, kind)
            if record["conversation_id"] != self.record.get("id"):
                raise _LineError(line, f"a {kind} line of another conversation, out of place")
            if kind == "message":
                self._message(line, record)
            else:
                self._summary(line, record)
        except _LineError as error:
            self.fail(error)

    def _message(self, line: int, record: Mapping[str, Any]) -> None:
        if self.summaries:
            raise _LineError(line, "a message line after the conversation's summaries")
        expected = len(self.messages) + 1
        seq = _integer(line, "seq", record["seq"], low=1)
        if seq != expected:
            raise _LineError(line, f"seq {seq} out of order: messages are numbered 1, 2, 3 ...")
        parent = record["parent_seq"]
        if parent is not None:
            parent = _integer(line, "parent_seq", parent, low=1)
            if parent >= seq:
                raise _LineError(line, f"parent_seq {parent} is not an earlier message")
        _source_id(line, record["id"])
        self.messages.append(
            _Message(
                line=line,
                seq=seq,
                parent_seq=parent,
                message=_checked_message(line, record, self.max_chars),
                created_at=_required_time(line, "created_at", record["created_at"]),
            )
        )

    def _summary(self, line: int, record: Mapping[str, Any]) -> None:
        upto = _integer(line, "upto_seq", record["upto_seq"], low=1, high=len(self.messages))
        if any(seq == upto for seq, _, _ in self.summaries):
            raise _LineError(line, f"a second summary up to message {upto}")
        try:
            content = check_text("content", record["content"], max_chars=self.max_chars)
        except ChatLedgerError as error:
            raise _LineError(line, error.message) from None
        updated = _required_time(line, "updated_at", record["updated_at"])
        self.summaries.append((upto, content, updated))

    def finish(self) -> _Conversation:
        if self.failure is not None:
            raise self.failure
        head = self.head()
        count = head.pop("message_count")
        if len(self.messages) != count:
            raise _LineError(
                self.end_line,
                f"the conversation has {len(self.messages)} of its {count} messages:"
                " the file is cut short or corrupted",
            )
        head_seq = head["head_seq"]
        if head_seq is not None and head_seq > count:
            raise _LineError(self.line, f"head_seq {head_seq} is not one of its messages")
        _check_tool_results(self.messages)
        return _Conversation(
            line=self.line,
            source_id=head.pop("source_id"),
            row=head,
            messages=self.messages,
            summaries=self.summaries,
        )


@dataclass(slots=True)
class _Task:
    line: int
    row: dict[str, Any]


def _checked_task(line: int, record: Mapping[str, Any]) -> _Task:
    _fields(line, record, "task")
    _integer(line, "id", record["id"], low=1)
    try:
        title = check_task_title(record["title"])
        description = check_task_description(record["description"])
    except ChatLedgerError as error:
        raise _LineError(line, error.message) from None
    return _Task(
        line,
        {
            "title": title,
            "description": description,
            "completed": _boolean(line, "completed", record["completed"]),
            "created_at": _required_time(line, "created_at", record["created_at"]),
            "updated_at": _required_time(line, "updated_at", record["updated_at"]),
        },
    )


# -- the store's side -----------------------------------------------------------------


class Transfer:
    """Exports and imports a user's data; reach it through `SQLAlchemyStore.export` and
    `SQLAlchemyStore.import_lines`.

    Args:
        db: where statements run.
        max_message_chars: longest content or metadata an imported message may have.
        token_counter: counts each imported message's tokens (never taken from the file).
    """

    def __init__(self, db: Connector, *, max_message_chars: int, token_counter: TokenCounter):
        self._db = db
        self._max_chars = max_message_chars
        self._token_counter = token_counter

    @property
    def max_line_bytes(self) -> int:
        """The longest line an import reads: a message at its longest, every character
        escaped, with metadata as long."""
        return 12 * 2 * self._max_chars + 64 * 1024

    # -- export ---------------------------------------------------------------------

    async def export(self, user_id: str) -> AsyncIterator[str]:
        user_id = check_user_id(user_id)
        yield _line({"format": FORMAT, "version": VERSION, "exported_at": utcnow().isoformat()})
        counts = {"conversations": 0, "messages": 0, "tasks": 0}
        after = ""
        while True:
            page = await self._db.read(partial(self._conversations, user_id=user_id, after=after))
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
                    lines = await self._db.read(
                        partial(
                            self._messages,
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
                notes = await self._db.read(
                    partial(self._summaries, user_id=user_id, conversation_id=row.id, upto=count)
                )
                if notes:
                    yield "".join(notes)
            if len(page) < _PAGE:
                break
            after = page[-1].id
        last_task = 0
        while True:
            rows = await self._db.read(partial(self._tasks, user_id=user_id, after=last_task))
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
            if len(rows) < _PAGE:
                break
            last_task = rows[-1].id
        yield _line({"type": "end", **counts})

    @staticmethod
    def _conversations(conn: Connection, user_id: str, after: str) -> list[Any]:
        query = (
            select(
                _c.id, _c.title, _c.metadata, _c.created_at, _c.updated_at, _c.expires_at,
                _c.pinned, _c.archived, _c.head_seq, _c.next_seq,
            )
            .where(_c.user_id == user_id, _c.id > after)
            .order_by(_c.id)
            .limit(_PAGE)
        )  # fmt: skip
        return list(conn.execute(query))

    @staticmethod
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
            .limit(_MESSAGE_PAGE)
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
                            {"id": c.id, "name": c.name, "arguments": c.arguments}
                            for c in m.tool_calls
                        ],
                        "tool_call_id": m.tool_call_id,
                        "name": m.name,
                        "metadata": dict(m.metadata),
                        "created_at": _time(m.created_at),
                    }
                )
            )
        return lines

    @staticmethod
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

    @staticmethod
    def _tasks(conn: Connection, user_id: str, after: int) -> list[Any]:
        query = (
            select(_t.id, _t.title, _t.description, _t.completed, _t.created_at, _t.updated_at)
            .where(_t.user_id == user_id, _t.id > after)
            .order_by(_t.id)
            .limit(_PAGE)
        )
        return list(conn.execute(query))

    # -- import ---------------------------------------------------------------------

    async def import_records(
        self,
        user_id: str,
        records: AsyncIterable[Located],
        *,
        header: bool = True,
    ) -> ImportReport:
        """Import records (a header first, when `header`), one conversation per
        transaction; see the module's docstring. Raises `ValidationError` only when the
        file is not an export at all (no header, another format or version)."""
        user_id = check_user_id(user_id)
        report = ImportReport()
        current: _ConversationReader | None = None
        pending_tasks: list[_Task] = []
        seen = {"conversations": 0, "messages": 0, "tasks": 0}
        first = header
        ended = False

        async def close_conversation() -> None:
            nonlocal current
            if current is not None:
                reader, current = current, None
                await self._write_conversation(user_id, reader, report)

        async for line, record in records:
            if first:
                first = False
                _check_header(line, record)
                continue
            if ended:
                report.failures.append(ImportFailure(line, "a line after the end line"))
                report.complete = False
                break
            if isinstance(record, _Unreadable):
                error = _LineError(line, record.message)
                if current is not None:
                    current.fail(error)
                else:
                    report.failures.append(ImportFailure(line, error.message))
                continue
            kind = record.get("type")
            if kind in ("message", "summary"):
                if kind == "message":
                    seen["messages"] += 1
                if current is None:
                    report.failures.append(
                        ImportFailure(line, f"a {kind} line outside any conversation")
                    )
                else:
                    current.add(line, record, kind)
                continue
            await close_conversation()
            if kind == "conversation":
                seen["conversations"] += 1
                current = _ConversationReader(line, record, self._max_chars)
            elif kind == "task":
                seen["tasks"] += 1
                try:
                    pending_tasks.append(_checked_task(line, record))
                except _LineError as error:
                    report.failures.append(ImportFailure(error.line, error.message))
                if len(pending_tasks) >= _PAGE:
                    await self._write_tasks(user_id, pending_tasks, report)
                    pending_tasks = []
            elif kind == "end":
                ended = True
                report.complete = _check_end(line, record, seen, report)
            else:
                report.failures.append(ImportFailure(line, "a line of no known type"))
        if first:
            raise ValidationError("the file is empty", field="body", code="not_an_export")
        await close_conversation()
        if pending_tasks:
            await self._write_tasks(user_id, pending_tasks, report)
        return report

    async def import_chatgpt(self, user_id: str, data: bytes) -> ImportReport:
        """Import a ChatGPT `conversations.json` (see `chatledger.chatgpt`); a failure's
        `line` is the conversation's place in the file.

        Raises:
            ValidationError: `data` is not a JSON array (nothing is written).
        """
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            raise ValidationError(
                "a ChatGPT conversations.json must be JSON", field="body", code="not_an_export"
            ) from None
        try:
            converted = list(chatgpt_records(decoded))
        except ChatGPTError as error:
            raise ValidationError(error.message, field="body", code="not_an_export") from None

        async def records() -> AsyncIterator[Located]:
            for place, record in converted:
                yield (
                    place,
                    _Unreadable(record.message) if isinstance(record, ChatGPTError) else record,
                )

        return await self.import_records(user_id, records(), header=False)

    async def _write_conversation(
        self, user_id: str, reader: _ConversationReader, report: ImportReport
    ) -> None:
        try:
            checked = reader.finish()
        except _LineError as error:
            report.failures.append(ImportFailure(error.line, error.message, reader.source_id))
            return
        target = imported_conversation_id(user_id, checked.source_id)
        prepared = [
            (m, count_message_tokens(m.message, self._token_counter)) for m in checked.messages
        ]
        summary_rows = [
            {
                "user_id": user_id,
                "conversation_id": target,
                "upto_seq": upto,
                "content": content,
                "token_count": self._token_counter(content),
                "updated_at": updated,
            }
            for upto, content, updated in checked.summaries
        ]
        present = await self._db.write(
            lambda conn: _insert_conversation(
                conn, self._db, user_id, target, checked, prepared, summary_rows
            )
        )
        report.conversations.append(
            ImportedConversation(checked.line, checked.source_id, target, present)
        )

    async def _write_tasks(self, user_id: str, batch: list[_Task], report: ImportReport) -> None:
        def work(conn: Connection) -> tuple[int, int]:
            times = {task.row["created_at"] for task in batch}
            have = {
                (row.title, row.created_at)
                for row in conn.execute(
                    select(_t.title, _t.created_at).where(
                        _t.user_id == user_id, _t.created_at.in_(times)
                    )
                )
            }
            new = []
            for task in batch:
                key = (task.row["title"], task.row["created_at"])
                if key not in have:
                    have.add(key)
                    new.append(task)
            if not new:
                return 0, len(batch)
            counter = (
                self._db.upsert(task_counters)
                .values(user_id=user_id, next_id=len(new) + 1)
                .on_conflict_do_update(
                    index_elements=[task_counters.c.user_id],
                    set_={"next_id": task_counters.c.next_id + len(new)},
                )
                .returning(task_counters.c.next_id)
            )
            first_id = conn.execute(counter).scalar_one() - len(new)
            conn.execute(
                insert(tasks),
                [
                    {"user_id": user_id, "id": first_id + offset, **task.row}
                    for offset, task in enumerate(new)
                ],
            )
            return len(new), len(batch) - len(new)

        imported, present = await self._db.write(work)
        report.tasks_imported += imported
        report.tasks_present += present


def _check_header(line: int, record: dict[str, Any] | _Unreadable) -> None:
    if (
        isinstance(record, _Unreadable)
        or record.get("format") != FORMAT
        or set(record) != {"format", "version", "exported_at"}
    ):
        raise ValidationError(
            f"line {line}: not a chatledger export (its first line must be"
            f' {{"format": "{FORMAT}", "version": {VERSION}, ...}});'
            " a ChatGPT export is imported with format=chatgpt",
            field="body",
            code="not_an_export",
        )
    if record["version"] != VERSION:
        raise ValidationError(
            f"line {line}: export version {record['version']!r} is not one this server reads"
            f" (it reads version {VERSION})",
            field="body",
            code="unsupported_version",
        )


def _check_end(
    line: int, record: Mapping[str, Any], seen: Mapping[str, int], report: ImportReport
) -> bool:
    # A line already reported unreadable was not counted: the end cannot match then.
    if report.failures:
        return True
    if set(record) != _KEYS["end"] or any(record[name] != seen[name] for name in seen):
        counted = ", ".join(f"{count} {name}" for name, count in seen.items())
        report.failures.append(
            ImportFailure(line, f"the end line does not count what the file holds ({counted})")
        )
        return False
    return True


def _insert_conversation(
    conn: Connection,
    db: Connector,
    user_id: str,
    target: str,
    checked: _Conversation,
    prepared: Sequence[tuple[_Message, int]],
    summary_rows: list[dict[str, Any]],
) -> bool:
    """Write one checked conversation; True when it is there already (imported before,
    or the user's own: its id in the file is one of theirs)."""
    mine = select(func.count()).where(_c.user_id == user_id, _c.id.in_({target, checked.source_id}))
    if conn.execute(mine).scalar_one():
        return True
    run_start = [0] * (len(prepared) + 1)
    for m, _ in prepared:
        parent = m.parent_seq
        run_start[m.seq] = (
            run_start[parent] if parent is not None and parent == m.seq - 1 else m.seq
        )
    head = checked.row["head_seq"]
    head_run = run_start[head] if head is not None else None
    statement = (
        db.upsert(conversations)
        .values(
            user_id=user_id,
            id=target,
            next_seq=len(prepared) + 1,
            head_run_start=head_run,
            head_run_parent=None if head_run is None else prepared[head_run - 1][0].parent_seq,
            **checked.row,
        )
        .on_conflict_do_nothing()
    )
    if not conn.execute(statement).rowcount:
        return True  # another import of the same file got there first
    for first in range(0, len(prepared), _MESSAGE_PAGE):
        conn.execute(
            insert(message_table),
            [
                _message_row(user_id, target, m, tokens, run_start[m.seq])
                for m, tokens in prepared[first : first + _MESSAGE_PAGE]
            ],
        )
    if summary_rows:
        conn.execute(insert(summaries), summary_rows)
    return False


def _message_row(
    user_id: str, conversation_id: str, m: _Message, tokens: int, run_start: int
) -> dict[str, Any]:
    message = m.message
    calls: Sequence[ToolCall] = message.tool_calls
    return {
        "user_id": user_id,
        "conversation_id": conversation_id,
        "seq": m.seq,
        "id": new_id(),
        "role": message.role.value,
        "content": message.content,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]
        or None,
        "tool_call_id": message.tool_call_id,
        "name": message.name,
        "metadata": dict(message.metadata) or None,
        "token_count": tokens,
        "created_at": m.created_at,
        "parent_seq": m.parent_seq,
        "run_start": run_start,
    }
