"""The nouns of chatledger: conversations, messages, tool calls, tasks.

Plain data with no I/O. `ChatMessage` is a message as a model sees it: what is appended
to a conversation, and what an agent receives. `Message` is a stored `ChatMessage`, with
its place (`seq`) in the conversation. `Conversation` and `Task` come out of a store.

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
from typing import Any, Generic, TypeVar

from chatledger.errors import TooLargeError, ValidationError

__all__ = [
    "ChatMessage",
    "Conversation",
    "Message",
    "Page",
    "Role",
    "Summary",
    "Task",
    "TaskFilter",
    "ToolCall",
    "check_new_message",
    "check_text",
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
        """The arguments as JSON, or `None` when the model sent text that is not JSON."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return None


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
    def tool(cls, *, tool_call_id: str, name: str, content: str) -> ChatMessage:
        return cls(role=Role.TOOL, content=content, tool_call_id=tool_call_id, name=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(ChatMessage):
    """A stored `ChatMessage`, with its place in the conversation.

    `seq` numbers a conversation's messages 1, 2, 3, ... without gaps, in the one order
    they happened. Being a `ChatMessage`, a stored message goes into an agent's input as
    it is, without a copy.
    """

    conversation_id: str
    seq: int
    id: str
    token_count: int = 0
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    id: str
    title: str | None
    metadata: Mapping[str, Any]
    message_count: int
    created_at: datetime
    updated_at: datetime


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
class Task:
    id: int
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_cursor` back to get the next one (None: no more)."""

    items: list[T]
    next_cursor: str | None


# NUL is refused by PostgreSQL text and JSON; lone surrogates cannot be encoded as UTF-8.
# SQLite would store both, so checking here makes the two databases behave alike.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


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


def check_metadata(
    field_name: str, value: object, *, max_chars: int | None = None
) -> dict[str, Any]:
    """Return `value` as a dict if it is a JSON object of storable text, else raise."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field_name} must be a JSON object", field=field_name)
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationError(
            f"{field_name} must contain only JSON values", field=field_name
        ) from None
    # The encoding escapes NUL as \u0000 (which PostgreSQL's JSONB refuses), so the
    # strings themselves are checked, keys included.
    _check_strings(field_name, value)
    check_text(field_name, encoded, max_chars=max_chars)
    return dict(value)


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
    check_text("content", message.content, max_chars=max_chars)
    tool_calls = check_tool_calls("tool_calls", message.tool_calls)
    if tool_calls and role is not Role.ASSISTANT:
        raise ValidationError("only assistant messages carry tool_calls", field="tool_calls")
    if role is Role.TOOL:
        if not message.tool_call_id or not check_text("tool_call_id", message.tool_call_id):
            raise ValidationError("a tool message needs a tool_call_id", field="tool_call_id")
    elif message.tool_call_id is not None:
        raise ValidationError("only tool messages carry a tool_call_id", field="tool_call_id")
    if message.name is not None:
        check_text("name", message.name, max_chars=256)
    metadata = check_metadata("metadata", message.metadata, max_chars=max_chars)
    return ChatMessage(
        role=role,
        content=message.content,
        tool_calls=tool_calls,
        tool_call_id=message.tool_call_id,
        name=message.name,
        metadata=metadata,
    )
