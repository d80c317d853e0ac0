"""PostgreSQL going away under a running store: every connection-level failure is
`UnavailableError` (a 503), never a generic database error (a 500), and the pool recovers
by itself — the first request after the database is back succeeds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from chatledger.domain import ChatMessage
from chatledger.errors import UnavailableError
from chatledger.store import SQLAlchemyStore, connect, engine


@pytest.fixture
def user() -> str:
    # The run's PostgreSQL database is shared by these tests and not emptied between them.
    return f"user-{uuid.uuid4()}"


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[SQLAlchemyStore]:
    store = SQLAlchemyStore.from_url(postgres_url)
    yield store
    await store.close()


async def terminate_backends(postgres_url: str) -> int:
    """Do what an administrator's `pg_terminate_backend` (or a fast shutdown) does to every
    other connection to this database: end it with SQLSTATE 57P01."""
    url = make_url(postgres_url)
    admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
    finally:
        await admin.close()
    return killed


async def test_a_terminated_pooled_connection_is_unavailable_then_replaced(
    pg_store: SQLAlchemyStore,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    user: str,
) -> None:
    # Used again at once, a connection is not pinged: the failure is the request's.
    monkeypatch.setattr(engine, "IDLE_BEFORE_PING", 3600.0)
    await pg_store.create_conversation(user)
    assert await terminate_backends(postgres_url) >= 1
    with pytest.raises(UnavailableError):
        await pg_store.list_conversations(user)
    # The failure threw the dead connection (and its pool-mates) away.
    assert len((await pg_store.list_conversations(user)).items) == 1


async def test_an_idle_pooled_connection_is_pinged_so_the_first_request_after_succeeds(
    pg_store: SQLAlchemyStore,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    user: str,
) -> None:
    monkeypatch.setattr(engine, "IDLE_BEFORE_PING", 0.0)
    await pg_store.create_conversation(user)
    assert await terminate_backends(postgres_url) >= 1
    await pg_store.ping()
    assert len((await pg_store.list_conversations(user)).items) == 1


async def test_outage_states_are_unavailable_and_statement_errors_are_not() -> None:
    class Failure(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    from sqlalchemy import exc

    for state in ("57P01", "57P02", "57P03", "08006", "08001", "53300"):
        with pytest.raises(UnavailableError), engine.database_errors():
            raise exc.DBAPIError("SELECT 1", None, Failure(state))
    for state in ("23505", "42P01", "22P02", ""):
        with pytest.raises(exc.DBAPIError), engine.database_errors():
            raise exc.DBAPIError("SELECT 1", None, Failure(state))


async def test_a_statement_cut_short_by_a_shutdown_is_unavailable(
    pg_store: SQLAlchemyStore, postgres_url: str
) -> None:
    # A server shutting down ends the statements it is running with 57P01, on a
    # connection that still looks open: the case that reached clients as a 500.
    db = connect(postgres_url)
    try:
        running = asyncio.create_task(
            db.read(lambda conn: conn.execute(text("SELECT pg_sleep(30)")).all())
        )
        admin = await asyncpg.connect(
            make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
        )
        try:
            for _ in range(1000):  # until the statement runs, for 10 s at most
                if await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
                    " AND state = 'active'"
                ):
                    break
                await asyncio.sleep(0.01)
        finally:
            await admin.close()
        await terminate_backends(postgres_url)
        with pytest.raises(UnavailableError):
            await running
    finally:
        await db.close()


async def test_a_terminated_pool_fails_one_statement_on_the_driver_then_recovers(
    pg_store: SQLAlchemyStore,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    user: str,
) -> None:
    # The hot statements go to asyncpg's connection itself (`Connector.fetch`), past
    # SQLAlchemy's handling of a disconnect: the first to find the server gone must take
    # the pool's other connections with it, as SQLAlchemy's own statements do.
    monkeypatch.setattr(engine, "IDLE_BEFORE_PING", 3600.0)
    conversation = await pg_store.create_conversation(user)
    await pg_store.append(user, conversation.id, [ChatMessage.user("hello")])
    # Five connections in the pool, all in steady use (so never pinged).
    await asyncio.gather(*(pg_store.history(user, conversation.id) for _ in range(5)))
    assert await terminate_backends(postgres_url) >= 5
    with pytest.raises(UnavailableError):
        await pg_store.history(user, conversation.id)
    for _ in range(5):
        assert [m.content for m in await pg_store.history(user, conversation.id)] == ["hello"]


async def test_a_wrong_statement_on_the_driver_is_a_bug_not_an_outage(postgres_url: str) -> None:
    # Neither the server refusing a statement nor asyncpg refusing its arguments says
    # anything about the database being there: they are raised as they are, and the
    # connection, still good, goes back to the pool.
    db = connect(postgres_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await db.fetch(engine.Statement("SELECT 1 / :zero"), {"zero": 0})
        with pytest.raises(asyncpg.DataError):
            await db.fetch(engine.Statement("SELECT :n::integer"), {"n": "not a number"})
        assert db.sync_engine.pool.checkedin() == 1  # neither thrown away
        assert await db.fetch(engine.Statement("SELECT :n::integer"), {"n": 7}) == [(7,)]
    finally:
        await db.close()
