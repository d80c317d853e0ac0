"""`ChatLedgerStore` held to what the ChatKit SDK's own store tests ask of a store (its
repository's `tests/test_store.py`; the package ships none), on both databases: what it
saves it loads equal, pages in both orders, updates items, and keeps users apart. Where
chatledger decides otherwise, the test says so: attachments are refused, a page's
`after` is a position of chatledger's, and another user's thread is not found rather
than empty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from chatkit import store as chatkit_store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    InferenceOptions,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
    WidgetItem,
)
from chatkit.widgets import Card, Text

from chatledger.errors import ValidationError
from chatledger.integrations.chatkit import ChatKitContext, ChatLedgerStore
from chatledger.store import SQLAlchemyStore

ALICE = ChatKitContext(user_id="alice")
BOB = ChatKitContext(user_id="bob")


@pytest.fixture
async def kit(store: SQLAlchemyStore) -> AsyncIterator[ChatLedgerStore]:
    yield ChatLedgerStore(store)


def _thread(
    kit: ChatLedgerStore, *, at: datetime | None = None, title: str | None = "A thread"
) -> ThreadMetadata:
    return ThreadMetadata(
        id=kit.generate_thread_id(ALICE),
        title=title,
        created_at=at or datetime.now(UTC),
        metadata={"project": "groceries"},
    )


def _user(thread: ThreadMetadata, item_id: str, text: str, at: datetime) -> UserMessageItem:
    return UserMessageItem(
        id=item_id,
        thread_id=thread.id,
        created_at=at,
        content=[UserMessageTextContent(text=text)],
        inference_options=InferenceOptions(),
    )


def _items(thread: ThreadMetadata) -> list[ThreadItem]:
    now = datetime.now(UTC)
    return [
        _user(thread, "msg_1", "Hello!", now),
        AssistantMessageItem(
            id="msg_2",
            thread_id=thread.id,
            created_at=now + timedelta(seconds=1),
            content=[AssistantMessageContent(text="Hi there!")],
        ),
        WidgetItem(
            id="widget_1",
            thread_id=thread.id,
            created_at=now + timedelta(seconds=2),
            widget=Card(children=[Text(value="Milk")]),
            inputs=[],
        ),
    ]


async def test_a_thread_saved_loads_equal_and_takes_updates(kit: ChatLedgerStore) -> None:
    thread = _thread(kit)
    await kit.save_thread(thread, ALICE)
    loaded = await kit.load_thread(thread.id, ALICE)
    assert (loaded.id, loaded.title, loaded.metadata) == (thread.id, "A thread", thread.metadata)
    thread.title = "Renamed"
    await kit.save_thread(thread, ALICE)
    assert (await kit.load_thread(thread.id, ALICE)).title == "Renamed"
    untitled = _thread(kit, title=None)
    await kit.save_thread(untitled, ALICE)
    assert (await kit.load_thread(untitled.id, ALICE)).title is None


async def test_items_added_load_equal_in_both_orders_and_page_on(kit: ChatLedgerStore) -> None:
    thread = _thread(kit)
    await kit.save_thread(thread, ALICE)
    items = _items(thread)
    for item in items:
        await kit.add_thread_item(thread.id, item, ALICE)
    assert (await kit.load_thread_items(thread.id, None, 10, "asc", ALICE)).data == items
    desc = await kit.load_thread_items(thread.id, None, 10, "desc", ALICE)
    assert desc.data == items[::-1]
    first = await kit.load_thread_items(thread.id, None, 2, "asc", ALICE)
    assert first.data == items[:2] and first.has_more and first.after
    rest = await kit.load_thread_items(thread.id, first.after, 2, "asc", ALICE)
    assert rest.data == items[2:] and not rest.has_more and not rest.after
    # An item's id will do as `after` too.
    assert (await kit.load_thread_items(thread.id, "msg_1", 5, "asc", ALICE)).data == items[1:]


async def test_threads_page_oldest_or_newest_first(kit: ChatLedgerStore) -> None:
    now = datetime.now(UTC)
    threads = [_thread(kit, at=now + timedelta(seconds=n)) for n in range(3)]
    for thread in threads:
        await kit.save_thread(thread, ALICE)
    ids = [t.id for t in threads]
    page = await kit.load_threads(2, None, "asc", ALICE)
    assert [t.id for t in page.data] == ids[:2] and page.has_more and page.after
    rest = await kit.load_threads(2, page.after, "asc", ALICE)
    assert [t.id for t in rest.data] == ids[2:] and not rest.has_more
    # A thread's id will do as `after`, as the SDK's own stores take it.
    by_id = await kit.load_threads(2, ids[0], "asc", ALICE)
    assert [t.id for t in by_id.data] == ids[1:]
    assert [t.id for t in (await kit.load_threads(5, None, "desc", ALICE)).data] == ids[::-1]


async def test_an_item_saved_again_loads_as_saved(kit: ChatLedgerStore) -> None:
    thread = _thread(kit)
    await kit.save_thread(thread, ALICE)
    reply, widget = _items(thread)[1:]
    assert isinstance(reply, AssistantMessageItem)
    reply.content = []
    await kit.add_thread_item(thread.id, reply, ALICE)
    await kit.add_thread_item(thread.id, widget, ALICE)
    reply.content = [AssistantMessageContent(text="Written at last.")]
    await kit.save_item(thread.id, reply, ALICE)
    assert await kit.load_item(thread.id, reply.id, ALICE) == reply
    await kit.save_item(thread.id, widget, ALICE)
    assert await kit.load_item(thread.id, widget.id, ALICE) == widget
    listed = await kit.load_thread_items(thread.id, None, 10, "asc", ALICE)
    assert [i.id for i in listed.data] == [reply.id, widget.id]


async def test_missing_and_other_users_things_are_not_found_as_the_sdk_says(
    kit: ChatLedgerStore,
) -> None:
    thread = _thread(kit)
    await kit.save_thread(thread, ALICE)
    for item in _items(thread):
        await kit.add_thread_item(thread.id, item, ALICE)
    missing = [
        kit.load_item(thread.id, "does_not_exist", ALICE),
        kit.load_thread(thread.id, BOB),
        kit.load_thread_items(thread.id, None, 10, "asc", BOB),
        kit.load_item(thread.id, "msg_1", BOB),
        kit.delete_thread_item(thread.id, "msg_1", BOB),
        kit.delete_thread(thread.id, BOB),
    ]
    for attempt in missing:
        with pytest.raises(chatkit_store.NotFoundError):
            await attempt
    assert len((await kit.load_thread_items(thread.id, None, 10, "asc", ALICE)).data) == 3


async def test_ids_begin_as_the_sdks_and_attachments_are_refused(kit: ChatLedgerStore) -> None:
    thread = _thread(kit)
    assert kit.generate_item_id("message", thread, ALICE).startswith("msg_")
    assert kit.generate_item_id("task", thread, ALICE).startswith("tsk_")
    ids = {kit.generate_item_id("message", thread, ALICE) for _ in range(1000)}
    assert len(ids) == 1000
    file = FileAttachment(id="file_1", mime_type="text/plain", name="a.txt")
    with pytest.raises(ValidationError):
        await kit.save_attachment(file, ALICE)
    with pytest.raises(ValidationError):
        await kit.load_attachment("file_1", ALICE)
