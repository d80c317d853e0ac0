"""How a chatledger turn's stream becomes ChatKit events, where the foreseen ids and the
stored ones differ: what was streamed is taken back and the stored items told instead."""

from __future__ import annotations

from chatkit.types import (
    AssistantMessageItem,
    TaskItem,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemReplacedEvent,
)

from chatledger.domain import Message, Role, StreamEvent, ToolCall
from chatledger.integrations.chatkit import ChatKitContext, _TurnItems
from chatledger.store.core import utcnow


def _message(seq: int, role: Role, content: str = "", **fields: object) -> Message:
    return Message(
        conversation_id="c", seq=seq, id=f"m{seq}", role=role, content=content,
        created_at=utcnow(), **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def test_items_streamed_under_ids_the_turn_did_not_get_are_put_right() -> None:
    context = ChatKitContext(user_id="alice")
    # Foreseen: the turn's messages from seq 5; another writer took 5 first.
    turn = _TurnItems("c", context, next_seq=5)
    streamed = []
    for name, data in (
        ("delta", {"text": "On it."}),
        ("tool_call", {"id": "call_1", "name": "add_task", "arguments": {}}),
        ("tool_result", {"id": "call_1", "result": {"id": 1}}),
        ("done", {"response": "Added."}),
    ):
        streamed += turn.events(StreamEvent(id=f"t:{len(streamed)}", name=name, data=data))
    shown = {e.item.id for e in streamed if isinstance(e, ThreadItemDoneEvent)}
    assert shown == {"cl_5", "cl_6", "cl_7"}
    stored = [
        _message(6, Role.ASSISTANT, "On it.", tool_calls=(ToolCall("call_1", "add_task", "{}"),)),
        _message(7, Role.TOOL, '{"id": 1}', tool_call_id="call_1", name="add_task"),
        _message(8, Role.ASSISTANT, "Added."),
    ]
    fixes = turn.reconcile(stored)
    assert {e.item_id for e in fixes if isinstance(e, ThreadItemRemovedEvent)} == {"cl_5"}
    told = {e.item.id: e.item for e in fixes if isinstance(e, ThreadItemDoneEvent)}
    assert set(told) == {"cl_8"}
    # cl_6 was shown as the task and cl_7 as the reply: each is replaced by what it is.
    replaced = {e.item.id: e.item for e in fixes if isinstance(e, ThreadItemReplacedEvent)}
    assert isinstance(replaced["cl_6"], AssistantMessageItem)
    assert isinstance(replaced["cl_7"], TaskItem)
    # The SDK stores none of them again.
    assert context.turn_items >= {"cl_5", "cl_6", "cl_7", "cl_8"}


def test_nothing_is_put_right_when_the_ids_were_foreseen() -> None:
    turn = _TurnItems("c", ChatKitContext(user_id="alice"), next_seq=2)
    turn.events(StreamEvent(id="t:1", name="done", data={"response": "Hi."}))
    assert turn.reconcile([_message(2, Role.ASSISTANT, "Hi.")]) == []
