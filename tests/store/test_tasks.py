"""The task store's own rules (the tools on top are tested in tests/tools)."""

from __future__ import annotations

import asyncio

import pytest

from chatledger.domain import TaskFilter
from chatledger.errors import NotFoundError, TooLargeError, ValidationError
from chatledger.store import SQLAlchemyStore
from tests.factories import snapshot


async def test_task_lifecycle(store: SQLAlchemyStore) -> None:
    milk = await store.tasks.add("alice", title=" buy milk ", description="2 litres")
    eggs = await store.tasks.add("alice", title="eggs")
    assert (milk.id, milk.title, milk.description, milk.completed) == (
        1,
        "buy milk",
        "2 litres",
        False,
    )
    done = await store.tasks.complete("alice", milk.id)
    assert done.completed and done.updated_at >= milk.updated_at
    assert [t.id for t in await store.tasks.list("alice", status=TaskFilter.PENDING)] == [eggs.id]
    assert [t.id for t in await store.tasks.list("alice", status="completed")] == [milk.id]
    renamed = await store.tasks.update("alice", eggs.id, title="free-range eggs", description="")
    assert (renamed.title, renamed.description) == ("free-range eggs", None)
    assert await store.tasks.get("alice", eggs.id) == renamed
    deleted = await store.tasks.delete("alice", eggs.id)
    assert deleted == renamed
    with pytest.raises(NotFoundError):
        await store.tasks.get("alice", eggs.id)


async def test_ids_are_per_user_and_never_reused(store: SQLAlchemyStore) -> None:
    first = await store.tasks.add("alice", title="a")
    await store.tasks.add("bob", title="b")
    second = await store.tasks.add("alice", title="c")
    await store.tasks.delete("alice", second.id)
    third = await store.tasks.add("alice", title="d")
    assert (first.id, second.id, third.id) == (1, 2, 3)


async def test_concurrent_adds_get_distinct_ids(store: SQLAlchemyStore) -> None:
    tasks = await asyncio.gather(*(store.tasks.add("alice", title=f"t{n}") for n in range(30)))
    assert sorted(t.id for t in tasks) == list(range(1, 31))


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"title": ""}, ValidationError, "title"),
        ({"title": "   "}, ValidationError, "title"),
        ({"title": "x" * 201}, TooLargeError, "title"),
        ({"title": "ok", "description": "x" * 1001}, TooLargeError, "description"),
        ({"title": "a\x00"}, ValidationError, "title"),
    ],
)
async def test_invalid_tasks_are_refused(
    store: SQLAlchemyStore, connector, kwargs: dict, error: type, field: str
) -> None:
    with pytest.raises(error) as raised:
        await store.tasks.add("alice", **kwargs)
    assert raised.value.field == field
    assert await store.tasks.list("alice") == []


async def test_other_users_tasks_are_not_found_and_unchanged(
    store: SQLAlchemyStore, connector
) -> None:
    bobs = await store.tasks.add("bob", title="bob's task")
    before = await snapshot(connector, "bob")
    for attempt in (
        store.tasks.get("alice", bobs.id),
        store.tasks.complete("alice", bobs.id),
        store.tasks.update("alice", bobs.id, title="hijacked"),
        store.tasks.delete("alice", bobs.id),
    ):
        with pytest.raises(NotFoundError):
            await attempt
    assert await snapshot(connector, "bob") == before


@pytest.mark.parametrize("task_id", [0, -1, 2**63, True, "1", 1.0])
async def test_impossible_task_ids_are_not_found(store: SQLAlchemyStore, task_id: object) -> None:
    await store.tasks.add("alice", title="a")
    with pytest.raises(NotFoundError):
        await store.tasks.complete("alice", task_id)  # type: ignore[arg-type]


async def test_update_needs_something_to_change(store: SQLAlchemyStore) -> None:
    task = await store.tasks.add("alice", title="a")
    with pytest.raises(ValidationError):
        await store.tasks.update("alice", task.id)


async def test_tasks_page_by_id_and_count(store: SQLAlchemyStore) -> None:
    for n in range(7):
        await store.tasks.add("alice", title=f"t{n}")
    await store.tasks.complete("alice", 2)
    await store.tasks.add("bob", title="bob's")
    first = await store.tasks.list("alice", limit=3)
    rest = await store.tasks.list("alice", limit=10, after_id=first[-1].id)
    assert [t.id for t in first + rest] == list(range(1, 8))
    assert [t.id for t in await store.tasks.list("alice", status="pending", after_id=1)] == [
        3, 4, 5, 6, 7,
    ]  # fmt: skip
    assert await store.tasks.count("alice") == 7
    assert await store.tasks.count("alice", status="completed") == 1
    assert await store.tasks.count("carol") == 0
    assert await store.tasks.list("alice", after_id=2**70) == []


@pytest.mark.parametrize("field", ["title", "description"])
async def test_task_text_refuses_control_characters(store: SQLAlchemyStore, field: str) -> None:
    values = {"title": "ok", "description": None, field: "bad\x1b[2Jtitle"}
    with pytest.raises(ValidationError) as refused:
        await store.tasks.add("alice", **values)
    assert refused.value.field == field
    assert await store.tasks.count("alice") == 0
