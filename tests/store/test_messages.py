"""Messages: append (validation, atomicity, statement count) and history reads."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from chatledger.domain import ChatMessage, Role, ToolCall
from chatledger.errors import NotFoundError, TooLargeError, ValidationError
from chatledger.store import SQLAlchemyStore
from tests.factories import count_statements, message_seqs, row_counts, tool_exchange


async def test_append_assigns_contiguous_seqs_and_returns_what_was_stored(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    first = await store.append("alice", conversation.id, [ChatMessage.user("hi")])
    batch = await store.append(
        "alice",
        conversation.id,
        [*tool_exchange("call_1", result='{"task_id": 1}'), ChatMessage.assistant("Done.")],
    )
    assert [m.seq for m in first + batch] == [1, 2, 3, 4]
    assert await store.history("alice", conversation.id) == first + batch
    call = batch[0].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("call_1", "add_task", '{"title": "milk"}')
    assert (batch[1].role, batch[1].tool_call_id, batch[1].name) == (
        Role.TOOL,
        "call_1",
        "add_task",
    )
    assert all(m.token_count > 0 for m in first + batch)
    assert (await store.get_conversation("alice", conversation.id)).message_count == 4


async def test_append_bumps_updated_at(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    [message] = await store.append("alice", conversation.id, [ChatMessage.user("hi")])
    updated = await store.get_conversation("alice", conversation.id)
    assert updated.updated_at == message.created_at > conversation.updated_at


async def test_metadata_and_tool_calls_given_as_dicts_round_trip(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    stored = await store.append(
        "alice",
        conversation.id,
        [
            ChatMessage.user("hi", metadata={"client": "web", "nested": {"n": [1, 2]}}),
            ChatMessage.assistant(
                tool_calls=[{"id": "c1", "name": "list_tasks", "arguments": {"status": "all"}}]  # type: ignore[list-item]
            ),
        ],
    )
    assert stored == await store.history("alice", conversation.id)
    assert stored[0].metadata == {"client": "web", "nested": {"n": [1, 2]}}
    assert stored[1].tool_calls == (ToolCall("c1", "list_tasks", '{"status": "all"}'),)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (ChatMessage(role="robot", content="x"), "role"),  # type: ignore[arg-type]
        (ChatMessage(role=Role.TOOL, content="{}"), "tool_call_id"),
        (ChatMessage(role=Role.USER, content="x", tool_call_id="c1"), "tool_call_id"),
        (ChatMessage(role=Role.ASSISTANT, tool_calls="add_task"), "tool_calls"),  # type: ignore[arg-type]
        (ChatMessage(role=Role.ASSISTANT, tool_calls=[{"id": "c1"}]), "tool_calls[0]"),  # type: ignore[list-item]
        (
            ChatMessage(
                role=Role.ASSISTANT, tool_calls=[{"id": "", "name": "x", "arguments": "{}"}]
            ),  # type: ignore[list-item]
            "tool_calls[0].id",
        ),
        (
            ChatMessage(role=Role.USER, tool_calls=[ToolCall("c1", "add_task", "{}")]),
            "tool_calls",
        ),
        (ChatMessage.user("nul \x00 inside"), "content"),
        (ChatMessage.user("lone \ud83d surrogate"), "content"),
        (ChatMessage.user(b"bytes"), "content"),  # type: ignore[arg-type]
        (ChatMessage.user("ok", metadata={"k": "\x00"}), "metadata"),
        (ChatMessage.tool(tool_call_id="c\x00", name="t", content="{}"), "tool_call_id"),
        (
            ChatMessage.assistant(tool_calls=[ToolCall("c1", "add_task", '{"t": "\x00"}')]),
            "tool_calls[0].arguments",
        ),
    ],
)
async def test_invalid_messages_name_the_field_and_store_nothing(
    store: SQLAlchemyStore, connector, message: ChatMessage, field: str
) -> None:
    conversation = await store.create_conversation("alice")
    with pytest.raises(ValidationError) as raised:
        await store.append("alice", conversation.id, [message])
    assert raised.value.field == field
    assert (await row_counts(connector, "alice"))["messages"] == 0


async def test_content_over_the_configured_maximum_is_too_large(database_url: str) -> None:
    store = SQLAlchemyStore.from_url(database_url, max_message_chars=10)
    try:
        conversation = await store.create_conversation("alice")
        await store.append("alice", conversation.id, [ChatMessage.user("x" * 10)])
        with pytest.raises(TooLargeError) as raised:
            await store.append("alice", conversation.id, [ChatMessage.user("x" * 11)])
        assert raised.value.field == "content"
    finally:
        await store.close()


async def test_a_tool_call_id_or_name_longer_than_its_column_is_too_large(
    store: SQLAlchemyStore, connector
) -> None:
    # Both columns hold 255 characters: PostgreSQL refused more with a database error.
    conversation = await store.create_conversation("alice")
    for message, field in (
        (ChatMessage(role=Role.TOOL, content="1", tool_call_id="c" * 256), "tool_call_id"),
        (ChatMessage(role=Role.TOOL, content="1", tool_call_id="c", name="n" * 256), "name"),
    ):
        with pytest.raises(TooLargeError) as raised:
            await store.append("alice", conversation.id, [message])
        assert raised.value.field == field
    assert (await row_counts(connector, "alice"))["messages"] == 0
    fits = ChatMessage(role=Role.TOOL, content="1", tool_call_id="c" * 255, name="n" * 255)
    [stored] = await store.append("alice", conversation.id, [fits])
    assert (stored.tool_call_id, stored.name) == ("c" * 255, "n" * 255)


async def test_a_batch_with_an_invalid_third_message_stores_none(
    store: SQLAlchemyStore, connector
) -> None:
    conversation = await store.create_conversation("alice")
    batch = [ChatMessage.user("one"), ChatMessage.assistant("two"), ChatMessage.user("\x00")]
    with pytest.raises(ValidationError):
        await store.append("alice", conversation.id, batch)
    assert (await row_counts(connector, "alice"))["messages"] == 0
    assert (await store.get_conversation("alice", conversation.id)).message_count == 0
    [next_one] = await store.append("alice", conversation.id, [ChatMessage.user("next")])
    assert next_one.seq == 1


async def test_a_failed_insert_rolls_back_the_seq_reservation(
    store: SQLAlchemyStore, connector
) -> None:
    conversation = await store.create_conversation("alice")
    await store.append("alice", conversation.id, [ChatMessage.user("one")])
    # Plant a row where the next append will write, so its INSERT fails after its UPDATE
    # has reserved seq 2: the transaction must undo the reservation too.
    await connector.write(
        lambda conn: conn.execute(
            text(
                "INSERT INTO messages (user_id, conversation_id, seq, id, role, content,"
                " token_count, created_at, parent_seq, run_start) VALUES ('alice', :c, 2,"
                " 'planted', 'user', 'x', 1, CURRENT_TIMESTAMP, 1, 1)"
            ),
            {"c": conversation.id},
        )
    )
    # On PostgreSQL the append is one statement on the driver: its error is asyncpg's.
    failed = IntegrityError if store.dialect == "sqlite" else asyncpg.UniqueViolationError
    with pytest.raises(failed):
        await store.append("alice", conversation.id, [ChatMessage.user("two")])
    after = await store.get_conversation("alice", conversation.id)
    assert (after.message_count, after.head_seq) == (1, 1)


async def test_empty_batches_are_refused(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    with pytest.raises(ValidationError):
        await store.append("alice", conversation.id, [])


async def test_append_to_a_missing_conversation_is_not_found(store: SQLAlchemyStore) -> None:
    with pytest.raises(NotFoundError):
        await store.append("alice", "no-such-conversation", [ChatMessage.user("hi")])


@pytest.mark.parametrize("size", [1, 4, 100])
async def test_append_is_one_statement_on_postgresql_three_on_sqlite_whatever_the_batch_size(
    store: SQLAlchemyStore, size: int
) -> None:
    conversation = await store.create_conversation("alice")
    batch = [ChatMessage.user(f"m{i}") for i in range(size)]
    async with count_statements(store.sync_engine) as statements:
        await store.append("alice", conversation.id, batch)
    if store.dialect == "postgresql":
        [statement] = statements
        assert statement.lstrip().upper().startswith("WITH RESERVED AS")
    else:
        assert len(statements) == 3, statements
        assert statements[0].lstrip().upper().startswith("UPDATE CONVERSATIONS")
        assert statements[1].lstrip().upper().startswith("INSERT INTO MESSAGES")
        assert statements[2].lstrip().upper().startswith("INSERT INTO MESSAGE_SEARCH")
    stored = await store.history("alice", conversation.id, limit=1000)
    assert [m.content for m in stored] == [f"m{i}" for i in range(size)]
    assert [m.parent_seq for m in stored] == [None, *range(1, size)]
    hits = await store.search("alice", f"m{size - 1}")
    assert [h.seq for h in hits.items] == [size]


async def test_messages_with_nothing_to_search_add_no_statement(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    batch = [ChatMessage.system("be brief"), ChatMessage.user("?!"), ChatMessage.assistant("🙂")]
    async with count_statements(store.sync_engine) as statements:
        await store.append("alice", conversation.id, batch)
    assert len(statements) == (1 if store.dialect == "postgresql" else 2), statements


async def test_history_is_the_latest_messages_in_order(store: SQLAlchemyStore, connector) -> None:
    conversation = await store.create_conversation("alice")
    for start in range(0, 10_000, 1_000):
        await store.append(
            "alice",
            conversation.id,
            [ChatMessage.user(f"message {n}") for n in range(start + 1, start + 1_001)],
        )
    latest = await store.history("alice", conversation.id, limit=50)
    assert [m.seq for m in latest] == list(range(9_951, 10_001))
    assert [m.content for m in latest] == [f"message {n}" for n in range(9_951, 10_001)]
    assert await message_seqs(connector, "alice", conversation.id) == list(range(1, 10_001))


async def test_history_is_one_query_whatever_the_length(store: SQLAlchemyStore) -> None:
    # The head joined to one range scan of its run: a conversation never edited is one.
    conversation = await store.create_conversation("alice")
    await store.append("alice", conversation.id, [ChatMessage.user(str(n)) for n in range(500)])
    async with count_statements(store.sync_engine) as statements:
        latest = await store.history("alice", conversation.id, limit=50)
        earlier = await store.history("alice", conversation.id, limit=50, before_seq=100)
    assert len(statements) == 2
    assert [m.seq for m in latest] == list(range(451, 501))
    assert [m.seq for m in earlier] == list(range(50, 100))
    # Nothing of the head's run in the window, or no conversation: the head is read first.
    assert await store.history("alice", conversation.id, after_seq=500) == []
    empty = await store.create_conversation("alice")
    assert await store.history("alice", empty.id) == []
    with pytest.raises(NotFoundError):
        await store.history("bob", conversation.id)


async def test_a_turns_context_is_one_query_with_or_without_a_summary(
    store: SQLAlchemyStore,
) -> None:
    # The head with the newest summary of its run, and one range scan after it.
    conversation = await store.create_conversation("alice")
    await store.append("alice", conversation.id, [ChatMessage.user(str(n)) for n in range(500)])
    for summarized in (False, True):
        if summarized:
            await store.summaries.save("alice", conversation.id, content="s", upto_seq=450)
        async with count_statements(store.sync_engine) as statements:
            summary, window = await store.load_context("alice", conversation.id, limit=100)
        assert len(statements) == 1
        assert (summary is not None, window[0].seq) == (summarized, 451 if summarized else 401)


async def test_paging_backwards_visits_every_message_exactly_once(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append("alice", conversation.id, [ChatMessage.user(str(n)) for n in range(1, 238)])
    seen: list[int] = []
    before = None
    while page := await store.history("alice", conversation.id, limit=20, before_seq=before):
        assert [m.seq for m in page] == sorted(m.seq for m in page)
        seen = [m.seq for m in page] + seen
        before = page[0].seq
    assert seen == list(range(1, 238))


async def test_history_of_an_empty_conversation_is_empty_but_a_missing_one_is_not_found(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    assert await store.history("alice", conversation.id) == []
    assert await store.history("alice", conversation.id, before_seq=2**70) == []
    with pytest.raises(NotFoundError):
        await store.history("alice", "missing")


async def test_history_bounds_at_the_ends_of_a_bigint_read_nothing(store: SQLAlchemyStore) -> None:
    # Found red-teaming: on PostgreSQL the largest `after_seq` overflowed the statement's
    # `after + 1` ("bigint out of range") instead of reading nothing past it.
    conversation = await store.create_conversation("alice")
    await store.append("alice", conversation.id, [ChatMessage.user("one")])
    for after in (2**63 - 2, 2**63 - 1, 2**70):
        assert await store.history("alice", conversation.id, after_seq=after) == []
        assert await store.history("alice", conversation.id, after_seq=after, leaf=1) == []
        assert (
            await store.history("alice", conversation.id, after_seq=after, oldest_first=True) == []
        )
    for before in (-(2**63) + 1, -(2**70)):
        assert await store.history("alice", conversation.id, before_seq=before) == []


@pytest.mark.parametrize("before_seq", ["10", 1.5, True])
async def test_history_refuses_a_non_integer_before_seq(
    store: SQLAlchemyStore, before_seq: object
) -> None:
    conversation = await store.create_conversation("alice")
    with pytest.raises(ValidationError):
        await store.history("alice", conversation.id, before_seq=before_seq)  # type: ignore[arg-type]


async def test_transactions_commit_together_or_not_at_all(
    store: SQLAlchemyStore, connector
) -> None:
    conversation = await store.create_conversation("alice")
    async with store.transaction() as tx:
        task = await tx.tasks.add("alice", title="milk")
        await tx.append(
            "alice", conversation.id, tool_exchange("c1", result=f'{{"id": {task.id}}}')
        )
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await tx.tasks.add("alice", title="eggs")
            await tx.append("alice", conversation.id, tool_exchange("c2"))
            raise RuntimeError("boom")
    counts = await row_counts(connector, "alice")
    assert (counts["tasks"], counts["messages"]) == (1, 2)
    assert [t.title for t in await store.tasks.list("alice")] == ["milk"]


async def test_user_messages_refuse_control_characters_and_replies_keep_them(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    with pytest.raises(ValidationError) as refused:
        await store.append("alice", conversation.id, [ChatMessage.user("hi\x1b[31m")])
    assert refused.value.field == "content"
    # What a model or a tool said is the record of what it said; it is escaped where shown.
    [stored] = await store.append(
        "alice", conversation.id, [ChatMessage.assistant("colour \x1b[31mred\x1b[0m")]
    )
    assert stored.content == "colour \x1b[31mred\x1b[0m"
    with pytest.raises(ValidationError):
        await store.create_conversation("alice", title="x\x07")
