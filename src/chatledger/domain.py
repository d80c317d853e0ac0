"""The nouns of chatledger: conversations, messages, tool calls, tasks.

Plain data with no I/O. `ChatMessage` is a message as a model sees it: what is appended
to a conversation, and what an agent receives. `Message` is a stored `ChatMessage`, with
its place (`seq`) in the conversation. `Conversation` and `Task` come out of a store.

`TurnResult` is what a chat turn answered, with its `ToolCallRecord`s; `StreamEvent` is one
event of a turn's stream, as stored for replicas to replay and as sent to clients.

`check_text` and `check_new_message` are the validation every layer shares, so the API,
the store and the tools reject the same input with the same error on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

from chatledger.errors import TooLargeError, ValidationError

__all__ = [
    "CHATKIT_ITEM",
    "INTERRUPTED_TOOL_RESULT",
    "MAX_CALL_FIELD_CHARS",
    "OPENAI_ITEM",
    "ChatMessage",
    "Conversation",
    "Message",
    "Page",
    "Role",
    "SearchHit",
    "StreamEvent",
    "Summary",
    "Task",
    "TaskFilter",
    "ToolCall",
    "ToolCallRecord",
    "TurnResult",
    "TurnStatus",
    "check_new_message",
    "check_text",
    "check_written_text",
    "is_kept_item",
    "json_depth",
    "tool_call_records",
]

T = TypeVar("T")


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class TaskFilter(StrEnum):
    ALL = "all"
    PENDING = "pending"
    COMPLETED = "completed"


# The result of a tool call whose turn ended before the tool returned: every call in the
# record has a result, so no model ever reads a call without one.
INTERRUPTED_TOOL_RESULT: Final = {
    "error": "the turn was interrupted before this tool call returned",
    "code": "interrupted",
}


# The metadata key under which a message keeps the OpenAI Responses item it stores
# (`chatledger.integrations.items`).
OPENAI_ITEM: Final = "openai_item"
# ... and the ChatKit thread item (`chatledger.integrations.chatkit`).
CHATKIT_ITEM: Final = "chatkit_item"
# The longest `tool_call_id` and `name` a message may have: what their columns hold.
MAX_CALL_FIELD_CHARS: Final = 255


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool invocation requested by the assistant.

    `arguments` is the JSON text exactly as the model produced it: the record must show
    what was asked, and model APIs expect the same text back on the next request.
    """

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """The arguments as JSON, or `None` when the model sent text that is not JSON (or
        JSON nested deeper than `MAX_JSON_DEPTH`, or holding what no database stores:
        shown as the text it is)."""
        try:
            parsed = json.loads(self.arguments)
        except (ValueError, RecursionError):
            return None
        return parsed if json_depth(parsed) <= MAX_JSON_DEPTH and storable(parsed) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """A message's content and role: what gets appended, and what an agent reads."""

    role: Role
    content: str = ""
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None
    name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        return cls(role=Role.SYSTEM, content=content)

    @classmethod
    def user(cls, content: str, *, metadata: Mapping[str, Any] | None = None) -> ChatMessage:
        return cls(role=Role.USER, content=content, metadata=metadata or {})

    @classmethod
    def assistant(
        cls,
        content: str = "",
        *,
        tool_calls: Sequence[ToolCall] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> ChatMessage:
        return cls(
            role=Role.ASSISTANT,
            content=content,
            tool_calls=tuple(tool_calls),
            metadata=metadata or {},
        )

    @classmethod
    def tool(
        cls,
        *,
        tool_call_id: str,
        name: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> ChatMessage:
        return cls(
            role=Role.TOOL,
            content=content,
            tool_call_id=tool_call_id,
            name=name,
            metadata=metadata or {},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(ChatMessage):
    """A stored `ChatMessage`, with its place in the conversation.

    `seq` numbers a conversation's messages 1, 2, 3, ... without gaps, in the one order
    they happened, on every branch. `parent_seq` is the message it follows (None: the
    first of its branch); an edited or regenerated message is a sibling of the one it
    replaces, which stays. Being a `ChatMessage`, a stored message goes into an agent's
    input as it is, without a copy.
    """

    conversation_id: str
    seq: int
    id: str
    token_count: int = 0
    created_at: datetime
    parent_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    """Where a turn starts instead of the head: from user message `seq`, which stays.

    `edit`: the turn's new user message becomes a sibling of message `seq` (a new version
    of it); otherwise the turn writes a new reply to message `seq`, a sibling of its
    earlier replies (a regeneration).
    """

    seq: int
    edit: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    id: str
    title: str | None
    metadata: Mapping[str, Any]
    message_count: int
    created_at: datetime
    updated_at: datetime
    # The turn running in it right now (its replica alive and renewing), if any.
    running_turn_id: str | None = None
    # When it will be deleted, however active (a temporary conversation); None: never.
    expires_at: datetime | None = None
    pinned: bool = False
    archived: bool = False
    # The message the next turn continues from (None: no messages yet).
    head_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """What a conversation said up to and including message `upto_seq`, in brief.

    It stands in for those messages in an agent's input; the messages themselves stay.
    """

    upto_seq: int
    content: str
    token_count: int
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchHit:
    """A message that a search found, with a plain-text snippet of it.

    `marks` are `[start, end)` offsets into `snippet`, in characters (code points), of the
    words the search matched: a client highlights them by slicing the text, never by
    rendering any of it as markup.
    """

    conversation_id: str
    title: str | None
    seq: int
    role: Role
    snippet: str
    marks: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: int
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime


class TurnStatus(StrEnum):
    """How a turn ended (or that it has not).

    `failed`: the agent failed (a model error or its time limit). `interrupted`: the turn
    ended without its agent finishing for any other reason: the process died, the database
    went away, the server shut down; whoever found it unfinished closed it.
    """

    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A tool call of a turn and its result. `arguments` is parsed JSON when it parses."""

    id: str
    name: str
    arguments: Any
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "result": self.result,
        }


def _result_object(content: str) -> dict[str, Any]:
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and storable(parsed):
        return parsed
    return {"output": content}


def tool_call_records(messages: Sequence[ChatMessage]) -> list[ToolCallRecord]:
    """The tool calls among `messages` with their results, in the order they were made.

    A call whose result is not among `messages` is left out: a record is a pair.
    """
    results = {m.tool_call_id: m.content for m in messages if m.role is Role.TOOL}
    records = []
    for message in messages:
        for call in message.tool_calls:
            if call.id in results:
                parsed = call.parsed_arguments()
                arguments = call.arguments if parsed is None else parsed
                records.append(
                    ToolCallRecord(call.id, call.name, arguments, _result_object(results[call.id]))
                )
    return records


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnResult:
    """What a turn answered: the seeds' `{conversation_id, response, tool_calls}`, and how
    it ended (`status`: completed, stopped or interrupted)."""

    conversation_id: str
    response: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    turn_id: str | None = None
    status: TurnStatus = TurnStatus.COMPLETED
    replayed: bool = False

    @property
    def stopped(self) -> bool:
        return self.status is TurnStatus.STOPPED

    @property
    def interrupted(self) -> bool:
        return self.status is TurnStatus.INTERRUPTED

    def to_dict(self) -> dict[str, Any]:
        """The response body; `stopped` or `interrupted` appear only when true, so the
        seeds' contract is unchanged for a turn that completed."""
        body: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "response": self.response,
            "tool_calls": [call.to_dict() for call in self.tool_calls],
        }
        if self.stopped:
            body["stopped"] = True
        if self.interrupted:
            body["interrupted"] = True
        return body

    def to_record(self) -> dict[str, Any]:
        """Everything about the result, for storing it (`from_dict` reads it back)."""
        return {
            **self.to_dict(),
            "message_ids": self.message_ids,
            "turn_id": self.turn_id,
            "stopped": self.stopped,
            "interrupted": self.interrupted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, replayed: bool = False) -> TurnResult:
        status = TurnStatus.COMPLETED
        if data.get("stopped"):
            status = TurnStatus.STOPPED
        elif data.get("interrupted"):
            status = TurnStatus.INTERRUPTED
        return cls(
            conversation_id=data["conversation_id"],
            response=data["response"],
            tool_calls=[ToolCallRecord(**call) for call in data["tool_calls"]],
            message_ids=data.get("message_ids", []),
            turn_id=data.get("turn_id"),
            status=status,
            replayed=replayed,
        )


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of a turn's stream, exactly as it is stored and sent.

    `id` is `"<turn id>:<n>"`, n counting 1, 2, 3 ... within the turn, so a client that
    reconnects with it as `Last-Event-ID` resumes after it, on any replica. `name` is one
    of conversation, delta, tool_call, tool_result, done and error.
    """

    id: str
    name: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_cursor` back to get the next one (None: no more)."""

    items: list[T]
    next_cursor: str | None


# NUL is refused by PostgreSQL text and JSON; lone surrogates cannot be encoded as UTF-8.
# SQLite would store both, so checking here makes the two databases behave alike.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
# Control characters but newline and tab: in text people write (messages, titles) they
# are never meant, and in a terminal or a log they move the cursor, clear the screen or
# rewrite what was shown (ESC sequences, CR, BEL, the C1 controls).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Deeper than any metadata or tool arguments a person or a model means to send, and well
# inside what every JSON encoder and validator on the way handles (Pydantic refuses to
# serialize a value nested a few hundred deep).
MAX_JSON_DEPTH: Final = 32


def storable_text(text: str) -> str:
    """`text` with every character no database stores (NUL, an unpaired surrogate)
    replaced by U+FFFD: for what a model or a tool produced, which must be recorded
    whatever it holds, where `check_text` refuses what a caller sent."""
    return _FORBIDDEN.sub("\ufffd", text)


def model_tool_call(call: ToolCall) -> ToolCall:
    """A model's tool call as a message can hold it: characters no database stores
    replaced (`storable_text`) in its id, name and arguments, an id or name cut to
    `MAX_CALL_FIELD_CHARS`, and an empty one (which no message holds) made U+FFFD. What
    the model wrote is not the caller's error: the call is recorded, and refused as any
    call to an unknown tool or with arguments that are not a JSON object is."""

    def field(text: str) -> str:
        return storable_text(text)[:MAX_CALL_FIELD_CHARS] or "\ufffd"

    call_id, name, arguments = field(call.id), field(call.name), storable_text(call.arguments)
    if (call_id, name, arguments) == (call.id, call.name, call.arguments):
        return call
    return ToolCall(call_id, name, arguments)


def model_message(
    text: str,
    *,
    max_chars: int,
    tool_calls: Sequence[ToolCall] = (),
    metadata: Mapping[str, Any] | None = None,
) -> ChatMessage:
    """An assistant message of what a model said, as a message can hold it: characters no
    database stores replaced (`storable_text`), and past `max_chars` cut and marked
    `truncated`. How long a model talks, or what it writes, is not the caller's error:
    the turn that said it must still be recorded and end."""
    text = storable_text(text)
    if len(text) > max_chars:
        text, metadata = text[:max_chars], {**(metadata or {}), "truncated": True}
    return ChatMessage.assistant(text, tool_calls=tool_calls, metadata=metadata)


def check_text(field_name: str, value: object, *, max_chars: int | None = None) -> str:
    """Return `value` if it is storable text, else raise.

    Raises:
        ValidationError: not a string, or contains NUL or a lone surrogate.
        TooLargeError: longer than `max_chars`.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{field_name} must be a string", field=field_name)
    if _FORBIDDEN.search(value) is not None:
        raise ValidationError(
            f"{field_name} contains a NUL character or an unpaired surrogate",
            field=field_name,
        )
    if max_chars is not None and len(value) > max_chars:
        raise TooLargeError(f"{field_name} is longer than {max_chars} characters", field=field_name)
    return value


def check_written_text(field_name: str, value: object, *, max_chars: int | None = None) -> str:
    """`check_text` for what people write — messages, titles: also refuses control
    characters other than newline and tab.

    Raises:
        ValidationError: as `check_text`, or a control character.
        TooLargeError: longer than `max_chars`.
    """
    text = check_text(field_name, value, max_chars=max_chars)
    if _CONTROLS.search(text) is not None:
        raise ValidationError(
            f"{field_name} contains a control character (only newline and tab are allowed)",
            field=field_name,
        )
    return text


def json_depth(value: object, *, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply `value` nests lists and objects (a scalar is 0), counted up to
    `limit + 1`: deeper than that is not looked into. Level by level, without recursion,
    so no input can exhaust the stack."""
    depth, level = 0, [value]
    while depth <= limit:
        children: list[object] = []
        nested = False
        for node in level:
            kind = type(node)
            if kind in _SCALARS:  # by far the most nodes: no isinstance (ABC checks are slow)
                continue
            if kind is dict or isinstance(node, Mapping):
                children.extend(node.values())  # type: ignore[attr-defined]
                nested = True
            elif kind is list or kind is tuple:
                children.extend(node)  # type: ignore[arg-type]
                nested = True
        if not nested:
            return depth
        depth += 1
        level = children
    return depth


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def check_metadata(
    field_name: str, value: object, *, max_chars: int | None = None
) -> dict[str, Any]:
    """Return `value` as a dict if it is a JSON object of storable text, nested at most
    `MAX_JSON_DEPTH` deep, else raise."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field_name} must be a JSON object", field=field_name)
    # Any mapping will do (a stored message's metadata, read back, is a read-only one):
    # what is checked, and returned, is the dict of it.
    value = dict(value)
    too_deep = ValidationError(
        f"{field_name} is nested deeper than {MAX_JSON_DEPTH} levels", field=field_name
    )
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except RecursionError:  # the encoder stops at the interpreter's limit, and says so
        raise too_deep from None
    except (TypeError, ValueError):
        raise ValidationError(
            f"{field_name} must contain only JSON values", field=field_name
        ) from None
    # Every list and object opens with a bracket (one inside a string only adds to the
    # count): with few of them in the text, the value cannot nest deeper.
    brackets = encoded.count("{") + encoded.count("[")
    if brackets > MAX_JSON_DEPTH and json_depth(value) > MAX_JSON_DEPTH:
        raise too_deep
    # The encoding keeps lone surrogates as they are (the text check below finds them)
    # but escapes NUL as \u0000, which PostgreSQL's JSONB refuses: where that escape
    # appears, the strings themselves are checked, keys included.
    if "\\u0000" in encoded:
        _check_strings(field_name, value)
    check_text(field_name, encoded, max_chars=max_chars)
    return value


def storable(value: object) -> bool:
    """Whether a JSON value is one a database stores: no NUL, no unpaired surrogate (keys
    included), which JSON text may escape (`\\u0000`, `\\ud800`); and no NaN or infinity,
    which Python's parser takes (`NaN`, `1e400`) and JSON does not. A record built from it
    (a turn's result) goes into a JSONB column."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return False
    if _FORBIDDEN.search(encoded) is not None:  # unpaired surrogates are kept as they are
        return False
    if "\\u0000" in encoded:  # NUL is escaped: its strings tell
        try:
            _check_strings("value", value)
        except ValidationError:
            return False
    return True


def _check_strings(field_name: str, value: object) -> None:
    if isinstance(value, str):
        check_text(field_name, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_text(field_name, key)
            _check_strings(field_name, item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_strings(field_name, item)


def check_tool_calls(field_name: str, value: object) -> tuple[ToolCall, ...]:
    """Normalize assistant tool calls given as `ToolCall`s or `{id, name, arguments}` maps."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValidationError(
            f"{field_name} must be a list of {{id, name, arguments}}", field=field_name
        )
    calls = []
    for index, item in enumerate(value):
        where = f"{field_name}[{index}]"
        if isinstance(item, ToolCall):
            call_id, name, arguments = item.id, item.name, item.arguments
        elif isinstance(item, Mapping) and set(item) == {"id", "name", "arguments"}:
            call_id, name, arguments = item["id"], item["name"], item["arguments"]
            if isinstance(arguments, Mapping):
                arguments = json.dumps(arguments, ensure_ascii=False)
        else:
            raise ValidationError(
                f"{where} must be an object with exactly id, name and arguments", field=where
            )
        for part, text in (("id", call_id), ("name", name)):
            if not check_text(f"{where}.{part}", text):
                raise ValidationError(f"{where}.{part} must not be empty", field=f"{where}.{part}")
        calls.append(ToolCall(call_id, name, check_text(f"{where}.arguments", arguments)))
    return tuple(calls)


def check_new_message(message: ChatMessage, *, max_chars: int) -> ChatMessage:
    """Validate one message before it is stored; returns it with normalized tool calls.

    Raises:
        ValidationError: naming the offending field.
        TooLargeError: content longer than `max_chars`.
    """
    try:
        role = Role(message.role)
    except ValueError:
        raise ValidationError(
            "role must be one of system, user, assistant, tool", field="role"
        ) from None
    if role is Role.USER:
        check_written_text("content", message.content, max_chars=max_chars)
    else:
        # What models and tools say is stored as they said it; it is escaped where shown.
        check_text("content", message.content, max_chars=max_chars)
    tool_calls = check_tool_calls("tool_calls", message.tool_calls)
    if tool_calls and role is not Role.ASSISTANT:
        raise ValidationError("only assistant messages carry tool_calls", field="tool_calls")
    if role is Role.TOOL:
        if not message.tool_call_id or not check_text(
            "tool_call_id", message.tool_call_id, max_chars=MAX_CALL_FIELD_CHARS
        ):
            raise ValidationError("a tool message needs a tool_call_id", field="tool_call_id")
    elif message.tool_call_id is not None:
        raise ValidationError("only tool messages carry a tool_call_id", field="tool_call_id")
    if message.name is not None:
        check_text("name", message.name, max_chars=MAX_CALL_FIELD_CHARS)
    metadata = check_metadata("metadata", message.metadata, max_chars=max_chars)
    return ChatMessage(
        role=role,
        content=message.content,
        tool_calls=tool_calls,
        tool_call_id=message.tool_call_id,
        name=message.name,
        metadata=metadata,
    )


def is_kept_item(message: ChatMessage) -> bool:
    """Whether `message` stores an item chatledger has no equivalent for (an OpenAI
    reasoning item or hosted tool call, a ChatKit widget ...): an assistant message with
    neither text nor tool calls that carries the item under `OPENAI_ITEM` or
    `CHATKIT_ITEM`. No chat model reads it."""
    return (
        message.role is Role.ASSISTANT
        and not message.content
        and not message.tool_calls
        and (
            isinstance(message.metadata.get(OPENAI_ITEM), Mapping)
            or isinstance(message.metadata.get(CHATKIT_ITEM), Mapping)
        )
    )
