"""`POST /chatkit`: the endpoint a ChatKit front end talks to (`api.url` in ChatKit.js).

What it answers is `chatledger.api.chatkit_requests`, imported on the first request: the
ChatKit SDK brings the Agents SDK and `openai` with it, about 1.5 s of imports that a
server no ChatKit front end talks to never pays (`tests/test_imports.py`).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Final

from fastapi import APIRouter, Request, Response

from chatledger.api.dependencies import Streams, TokenUser
from chatledger.api.errors import CHATKIT_PATH

router = APIRouter()

_ANSWERS: Final = "chatledger.api.chatkit_requests"


@router.post(CHATKIT_PATH, include_in_schema=False)
async def chatkit(request: Request, user_id: TokenUser, streams: Streams) -> Response:
    """One ChatKit request, answered as JSON or as a stream of ChatKit events."""
    if _ANSWERS not in sys.modules:
        # In a worker thread: on the event loop, the import would stall every other
        # request and stream of the process for as long as it takes.
        await asyncio.to_thread(importlib.import_module, _ANSWERS)
    from chatledger.api.chatkit_requests import answer

    return await answer(request, user_id, streams)
