"""OpenAI Responses items <-> chatledger messages, one item to one message.

Shared by the Agents SDK session and the Conversations API: both store the items the
OpenAI stack speaks (`agents.TResponseInputItem`: plain JSON objects) as messages of a
conversation, readable by every other chatledger reader.

Each stored item keeps its original JSON, exactly, in the message's metadata under
`OPENAI_ITEM`, so reading it back gives what was added, field by field, fields unknown to
us today included. The message's own fields are derived from it for chatledger's readers
(the messages API, the web page, the context builder):

- `{"role": user | system | developer | assistant, "content": ...}` and `type: "message"`
  items: a message of that role (developer: system) with the text of their text parts;
- `function_call`: an assistant message with one `ToolCall(call_id, name, arguments)`;
- `function_call_output`: a tool message answering `call_id`;
- anything else (reasoning, hosted, custom, MCP, computer, shell ... tool calls and their
  outputs, compaction, item references): an assistant message with no content and no
  tool calls. The item is kept as it is.

An item kept as it is has no tool pair in chatledger's sense, so it can never break one;
the context builder leaves it out of a chat model's input (it holds nothing a model reads
as text), and the messages API shows it as an empty assistant message with the item in
its metadata.

Messages chatledger wrote itself (without `OPENAI_ITEM`: a conversation started through
the chat API) read as the items the SDK would have stored for them: text as easy input
messages, tool calls as `function_call`, tool results as `function_call_output`.

This module imports nothing from the Agents SDK: items are plain JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from chatledger.domain import (
    MAX_CALL_FIELD_CHARS,
    OPENAI_ITEM,
    ChatMessage,
    Role,
    ToolCall,
    check_metadata,
    is_kept_item,
)
from chatledger.errors import TooLargeError, ValidationError

__all__ = ["OPENAI_ITEM", "is_kept_item", "item_of", "items_of", "message_of_item", "messages_of"]

_MESSAGE_ROLES: Final = {
    "user": Role.USER,
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "assistant": Role.ASSISTANT,
}
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text", "refusal"})
# Control characters chatledger refuses in what people write (domain.check_written_text):
# a user item's derived text drops them (the item itself keeps them).
_CONTROLS: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") in _TEXT_PARTS:
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                texts.append(text)
    return "".join(texts)


def _required_text(item: Mapping[str, Any], field: str, where: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{where}.{field} must be a non-empty string", field=where)
    if len(value) > MAX_CALL_FIELD_CHARS:
        # A tool message keeps its call's id and name in columns of this size.
        raise TooLargeError(
            f"{where}.{field} is longer than {MAX_CALL_FIELD_CHARS} characters", field=where
        )
    return value


def message_of_item(
    item: object, *, where: str = "item", call_names: Mapping[str, str] | None = None
) -> ChatMessage:
    """The message that stores `item` (see the module docstring for the mapping).

    Args:
        item: one Responses input item, a JSON object.
        where: how errors name the item (`items[3]`).
        call_names: tool names by call id, to name a `function_call_output`'s tool.

    Raises:
        ValidationError: not a JSON object of storable text (no NUL, no lone surrogate,
            nested at most 32 deep), no string `type` (nor a message's `role` or an
            item reference's `id`), a message of another role, or a
            function call or output without its `call_id` (or `name`).
    """
    if not isinstance(item, Mapping):
        raise ValidationError(f"{where} must be a JSON object", field=where)
    metadata = {OPENAI_ITEM: check_metadata(where, item)}
    kind = item.get("type")
    if kind is None:  # an easy input message, or an item reference (its type is optional)
        kind = "message" if "role" in item else "item_reference" if "id" in item else None
    if not isinstance(kind, str) or not kind:
        raise ValidationError(f"{where} has no type", field=where)
    if kind == "message":
        # Any JSON may be given as a role: a list or an object is no key to look up.
        given = item.get("role")
        role = _MESSAGE_ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            raise ValidationError(
                f"{where}.role must be one of user, system, developer, assistant", field=where
            )
        text = _text(item.get("content"))
        if role is Role.USER:
            text = _CONTROLS.sub("", text.replace("\r\n", "\n"))
        return ChatMessage(role=role, content=text, metadata=metadata)
    if kind == "function_call":
        arguments = item.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        call = ToolCall(
            _required_text(item, "call_id", where), _required_text(item, "name", where), arguments
        )
        return ChatMessage(role=Role.ASSISTANT, tool_calls=(call,), metadata=metadata)
    if kind == "function_call_output":
        call_id = _required_text(item, "call_id", where)
        output = item.get("output", "")
        content = output if isinstance(output, str) else _text(output)
        if not isinstance(output, str) and not content:
            content = json.dumps(output, ensure_ascii=False)
        return ChatMessage(
            role=Role.TOOL,
            content=content,
            tool_call_id=call_id,
            name=(call_names or {}).get(call_id),
            metadata=metadata,
        )
    return ChatMessage(role=Role.ASSISTANT, metadata=metadata)


def messages_of(items: Sequence[object]) -> list[ChatMessage]:
    """The messages that store `items`, in order, one each; a `function_call_output`
    takes its tool's name from a `function_call` among `items`.

    Raises:
        ValidationError: `items` is not a list, or an item is invalid (naming it).
    """
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ValidationError("items must be a list of JSON objects", field="items")
    names: dict[str, str] = {}
    messages = []
    for index, item in enumerate(items):
        message = message_of_item(item, where=f"items[{index}]", call_names=names)
        for call in message.tool_calls:
            names[call.id] = call.name
        messages.append(message)
    return messages


def item_of(message: ChatMessage) -> list[dict[str, Any]]:
    """The items `message` reads as: the one it stores, or, for a message chatledger wrote
    itself, the items the Agents SDK stores for such a message (an assistant message with
    text and tool calls is its text, then one `function_call` per call)."""
    stored = message.metadata.get(OPENAI_ITEM)
    if isinstance(stored, Mapping):
        return [dict(stored)]
    return native_items(message)


def native_items(message: ChatMessage) -> list[dict[str, Any]]:
    """The items the Agents SDK keeps for a message of this shape, from its fields alone:
    a tool message is a `function_call_output`; any other is its text (if it has any, or
    no tool calls), then one `function_call` per call, so each call keeps its result."""
    if message.role is Role.TOOL:
        return [
            {
                "type": "function_call_output",
                "call_id": message.tool_call_id or "",
                "output": message.content,
            }
        ]
    items: list[dict[str, Any]] = []
    if message.content or not message.tool_calls:
        items.append({"role": message.role.value, "content": message.content})
    items.extend(
        {
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }
        for call in message.tool_calls
    )
    return items


def items_of(messages: Iterable[ChatMessage]) -> list[dict[str, Any]]:
    """The items `messages` read as, in order (see `item_of`)."""
    return [item for message in messages for item in item_of(message)]
