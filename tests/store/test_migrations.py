"""The Alembic migrations create exactly the schema the code declares, on both databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import make_url

from chatledger.domain import ChatMessage
from chatledger.store import SQLAlchemyStore, connect
from chatledger.store.migrate import alembic_config
from chatledger.store.schema import autogenerate_filters, messages, metadata, turns
from chatledger.usage import UsageTotals
from tests.conftest import POSTGRES_URL, _create_database, _drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, not even the migrations."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("postgres_url")  # skips or fails the way the suite does
    name = f"chatledger_migrations_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    asyncio.run(_drop_database(name))


def _schema_diff(conn: Any) -> list[Any]:
    opts = {"compare_type": True, **autogenerate_filters(conn.dialect.name)}
    context = MigrationContext.configure(conn, opts=opts)
    return compare_metadata(context, metadata)


async def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    store = SQLAlchemyStore.from_url(empty_url)
    db = connect(empty_url)
    try:
        await store.migrate()
        assert await db.read(_schema_diff) == []
        tables = await db.read(lambda conn: set(inspect(conn).get_table_names()))
        assert tables >= {t.name for t in metadata.sorted_tables}
    finally:
        await store.close()
        await db.close()


async def test_migrating_twice_and_concurrently_is_harmless(empty_url: str) -> None:
    stores = [SQLAlchemyStore.from_url(empty_url) for _ in range(3)]
    try:
        await asyncio.gather(*(store.migrate() for store in stores))
        await stores[0].migrate()
        conversation = await stores[1].create_conversation("alice")
        assert (await stores[2].get_conversation("alice", conversation.id)).id == conversation.id
    finally:
        for store in stores:
            await store.close()


async def test_downgrade_to_nothing_and_back(empty_url: str) -> None:
    store = SQLAlchemyStore.from_url(empty_url)
    db = connect(empty_url)
    try:
        await store.migrate()
        await db.write(lambda conn: command.downgrade(alembic_config(conn), "base"))
        tables = await db.read(lambda conn: set(inspect(conn).get_table_names()))
        assert tables <= {"alembic_version"}
        await store.migrate()
        assert await db.read(_schema_diff) == []
    finally:
        await store.close()
        await db.close()


async def test_turns_from_before_usage_was_recorded_have_unknown_usage(empty_url: str) -> None:
    store = SQLAlchemyStore.from_url(empty_url)
    db = connect(empty_url)
    try:
        await store.migrate("0006")
        conversation = await store.create_conversation("alice")
        now = datetime.now(UTC)
        # Only the columns the table had then: the insert names no others.
        row = {
            "user_id": "alice",
            "conversation_id": conversation.id,
            "id": "t1",
            "user_seq": 1,
            "status": "completed",
            "started_at": now,
            "ended_at": now,
        }
        await db.write(lambda conn: conn.execute(insert(turns), row))
        await store.migrate()

        usage = select(turns.c.input_tokens, turns.c.output_tokens, turns.c.usage_estimated)
        assert tuple(await db.read(lambda conn: conn.execute(usage).one())) == (None, None, None)
        report = await store.token_usage("alice", first_day=now.date(), last_day=now.date())
        assert report.total == UsageTotals(turns=1, unknown_turns=1)
    finally:
        await store.close()
        await db.close()


async def test_conversations_from_before_branches_become_one_branch_each(empty_url: str) -> None:
    store = SQLAlchemyStore.from_url(empty_url)
    db = connect(empty_url)
    try:
        await store.migrate("0006")
        conversation = await store.create_conversation("alice")
        empty = await store.create_conversation("alice")
        now = datetime.now(UTC)
        rows = [
            {"user_id": "alice", "conversation_id": conversation.id, "seq": seq, "id": f"m{seq}",
             "role": "user" if seq % 2 else "assistant", "content": f"text {seq}",
             "token_count": 3, "created_at": now}
            for seq in range(1, 6)
        ]  # fmt: skip
        columns = "user_id, conversation_id, seq, id, role, content, token_count, created_at"
        values = ", ".join(f":{name.strip()}" for name in columns.split(","))

        def plant(conn: Any) -> None:
            conn.execute(text(f"INSERT INTO messages ({columns}) VALUES ({values})"), rows)
            conn.execute(
                text("UPDATE conversations SET next_seq = 6 WHERE id = :c"), {"c": conversation.id}
            )
            conn.execute(
                text(
                    "INSERT INTO summaries (user_id, conversation_id, upto_seq, content,"
                    " token_count, updated_at) VALUES ('alice', :c, 2, 'early', 1, :now)"
                ),
                {"c": conversation.id, "now": now},
            )

        await db.write(plant)
        await store.migrate()

        history = await store.history("alice", conversation.id)
        assert [(m.seq, m.parent_seq) for m in history] == [
            (1, None), (2, 1), (3, 2), (4, 3), (5, 4),
        ]  # fmt: skip
        assert (await store.get_conversation("alice", conversation.id)).head_seq == 5
        assert (await store.get_conversation("alice", empty.id)).head_seq is None
        summary, window = await store.load_context("alice", conversation.id, limit=10)
        assert summary is not None and summary.upto_seq == 2
        assert [m.seq for m in window] == [3, 4, 5]
        await store.append("alice", conversation.id, [ChatMessage.user("after")])
        assert (await store.history("alice", conversation.id, limit=1))[0].parent_seq == 5
        await store.append("alice", empty.id, [ChatMessage.user("first")])
        assert (await store.history("alice", empty.id))[0].parent_seq is None
        # Down below branches works while there are none, and is refused once there are.
        await db.write(lambda conn: command.downgrade(alembic_config(conn), "0006"))
        await store.migrate()
        branched = await store.create_conversation("alice")
        await store.append("alice", branched.id, [ChatMessage.user("one")])
        await store.set_head("alice", branched.id, 1)
        await db.write(
            lambda conn: conn.execute(
                text("UPDATE conversations SET head_seq = NULL WHERE id = :c"), {"c": branched.id}
            )
        )
        await store.append("alice", branched.id, [ChatMessage.user("second root")])
        with pytest.raises(RuntimeError, match="branches"):
            await db.write(lambda conn: command.downgrade(alembic_config(conn), "0006"))
        assert len(await store.history("alice", conversation.id)) == 6
    finally:
        await store.close()
        await db.close()


async def test_the_search_index_takes_in_what_was_stored_before_it(empty_url: str) -> None:
    store = SQLAlchemyStore.from_url(empty_url)
    db = connect(empty_url)
    try:
        await store.migrate("0006")
        conversation = await store.create_conversation("alice", title="before search")
        rows = [
            {"role": "system", "content": "okapi instructions"},
            {"role": "user", "content": "Where does the okapi live?"},
            {"role": "tool", "content": '{"okapi": "Congo"}'},
            {"role": "assistant", "content": "The okapi lives in the Congo."},
        ]
        now = datetime.now(UTC)
        values = [
            {
                **row,
                "user_id": "alice",
                "conversation_id": conversation.id,
                "seq": seq,
                "id": f"m{seq}",
                "token_count": 1,
                "created_at": now,
            }
            for seq, row in enumerate(rows, 1)
        ]
        # More than one backfill batch, of someone else's.
        bobs = await store.create_conversation("bob")
        values += [
            {
                "role": "user",
                "content": f"okapi number {seq}",
                "user_id": "bob",
                "conversation_id": bobs.id,
                "seq": seq,
                "id": f"b{seq}",
                "token_count": 1,
                "created_at": now,
            }
            for seq in range(1, 2_502)
        ]
        await db.write(lambda conn: conn.execute(insert(messages), values))

        await store.migrate()
        hits = (await store.search("alice", "okapi", include_tools=True)).items
        assert sorted(hit.seq for hit in hits) == [2, 3, 4]
        assert (await store.search("bob", "okapi 2501")).items[0].seq == 2501

        await db.write(lambda conn: command.downgrade(alembic_config(conn), "0006"))
        tables = await db.read(lambda conn: set(inspect(conn).get_table_names()))
        assert not {name for name in tables if name.startswith("message_search")}
        await store.migrate()
        assert len((await store.search("alice", "okapi")).items) == 2
        assert await db.read(_schema_diff) == []
    finally:
        await store.close()
        await db.close()
