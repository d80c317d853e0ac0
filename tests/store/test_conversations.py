"""Conversations: create, read, list with keyset cursors, rename, pin, archive, delete — and
isolation."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from chatledger.domain import ChatMessage
from chatledger.errors import NotFoundError, TooLargeError, ValidationError
from chatledger.store import SQLAlchemyStore
from chatledger.store.cursor import _mac
from tests.factories import row_counts, snapshot


async def test_create_and_get(store: SQLAlchemyStore) -> None:
    created = await store.create_conversation("alice", title="Groceries", metadata={"a": 1})
    fetched = await store.get_conversation("alice", created.id)
    assert fetched == created
    assert fetched.message_count == 0
    assert fetched.created_at.tzinfo is not None


async def test_ids_are_random_uuids_not_counters(store: SQLAlchemyStore) -> None:
    ids = [(await store.create_conversation("alice")).id for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(len(i) == 36 and i.count("-") == 4 for i in ids)


async def test_another_users_conversation_is_indistinguishable_from_a_missing_one(
    store: SQLAlchemyStore,
) -> None:
    bobs = await store.create_conversation("bob", title="secret")
    with pytest.raises(NotFoundError) as foreign:
        await store.get_conversation("alice", bobs.id)
    with pytest.raises(NotFoundError) as missing:
        await store.get_conversation("alice", "00000000-0000-0000-0000-000000000000")
    assert (foreign.value.code, str(foreign.value)) == (missing.value.code, str(missing.value))


@pytest.mark.parametrize("bad_id", ["", "x" * 65, "a\x00b", "\ud800", 42, None])
async def test_ids_that_cannot_exist_are_not_found(store: SQLAlchemyStore, bad_id: object) -> None:
    with pytest.raises(NotFoundError):
        await store.get_conversation("alice", bad_id)  # type: ignore[arg-type]


async def test_every_write_with_the_other_users_id_fails_and_changes_nothing(
    store: SQLAlchemyStore, connector
) -> None:
    bobs = await store.create_conversation("bob", title="bob's")
    await store.append("bob", bobs.id, [ChatMessage.user("hello")])
    before = await snapshot(connector, "bob")

    with pytest.raises(NotFoundError):
        await store.update_conversation("alice", bobs.id, title="mine now")
    with pytest.raises(NotFoundError):
        await store.append("alice", bobs.id, [ChatMessage.user("injected")])
    with pytest.raises(NotFoundError):
        await store.history("alice", bobs.id)
    with pytest.raises(NotFoundError):
        await store.delete_conversation("alice", bobs.id)

    assert await snapshot(connector, "bob") == before
    assert (await row_counts(connector, "alice"))["messages"] == 0


async def test_update_title_and_metadata(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice", title="old")
    renamed = await store.update_conversation("alice", conversation.id, title="  new  ")
    assert renamed.title == "new"
    assert renamed.updated_at >= conversation.updated_at
    tagged = await store.update_conversation("alice", conversation.id, metadata={"pinned": True})
    assert (tagged.title, tagged.metadata) == ("new", {"pinned": True})
    cleared = await store.update_conversation("alice", conversation.id, title=None)
    assert cleared.title is None


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"title": "x" * 201}, TooLargeError, "title"),
        ({"title": "a\x00b"}, ValidationError, "title"),
        ({"metadata": ["not", "an", "object"]}, ValidationError, "metadata"),
        ({"metadata": {"bad": float("nan")}}, ValidationError, "metadata"),
        ({"metadata": {"nul": "\x00"}}, ValidationError, "metadata"),
    ],
)
async def test_invalid_conversation_fields_are_refused(
    store: SQLAlchemyStore, kwargs: dict, error: type, field: str
) -> None:
    with pytest.raises(error) as raised:
        await store.create_conversation("alice", **kwargs)
    assert raised.value.field == field
    assert (await store.list_conversations("alice")).items == []


async def test_delete_removes_messages_in_the_same_transaction(
    store: SQLAlchemyStore, connector
) -> None:
    keep = await store.create_conversation("alice")
    gone = await store.create_conversation("alice")
    await store.append("alice", keep.id, [ChatMessage.user("keep")])
    await store.append("alice", gone.id, [ChatMessage.user("a"), ChatMessage.user("b")])

    await store.delete_conversation("alice", gone.id)

    with pytest.raises(NotFoundError):
        await store.get_conversation("alice", gone.id)
    assert (await row_counts(connector, "alice"))["messages"] == 1
    with pytest.raises(NotFoundError):
        await store.delete_conversation("alice", gone.id)


async def test_list_is_most_recently_updated_first(store: SQLAlchemyStore) -> None:
    first = await store.create_conversation("alice", title="first")
    second = await store.create_conversation("alice", title="second")
    await store.append("alice", first.id, [ChatMessage.user("bump")])
    page = await store.list_conversations("alice")
    assert [c.title for c in page.items] == ["first", "second"]
    assert page.items[0].message_count == 1
    assert page.next_cursor is None
    assert second.id == page.items[1].id


async def test_paging_with_cursors_visits_every_conversation_once(store: SQLAlchemyStore) -> None:
    created = [await store.create_conversation("alice", title=f"c{i}") for i in range(23)]
    await store.create_conversation("bob", title="not alice's")
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_conversations("alice", limit=5, cursor=cursor)
        assert len(page.items) <= 5
        seen.extend(c.id for c in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [c.id for c in reversed(created)]


async def test_limit_is_clamped_to_100(store: SQLAlchemyStore) -> None:
    for i in range(101):
        await store.create_conversation("alice", title=str(i))
    page = await store.list_conversations("alice", limit=10_000)
    assert len(page.items) == 100
    assert page.next_cursor is not None


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
async def test_nonsense_limits_are_refused(store: SQLAlchemyStore, limit: object) -> None:
    with pytest.raises(ValidationError) as raised:
        await store.list_conversations("alice", limit=limit)  # type: ignore[arg-type]
    assert raised.value.field == "limit"


async def test_a_cursor_from_another_user_is_refused(store: SQLAlchemyStore) -> None:
    for i in range(3):
        await store.create_conversation("bob", title=f"bob {i}")
    bobs_cursor = (await store.list_conversations("bob", limit=1)).next_cursor
    assert bobs_cursor is not None
    with pytest.raises(ValidationError) as raised:
        await store.list_conversations("alice", cursor=bobs_cursor)
    assert raised.value.field == "cursor"


async def test_tampered_cursors_are_refused(store: SQLAlchemyStore) -> None:
    for i in range(3):
        await store.create_conversation("alice", title=str(i))
    cursor = (await store.list_conversations("alice", limit=1)).next_cursor
    assert cursor is not None
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[2] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in (tampered, cursor[:-2], "not-a-cursor", "", "\x00", "%%%"):
        with pytest.raises(ValidationError):
            await store.list_conversations("alice", cursor=bad)


async def test_cursors_survive_a_new_store_with_the_same_key(database_url: str) -> None:
    key = b"k" * 32
    first = SQLAlchemyStore.from_url(database_url, cursor_key=key)
    second = SQLAlchemyStore.from_url(database_url, cursor_key=key)
    try:
        for i in range(3):
            await first.create_conversation("alice", title=str(i))
        cursor = (await first.list_conversations("alice", limit=2)).next_cursor
        page = await second.list_conversations("alice", cursor=cursor)
        assert [c.title for c in page.items] == ["0"]
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("user_id", ["", "x" * 256, "a\x00b", "\udc80", None])
async def test_invalid_user_ids_are_refused(store: SQLAlchemyStore, user_id: object) -> None:
    with pytest.raises(ValidationError) as raised:
        await store.create_conversation(user_id)  # type: ignore[arg-type]
    assert raised.value.field == "user_id"


async def every_page(store: SQLAlchemyStore, user: str, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_conversations(user, limit=2, cursor=cursor, **filters)
        assert len(page.items) <= 2
        seen.extend(c.id for c in page.items)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_pinned_come_first_and_archived_are_listed_apart_page_by_page(
    store: SQLAlchemyStore,
) -> None:
    c = [await store.create_conversation("alice", title=f"c{i}") for i in range(8)]
    before = {x.id: x.updated_at for x in c}
    for index in (2, 5):
        await store.update_conversation("alice", c[index].id, pinned=True)
    for index in (3, 5):
        await store.update_conversation("alice", c[index].id, archived=True)
    await store.create_conversation("bob", title="not alice's")

    # Pinned first, each part newest first; the archived ones apart, pinned first too.
    assert await every_page(store, "alice") == [c[i].id for i in (2, 7, 6, 4, 1, 0)]
    assert await every_page(store, "alice", archived=True) == [c[5].id, c[3].id]
    assert await every_page(store, "alice", pinned=True) == [c[2].id]
    assert await every_page(store, "alice", pinned=False) == [c[i].id for i in (7, 6, 4, 1, 0)]
    # Pinning and archiving are not activity: every conversation keeps its place in time.
    after = {x.id: x.updated_at for x in (await store.list_conversations("alice")).items}
    assert all(after[i] == before[i] for i in after)
    fetched = await store.get_conversation("alice", c[5].id)
    assert (fetched.pinned, fetched.archived) == (True, True)

    await store.update_conversation("alice", c[5].id, pinned=False, archived=False)
    assert await every_page(store, "alice") == [c[i].id for i in (2, 7, 6, 5, 4, 1, 0)]


async def test_a_cursor_from_before_pinning_still_pages(store: SQLAlchemyStore) -> None:
    c = [await store.create_conversation("alice", title=f"c{i}") for i in range(4)]
    key = store._cursor_key
    raw = json.dumps([c[2].updated_at.isoformat(), c[2].id], separators=(",", ":")).encode()
    old = base64.urlsafe_b64encode(raw + _mac(key, "alice", raw)).decode().rstrip("=")
    page = await store.list_conversations("alice", cursor=old)
    assert [x.id for x in page.items] == [c[1].id, c[0].id]


@pytest.mark.parametrize("flag", ["yes", 1, None])
async def test_pinned_and_archived_are_true_or_false(store: SQLAlchemyStore, flag: object) -> None:
    conversation = await store.create_conversation("alice")
    for name in ("pinned", "archived"):
        with pytest.raises(ValidationError) as raised:
            await store.update_conversation("alice", conversation.id, **{name: flag})
        assert raised.value.field == name
