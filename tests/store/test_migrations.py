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
from sqlalchemy import insert, inspect
from sqlalchemy.engine import make_url

from chatledger.store import SQLAlchemyStore, connect
from chatledger.store.migrate import alembic_config
from chatledger.store.schema import autogenerate_filters, messages, metadata
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
