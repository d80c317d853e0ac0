"""The OpenAI Conversations API under `/v1`, on the same conversations as `/api/{user_id}`.

The official `openai` client works unchanged but for `base_url` (this server's `/v1`) and
`api_key` (a chatledger token: the user is its subject). Shapes, ids, list envelopes and
errors are OpenAI's; what chatledger decides for itself is said where it is done:

- `include` is checked and changes nothing: items are kept whole, so everything it could
  ask for is in them already.
- deleting an item makes a new version of the conversation's branch without it (the
  items after it get new ids); the old version stays, as after an edit. Deleting a
  function call whose output follows it is 422 `would_split_tool_call`.
- a conversation deleted here is gone from `/api` too: it is the same conversation.

These operations are documented by OpenAI's API reference, not in this server's schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from chatledger.api.dependencies import Store, TokenUser
from chatledger.domain import ChatMessage, Conversation, Message
from chatledger.errors import NotFoundError, ValidationError
from chatledger.integrations.conversation_items import (
    INCLUDABLE,
    check_openai_metadata,
    conversation_id_of,
    item_position,
    messages_of_new_items,
    public_conversation_id,
    public_items,
)
from chatledger.integrations.items import item_of
from chatledger.store import SQLAlchemyStore

router = APIRouter(prefix="/v1/conversations", include_in_schema=False)

_MAX_LIST_LIMIT: Final = 100


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] | None = None
    metadata: Any = None
    # Accepted as OpenAI's API accepts it; chatledger monitors nothing with it.
    safety_identifier: str | None = None


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: Any


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any]


def _conversation(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": public_conversation_id(conversation.id),
        "object": "conversation",
        "created_at": int(conversation.created_at.timestamp()),
        "metadata": conversation.metadata,
    }


async def _include(request: Request) -> None:
    """Checks `include` (`include[]=…` as the `openai` client sends it, or `include=…`)."""
    params = request.query_params
    for value in params.getlist("include") + params.getlist("include[]"):
        if value not in INCLUDABLE:
            raise ValidationError(
                f"include: {value[:100]!r} is not one of {', '.join(sorted(INCLUDABLE))}",
                field="include",
            )


_INCLUDE: Final = [Depends(_include)]


def _item_list(items: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


@router.post("")
async def create_openai_conversation(
    body: ConversationCreate, user_id: TokenUser, store: Store
) -> dict[str, Any]:
    """A conversation, with up to 20 first items, all or none."""
    messages = messages_of_new_items(body.items or [], allow_none=True)
    metadata = {} if body.metadata is None else check_openai_metadata(body.metadata)
    async with store.transaction() as unit:
        conversation = await unit.create_conversation(user_id, metadata=metadata)
        if messages:
            await unit.append(user_id, conversation.id, messages)
    return _conversation(conversation)


@router.get("/{conversation_id}")
async def get_openai_conversation(
    conversation_id: str, user_id: TokenUser, store: Store
) -> dict[str, Any]:
    conversation = await store.get_conversation(user_id, conversation_id_of(conversation_id))
    return _conversation(conversation)


@router.post("/{conversation_id}")
async def update_openai_conversation(
    conversation_id: str, body: ConversationUpdate, user_id: TokenUser, store: Store
) -> dict[str, Any]:
    """Replace the conversation's metadata (null clears it)."""
    own_id = conversation_id_of(conversation_id)
    metadata = {} if body.metadata is None else check_openai_metadata(body.metadata)
    return _conversation(await store.update_conversation(user_id, own_id, metadata=metadata))


@router.delete("/{conversation_id}")
async def delete_openai_conversation(
    conversation_id: str, user_id: TokenUser, store: Store
) -> dict[str, Any]:
    await store.delete_conversation(user_id, conversation_id_of(conversation_id))
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.post("/{conversation_id}/items", dependencies=_INCLUDE)
async def create_openai_items(
    conversation_id: str,
    body: ItemsCreate,
    user_id: TokenUser,
    store: Store,
) -> dict[str, Any]:
    """Append up to 20 items, all or none; answers them, with their ids."""
    own_id = conversation_id_of(conversation_id)
    stored = await store.append(user_id, own_id, messages_of_new_items(body.items))
    return _item_list([item for m in stored for item in public_items(m)], has_more=False)


