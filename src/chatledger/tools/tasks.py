"""The task-manager tools: add, list, complete, delete and update the user's tasks.

`TaskTools` is bound to one user when it is built, from the verified request, never from
the model: no tool schema has a user parameter, and unknown arguments are refused. A call
always returns a JSON object: the result, or `{"error", "code"}` for a failure the model
should see and explain (unknown task, bad id, title too long). Only infrastructure
failures, such as the database being down, raise.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Protocol

from chatledger.domain import Task, TaskFilter
from chatledger.errors import NotFoundError, TooLargeError, ValidationError
from chatledger.tools.base import ToolSpec, ToolStore

__all__ = ["LISTED_TASKS", "TASK_TOOLS", "TaskRepository", "TaskTools", "TaskToolset"]


class TaskRepository(Protocol):
    """What the tools need of a store: `SQLAlchemyStore.tasks` (or its transaction's)."""

    async def add(self, user_id: str, *, title: str, description: str | None = None) -> Task: ...
    async def list(
        self, user_id: str, *, status: TaskFilter | str = ..., limit: int = ...
    ) -> list[Task]: ...
    async def count(self, user_id: str, *, status: TaskFilter | str = ...) -> int: ...
    async def complete(self, user_id: str, task_id: int) -> Task: ...
    async def delete(self, user_id: str, task_id: int) -> Task: ...
    async def update(
        self, user_id: str, task_id: int, *, title: str | None = None, description: Any = ...
    ) -> Task: ...


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


MAX_TASK_ID = 2**63 - 1
# The most tasks `list_tasks` shows a model at once (its input is a budget of tokens).
LISTED_TASKS = 100
_TASK_ID = {"type": "integer", "minimum": 1, "description": "The task's number, as listed."}
_TITLE = {"type": "string", "minLength": 1, "maxLength": 200}
_DESCRIPTION = {"type": "string", "maxLength": 1000}

TASK_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "add_task",
        "Add a task to the user's list.",
        _schema({"title": _TITLE, "description": _DESCRIPTION}, ("title",)),
        title="Add a task",
        destructive=False,
        open_world=False,
    ),
    ToolSpec(
        "list_tasks",
        "List the user's tasks: all of them, only pending ones, or only completed ones. "
        f"Shows at most {LISTED_TASKS}, oldest first; `total` and `omitted` say how many "
        "there are and how many are not shown.",
        _schema(
            {"status": {"type": "string", "enum": [f.value for f in TaskFilter], "default": "all"}}
        ),
        title="List tasks",
        read_only=True,
        destructive=False,
        idempotent=True,
        open_world=False,
    ),
    ToolSpec(
        "complete_task",
        "Mark one of the user's tasks as done.",
        _schema({"task_id": _TASK_ID}, ("task_id",)),
        title="Complete a task",
        destructive=False,
        idempotent=True,
        open_world=False,
    ),
    ToolSpec(
        "delete_task",
        "Delete one of the user's tasks.",
        _schema({"task_id": _TASK_ID}, ("task_id",)),
        title="Delete a task",
        destructive=True,
        idempotent=True,
        open_world=False,
    ),
    ToolSpec(
        "update_task",
        "Change the title and/or the description of one of the user's tasks.",
        _schema({"task_id": _TASK_ID, "title": _TITLE, "description": _DESCRIPTION}, ("task_id",)),
        title="Update a task",
        destructive=True,
        idempotent=True,
        open_world=False,
    ),
)


