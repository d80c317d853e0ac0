"""The user's tasks, as the task tools left them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chatledger.api.dependencies import CurrentUser, Store
from chatledger.api.schemas import TaskList, TaskPublic
from chatledger.domain import TaskFilter

router = APIRouter(tags=["tasks"])


@router.get("/api/{user_id}/tasks", response_model=TaskList)
async def list_tasks(
    user_id: CurrentUser,
    store: Store,
    status: Annotated[TaskFilter, Query()] = TaskFilter.ALL,
) -> TaskList:
    """The user's tasks: all, pending or completed."""
    tasks = await store.tasks.list(user_id, status=status)
    return TaskList(items=[TaskPublic.of(task) for task in tasks])
