"""POST /api/{user_id}/chat: one stateless chat turn, answered whole or streamed."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatledger.agents import TextDelta, ToolCallFinished, ToolCallStarted
from chatledger.api.dependencies import CurrentUser, Service
from chatledger.api.errors import error_body
from chatledger.api.metrics import Metrics
from chatledger.api.schemas import ChatRequest, ChatResponse
from chatledger.errors import AgentError, ChatLedgerError
from chatledger.service import TurnCompleted, TurnEvent, TurnResult, TurnStarted

log = structlog.get_logger("chatledger.api")

# Comments every 15 s keep proxies and browsers from closing a quiet stream.
KEEP_ALIVE_SECONDS = 15

router = APIRouter(tags=["chat"])

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


@router.post("/api/{user_id}/chat", response_model=ChatResponse, response_model_exclude_none=True)
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


_STREAM_DOC = """The same turn as POST /chat, answered as server-sent events, in order:
`conversation` {conversation_id, user_message_id}; `delta` {text} as the reply is written;
`tool_call` {id, name, arguments} and `tool_result` {id, result} for each tool step; and
`done` {conversation_id, response, tool_calls, message_ids, stopped} — or `error`
{error, message, code, conversation_id} if the turn fails once started. Every event has an
id. The turn does not depend on the connection: if it drops, the turn still finishes and
is stored. Errors found before the turn starts are ordinary JSON error responses."""


@router.post(
    "/api/{user_id}/chat/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC}},
)
async def chat_stream(
    body: ChatRequest,
    user_id: CurrentUser,
    service: Service,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> EventSourceResponse:
    """Send a message; the reply and the tool steps stream back as server-sent events."""
    metrics: Metrics = request.app.state.metrics
    events = service.stream(
        user_id, body.conversation_id, body.message, idempotency_key=idempotency_key
    )
    try:
        # The first event proves the turn started: anything refused before that is
        # still a plain HTTP error with its status code.
        first = await anext(events)
    except Exception as error:
        record_turn(metrics, None, error)
        raise
    return EventSourceResponse(_sse(first, events, metrics), ping=KEEP_ALIVE_SECONDS)


def _tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": arguments}


def _replayed(result: TurnResult) -> list[tuple[str, dict[str, Any]]]:
    """A stored result told as the stream that first produced it."""
    told: list[tuple[str, dict[str, Any]]] = [
        ("conversation", {"conversation_id": result.conversation_id, "user_message_id": None})
    ]
    for call in result.tool_calls:
        told.append(("tool_call", _tool_call(call.id, call.name, call.arguments)))
        told.append(("tool_result", {"id": call.id, "result": call.result}))
    if result.response:
        told.append(("delta", {"text": result.response}))
    return told


def _told(event: TurnEvent) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(event, TurnStarted):
        return [
            (
                "conversation",
                {
                    "conversation_id": event.conversation_id,
                    "user_message_id": event.user_message_id,
                },
            )
        ]
    if isinstance(event, TextDelta):
        return [("delta", {"text": event.text})]
    if isinstance(event, ToolCallStarted):
        call = event.call
        arguments = call.parsed_arguments()
        return [
            (
                "tool_call",
                _tool_call(call.id, call.name, call.arguments if arguments is None else arguments),
            )
        ]
    if isinstance(event, ToolCallFinished):
        return [("tool_result", {"id": event.call.id, "result": event.result})]
    if isinstance(event, TurnCompleted):
        before = _replayed(event.result) if event.result.replayed else []
        return [*before, ("done", event.result.to_record())]
    return []  # a whole assistant message: its text already went out as deltas


async def _sse(
    first: TurnEvent, rest: AsyncIterator[TurnEvent], metrics: Metrics
) -> AsyncIterator[ServerSentEvent]:
    ids = itertools.count(1)

    def sse(name: str, data: dict[str, Any]) -> ServerSentEvent:
        return ServerSentEvent(
            data=json.dumps(data, ensure_ascii=False), event=name, id=str(next(ids))
        )

    event: TurnEvent | None = first
    try:
        while event is not None:
            for name, data in _told(event):
                yield sse(name, data)
            if isinstance(event, TurnCompleted):
                record_turn(metrics, event.result, None)
            event = await anext(rest, None)
    except ChatLedgerError as error:
        record_turn(metrics, None, error)
        yield sse("error", error_body(error))
    except Exception as error:
        # The response began long ago: the client learns of the failure in-band. As in
        # RequestContextMiddleware, only the type is logged.
        log.error("unexpected error", error_type=type(error).__name__)
        yield sse(
            "error",
            {"error": "internal", "message": "internal server error", "code": "internal"},
        )
