"""The task tools on SQLite and PostgreSQL: what each returns, what each refuses (with the
exact `{error, code}` object, leaving the database as it was), and that one user's tools
never reach another user's tasks."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger.errors import NotFoundError
from chatledger.store import Connector, SQLAlchemyStore
from chatledger.tools import TaskTools
from tests.factories import row_counts, snapshot

INVALID_ID = {"error": "task_id must be a positive whole number", "code": "invalid_id"}
NOT_FOUND = {"error": "no such task", "code": "not_found"}
ID_TOOLS = ("complete_task", "delete_task", "update_task")


def invalid(message: str) -> dict[str, str]:
    return {"error": message, "code": "invalid_arguments"}


def too_long(message: str) -> dict[str, str]:
    return {"error": message, "code": "too_long"}


def with_id(tool: str, task_id: Any) -> dict[str, Any]:
    """Arguments for a tool that takes a task id; update_task also needs a change."""
    return (
        {"task_id": task_id, "title": "renamed"} if tool == "update_task" else {"task_id": task_id}
    )


@pytest.fixture
def alice(store: SQLAlchemyStore) -> TaskTools:
    return TaskTools(store.tasks, "alice")


@pytest.fixture
def bob(store: SQLAlchemyStore) -> TaskTools:
    return TaskTools(store.tasks, "bob")


@pytest.fixture
async def seeded(store: SQLAlchemyStore) -> None:
    """Alice: 1 "Buy milk" (pending), 2 "Call mom" (completed). Bob: 1, 2, 3."""
    await store.tasks.add("alice", title="Buy milk", description="2 litres")
    await store.tasks.add("alice", title="Call mom")
    await store.tasks.complete("alice", 2)
    for title in ("Bob one", "Bob two", "Bob three"):
        await store.tasks.add("bob", title=title)


async def everything(db: Connector) -> dict[str, Any]:
    """Every row of both users, and their row counts (task counters included)."""
    return {
        user: (await snapshot(db, user), await row_counts(db, user)) for user in ("alice", "bob")
    }


# -- what each tool does -------------------------------------------------------------------


async def test_add_task_creates_a_pending_task(alice: TaskTools, store: SQLAlchemyStore) -> None:
    result = await alice.call("add_task", {"title": "  Buy milk ", "description": "2 litres"})
    assert result == {"task_id": 1, "status": "created", "title": "Buy milk"}
    task = await store.tasks.get("alice", 1)
    assert (task.title, task.description, task.completed) == ("Buy milk", "2 litres", False)


async def test_arguments_may_be_json_text_as_models_send_them(alice: TaskTools) -> None:
    result = await alice.call("add_task", '{"title": "Buy milk"}')
    assert result == {"task_id": 1, "status": "created", "title": "Buy milk"}
    assert await alice.call("list_tasks", "") == {
        "tasks": [{"task_id": 1, "title": "Buy milk", "description": None, "completed": False}],
        "total": 1,
        "omitted": 0,
    }


async def test_titles_and_descriptions_up_to_their_limits_are_stored(
    alice: TaskTools, store: SQLAlchemyStore
) -> None:
    title, description = "t" * 200, "d" * 1000
    result = await alice.call("add_task", {"title": title, "description": description})
    assert result == {"task_id": 1, "status": "created", "title": title}
    task = await store.tasks.get("alice", 1)
    assert (task.title, task.description) == (title, description)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("arguments", "expected_ids"),
    [
        ({}, [1, 2]),
        ({"status": "all"}, [1, 2]),
        ({"status": "pending"}, [1]),
        ({"status": "completed"}, [2]),
    ],
)
async def test_list_tasks_filters_by_status(
    alice: TaskTools, arguments: dict[str, str], expected_ids: list[int]
) -> None:
    listed = {
        1: {"task_id": 1, "title": "Buy milk", "description": "2 litres", "completed": False},
        2: {"task_id": 2, "title": "Call mom", "description": None, "completed": True},
    }
    result = await alice.call("list_tasks", arguments)
    tasks = [listed[task_id] for task_id in expected_ids]
    assert result == {"tasks": tasks, "total": len(tasks), "omitted": 0}


async def test_list_tasks_of_a_user_without_tasks_is_empty(alice: TaskTools) -> None:
    assert await alice.call("list_tasks", {}) == {"tasks": [], "total": 0, "omitted": 0}


@pytest.mark.usefixtures("seeded")
async def test_complete_task_marks_it_done_and_again_is_not_an_error(
    alice: TaskTools, store: SQLAlchemyStore
) -> None:
    before = await store.tasks.get("alice", 1)
    expected = {"task_id": 1, "status": "completed", "title": "Buy milk"}
    assert await alice.call("complete_task", {"task_id": 1}) == expected
    after = await store.tasks.get("alice", 1)
    assert after.completed and after.updated_at >= before.updated_at
    assert await alice.call("complete_task", {"task_id": 1}) == expected
    assert (await store.tasks.get("alice", 1)).completed


@pytest.mark.usefixtures("seeded")
async def test_delete_task_removes_it(alice: TaskTools, store: SQLAlchemyStore) -> None:
    result = await alice.call("delete_task", {"task_id": 1})
    assert result == {"task_id": 1, "status": "deleted", "title": "Buy milk"}
    with pytest.raises(NotFoundError):
        await store.tasks.get("alice", 1)
    assert await alice.call("delete_task", {"task_id": 1}) == NOT_FOUND
    assert [task.id for task in await store.tasks.list("alice")] == [2]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("changes", "title", "description"),
    [
        ({"title": "Buy oat milk"}, "Buy oat milk", "2 litres"),
        ({"description": "1 litre"}, "Buy milk", "1 litre"),
        ({"title": " Buy oat milk ", "description": "1 litre"}, "Buy oat milk", "1 litre"),
        ({"description": ""}, "Buy milk", None),
        ({"description": None}, "Buy milk", None),
    ],
)
async def test_update_task_changes_only_what_is_given(
    alice: TaskTools,
    store: SQLAlchemyStore,
    changes: dict[str, Any],
    title: str,
    description: str | None,
) -> None:
    result = await alice.call("update_task", {"task_id": 1, **changes})
    assert result == {"task_id": 1, "status": "updated", "title": title}
    task = await store.tasks.get("alice", 1)
    assert (task.title, task.description, task.completed) == (title, description, False)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("tool", ID_TOOLS)
@pytest.mark.parametrize("quoted", ["1", " 1 ", "01"])
async def test_quoted_ids_are_accepted(
    alice: TaskTools, store: SQLAlchemyStore, tool: str, quoted: str
) -> None:
    result = await alice.call(tool, with_id(tool, quoted))
    assert result["task_id"] == 1 and "error" not in result
    if tool == "delete_task":
        assert [task.id for task in await store.tasks.list("alice")] == [2]


async def test_ids_count_per_user_and_are_never_reused(alice: TaskTools, bob: TaskTools) -> None:
    async def add(tools: TaskTools, title: str) -> int:
        result = await tools.call("add_task", {"title": title})
        assert result["status"] == "created"
        task_id: int = result["task_id"]
        return task_id

    assert [await add(alice, title) for title in ("a", "b", "c")] == [1, 2, 3]
    assert await add(bob, "x") == 1
    await alice.call("delete_task", {"task_id": 3})
    assert await add(alice, "d") == 4
    for task_id in (1, 2, 4):
        await alice.call("delete_task", {"task_id": task_id})
    assert await add(alice, "e") == 5
    assert await add(bob, "y") == 2


# -- what each tool refuses ----------------------------------------------------------------

NO_TOOL = "there is no tool called"

REFUSALS = [
    # Arguments that are not a JSON object.
    ("add_task", '{"title": "milk"', invalid("arguments are not valid JSON")),
    ("list_tasks", "status=all", invalid("arguments are not valid JSON")),
    ("add_task", '["milk"]', invalid("arguments must be a JSON object")),
    ("add_task", '"milk"', invalid("arguments must be a JSON object")),
    ("add_task", "null", invalid("arguments must be a JSON object")),
    ("complete_task", "1", invalid("arguments must be a JSON object")),
    # Missing arguments.
    ("add_task", {}, invalid("missing argument(s): title")),
    ("add_task", {"description": "2 litres"}, invalid("missing argument(s): title")),
    ("complete_task", {}, invalid("missing argument(s): task_id")),
    ("delete_task", "", invalid("missing argument(s): task_id")),
    ("update_task", {"title": "renamed"}, invalid("missing argument(s): task_id")),
    # Unknown arguments, above all a model naming the user to act for.
    ("add_task", {"title": "milk", "user_id": "bob"}, invalid("unknown argument(s): user_id")),
    ("list_tasks", {"user_id": "bob"}, invalid("unknown argument(s): user_id")),
    ("complete_task", {"task_id": 1, "user_id": "bob"}, invalid("unknown argument(s): user_id")),
    ("delete_task", {"task_id": 1, "user_id": "bob"}, invalid("unknown argument(s): user_id")),
    (
        "update_task",
        {"task_id": 1, "title": "x", "user_id": "bob"},
        invalid("unknown argument(s): user_id"),
    ),
    ("add_task", '{"title": "milk", "user": "bob"}', invalid("unknown argument(s): user")),
    (
        "add_task",
        {"title": "milk", "priority": "high", "due": "today"},
        invalid("unknown argument(s): due, priority"),
    ),
    ("update_task", {"task_id": 1, "completed": True}, invalid("unknown argument(s): completed")),
    # Wrong types.
    ("add_task", {"title": 5}, invalid("title must be a string")),
    ("add_task", {"title": ["milk"]}, invalid("title must be a string")),
    ("add_task", {"title": None}, invalid("title must be a string")),
    ("add_task", {"title": "milk", "description": 5}, invalid("description must be a string")),
    ("update_task", {"task_id": 1, "title": {"text": "x"}}, invalid("title must be a string")),
    ("list_tasks", {"status": 1}, invalid("status must be a string")),
    ("list_tasks", {"status": True}, invalid("status must be a string")),
    # A status that is not all, pending or completed.
    ("list_tasks", {"status": "done"}, invalid("status must be all, pending or completed")),
    ("list_tasks", {"status": "ALL"}, invalid("status must be all, pending or completed")),
    ("list_tasks", {"status": " pending"}, invalid("status must be all, pending or completed")),
    # Titles and descriptions: empty, too long.
    ("add_task", {"title": ""}, invalid("title must not be empty")),
    ("add_task", {"title": " \t\n "}, invalid("title must not be empty")),
    ("add_task", {"title": "t" * 201}, too_long("title is longer than 200 characters")),
    (
        "add_task",
        {"title": "milk", "description": "d" * 1001},
        too_long("description is longer than 1000 characters"),
    ),
    ("update_task", {"task_id": 1, "title": ""}, invalid("title must not be empty")),
    (
        "update_task",
        {"task_id": 1, "title": "t" * 201},
        too_long("title is longer than 200 characters"),
    ),
    (
        "update_task",
        {"task_id": 1, "description": "d" * 1001},
        too_long("description is longer than 1000 characters"),
    ),
    ("update_task", {"task_id": 1}, invalid("give a title or a description to change")),
    (
        "update_task",
        {"task_id": 1, "title": None},
        invalid("give a title or a description to change"),
    ),
    # NUL characters and unpaired surrogates, which PostgreSQL cannot store.
    (
        "add_task",
        {"title": "milk\x00"},
        invalid("title contains a NUL character or an unpaired surrogate"),
    ),
    (
        "add_task",
        '{"title": "milk\\u0000"}',
        invalid("title contains a NUL character or an unpaired surrogate"),
    ),
    (
        "add_task",
        {"title": "milk", "description": "2\x00litres"},
        invalid("description contains a NUL character or an unpaired surrogate"),
    ),
    (
        "update_task",
        {"task_id": 1, "title": "a\x00b"},
        invalid("title contains a NUL character or an unpaired surrogate"),
    ),
    (
        "update_task",
        {"task_id": 1, "description": "a\x00b"},
        invalid("description contains a NUL character or an unpaired surrogate"),
    ),
    (
        "add_task",
        {"title": "milk\ud800"},
        invalid("title contains a NUL character or an unpaired surrogate"),
    ),
    # Tools that do not exist.
    ("remove_task", {"task_id": 1}, {"error": f"{NO_TOOL} 'remove_task'", "code": "unknown_tool"}),
    ("", {}, {"error": f"{NO_TOOL} ''", "code": "unknown_tool"}),
    ("add_task ", {"title": "milk"}, {"error": f"{NO_TOOL} 'add_task '", "code": "unknown_tool"}),
]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("tool", "arguments", "expected"), REFUSALS)
async def test_invalid_input_is_refused_and_changes_nothing(
    alice: TaskTools, connector: Connector, tool: str, arguments: Any, expected: dict[str, str]
) -> None:
    before = await everything(connector)
    assert await alice.call(tool, arguments) == expected
    assert await everything(connector) == before


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("tool", ID_TOOLS)
@pytest.mark.parametrize(
    "task_id",
    [0, -1, "abc", 1.5, True, False, None, "", " ", "0", "-1", "1.5", "1e3", [1], {"id": 1}],
    ids=repr,
)
async def test_invalid_task_ids_are_refused_and_change_nothing(
    alice: TaskTools, connector: Connector, tool: str, task_id: Any
) -> None:
    before = await everything(connector)
    assert await alice.call(tool, with_id(tool, task_id)) == INVALID_ID
    assert await everything(connector) == before


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("tool", ID_TOOLS)
@pytest.mark.parametrize("task_id", [99, 2**63 - 1, 2**63, 2**70, str(2**70)], ids=repr)
async def test_ids_no_task_has_are_not_found_and_change_nothing(
    alice: TaskTools, connector: Connector, tool: str, task_id: Any
) -> None:
    # A whole number too big for the database is not a mistake in kind, only an id no
    # task can have: the same answer as for any other missing task.
    before = await everything(connector)
    assert await alice.call(tool, with_id(tool, task_id)) == NOT_FOUND
    assert await everything(connector) == before


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("tool", ID_TOOLS)
async def test_a_quoted_id_of_digits_int_cannot_read_is_refused(
    alice: TaskTools, tool: str
) -> None:
    assert await alice.call(tool, with_id(tool, "²")) == INVALID_ID


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("tool", ID_TOOLS)
async def test_a_quoted_id_too_long_for_any_task_is_not_found(alice: TaskTools, tool: str) -> None:
    assert await alice.call(tool, with_id(tool, "9" * 5000)) == NOT_FOUND


async def test_deeply_nested_json_arguments_are_refused(alice: TaskTools) -> None:
    result = await alice.call("add_task", "[" * 100_000)
    assert result == invalid("arguments are not valid JSON")


# -- one user's tools on another user's tasks ----------------------------------------------


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("tool", ID_TOOLS)
async def test_another_users_task_id_is_not_found_and_their_rows_are_unchanged(
    alice: TaskTools, connector: Connector, tool: str
) -> None:
    # Bob has a task 3; Alice has none.
    before = await everything(connector)
    assert await alice.call(tool, with_id(tool, 3)) == NOT_FOUND
    assert await alice.call(tool, with_id(tool, "3")) == NOT_FOUND
    assert await everything(connector) == before


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("tool", ID_TOOLS)
async def test_a_task_number_both_users_have_changes_only_the_callers_task(
    alice: TaskTools, connector: Connector, tool: str
) -> None:
    bobs_rows = await snapshot(connector, "bob")
    result = await alice.call(tool, with_id(tool, 1))
    assert result["task_id"] == 1 and "error" not in result
    assert await snapshot(connector, "bob") == bobs_rows


@pytest.mark.usefixtures("seeded")
async def test_listing_and_adding_never_involve_another_user(
    alice: TaskTools, bob: TaskTools, connector: Connector
) -> None:
    alices_rows = await snapshot(connector, "alice")
    bobs_list = await bob.call("list_tasks", {"status": "all"})
    assert [task["title"] for task in bobs_list["tasks"]] == ["Bob one", "Bob two", "Bob three"]
    assert await bob.call("add_task", {"title": "Bob four"}) == {
        "task_id": 4,
        "status": "created",
        "title": "Bob four",
    }
    assert await snapshot(connector, "alice") == alices_rows
    alices_list = await alice.call("list_tasks", {})
    assert [task["title"] for task in alices_list["tasks"]] == ["Buy milk", "Call mom"]
