"""`TaskStore`: the user's tasks, which the task tools read and change."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from sqlalchemy import Connection, Select, delete, func, insert, select, update

from chatledger.domain import Task, TaskFilter, check_text, check_written_text
from chatledger.errors import NotFoundError, ValidationError
from chatledger.store.core import (
    MAX_BIGINT,
    UNSET,
    AnyRow,
    Unset,
    check_limit,
    check_user_id,
    utcnow,
)
from chatledger.store.engine import Connector
from chatledger.store.schema import task_counters, tasks

__all__ = [
    "DESCRIPTION_MAX_CHARS",
    "TITLE_MAX_CHARS",
    "TaskStore",
    "check_task_description",
    "check_task_title",
]

TITLE_MAX_CHARS: Final = 200
DESCRIPTION_MAX_CHARS: Final = 1000

_COLUMNS = tuple(c for c in tasks.c if c.name != "user_id")


def _task(row: AnyRow) -> Task:
    return Task(
        id=row.id,
        title=row.title,
        description=row.description,
        completed=row.completed,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _found(row: AnyRow | None) -> Task:
    if row is None:
        raise NotFoundError("task not found")
    return _task(row)


def _check_task_id(task_id: object) -> int:
    # A value no task can have matches nothing; out-of-range integers must not reach
    # PostgreSQL, which would fail the whole statement.
    if isinstance(task_id, bool) or not isinstance(task_id, int) or not 1 <= task_id <= MAX_BIGINT:
        raise NotFoundError("task not found")
    return task_id


def check_task_title(title: object) -> str:
    text = check_written_text("title", title).strip()
    if not text:
        raise ValidationError("title must not be empty", field="title")
    return check_text("title", text, max_chars=TITLE_MAX_CHARS)


def check_task_description(description: object) -> str | None:
    if description is None:
        return None
    return check_written_text("description", description, max_chars=DESCRIPTION_MAX_CHARS) or None


class TaskStore:
    """Tasks of each user; reach it as `SQLAlchemyStore.tasks`. `user_id` comes first."""

    def __init__(self, db: Connector) -> None:
        self._db = db

    async def add(self, user_id: str, *, title: str, description: str | None = None) -> Task:
        """Add a pending task. Ids count 1, 2, 3 ... per user and are never reused, so
        "task 3" in an old message cannot come to mean a different task.

        Raises:
            ValidationError: title empty or over 200 characters, description over 1000.
        """
        user_id = check_user_id(user_id)
        title = check_task_title(title)
        description = check_task_description(description)
        now = utcnow()
        counter = (
            self._db.upsert(task_counters)
            .values(user_id=user_id, next_id=2)
            .on_conflict_do_update(
                index_elements=[task_counters.c.user_id],
                set_={"next_id": task_counters.c.next_id + 1},
            )
            .returning(task_counters.c.next_id)
        )

        def work(conn: Connection) -> Task:
            task = Task(
                id=conn.execute(counter).scalar_one() - 1,
                title=title,
                description=description,
                completed=False,
                created_at=now,
                updated_at=now,
            )
            conn.execute(insert(tasks), {"user_id": user_id, **dataclasses.asdict(task)})
            return task

        return await self._db.write(work)

    async def list(
        self,
        user_id: str,
        *,
        status: TaskFilter | str = TaskFilter.ALL,
        limit: int = 100,
        after_id: int | None = None,
    ) -> list[Task]:
        """The user's tasks in id order (all, pending or completed): at most `limit` of
        them, those after task `after_id` when given (the last id of the previous page).

        Paged on the id, never by offset: tasks added or deleted meanwhile neither shift
        nor repeat a page.
        """
        query = self._where(user_id, status).order_by(tasks.c.id).limit(check_limit(limit))
        if after_id is not None:
            if isinstance(after_id, bool) or not isinstance(after_id, int):
                raise ValidationError("after_id must be an integer", field="after_id")
            query = query.where(tasks.c.id > max(min(after_id, MAX_BIGINT), 0))
        return await self._db.read(lambda conn: [_task(row) for row in conn.execute(query)])

    async def count(self, user_id: str, *, status: TaskFilter | str = TaskFilter.ALL) -> int:
        """How many tasks the user has: all, pending or completed."""
        query = self._where(user_id, status).with_only_columns(func.count())
        return await self._db.read(lambda conn: int(conn.execute(query).scalar_one()))

    @staticmethod
    def _where(user_id: str, status: TaskFilter | str) -> Select[Any]:
        user_id = check_user_id(user_id)
        try:
            status = TaskFilter(status)
        except ValueError:
            raise ValidationError(
                "status must be one of all, pending, completed", field="status"
            ) from None
        query = select(*_COLUMNS).where(tasks.c.user_id == user_id)
        if status is not TaskFilter.ALL:
            query = query.where(tasks.c.completed.is_(status is TaskFilter.COMPLETED))
        return query

    async def get(self, user_id: str, task_id: int) -> Task:
        """Raises `NotFoundError` alike for a missing task and another user's."""
        user_id = check_user_id(user_id)
        task_id = _check_task_id(task_id)
        query = select(*_COLUMNS).where(tasks.c.user_id == user_id, tasks.c.id == task_id)
        return _found(await self._db.read(lambda conn: conn.execute(query).first()))

    async def complete(self, user_id: str, task_id: int) -> Task:
        """Mark a task completed; completing it again is not an error."""
        return await self._change(user_id, task_id, {"completed": True})

    async def update(
        self,
        user_id: str,
        task_id: int,
        *,
        title: str | None = None,
        description: str | Unset | None = UNSET,
    ) -> Task:
        """Change the title and/or the description ("" or None clears the description)."""
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = check_task_title(title)
        if not isinstance(description, Unset):
            values["description"] = check_task_description(description)
        if not values:
            raise ValidationError("give a title or a description to change", field="title")
        return await self._change(user_id, task_id, values)

    async def _change(self, user_id: str, task_id: int, values: dict[str, Any]) -> Task:
        user_id = check_user_id(user_id)
        task_id = _check_task_id(task_id)
        statement = (
            update(tasks)
            .where(tasks.c.user_id == user_id, tasks.c.id == task_id)
            .values(updated_at=utcnow(), **values)
            .returning(*_COLUMNS)
        )
        return _found(await self._db.write(lambda conn: conn.execute(statement).first()))

    async def delete(self, user_id: str, task_id: int) -> Task:
        """Delete a task and return it as it was."""
        user_id = check_user_id(user_id)
        task_id = _check_task_id(task_id)
        statement = (
            delete(tasks)
            .where(tasks.c.user_id == user_id, tasks.c.id == task_id)
            .returning(*_COLUMNS)
        )
        return _found(await self._db.write(lambda conn: conn.execute(statement).first()))
