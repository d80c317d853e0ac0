"""`POST /chatkit`: the endpoint a ChatKit front end talks to (`api.url` in ChatKit.js).

What it answers is `chatledger.api.chatkit_requests`, imported on the first request: the
ChatKit SDK brings the Agents SDK and `openai` with it, about 1.5 s of imports that a
server no ChatKit front end talks to never pays (`tests/test_imports.py`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from chatledger.api.dependencies import Streams, TokenUser
from chatledger.api.errors import CHATKIT_PATH

router = APIRouter()


@router.post(CHATKIT_PATH, include_in_schema=False)
async def chatkit(request: Request, user_id: TokenUser, streams: Streams) -> Response:
    """One ChatKit request, answered as JSON or as a stream of ChatKit events."""
    from chatledger.api.chatkit_requests import answer

    return await answer(request, user_id, streams)
