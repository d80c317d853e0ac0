"""The user's tasks, as the task tools left them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chatledger.api.dependencies import CurrentUser, Store
from chatledger.api.openapi import AUTHENTICATED, errors
from chatledger.api.schemas import TaskPage, TaskPublic
from chatledger.domain import TaskFilter
from chatledger.errors import ValidationError

router = APIRouter(tags=["tasks"], responses=AUTHENTICATED)


@router.get("/api/{user_id}/tasks", response_model=TaskPage, responses=errors(422))
async def list_tasks(
    user_id: CurrentUser,
    store: Store,
    status: Annotated[TaskFilter, Query()] = TaskFilter.ALL,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=32, description="`next_cursor` of the previous page.")
    ] = None,
) -> TaskPage:
    """The user's tasks (all, pending or completed) in id order, a page at a time."""
    after_id = None
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdecimal()):
            raise ValidationError("cursor is not valid", field="cursor")
        after_id = int(cursor)
    # One more than asked tells whether another page follows, in the same query.
    tasks = await store.tasks.list(user_id, status=status, limit=limit + 1, after_id=after_id)
    page = tasks[:limit]
    has_more = len(tasks) > limit
    return TaskPage(
        items=[TaskPublic.of(task) for task in page],
        next_cursor=str(page[-1].id) if has_more else None,
        has_more=has_more,
    )
