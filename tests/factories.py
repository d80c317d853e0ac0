"""Helpers for tests: looking at the database directly, and building messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from hypothesis import settings
from sqlalchemy import Engine, event, text

from chatledger.domain import Branch, ChatMessage, Message, Role, ToolCall, TurnStatus
from chatledger.storage import Ending, Lease
from chatledger.store import Connector, SQLAlchemyStore
from chatledger.store.schema import metadata

# A ChatGPT data export's conversations.json, small, with branches.
CHATGPT_EXPORT = Path(__file__).parent / "fixtures" / "chatgpt_conversations.json"

# Every table, each leading with user_id: what a user owns is found in all of them alike.
TABLES = tuple(table.name for table in metadata.sorted_tables)


async def row_counts(db: Connector, user_id: str) -> dict[str, int]:
    """How many rows of each table belong to `user_id`, read with plain SQL."""

    def work(conn: Any) -> dict[str, int]:
        return {
            table: conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE user_id = :u"), {"u": user_id}
            ).scalar_one()
            for table in TABLES
        }

    return await db.read(work)


async def message_seqs(db: Connector, user_id: str, conversation_id: str) -> list[int]:
    return await db.read(
        lambda conn: list(
            conn.execute(
                text(
                    "SELECT seq FROM messages WHERE user_id = :u AND conversation_id = :c"
                    " ORDER BY seq"
                ),
                {"u": user_id, "c": conversation_id},
            ).scalars()
        )
    )


async def snapshot(db: Connector, user_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the user owns, table by table, in a stable order."""

    def work(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table: [
                tuple(row)
                for row in conn.execute(
                    text(f"SELECT * FROM {table} WHERE user_id = :u ORDER BY 2, 3"),
                    {"u": user_id},
                )
            ]
            for table in TABLES
            if table != "task_counters"
        }

    return await db.read(work)


