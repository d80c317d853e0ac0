"""POST /api/{user_id}/chat: one stateless chat turn."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from chatledger.api.dependencies import CurrentUser, Service
from chatledger.api.metrics import Metrics
from chatledger.api.schemas import ChatRequest, ChatResponse
from chatledger.errors import AgentError, ChatLedgerError
from chatledger.service import TurnResult

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


@router.post("/api/{user_id}/chat", response_model=ChatResponse)
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
