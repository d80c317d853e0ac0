"""POST /api/{user_id}/chat: one stateless chat turn, answered whole or streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Path, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatledger.api.dependencies import CurrentUser, Service, Streams
from chatledger.api.errors import error_body
from chatledger.api.metrics import Metrics
from chatledger.api.openapi import AUTHENTICATED, errors, event_stream
from chatledger.api.schemas import MAX_SEQ, ChatRequest, ChatResponse, EditRequest
from chatledger.domain import Branch, StreamEvent, TurnResult
from chatledger.errors import AgentError, ChatLedgerError
from chatledger.service import ChatService

log = structlog.get_logger("chatledger.api")

# Comments every 15 s keep proxies and browsers from closing a quiet stream.
KEEP_ALIVE_SECONDS = 15

router = APIRouter(tags=["chat"], responses=AUTHENTICATED)

MessageSeq = Annotated[int, Path(ge=1, le=MAX_SEQ, description="The user message's seq.")]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retrying with the same key replays the first response.",
    ),
]


def record_turn(metrics: Metrics, result: TurnResult | None, error: Exception | None) -> None:
    """Count a turn's outcome, its agent error and its tool calls."""
    if result is not None:
        metrics.turns.labels("replayed" if result.replayed else "completed").inc()
        if not result.replayed:
            for call in result.tool_calls:
                metrics.tool_calls.labels(call.name, call.result.get("code", "ok")).inc()
    elif isinstance(error, ChatLedgerError):
        metrics.turns.labels(error.code).inc()
        if isinstance(error, AgentError):
            metrics.agent_errors.labels(error.code).inc()


@router.post(
    "/api/{user_id}/chat",
    response_model=ChatResponse,
    response_model_exclude_none=True,
    responses=errors(404, 408, 409, 413, 422, 429, 502, 504),
)
async def chat(
    body: ChatRequest,
    user_id: CurrentUser,
    service: Service,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ChatResponse:
    """Send a message; the agent answers, using tools, and everything is stored."""
    return await _turn(
        request, response, service, user_id, body.conversation_id, body.message,
        idempotency_key=idempotency_key,
    )  # fmt: skip


@router.post(
    "/api/{user_id}/conversations/{conversation_id}/messages/{seq}/edit",
    response_model=ChatResponse,
    response_model_exclude_none=True,
    responses=errors(404, 408, 409, 413, 422, 429, 502, 504),
)
async def edit(
    conversation_id: str,
    seq: MessageSeq,
    body: EditRequest,
    user_id: CurrentUser,
    service: Service,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ChatResponse:
    """Send a new version of user message `seq`: it follows the same message as the
    first version did, and the agent answers it. The first version and everything after
    it stay, on their own branch; the conversation continues from the new one."""
    return await _turn(
        request, response, service, user_id, conversation_id, body.message,
        idempotency_key=idempotency_key, branch=Branch(seq, edit=True),
    )  # fmt: skip


@router.post(
    "/api/{user_id}/conversations/{conversation_id}/messages/{seq}/regenerate",
    response_model=ChatResponse,
    response_model_exclude_none=True,
    responses=errors(404, 409, 422, 429, 502, 504),
)
async def regenerate(
    conversation_id: str,
    seq: MessageSeq,
    user_id: CurrentUser,
    service: Service,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ChatResponse:
    """Answer user message `seq` again (its tools run again); the earlier answers stay,
    as its other versions, and the conversation continues from the new one."""
    return await _turn(
        request, response, service, user_id, conversation_id, None,
        idempotency_key=idempotency_key, branch=Branch(seq, edit=False),
    )  # fmt: skip


async def _turn(
    request: Request,
    response: Response,
    service: ChatService,
    user_id: str,
    conversation_id: str | None,
    message: str | None,
    *,
    idempotency_key: str | None,
    branch: Branch | None = None,
) -> ChatResponse:
    metrics: Metrics = request.app.state.metrics
    try:
        result = await service.turn(
            user_id, conversation_id, message, idempotency_key=idempotency_key, branch=branch
        )
    except Exception as error:
        record_turn(metrics, None, error)
        raise
    record_turn(metrics, result, None)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return ChatResponse.of(result)


@router.post(
    "/api/{user_id}/chat/stream",
    response_class=EventSourceResponse,
    responses={
        200: event_stream("The turn's events, as they happen."),
        **errors(404, 408, 409, 413, 422, 429),
    },
)
async def chat_stream(
    body: ChatRequest,
    user_id: CurrentUser,
    service: Service,
    streams: Streams,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Send a message; the reply and the tool steps stream back as server-sent events.
    Errors found before the turn starts are ordinary JSON error responses."""
    metrics: Metrics = request.app.state.metrics
    held = streams.hold(user_id)  # refused (429) before the turn starts
    events = service.stream(
        user_id, body.conversation_id, body.message, idempotency_key=idempotency_key
    )
    try:
        # The first event proves the turn started: anything refused before that is
        # still a plain HTTP error with its status code.
        first = await anext(events)
    except Exception as error:
        held.release()
        record_turn(metrics, None, error)
        raise
    return held.respond(EventSourceResponse(sse(first, events, metrics), ping=KEEP_ALIVE_SECONDS))


async def sse(
    first: StreamEvent | None, rest: AsyncIterator[StreamEvent], metrics: Metrics | None
) -> AsyncIterator[ServerSentEvent]:
    """A turn's events as server-sent events, exactly as stored.

    A failure the turn reported in its own `error` event is not reported again; one it
    could not record (the database away) is sent as an `error` event of its own.
    """
    event = first if first is not None else await anext(rest, None)
    ended = False
    try:
        while event is not None:
            yield ServerSentEvent(
                data=json.dumps(event.data, ensure_ascii=False), event=event.name, id=event.id
            )
            ended = event.name in ("done", "error")
            if event.name == "done" and metrics is not None:
                record_turn(
                    metrics,
                    TurnResult.from_dict(event.data, replayed=bool(event.data.get("replayed"))),
                    None,
                )
            event = await anext(rest, None)
    except ChatLedgerError as error:
        if metrics is not None:
            record_turn(metrics, None, error)
        if not ended:
            yield ServerSentEvent(data=json.dumps(error_body(error)), event="error")
    except Exception as error:
        # The response began long ago: the client learns of the failure in-band. As in
        # RequestContextMiddleware, only the type is logged.
        log.error("unexpected error", error_type=type(error).__name__)
        if not ended:
            body = {"error": "internal", "message": "internal server error", "code": "internal"}
            yield ServerSentEvent(data=json.dumps(body), event="error")
