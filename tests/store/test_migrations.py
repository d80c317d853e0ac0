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
from sqlalchemy import insert, inspect, select
from sqlalchemy.engine import make_url

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
