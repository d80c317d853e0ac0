"""How `POST /chatkit` answers (`chatledger.api.routes.chatkit` imports this on first use).

Every ChatKit request comes here, as JSON; the answer is JSON, or server-sent events for
the requests that stream (`chatledger.integrations.chatkit` runs them). The user is the
bearer token's subject. A request ChatKit's own types do not accept is 422, as is one that
cannot be taken as it is (attachments, a message that is not storable text): refused
before anything is stored. Errors found before an answer starts (another user's thread:
404) are answered with the status and error body of every other route; once events
stream, ChatKit's `error` event says what went wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from chatkit.server import StreamingResult
from chatkit.types import (
    ChatKitReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsRetryAfterItemReq,
    UserMessageInput,
)
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError as PydanticValidationError

from chatledger.api.guards import StreamLimiter
from chatledger.domain import check_written_text
from chatledger.errors import ValidationError
from chatledger.integrations.chatkit import (
    ChatKitContext,
    ChatLedgerChatKitServer,
    ChatLedgerStore,
    check_user_input,
)

__all__ = ["answer"]

_REQUEST: Final[TypeAdapter[ChatKitReq]] = TypeAdapter(ChatKitReq)


def _check_input(message: UserMessageInput, *, max_chars: int, max_stored_chars: int) -> None:
    """Refuse, before anything is stored, a user message chatledger cannot take: its text
    as the chat API would (at most `max_chars`), and the message that keeps it (its item's
    JSON included: a quoted text, a tag's data) as the store would."""
    if message.attachments:
        raise ValidationError(
            "attachments are not supported: chatledger keeps no files",
            field="params.input.attachments",
            code="attachments_unsupported",
        )
    text = "".join(part.text for part in message.content)
    check_written_text("params.input.content", text, max_chars=max_chars)
    if not text.strip():
        raise ValidationError("the message is empty", field="params.input.content")
    # A new thread is stored before its message, and must not be left without it.
    try:
        check_user_input(message, max_chars=max_stored_chars)
    except ValidationError as error:
        error.field = "params.input"
        raise


def _server(app: FastAPI) -> ChatLedgerChatKitServer:
    """The app's ChatKit server, made on its first request (nothing awaits in between, so
    two first requests cannot make two)."""
    server: ChatLedgerChatKitServer | None = getattr(app.state, "chatkit", None)
    if server is None:
        store = ChatLedgerStore(app.state.store)
        server = app.state.chatkit = ChatLedgerChatKitServer(store, app.state.service)
    return server


async def answer(request: Request, user_id: str, streams: StreamLimiter) -> Response:
    """One ChatKit request, answered as JSON or as a stream of ChatKit events."""
    body = await request.body()
    try:
        parsed = _REQUEST.validate_json(body)
    except PydanticValidationError as error:
        problems = error.errors()
        where = ".".join(str(part) for part in problems[0]["loc"]) if problems else ""
        message = problems[0]["msg"] if problems else "not a ChatKit request"
        raise ValidationError(f"{where or 'body'}: {message}", field=where or "body") from None
    if isinstance(parsed, ThreadsCreateReq | ThreadsAddUserMessageReq):
        _check_input(
            parsed.params.input,
            max_chars=request.app.state.max_message_chars,
            max_stored_chars=request.app.state.store.max_message_chars,
        )
    server = _server(request.app)
    context = ChatKitContext(user_id=user_id)
    if isinstance(parsed, ThreadsRetryAfterItemReq):
        # The SDK answers a retry from an item the thread does not have with nothing at
        # all: a missing item (or another user's) is 404, as everywhere else.
        await server.store.load_item(parsed.params.thread_id, parsed.params.item_id, context)
    result = await server.process(body, context)
    if not isinstance(result, StreamingResult):
        return Response(result.json, media_type="application/json")
    events = aiter(result)  # bytes: each a framed `data: …` line
    # A stream counts among the user's open streams, as `/api/{user_id}/chat/stream`'s do
    # (refused, 429, before anything is done).
    held = streams.hold(user_id)
    # The first event is produced before the answer starts, so that what fails first (a
    # thread that is not the user's) is a plain error response, not a broken stream.
    opening: list[bytes] = []
    try:
        opening.append(await anext(events))
    except StopAsyncIteration:  # nothing to tell
        pass
    except ValueError as error:
        held.release()
        # How the ChatKit SDK refuses a request the thread cannot take: a tool output
        # where no client tool call waits, a retry from an item that is not a user's.
        raise ValidationError(str(error)[:200], field="params", code="not_applicable") from None
    except BaseException:
        held.release()
        raise

    async def stream() -> AsyncIterator[bytes]:
        for event in opening:
            yield event
        async for event in events:
            yield event

    return held.respond(StreamingResponse(stream(), media_type="text/event-stream"))