def examples(count: int) -> int:
    """A test's own Hypothesis example count, scaled as the running profile scales the
    default of 100 (`make check` runs a tenth; `make test` all of them)."""
    default = settings.get_profile("default").max_examples
    return max(1, count * settings().max_examples // default)


@asynccontextmanager
async def count_statements(engine: Engine) -> AsyncIterator[list[str]]:
    """Collect the SQL statements sent through `engine`'s pool (BEGIN, COMMIT and PRAGMA
    not included); the list is complete on leaving the block (see `_sent`)."""

    def statement(sql: str) -> str | None:
        return None if sql.lstrip().upper().startswith(_NOT_STATEMENTS) else sql

    async with _sent(engine, statement) as sent:
        yield sent


@asynccontextmanager
async def count_round_trips(engine: Engine) -> AsyncIterator[list[str]]:
    """What a client sends through `engine`'s pool, one entry per round trip to the
    server: each statement (its first words), and the BEGIN and COMMIT of a transaction.
    A statement outside a transaction (reads, `Connector.fetch`) sends neither. The list
    is complete on leaving the block (see `_sent`).

    Counted on a warm connection: the first use of a statement on a PostgreSQL connection
    also prepares it (one more round trip), which later uses skip.
    """

    def trip(sql: str) -> str | None:
        return None if sql.startswith("PRAGMA") else " ".join(sql.split()[:3])

    async with _sent(engine, trip) as sent:
        yield sent


_NOT_STATEMENTS: Final = ("BEGIN", "COMMIT", "PRAGMA")


@asynccontextmanager
async def _sent(engine: Engine, entry: Callable[[str], str | None]) -> AsyncIterator[list[str]]:
    """Every statement sent through `engine`'s pool, and "BEGIN" and "COMMIT" where a
    transaction begins and commits, each as `entry` makes it (None: left out).

    Statements of units of work are seen as SQLAlchemy runs them; those `Connector.fetch`
    sends on the asyncpg connection itself, by asyncpg's query logger on each connection
    the pool lends out. asyncpg calls its loggers soon after, not during, a statement: the
    list is complete once the loop has run them, on leaving the block.
    """
    sent: list[str] = []
    logged: list[Any] = []

    def add(sql: str) -> None:
        if (shown := entry(sql)) is not None:
            sent.append(shown)

    def transacts(conn: Any) -> bool:
        return bool(conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT")

    def statement(conn: Any, cursor: Any, text: str, *args: Any) -> None:
        add(text)

    def begin(conn: Any) -> None:
        if transacts(conn):
            add("BEGIN")

    def commit(conn: Any) -> None:
        if transacts(conn):
            add("COMMIT")

    def query(record: Any) -> None:
        # asyncpg logs the BEGIN and COMMIT that SQLAlchemy sends too: counted above.
        if record.query.split()[0].rstrip(";") not in ("BEGIN", "COMMIT", "ROLLBACK"):
            add(record.query)

    def lent(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        # asyncpg's connection, under SQLAlchemy's adapter; sqlite3's has no logger.
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver not in logged:
            driver.add_query_logger(query)
            logged.append(driver)

    listeners = {"before_cursor_execute": statement, "begin": begin, "commit": commit}
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    event.listen(engine.pool, "checkout", lent)
    try:
        yield sent
        await asyncio.sleep(0)
    finally:
        event.remove(engine.pool, "checkout", lent)
        for name, listener in listeners.items():
            event.remove(engine, name, listener)
        for driver in logged:
            driver.remove_query_logger(query)


def tool_exchange(call_id: str, name: str = "add_task", result: str = "{}") -> list[ChatMessage]:
    """An assistant tool call followed by its result."""
    return [
        ChatMessage.assistant(tool_calls=[ToolCall(call_id, name, '{"title": "milk"}')]),
        ChatMessage.tool(tool_call_id=call_id, name=name, content=result),
    ]


def assert_invariants(history: Sequence[Message], *, branch: bool = False) -> None:
    """DESIGN.md's invariants on a whole conversation, checked message by message.

    - seq is 1..N without gaps (on a `branch` of a conversation with several: each
      message's parent is the one before it);
    - every assistant tool call is followed, before anything else, by exactly one result
      for each of its calls, and every result answers a call;
    - every turn (a user message and what follows it) ends with an assistant message
      without tool calls before the next user message, and the conversation ends with one;
    - no message id appears twice, and no tool call id twice within a turn (models may
      reuse ids like "call_0" across turns; within one, a repeat is a double execution).
    """
    if branch:
        parents = [None, *(m.seq for m in history[:-1])]
        assert [m.parent_seq for m in history] == parents, "not one branch"
    else:
        assert [m.seq for m in history] == list(range(1, len(history) + 1)), "seq has gaps"
    assert len({m.id for m in history}) == len(history), "duplicated message"
    waiting: list[str] = []
    turn_calls: set[str] = set()
    last_role = None
    for message in history:
        if message.role is Role.USER:
            turn_calls = set()
        for call in message.tool_calls:
            assert call.id not in turn_calls, f"seq {message.seq}: tool call {call.id} twice"
            turn_calls.add(call.id)
        if waiting:
            assert message.role is Role.TOOL, f"seq {message.seq}: a tool call has no result"
            assert message.tool_call_id in waiting, f"seq {message.seq}: result for no call"
            waiting.remove(message.tool_call_id)
            continue
        assert message.role is not Role.TOOL, f"seq {message.seq}: orphaned tool result"
        if message.role is Role.USER:
            assert last_role in (None, "reply"), f"seq {message.seq}: previous turn not closed"
        waiting = [call.id for call in message.tool_calls]
        if message.role is Role.ASSISTANT and not message.tool_calls:
            last_role = "reply"
        elif message.role is not Role.SYSTEM:
            last_role = message.role.value
    assert not waiting, "the last tool call has no result"
    assert last_role in (None, "reply"), "the last turn is not closed"


async def whole_turn(
    store: SQLAlchemyStore,
    user_id: str,
    conversation_id: str,
    message: str | None,
    closing: Callable[[Message], Sequence[ChatMessage]],
    *,
    branch: Branch | None = None,
) -> list[Message]:
    """A whole turn as the service writes it: started (on `branch`), then ended with the
    messages `closing` gives for the user message it answers; its messages, that first."""
    lease = Lease.new(timedelta(minutes=1))
    asked, _ = await store.turns.start(
        user_id,
        conversation_id,
        None if message is None else ChatMessage.user(message),
        turn_id=lease.id,
        lease_expires_at=lease.expires_at,
        branch=branch,
    )
    _, stored, _ = await store.turns.finish(
        user_id,
        conversation_id,
        lease.id,
        closing(asked),
        earlier=[asked],
        ending=Ending(TurnStatus.COMPLETED),
        idempotency_key=None,
        events=[],
        first_event_seq=2,
    )
    return [asked, *stored]


def without_ids(export: str) -> list[dict[str, Any]]:
    """An export's records without what an import gives anew: ids (tasks keep theirs) and
    the export's time."""
    records = []
    for line in export.splitlines():
        record = json.loads(line)
        for key in ("id", "conversation_id", "exported_at"):
            if record.get("type") != "task":
                record.pop(key, None)
        records.append(record)
    return records


@asynccontextmanager
async def turns_refuse_updates(db: Connector, user_id: str) -> AsyncIterator[None]:
    """While open, the database refuses (a trigger raises) any update of `user_id`'s
    turns, so that closing one fails: a stand-in for any bug that does."""
    user = user_id.replace("'", "''")
    if db.dialect == "sqlite":
        create = [
            f"CREATE TRIGGER refuse BEFORE UPDATE ON turns WHEN NEW.user_id = '{user}' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse"]
    else:
        create = [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused'; END $$",
            "CREATE TRIGGER refuse BEFORE UPDATE ON turns FOR EACH ROW "
            f"WHEN (NEW.user_id = '{user}') EXECUTE FUNCTION refuse()",
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse ON turns", "DROP FUNCTION IF EXISTS refuse()"]

    def run(statements: list[str]) -> Callable[[Any], None]:
        return lambda conn: [conn.exec_driver_sql(statement) for statement in statements]

    await db.write(run(create))
    try:
        yield
    finally:
        await db.write(run(drop))


async def start_turn(
    store: SQLAlchemyStore,
    conversation_id: str,
    *,
    user: str = "alice",
    ttl: timedelta = timedelta(minutes=1),
    key: str | None = None,
) -> Lease:
    """Start a turn as the chat service does (claiming its key first); returns its lease."""
    lease = Lease.new(ttl)
    if key is not None:
        assert await store.idempotency.claim(user, key, request_hash="h") is None
    await store.turns.start(
        user,
        conversation_id,
        ChatMessage.user("go"),
        turn_id=lease.id,
        lease_expires_at=lease.expires_at,
        idempotency_key=key,
    )
    return lease
