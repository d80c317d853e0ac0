"""The Conversations API's view of items: the types it accepts are the SDK's, and an item's
id says exactly where the item is."""

from __future__ import annotations

import typing

import pytest
from openai.types.responses import response_includable

from chatledger.domain import ChatMessage, Message, Role, ToolCall
from chatledger.errors import ValidationError
from chatledger.integrations.conversation_items import (
    INCLUDABLE,
    ITEM_TYPES,
    item_position,
    public_items,
)
from chatledger.store.core import utcnow
from tests.integrations.items_examples import sdk_item_types


def test_the_accepted_types_are_the_installed_sdks() -> None:
    assert sdk_item_types() | {"message"} == ITEM_TYPES
    assert set(typing.get_args(response_includable.ResponseIncludable)) == INCLUDABLE


def _stored(message: ChatMessage, seq: int) -> Message:
    return Message(
        conversation_id="c",
        seq=seq,
        id=f"m{seq}",
        role=message.role,
        content=message.content,
        tool_calls=tuple(message.tool_calls),
        tool_call_id=message.tool_call_id,
        name=message.name,
        metadata=message.metadata,
        created_at=utcnow(),
    )


def test_every_id_leads_back_to_its_item() -> None:
    calls = [ToolCall(f"c{n}", "f", "{}") for n in range(3)]
    messages = [
        _stored(ChatMessage.user("hi"), 1),
        _stored(ChatMessage.assistant("on it", tool_calls=calls), 2),
        _stored(ChatMessage.assistant(tool_calls=calls[:2]), 3),
        _stored(ChatMessage(role=Role.TOOL, content="1", tool_call_id="c0"), 4),
    ]
    ids = [item["id"] for m in messages for item in public_items(m)]
    assert ids == ["msg_1", "msg_2", "fc_2_1", "fc_2_2", "fc_2_3", "fc_3", "fc_3_1", "fco_4"]
    for message in messages:
        for index, item in enumerate(public_items(message)):
            assert item_position(item["id"]) == (message.seq, index)


@pytest.mark.parametrize(
    "bad", ["", "msg", "msg_", "msg_0", "msg_01", "msg_1_0", "msg_1_", "fc_-1", "xyz_1", "msg_1 "]
)
def test_an_id_chatledger_never_gives_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as refused:
        item_position(bad)
    assert refused.value.code == "invalid_id"
