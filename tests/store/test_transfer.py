"""Export and import in the store, on SQLite and PostgreSQL: a round trip is lossless,
a second import adds nothing, a broken conversation imports nothing of itself and its
line is named, hostile input writes nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from chatledger.domain import Branch, ChatMessage, Message, ToolCall
from chatledger.errors import ValidationError
from chatledger.store import Connector, SQLAlchemyStore
from chatledger.store.transfer import ImportReport, imported_conversation_id
from tests.factories import examples, row_counts, snapshot, whole_turn

MINUTE = timedelta(minutes=1)


async def turn(
    store: SQLAlchemyStore,
    user: str,
    conversation_id: str,
    message: str | None,
    *,
    branch: Branch | None = None,
    tool: bool = False,
) -> list[Message]:
    """A whole turn as the service writes it; with `tool`, a tool call and its result."""

    def closing(asked: Message) -> list[ChatMessage]:
        call = ToolCall(f"call-{asked.seq}", "add_task", '{"title": "milk"}')
        steps = [
            ChatMessage.assistant("adding", tool_calls=[call]),
            ChatMessage.tool(tool_call_id=call.id, name=call.name, content='{"id": 1}'),
        ]
        reply = ChatMessage.assistant(f"reply to {asked.seq}", metadata={"model": "m", "n": [1, 2]})
        return [*(steps if tool else []), reply]

    return await whole_turn(store, user, conversation_id, message, closing, branch=branch)


async def export_of(store: SQLAlchemyStore, user: str) -> str:
    return "".join([chunk async for chunk in store.export(user)])


def normalized(text: str, ids: dict[str, str]) -> list[dict[str, Any]]:
    """The export's records with the ids an import remaps mapped back (conversations)
    or left out (messages: new ones), and the export time left out; in a stable order."""
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        record.pop("exported_at", None)
        if record.get("type") == "message":
            del record["id"]
        for key in ("id", "conversation_id"):
            if record.get("type") != "task" and key in record:
                record[key] = ids.get(record[key], record[key])
        records.append(record)
    # Exports list conversations in id order, which remapping changes.
    return sorted(records, key=lambda record: json.dumps(record, sort_keys=True))


async def import_text(store: SQLAlchemyStore, user: str, text: str) -> ImportReport:
    data = text.encode()
    # Split anywhere, as a network would deliver it.
    return await store.import_lines(user, [data[i : i + 97] for i in range(0, len(data), 97)])


async def populate(store: SQLAlchemyStore, user: str) -> None:
    """Two conversations with an edit, a regeneration, tool calls, summaries and a head
    moved back; a pinned, archived one with metadata; an empty one; tasks."""
    first = await store.create_conversation(user, title="groceries", metadata={"tag": "home"})
    await turn(store, user, first.id, "hi")
    await turn(store, user, first.id, "add milk", tool=True)  # 3..6
    await turn(store, user, first.id, "add bread", branch=Branch(3, edit=True))
    await turn(store, user, first.id, None, branch=Branch(3, edit=False), tool=True)
    await store.summaries.save(user, first.id, content="they said hi", upto_seq=2)
    await store.summaries.save(user, first.id, content="milk was added", upto_seq=6)
    await store.set_head(user, first.id, 4)
    second = await store.create_conversation(user, title=None)
    await turn(store, user, second.id, "tab\tand newline\n and ünïcødé 🙂")
    await store.update_conversation(user, second.id, pinned=True, archived=True)
    await store.create_conversation(user, title="empty", temporary=True)
    await store.tasks.add(user, title="milk", description="2 litres")
    done = await store.tasks.add(user, title="bread")
    await store.tasks.complete(user, done.id)


async def test_a_round_trip_is_equal_field_by_field_and_a_second_import_adds_nothing(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    await populate(store, "alice")
    exported = await export_of(store, "alice")
    report = await import_text(store, "bob", exported)
    assert report.ok and report.to_dict()["conversations_imported"] == 3
    assert report.tasks_imported == 2
    ids = {c.id: c.source_id for c in report.conversations}
    assert normalized(await export_of(store, "bob"), ids) == normalized(exported, {})
    # What a turn reads is the same too: the branch, the head, the summary used.
    for imported in report.conversations:
        assert _reading(await store.load_context("bob", imported.id, limit=50)) == _reading(
            await store.load_context("alice", imported.source_id, limit=50)
        )
    before = await snapshot(connector, "bob")
    again = await import_text(store, "bob", exported)
    assert again.ok and again.to_dict()["conversations_present"] == 3
    assert again.tasks_present == 2 and again.tasks_imported == 0
    assert await snapshot(connector, "bob") == before
    # Alice importing her own export finds her own conversations there.
    own = await import_text(store, "alice", exported)
    assert own.ok and own.to_dict()["conversations_imported"] == 0


def _reading(context: Any) -> Any:
    summary, messages = context
    return (
        summary and (summary.upto_seq, summary.content, summary.token_count),
        [
            (m.seq, m.parent_seq, m.role, m.content, m.tool_calls, m.metadata, m.token_count)
            for m in messages
        ],
    )


async def test_imported_ids_are_the_importers_own_and_new_turns_continue_the_head(
    store: SQLAlchemyStore,
) -> None:
    await populate(store, "alice")
    report = await import_text(store, "bob", await export_of(store, "alice"))
    titles = {c.id: (await store.get_conversation("bob", c.id)).title for c in report.conversations}
    [imported] = [c for c in report.conversations if titles[c.id] == "groceries"]
    assert imported.id != imported.source_id
    other = await import_text(store, "carol", await export_of(store, "alice"))
    assert {c.id for c in other.conversations}.isdisjoint(c.id for c in report.conversations)
    alice_ids = {m.id for m in await store.history("alice", imported.source_id, limit=50)}
    bob = await store.history("bob", imported.id, limit=50)
    assert alice_ids.isdisjoint(m.id for m in bob)
    # The head's run was computed again: a new turn continues from the head.
    head = (await store.get_conversation("alice", imported.source_id)).head_seq
    assert head == 6 and (await store.get_conversation("bob", imported.id)).head_seq == head
    stored = await turn(store, "bob", imported.id, "and eggs")
    assert stored[0].parent_seq == head
    branch = [m.seq for m in await store.history("bob", imported.id, limit=50)]
    assert branch == [1, 2, 3, 4, 5, 6, 12, 13]


async def test_a_broken_conversation_imports_nothing_of_itself_and_names_its_line(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    await populate(store, "alice")
    lines = (await export_of(store, "alice")).splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    # The conversation with the most messages; its third message line is cut.
    at = max(range(len(lines)), key=lambda i: records[i].get("message_count", -1))
    source, count = records[at]["id"], records[at]["message_count"]
    broken = at + 3
    corrupted = [*lines]
    corrupted[broken] = corrupted[broken][:40] + "\n"
    report = await import_text(store, "bob", "".join(corrupted))
    assert [(f.line, f.message, f.source_id) for f in report.failures] == [
        (broken + 1, "the line is not JSON", source)
    ]
    assert report.to_dict()["conversations_imported"] == 2 and report.tasks_imported == 2
    rows = await snapshot(connector, "bob")
    assert imported_conversation_id("bob", source) not in {row[1] for row in rows["conversations"]}
    assert len(rows["messages"]) == sum(r.get("message_count", 0) for r in records) - count

    # Cut short in the middle of a conversation (its third message cut in two): that one
    # is not imported, the line where it stopped is named, the import is not complete.
    short = await import_text(store, "carol", "".join(lines[: broken + 1])[:-10])
    assert not short.complete
    assert [(f.line, f.source_id) for f in short.failures] == [(broken + 1, source)]
    assert source not in {c.source_id for c in short.conversations}
    # Cut at a line's end: the conversation misses messages, and says so.
    short = await import_text(store, "dave", "".join(lines[: broken + 1]))
    assert [(f.line, f.source_id) for f in short.failures] == [(broken + 1, source)]
    assert f"3 of its {count} messages" in short.failures[0].message
    carol = await snapshot(connector, "carol")
    assert imported_conversation_id("carol", source) not in {r[1] for r in carol["conversations"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(role="user", content="bell\x07"), "control character"),
        (lambda r: r.update(content="nul\x00"), "NUL"),
        (lambda r: r.update(content="x" * 300_000), "longer than"),
        (lambda r: r.update(seq="2"), "seq must be an integer"),
        (lambda r: r.update(seq=1), "out of order"),
        (lambda r: r.update(parent_seq=2), "not an earlier message"),
        (lambda r: r.update(parent_seq=9), "not an earlier message"),
        (lambda r: r.update(role="root"), "role must be"),
        (lambda r: r.update(metadata=[1]), "metadata must be a JSON object"),
        (lambda r: r.update(metadata=_deep(40)), "nested deeper"),
        (lambda r: r.update(tool_calls=[{"id": "x"}]), "exactly id, name and arguments"),
        (lambda r: r.update(tool_calls="[]"), "tool_calls must be a list"),
        (lambda r: r.update(created_at="yesterday"), "ISO 8601"),
        (lambda r: r.update(created_at="2024-01-01T00:00:00"), "time zone"),
        (lambda r: r.update(extra=1), "unknown extra"),
        (lambda r: r.pop("role"), "missing role"),
        (lambda r: r.update(role="tool", tool_call_id="nobody", name="f"), "answers tool call"),
    ],
)
async def test_hostile_messages_write_nothing(
    store: SQLAlchemyStore, connector: Connector, change: Any, message: str
) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, "alice", conversation.id, "one")
    await turn(store, "alice", conversation.id, "two")
    lines = [json.loads(line) for line in (await export_of(store, "alice")).splitlines()]
    change(lines[3])  # message 2
    text = "".join(json.dumps(line) + "\n" for line in lines)
    report = await import_text(store, "bob", text)
    assert [f.line for f in report.failures] == [4], report.failures
    assert message in report.failures[0].message
    assert await snapshot(connector, "bob") == {
        table: [] for table in await snapshot(connector, "x")
    }


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_hostile_files_write_nothing(store: SQLAlchemyStore, connector: Connector) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, "alice", conversation.id, "one")
    exported = await export_of(store, "alice")
    header, *rest = exported.splitlines(keepends=True)
    empty = {table: [] for table in await snapshot(connector, "nobody")}
    for text in (
        "",
        "[" * 100_000 + "\n",
        '{"format": "other"}\n' + "".join(rest),
        header.replace('"version":1', '"version":2') + "".join(rest),
        "\xff\xfe".encode("latin-1").decode("latin-1") + "\n",
    ):
        with pytest.raises(ValidationError):
            await import_text(store, "bob", text)
    assert await snapshot(connector, "bob") == empty
    # Lines past the line limit, deep nesting, a line that is not an object: refused
    # one by one, never held whole, never written.
    huge = "x" * (store._transfer.max_line_bytes + 10)
    for bad in (f'{{"type": "conversation", "title": "{huge}"}}', "[" * 100_000, "42"):
        report = await import_text(store, "bob", header + bad + "\n" + "".join(rest[:-1]))
        assert report.failures and report.failures[0].line == 2, report.failures
    assert await snapshot(connector, "bob") != empty  # the good conversation after it
    assert len((await snapshot(connector, "bob"))["conversations"]) == 1


@st.composite
def scripts(draw: st.DrawFn) -> list[list[tuple[str, int, bool]]]:
    """Per conversation, turns: new (at the head), edit or regenerate message k, with
    or without a tool call; head moves and summaries of message k."""
    step = st.tuples(
        st.sampled_from(["turn", "edit", "regenerate", "head", "summary"]),
        st.integers(0, 30),
        st.booleans(),
    )
    return draw(st.lists(st.lists(step, max_size=8), min_size=1, max_size=3))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=scripts())
def test_random_conversations_survive_a_round_trip(
    database_url: str, script: list[list[tuple[str, int, bool]]]
) -> None:
    asyncio.run(_round_trip(database_url, script))


async def _round_trip(url: str, script: list[list[tuple[str, int, bool]]]) -> None:
    store = SQLAlchemyStore.from_url(url)
    source, target = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
    try:
        for steps in script:
            conversation = await store.create_conversation(source, title="t")
            users: list[int] = []
            count = 0
            for kind, k, tool in steps:
                if kind in ("edit", "regenerate") and users:
                    seq = users[k % len(users)]
                    edit = kind == "edit"
                    made = await turn(
                        store, source, conversation.id, "again" if edit else None,
                        branch=Branch(seq, edit=edit), tool=tool,
                    )  # fmt: skip
                elif kind == "head" and count:
                    await store.set_head(source, conversation.id, k % count + 1)
                    continue
                elif kind == "summary" and count:
                    await store.summaries.save(
                        source, conversation.id, content=f"s{k}", upto_seq=k % count + 1
                    )
                    continue
                else:
                    made = await turn(store, source, conversation.id, f"m{k}", tool=tool)
                users += [m.seq for m in made if m.role.value == "user"]
                count = made[-1].seq
        exported = await export_of(store, source)
        report = await import_text(store, target, exported)
        assert report.ok, report.failures
        ids = {c.id: c.source_id for c in report.conversations}
        assert normalized(await export_of(store, target), ids) == normalized(exported, {})
        second = await import_text(store, target, exported)
        assert second.ok and not any(not c.present for c in second.conversations)
    finally:
        await store.delete_user(source)
        await store.delete_user(target)
        await store.close()


async def test_imported_messages_are_found_by_search(store: SQLAlchemyStore) -> None:
    await populate(store, "alice")
    report = await import_text(store, "bob", await export_of(store, "alice"))
    hits = (await store.search("bob", "bread")).items
    imported = {c.id for c in report.conversations}
    assert hits and {hit.conversation_id for hit in hits} <= imported
    assert [hit.seq for hit in hits] == [
        hit.seq for hit in (await store.search("alice", "bread")).items
    ]


async def test_two_replicas_importing_one_file_at_once_import_it_once(
    store: SQLAlchemyStore, connector: Connector, database_url: str
) -> None:
    await populate(store, "alice")
    export = await export_of(store, "alice")
    once = SQLAlchemyStore.from_url(database_url)
    try:
        await import_text(once, "carol", export)
    finally:
        await once.close()
    replicas = [SQLAlchemyStore.from_url(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(import_text(replica, "bob", export) for replica in replicas))
    finally:
        for replica in replicas:
            await replica.close()
    counts = {user: await row_counts(connector, user) for user in ("bob", "carol")}
    assert counts["bob"] == counts["carol"]
