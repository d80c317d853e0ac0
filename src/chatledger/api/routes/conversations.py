"""Conversations of a user and their messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sse_starlette import EventSourceResponse

from chatledger.api.dependencies import CurrentUser, Service, Store, Streams
from chatledger.api.openapi import AUTHENTICATED, errors, event_stream
from chatledger.api.routes.chat import KEEP_ALIVE_SECONDS, sse
from chatledger.api.schemas import (
    MAX_SEQ,
    ConversationCreate,
    ConversationDetail,
    ConversationPage,
    ConversationPublic,
    ConversationUpdate,
    ForkRequest,
    HeadUpdate,
    MessagePage,
    MessagePublic,
    StopResponse,
)

router = APIRouter(
    prefix="/api/{user_id}/conversations", tags=["conversations"], responses=AUTHENTICATED
)


@router.get("", response_model=ConversationPage, responses=errors(422))
async def list_conversations(
    user_id: CurrentUser,
    store: Store,
    limit: Annotated[int, Query(ge=1, description="At most 100 are returned.")] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    archived: Annotated[
        bool, Query(description="List the archived conversations instead of the others.")
    ] = False,
    pinned: Annotated[
        bool | None, Query(description="Only pinned (true) or only unpinned (false) ones.")
    ] = None,
) -> ConversationPage:
    """The user's conversations, pinned first, then most recently updated first (no
    message bodies); archived ones only with `?archived=true`."""
    page = await store.list_conversations(
        user_id, limit=limit, cursor=cursor, archived=archived, pinned=pinned
    )
    return ConversationPage(
        items=[ConversationPublic.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "", response_model=ConversationPublic, status_code=201, responses=errors(408, 413, 422)
)
async def create_conversation(
    body: ConversationCreate, user_id: CurrentUser, store: Store
) -> ConversationPublic:
    """Start an empty conversation."""
    conversation = await store.create_conversation(
        user_id, title=body.title, metadata=body.metadata, temporary=body.temporary
    )
    return ConversationPublic.of(conversation)


@router.get("/{conversation_id}", response_model=ConversationDetail, responses=errors(404))
async def get_conversation(
    conversation_id: str, user_id: CurrentUser, store: Store, service: Service
) -> ConversationDetail:
    """One conversation, with what its next turn would send the agent (404 alike when it
    is missing or another user's)."""
    conversation = await store.get_conversation(user_id, conversation_id)
    tokens, summary_upto_seq = await service.context_tokens(user_id, conversation_id)
    return ConversationDetail(
        **ConversationPublic.of(conversation).model_dump(),
        context_tokens=tokens,
        summary_upto_seq=summary_upto_seq,
    )


@router.patch(
    "/{conversation_id}", response_model=ConversationPublic, responses=errors(404, 408, 413, 422)
)
async def update_conversation(
    conversation_id: str, body: ConversationUpdate, user_id: CurrentUser, store: Store
) -> ConversationPublic:
    """Rename a conversation (`"title": null` clears it), replace its metadata, pin it or
    archive it. Pinning and archiving do not count as activity: `updated_at` stays."""
    changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
    for name in ("metadata", "pinned", "archived"):
        if name in changes and changes[name] is None:
            del changes[name]  # null for these means: leave it as it is
    conversation = await store.update_conversation(user_id, conversation_id, **changes)
    return ConversationPublic.of(conversation)


@router.delete("/{conversation_id}", status_code=204, responses=errors(404))
async def delete_conversation(conversation_id: str, user_id: CurrentUser, store: Store) -> Response:
    """Delete a conversation and all of its messages."""
    await store.delete_conversation(user_id, conversation_id)
    return Response(status_code=204)


@router.post(
    "/{conversation_id}/stop",
    response_model=StopResponse,
    status_code=202,
    responses={
        200: {"model": StopResponse, "description": "No turn was running."},
        **errors(404),
    },
)
async def stop_turn(
    conversation_id: str, user_id: CurrentUser, service: Service, response: Response
) -> StopResponse:
    """Stop the turn running in this conversation, on whichever replica runs it."""
    stopping = await service.stop(user_id, conversation_id)
    if not stopping:
        response.status_code = 200
    return StopResponse(stopping=stopping)


@router.get(
    "/{conversation_id}/stream",
    response_class=EventSourceResponse,
    responses={
        200: event_stream("The running turn's events, from the first or after Last-Event-ID."),
        204: {"description": "No turn is running in this conversation."},
        **errors(404, 422, 429),
    },
)
async def attach_stream(
    conversation_id: str,
    user_id: CurrentUser,
    service: Service,
    streams: Streams,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Resume after this event.", max_length=200),
    ] = None,
) -> Response:
    """Follow the turn running in this conversation, from its start or after
    `Last-Event-ID`, as the replica running it streams it (204 if none is running)."""
    held = streams.hold(user_id)
    try:
        events = await service.attach(user_id, conversation_id, last_event_id=last_event_id)
    except BaseException:
        held.release()
        raise
    if events is None:
        held.release()
        return Response(status_code=204)
    return held.respond(EventSourceResponse(sse(None, events, None), ping=KEEP_ALIVE_SECONDS))


@router.get("/{conversation_id}/messages", response_model=MessagePage, responses=errors(404, 422))
async def list_messages(
    conversation_id: str,
    user_id: CurrentUser,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_SEQ,
            description="Only the branch's messages before this seq (paging back).",
        ),
    ] = None,
    head: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_SEQ, description="Read the branch ending at this message, not the head's."
        ),
    ] = None,
) -> MessagePage:
    """The latest messages of the head's branch (or `head`'s), oldest first, with tool calls
    and results, and each message's versions."""
    # One more than asked tells whether older messages remain, in the same query.
    messages = await store.history(
        user_id, conversation_id, limit=limit + 1, before_seq=before, leaf=head
    )
    has_more = len(messages) > limit
    page = messages[-limit:]
    versions = await store.siblings(user_id, conversation_id, page)
    return MessagePage(
        items=[MessagePublic.of(m, versions[m.seq]) for m in page], has_more=has_more
    )


@router.put(
    "/{conversation_id}/head",
    response_model=ConversationPublic,
    responses=errors(404, 408, 409, 413, 422),
)
async def set_head(
    conversation_id: str, body: HeadUpdate, user_id: CurrentUser, store: Store
) -> ConversationPublic:
    """Continue from another branch: the head becomes the newest message at or below
    `seq` (so a version's whole branch shows), for every replica. 409 while a turn runs."""
    await store.set_head(user_id, conversation_id, body.seq)
    return ConversationPublic.of(await store.get_conversation(user_id, conversation_id))


@router.post(
    "/{conversation_id}/fork",
    response_model=ConversationPublic,
    status_code=201,
    responses=errors(404, 408, 413, 422),
)
async def fork(
    conversation_id: str, user_id: CurrentUser, store: Store, body: ForkRequest | None = None
) -> ConversationPublic:
    """A new conversation holding a copy of one branch, up to `upto_seq` (default: the
    head), numbered from 1; the source is unchanged."""
    upto = None if body is None else body.upto_seq
    return ConversationPublic.of(await store.fork(user_id, conversation_id, upto_seq=upto))
