"""The OpenAI Conversations API's view of chatledger's conversations.

What `/v1` (`chatledger.api.routes.openai_conversations`) shows and accepts, apart from
HTTP:

- ids: a conversation's is `conv_` and chatledger's id. An item's is made of its
  message's seq, and, for a message chatledger wrote that reads as several items (text
  and tool calls), the item's place in it: `msg_12`, `fc_13`, `fc_13_1`. An id says
  where the item is, so finding it needs no lookup.
- items as the API returns them: what was stored (`chatledger.integrations.items`), with
  that id in place of any the item came with, and messages in OpenAI's full form (a
  `type`, a `status`, content as a list of parts), as OpenAI's own API returns them;
- items as the API accepts them: at most 20 a request, each of a type OpenAI's API
  knows, no more than its own API would;
- conversation metadata as OpenAI allows it: at most 16 pairs of strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from chatledger.domain import ChatMessage, Message
from chatledger.errors import ValidationError
from chatledger.integrations.items import item_of, messages_of

__all__ = [
    "INCLUDABLE",
    "ITEM_TYPES",
    "MAX_ITEMS_PER_REQUEST",
    "check_openai_metadata",
    "conversation_id_of",
    "item_position",
    "messages_of_new_items",
    "public_conversation_id",
    "public_items",
]

# The item types of OpenAI's Responses input (`ResponseInputItemParam`); a test checks
# this against the installed `openai` package. "message" includes the easy form, which
# has a role and no type.
ITEM_TYPES: Final = frozenset(
    {
        "message",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "web_search_call",
        "function_call",
        "function_call_output",
        "tool_search_call",
        "tool_search_output",
        "additional_tools",
        "configuration_update",
        "reasoning",
        "compaction",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call_output",
        "custom_tool_call",
        "compaction_trigger",
        "item_reference",
        "program",
        "program_output",
    }
)
# What `include` may ask for (`ResponseIncludable`). Items are kept whole, so each is
# always in already: the parameter is checked, and changes nothing.
INCLUDABLE: Final = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
MAX_ITEMS_PER_REQUEST: Final = 20
_MAX_METADATA_PAIRS: Final = 16
_MAX_METADATA_KEY: Final = 64
_MAX_METADATA_VALUE: Final = 512

_CONVERSATION_PREFIX: Final = "conv_"
# As OpenAI's ids begin, for the types that have a common one; "item" for the rest.
_PREFIXES: Final = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}
# A message's place among its items has no bound of its own: a message chatledger wrote
# may call any number of tools, each an item.
_ITEM_ID: Final = re.compile(r"(msg|fc|fco|rs|item)_([1-9][0-9]{0,17})(?:_([1-9][0-9]{0,17}))?")


def public_conversation_id(conversation_id: str) -> str:
    return _CONVERSATION_PREFIX + conversation_id


def conversation_id_of(public_id: str) -> str:
    """chatledger's id for a `/v1` conversation id.

    Raises:
        ValidationError: `invalid_id`, it does not begin with `conv_`.
    """
    if not public_id.startswith(_CONVERSATION_PREFIX) or public_id == _CONVERSATION_PREFIX:
        raise ValidationError(
            "invalid conversation id: expected an id that begins with 'conv_'",
            field="conversation_id",
            code="invalid_id",
        )
    return public_id.removeprefix(_CONVERSATION_PREFIX)


def item_position(item_id: str, *, field: str = "item_id") -> tuple[int, int]:
    """Where item `item_id` is: its message's seq and its place among that message's items.

    Raises:
        ValidationError: `invalid_id`, it is not an item id chatledger gives.
    """
    matched = _ITEM_ID.fullmatch(item_id)
    if matched is None:
        raise ValidationError(
            f"invalid item id {item_id[:100]!r}: expected one like 'msg_12'",
            field=field,
            code="invalid_id",
        )
    return int(matched[2]), int(matched[3] or 0)


def _kind(item: Mapping[str, Any]) -> str:
    kind = item.get("type")
    if isinstance(kind, str):
        return kind
    return "message" if "role" in item else "item_reference"


def _full_message(item: Mapping[str, Any]) -> dict[str, Any]:
    # The easy form's string content becomes the one text part OpenAI stores for it.
    content = item.get("content")
    if isinstance(content, str):
        if item.get("role") == "assistant":
            content = [{"type": "output_text", "text": content, "annotations": []}]
        else:
            content = [{"type": "input_text", "text": content}]
    shown = {"type": "message", "status": "completed", **item, "content": content}
    shown["type"] = "message"  # an easy message given with `"type": null` is one too
    return shown


def public_items(message: Message) -> list[dict[str, Any]]:
    """The items `message` reads as under `/v1`, each with its id, in order."""
    public = []
    for index, item in enumerate(item_of(message)):
        kind = _kind(item)
        shown = _full_message(item) if kind == "message" else {**item, "type": kind}
        suffix = f"_{index}" if index else ""
        shown["id"] = f"{_PREFIXES.get(kind, 'item')}_{message.seq}{suffix}"
        public.append(shown)
    return public


def messages_of_new_items(items: object, *, allow_none: bool = False) -> list[ChatMessage]:
    """The messages that store `items`, given to `/v1`: one to twenty (none, too, when
    `allow_none`) JSON objects, each of a type OpenAI's API knows.

    Raises:
        ValidationError: too many or too few items, an item of an unknown type, or one
            `messages_of` refuses; naming the item.
    """
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ValidationError("items must be a list of items", field="items")
    if len(items) > MAX_ITEMS_PER_REQUEST or not (items or allow_none):
        raise ValidationError(
            f"items must hold 1 to {MAX_ITEMS_PER_REQUEST} items, not {len(items)}",
            field="items",
            code="invalid_item_count",
        )
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue  # messages_of names it
        kind = _kind(item)
        if kind not in ITEM_TYPES:
            raise ValidationError(
                f"items[{index}].type {str(item.get('type'))[:100]!r} is not an item type",
                field=f"items[{index}].type",
                code="unknown_item_type",
            )
        if kind == "message" and not isinstance(item.get("content"), str | list):
            raise ValidationError(
                f"items[{index}].content must be a string or a list of parts",
                field=f"items[{index}].content",
            )
    return messages_of(items)


def check_openai_metadata(metadata: object) -> dict[str, str]:
    """Conversation metadata as OpenAI allows it: at most 16 pairs, keys of at most 64
    characters, string values of at most 512.

    Raises:
        ValidationError: anything else.
    """
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata must be an object", field="metadata")
    if len(metadata) > _MAX_METADATA_PAIRS:
        raise ValidationError(
            f"metadata holds at most {_MAX_METADATA_PAIRS} pairs", field="metadata"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > _MAX_METADATA_KEY:
            raise ValidationError(
                f"metadata keys are strings of at most {_MAX_METADATA_KEY} characters",
                field="metadata",
            )
        if not isinstance(value, str) or len(value) > _MAX_METADATA_VALUE:
            raise ValidationError(
                f"metadata.{key[:64]} must be a string of at most {_MAX_METADATA_VALUE} characters",
                field="metadata",
            )
    return dict(metadata)
