"""Databases for the tests: a fresh SQLite file per test, and a PostgreSQL database per run.

Every store test runs on both (`database_url` is parametrized), so neither drifts. The
PostgreSQL URL comes from `CHATLEDGER_TEST_POSTGRES_URL`; each run creates and drops its
own database, so concurrent runs never collide. Locally an unreachable server skips the
PostgreSQL half with a loud reason; with `CI=true` it fails the run instead.

Hypothesis runs under its `default` profile in `make test` (and CI), and under `check`, a
tenth of the examples, in `make check`'s quick loop (`--hypothesis-profile=check`); tests
that ask for a count of their own scale it with `tests.factories.examples`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import asyncpg
import pytest
from hypothesis import settings
from sqlalchemy.engine import make_url

from chatledger.store import Connector, SQLAlchemyStore, connect
from chatledger.store.schema import metadata

POSTGRES_URL = os.environ.get(
    "CHATLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TABLES = tuple(table.name for table in metadata.sorted_tables)
DATABASES = ("sqlite", "postgresql")

settings.register_profile("check", max_examples=10)

# Every test in these directories starts processes or a browser: slow, marked or not.
_SLOW_DIRECTORIES: Final = frozenset({"process", "browser"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.relative_to(here).parts[0] in _SLOW_DIRECTORIES:
            item.add_marker(pytest.mark.slow)
    # Slow tests first (in their order): parallel workers start on the longest files, and
    # the many short ones fill in at the end instead of one long file running on alone.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _admin_dsn() -> str:
    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)


async def _create_database(name: str) -> None:
    admin = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def _drop_database(name: str) -> None:
    admin = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _migrate(url: str) -> None:
    store = SQLAlchemyStore.from_url(url)
    try:
        await store.migrate()
    finally:
        await store.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database that lives as long as this test run."""
    name = f"chatledger_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_create_database(name))
    except (OSError, asyncpg.PostgresError) as error:
        reason = f"PostgreSQL at {make_url(POSTGRES_URL).host} is unreachable: {error!r}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI=true: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(reason)
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_drop_database(name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(_migrate(f"sqlite:///{path}"))
    return path


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: SQLite or PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "chatledger.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(empty_postgres(url))
    return url


async def empty_postgres(url: str) -> None:
    """Delete every row of the test database's tables, children first.

    DELETE rather than TRUNCATE: on tables as small as a test leaves them it takes about
    2 ms against TRUNCATE's 35 (which gives every table new files), once per PostgreSQL
    test. No table has a sequence for TRUNCATE to reset.
    """
    dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute("; ".join(f"DELETE FROM {table}" for table in reversed(TABLES)))
    finally:
        await conn.close()


@pytest.fixture
async def connector(database_url: str) -> AsyncIterator[Connector]:
    """A connector of its own, for tests to look at the database behind the store's back."""
    db = connect(database_url)
    yield db
    await db.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SQLAlchemyStore]:
    store = SQLAlchemyStore.from_url(database_url)
    yield store
    await store.close()


# sse-starlette starts one watcher per event loop, for the loop's life, on purpose.
_LOOP_LONG_TASKS: Final = frozenset({"_shutdown_watcher"})


@pytest.fixture(autouse=True)
async def _no_task_left_behind() -> AsyncIterator[None]:
    """Fails a test that leaves a task of ours running: one caught in the middle of a
    statement when the loop closes costs the pool its connection (CI once found one), and
    any other is work nobody waits for."""
    yield
    await asyncio.sleep(0)  # tasks cancelled during teardown finish here
    left = {
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task()
        and getattr(task.get_coro(), "__name__", None) not in _LOOP_LONG_TASKS
    }
    assert not left, f"tasks left running: {left}"
