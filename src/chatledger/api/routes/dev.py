"""Development sign-in: a token for any user id, only when the server runs with --dev."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request

from chatledger.api.auth import Authenticator
from chatledger.api.openapi import errors
from chatledger.api.schemas import DevTokenRequest, TokenResponse
from chatledger.domain import check_text

router = APIRouter(tags=["development"])


@router.post("/auth/dev-token", response_model=TokenResponse, responses=errors(408, 413, 422))
async def dev_token(body: DevTokenRequest, request: Request) -> TokenResponse:
    """A 12-hour token for `user_id` (development servers only)."""
    authenticator: Authenticator = request.app.state.authenticator
    user_id = check_text("user_id", body.user_id)
    token, expires = authenticator.issue(user_id, ttl=timedelta(hours=12))
    return TokenResponse(token=token, user_id=user_id, expires_at=expires)