@router.get("/{conversation_id}/items", dependencies=_INCLUDE)
async def list_openai_items(
    conversation_id: str,
    user_id: TokenUser,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=_MAX_LIST_LIMIT)] = 20,
    after: Annotated[str | None, Query()] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> dict[str, Any]:
    """The items of the conversation's current branch, a page at a time, newest first
    unless `order=asc`; `after` is the last id of the page before."""
    own_id = conversation_id_of(conversation_id)
    cursor = None if after is None else item_position(after, field="after")
    # A message is at least one item: one more message than the page (and the cursor's
    # own message, whose items before the cursor are left out) always tells whether
    # there are more.
    wanted = limit + 2
    if order == "asc":
        messages = await store.history(
            user_id,
            own_id,
            limit=wanted,
            after_seq=None if cursor is None else cursor[0] - 1,
            oldest_first=True,
        )
        positioned = _positioned(messages)
        if cursor is not None:
            positioned = [(place, item) for place, item in positioned if place > cursor]
    else:
        messages = await store.history(
            user_id, own_id, limit=wanted, before_seq=None if cursor is None else cursor[0] + 1
        )
        positioned = _positioned(messages)[::-1]
        if cursor is not None:
            positioned = [(place, item) for place, item in positioned if place < cursor]
    page = [item for _, item in positioned[:limit]]
    return _item_list(page, has_more=len(positioned) > limit)


def _positioned(messages: list[Message]) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    return [
        ((message.seq, index), item)
        for message in messages
        for index, item in enumerate(public_items(message))
    ]


async def _item(
    store: SQLAlchemyStore, user_id: str, conversation_id: str, item_id: str
) -> tuple[Message, int, dict[str, Any]]:
    """The message item `item_id` is part of, its place in it, and the item: only if it
    is on the conversation's current branch."""
    seq, index = item_position(item_id)
    on_branch = await store.history(
        user_id, conversation_id, limit=1, after_seq=seq - 1, before_seq=seq + 1
    )
    items = public_items(on_branch[0]) if on_branch else []
    if index >= len(items) or items[index]["id"] != item_id:
        raise NotFoundError(f"no item {item_id} in this conversation")
    return on_branch[0], index, items[index]


@router.get("/{conversation_id}/items/{item_id}", dependencies=_INCLUDE)
async def get_openai_item(
    conversation_id: str,
    item_id: str,
    user_id: TokenUser,
    store: Store,
) -> dict[str, Any]:
    own_id = conversation_id_of(conversation_id)
    return (await _item(store, user_id, own_id, item_id))[2]


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_openai_item(
    conversation_id: str, item_id: str, user_id: TokenUser, store: Store
) -> dict[str, Any]:
    """Take an item off the conversation's current branch; answers the conversation."""
    own_id = conversation_id_of(conversation_id)
    message, index, _ = await _item(store, user_id, own_id, item_id)
    await store.remove_from_branch(
        user_id, own_id, message.seq, replacement=_without_item(message, index)
    )
    return _conversation(await store.get_conversation(user_id, own_id))


def _without_item(message: Message, index: int) -> ChatMessage | None:
    """What stays of a message when its item `index` goes: nothing, for a message that
    is one item; for one chatledger wrote that reads as several (its text, then one
    function call per tool call), the message without that text or that call."""
    items = item_of(message)
    if len(items) == 1:
        return None
    removed = items[index]
    calls = message.tool_calls
    if removed.get("type") == "function_call":
        calls = [call for call in calls if call.id != removed["call_id"]]
    text = "" if removed.get("type") != "function_call" else message.content
    return ChatMessage(role=message.role, content=text, tool_calls=calls, metadata=message.metadata)
