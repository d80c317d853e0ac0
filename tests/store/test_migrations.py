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
from chatledger.store.schema import metadata, turns
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
    context = MigrationContext.configure(conn, opts={"compare_type": True})
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
