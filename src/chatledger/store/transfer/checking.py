"""What an import checks before it writes anything: each field of a line, a conversation
with its messages and summaries (`ConversationReader`), a task, the header and the end
line. A failed check raises `LineError`, which names the line at fault."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatledger.domain import ChatMessage, Role, check_new_message, check_text
from chatledger.errors import ChatLedgerError, ValidationError
from chatledger.store.core import check_conversation_metadata, check_conversation_title
from chatledger.store.tasks import check_task_description, check_task_title
from chatledger.store.transfer.lines import FORMAT, KEYS, VERSION, Unreadable
from chatledger.store.transfer.report import ImportFailure, ImportReport

__all__ = [
    "CheckedConversation",
    "CheckedMessage",
    "CheckedTask",
    "ConversationReader",
    "LineError",
    "check_end",
    "check_header",
    "checked_task",
]


class LineError(Exception):
    """A line that fails a check: its number and why."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _fields(line: int, record: Mapping[str, Any], kind: str) -> None:
    keys = set(record)
    expected = KEYS[kind]
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
        raise LineError(line, f"a {kind} line: {what}")


def _integer(line: int, name: str, value: object, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineError(line, f"{name} must be an integer")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and at most {high}"
        raise LineError(line, f"{name} must be at least {low}{upper}")
    return value


def _boolean(line: int, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise LineError(line, f"{name} must be true or false")
    return value


def _timestamp(line: int, name: str, value: object, *, nullable: bool = False) -> datetime | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise LineError(line, f"{name} must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise LineError(line, f"{name} must be an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise LineError(line, f"{name} must say its time zone")
    return parsed


def _required_time(line: int, name: str, value: object) -> datetime:
    parsed = _timestamp(line, name, value)
    assert parsed is not None
    return parsed


def _source_id(line: int, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise LineError(line, "id must be a non-empty string of at most 255 characters")
    try:
        return check_text("id", value)
    except ValidationError as error:
        raise LineError(line, error.message) from None


@dataclass(slots=True)
class CheckedMessage:
    line: int
    seq: int
    parent_seq: int | None
    message: ChatMessage
    created_at: datetime


@dataclass(slots=True)
class CheckedConversation:
    """One conversation of a file, checked and ready to write."""

    line: int
    source_id: str
    row: dict[str, Any]
    messages: list[CheckedMessage]
    summaries: list[tuple[int, str, datetime]]


def _checked_message(line: int, record: Mapping[str, Any], max_chars: int) -> ChatMessage:
    try:
        role = Role(record["role"]) if isinstance(record["role"], str) else None
    except ValueError:
        role = None
    if role is None:
        raise LineError(line, "role must be one of system, user, assistant, tool")
    calls = record["tool_calls"]
    if not isinstance(calls, list):
        raise LineError(line, "tool_calls must be a list of {id, name, arguments}")
    metadata = record["metadata"]
    if not isinstance(metadata, Mapping):
        raise LineError(line, "metadata must be a JSON object")
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
        raise LineError(line, error.message) from None


def _check_tool_results(messages: Sequence[CheckedMessage]) -> None:
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
            raise LineError(
                m.line,
                f"message {m.seq} answers tool call {call_id!r}, which no earlier message"
                " of its turn on its branch made",
            )


class ConversationReader:
    """Collects and checks one conversation's lines."""

    def __init__(self, line: int, record: Mapping[str, Any], max_chars: int) -> None:
        self.line = line
        self.max_chars = max_chars
        raw_id = record.get("id")
        self.source_id = raw_id if isinstance(raw_id, str) and raw_id else None
        self.record = record
        self.messages: list[CheckedMessage] = []
        self.summaries: list[tuple[int, str, datetime]] = []
        self.failure: LineError | None = None
        self.end_line = line

    def fail(self, error: LineError) -> None:
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
            raise LineError(line, error.message) from None
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
                raise LineError(line, f"a {kind} line of another conversation, out of place")
            if kind == "message":
                self._message(line, record)
            else:
                self._summary(line, record)
        except LineError as error:
            self.fail(error)

    def _message(self, line: int, record: Mapping[str, Any]) -> None:
        if self.summaries:
            raise LineError(line, "a message line after the conversation's summaries")
        expected = len(self.messages) + 1
        seq = _integer(line, "seq", record["seq"], low=1)
        if seq != expected:
            raise LineError(line, f"seq {seq} out of order: messages are numbered 1, 2, 3 ...")
        parent = record["parent_seq"]
        if parent is not None:
            parent = _integer(line, "parent_seq", parent, low=1)
            if parent >= seq:
                raise LineError(line, f"parent_seq {parent} is not an earlier message")
        _source_id(line, record["id"])
        self.messages.append(
            CheckedMessage(
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
            raise LineError(line, f"a second summary up to message {upto}")
        try:
            content = check_text("content", record["content"], max_chars=self.max_chars)
        except ChatLedgerError as error:
            raise LineError(line, error.message) from None
        updated = _required_time(line, "updated_at", record["updated_at"])
        self.summaries.append((upto, content, updated))

    def finish(self) -> CheckedConversation:
        if self.failure is not None:
            raise self.failure
        head = self.head()
        count = head.pop("message_count")
        if len(self.messages) != count:
            raise LineError(
                self.end_line,
                f"the conversation has {len(self.messages)} of its {count} messages:"
                " the file is cut short or corrupted",
            )
        head_seq = head["head_seq"]
        if head_seq is not None and head_seq > count:
            raise LineError(self.line, f"head_seq {head_seq} is not one of its messages")
        _check_tool_results(self.messages)
        return CheckedConversation(
            line=self.line,
            source_id=head.pop("source_id"),
            row=head,
            messages=self.messages,
            summaries=self.summaries,
        )


@dataclass(slots=True)
class CheckedTask:
    line: int
    row: dict[str, Any]


def checked_task(line: int, record: Mapping[str, Any]) -> CheckedTask:
    _fields(line, record, "task")
    _integer(line, "id", record["id"], low=1)
    try:
        title = check_task_title(record["title"])
        description = check_task_description(record["description"])
    except ChatLedgerError as error:
        raise LineError(line, error.message) from None
    return CheckedTask(
        line,
        {
            "title": title,
            "description": description,
            "completed": _boolean(line, "completed", record["completed"]),
            "created_at": _required_time(line, "created_at", record["created_at"]),
            "updated_at": _required_time(line, "updated_at", record["updated_at"]),
        },
    )


def check_header(line: int, record: dict[str, Any] | Unreadable) -> None:
    if (
        isinstance(record, Unreadable)
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


def check_end(
    line: int, record: Mapping[str, Any], seen: Mapping[str, int], report: ImportReport
) -> bool:
    # A line already reported unreadable was not counted: the end cannot match then.
    if report.failures:
        return True
    if set(record) != KEYS["end"] or any(record[name] != seen[name] for name in seen):
        counted = ", ".join(f"{count} {name}" for name, count in seen.items())
        report.failures.append(
            ImportFailure(line, f"the end line does not count what the file holds ({counted})")
        )
        return False
    return True
