"""Liveness, readiness and metrics: no user's token needed, they reveal no user data."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Request, Response

from chatledger.api.dependencies import Store
from chatledger.api.metrics import Metrics
from chatledger.api.openapi import errors
from chatledger.errors import AuthenticationError

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
async def readyz(store: Store) -> dict[str, str]:
    """The database answers (503 otherwise)."""
    await store.ping()
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **errors(401),
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, turns, agent errors, tool calls (with
    `CHATLEDGER_METRICS_TOKEN` set, for that bearer token only)."""
    token: str | None = request.app.state.metrics_token
    if token is not None:
        offered = request.headers.get("authorization", "")
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            raise AuthenticationError("/metrics needs its bearer token", code="invalid_token")
    registry: Metrics = request.app.state.metrics
    # Rendering reads every series (and, under --workers, every worker's file): not on
    # the event loop, where it would hold up every other request meanwhile.
    body = await asyncio.to_thread(registry.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
