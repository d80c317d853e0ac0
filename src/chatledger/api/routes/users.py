"""Deleting a user's data."""

from __future__ import annotations

from fastapi import APIRouter, Response

from chatledger.api.dependencies import CurrentUser, Store
from chatledger.api.openapi import AUTHENTICATED

router = APIRouter(tags=["users"], responses=AUTHENTICATED)


@router.delete("/api/{user_id}", status_code=204)
async def delete_user(user_id: CurrentUser, store: Store) -> Response:
    """Delete every conversation, message, task and idempotency record of the user."""
    await store.delete_user(user_id)
    return Response(status_code=204)
