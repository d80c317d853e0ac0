"""POST /api/{user_id}/chat: one stateless chat turn, answered whole or streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatledger.api.dependencies import CurrentUser, Service, Streams
from chatledger.api.errors import error_body
from chatledger.api.metrics import Metrics
from chatledger.api.openapi import AUTHENTICATED, errors, event_stream
from chatledger.api.schemas import ChatRequest, ChatResponse
from chatledger.domain import StreamEvent, TurnResult
from chatledger.errors import AgentError, ChatLedgerError

log = structlog.get_logger("chatledger.api")

# Comments every 15 s keep proxies and browsers from closing a quiet stream.
KEEP_ALIVE_SECONDS = 15

router = APIRouter(tags=["chat"], responses=AUTHENTICATED)

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
    metrics: Metrics = request.app.state.metrics
    try:
        result = await service.turn(
            user_id, body.conversation_id, body.message, idempotency_key=idempotency_key
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
