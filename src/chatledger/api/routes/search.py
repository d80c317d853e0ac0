"""Searching a user's conversations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chatledger.api.dependencies import CurrentUser, Store
from chatledger.api.openapi import AUTHENTICATED, errors
from chatledger.api.schemas import SearchHitPublic, SearchPage

router = APIRouter(tags=["search"], responses=AUTHENTICATED)


@router.get("/api/{user_id}/search", response_model=SearchPage, responses=errors(422))
async def search(
    user_id: CurrentUser,
    store: Store,
    q: Annotated[
        str,
        Query(
            description="Words that must all appear (case and accents ignored); a `*` "
            "right after the last one matches the words it begins. At most 500 characters."
        ),
    ],
    limit: Annotated[int, Query(ge=1, description="At most 50 are returned.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
    tools: Annotated[bool, Query(description="Search tool results too.")] = False,
) -> SearchPage:
    """The user's messages holding every word of `q`, most relevant first, each with a
    plain-text snippet and the offsets of the matched words in it (422
    `query_without_words`, `query_too_long` or `query_invalid` for a query that cannot
    be searched)."""
    page = await store.search(user_id, q, limit=limit, cursor=cursor, include_tools=tools)
    return SearchPage(
        items=[SearchHitPublic.of(hit) for hit in page.items], next_cursor=page.next_cursor
    )