class _ToolFailure(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.result = {"error": message, "code": code}


def _arguments(spec: ToolSpec, raw: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." from a model
            raise _ToolFailure("arguments are not valid JSON", "invalid_arguments") from None
    if not isinstance(raw, Mapping):
        raise _ToolFailure("arguments must be a JSON object", "invalid_arguments")
    allowed = spec.parameters["properties"]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise _ToolFailure(f"unknown argument(s): {', '.join(unknown)}", "invalid_arguments")
    missing = [name for name in spec.parameters["required"] if name not in raw]
    if missing:
        raise _ToolFailure(f"missing argument(s): {', '.join(missing)}", "invalid_arguments")
    for name, value in raw.items():
        if name != "task_id" and value is not None and not isinstance(value, str):
            raise _ToolFailure(f"{name} must be a string", "invalid_arguments")
    return dict(raw)


def _task_id(value: Any) -> int:
    # Models often quote numbers ("3"). Only ASCII digits count: str.isdigit() also takes
    # "²", which int() refuses, and a number longer than any id (int() would refuse past
    # 4300 digits) is simply no task's.
    if isinstance(value, str):
        digits = value.strip()
        if not (digits.isascii() and digits.isdecimal()):
            raise _ToolFailure("task_id must be a positive whole number", "invalid_id")
        if len(digits) > len(str(MAX_TASK_ID)):
            raise NotFoundError("task not found")
        value = int(digits)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _ToolFailure("task_id must be a positive whole number", "invalid_id")
    return value


def _summary(task: Task, status: str) -> dict[str, Any]:
    return {"task_id": task.id, "status": status, "title": task.title}


def _listed(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "title": task.title,
        "description": task.description,
        "completed": task.completed,
    }


class TaskTools:
    """The task tools, acting for one user on one task repository.

    Args:
        tasks: where tasks live; pass a transaction's `tasks` to commit a tool's effect
            together with the messages that record it.
        user_id: the verified user, from the request; the model cannot choose another.
    """

    specs: ClassVar[tuple[ToolSpec, ...]] = TASK_TOOLS

    def __init__(self, tasks: TaskRepository, user_id: str) -> None:
        self._tasks = tasks
        self._user_id = user_id
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "add_task": self._add,
            "list_tasks": self._list,
            "complete_task": self._complete,
            "delete_task": self._delete,
            "update_task": self._update,
        }
        self._specs = {spec.name: spec for spec in TASK_TOOLS}

    async def call(self, name: str, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Run tool `name`; returns its result or an `{"error", "code"}` object.

        Raises:
            UnavailableError: the database cannot be reached (not the model's doing).
        """
        spec = self._specs.get(name)
        if spec is None:
            return {"error": f"there is no tool called {name!r}", "code": "unknown_tool"}
        try:
            return await self._handlers[name](_arguments(spec, arguments))
        except _ToolFailure as failure:
            return failure.result
        except NotFoundError:
            return {"error": "no such task", "code": "not_found"}
        except TooLargeError as error:
            return {"error": error.message, "code": "too_long"}
        except ValidationError as error:
            return {"error": error.message, "code": "invalid_arguments"}

    async def _add(self, args: dict[str, Any]) -> dict[str, Any]:
        task = await self._tasks.add(
            self._user_id, title=args["title"], description=args.get("description")
        )
        return _summary(task, "created")

    async def _list(self, args: dict[str, Any]) -> dict[str, Any]:
        status = args.get("status") or TaskFilter.ALL
        if status not in TaskFilter.__members__.values():
            raise _ToolFailure("status must be all, pending or completed", "invalid_arguments")
        tasks = await self._tasks.list(self._user_id, status=status, limit=LISTED_TASKS)
        total = len(tasks)
        if total == LISTED_TASKS:
            total = await self._tasks.count(self._user_id, status=status)
        # The model is told how many it does not see, so it can say so, not claim the
        # list is whole.
        return {
            "tasks": [_listed(task) for task in tasks],
            "total": total,
            "omitted": total - len(tasks),
        }

    async def _complete(self, args: dict[str, Any]) -> dict[str, Any]:
        task = await self._tasks.complete(self._user_id, _task_id(args["task_id"]))
        return _summary(task, "completed")

    async def _delete(self, args: dict[str, Any]) -> dict[str, Any]:
        task = await self._tasks.delete(self._user_id, _task_id(args["task_id"]))
        return _summary(task, "deleted")

    async def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        task_id = _task_id(args["task_id"])
        changes: dict[str, Any] = {}
        if args.get("title") is not None:
            changes["title"] = args["title"]
        if "description" in args:
            changes["description"] = args["description"]
        if not changes:
            raise _ToolFailure("give a title or a description to change", "invalid_arguments")
        task = await self._tasks.update(self._user_id, task_id, **changes)
        return _summary(task, "updated")


class TaskToolset:
    """The task tools as a `StoreToolset`: each call runs in the transaction that records
    it, so a task never changes without its record, nor the record without the change."""

    name: Final = "tasks"
    specs: Final = TASK_TOOLS

    async def call_in(
        self, store: ToolStore, user_id: str, name: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await TaskTools(store.tasks, user_id).call(name, arguments)
