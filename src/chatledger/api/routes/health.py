"""Liveness, readiness and metrics (no authentication: they reveal no user data)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from chatledger.api.dependencies import Store
from chatledger.api.metrics import Metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database is unreachable."}})
async def readyz(store: Store) -> dict[str, str]:
    """The database answers (503 otherwise)."""
    await store.ping()
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, turns, agent errors, tool calls."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
