"""The store benchmark: one chat turn through chatledger, its peers and the raw driver.

A turn does to its conversation what a real one does: read the latest 50 messages, then
append the user message; the assistant's tool call with the tool's result; the final
reply. Contenders, all in this process, on the same database server:

- chatledger's `SQLAlchemyStore`, as `from_url` builds it.
- The OpenAI Agents SDK's `SQLAlchemySession` (aiosqlite, asyncpg) and `SQLiteSession`,
  running the same turn as `get_items(limit=50)` and three `add_items`, with the items the
  SDK's runner saves. One engine per slice, one session object per conversation.
- chatledger's `ChatLedgerSession` (issue 13), the SDK sessions' turn on chatledger's store.
- The floor: the same work on the raw driver against chatledger's schema, search entries
  included (their text made by chatledger's own functions): on asyncpg, chatledger's
  one append statement; on aiosqlite (a thread hop per statement) and on sqlite3 (one
  thread hop per unit of work, which is how chatledger runs SQLite), a transaction of the
  reservation, the messages and their search entries.

Scenarios: sequential turns on one conversation; concurrent turns, one task per
conversation; and history reads on conversations of 100, 10,000 and 100,000 messages,
filled with bulk SQL. Each round opens every contender afresh, warms it up, runs each
scenario for a time slice and closes it; the order rotates from round to round. Turns
report the CPU time this process spent per turn (its threads included: SQLite's work is
done in them; PostgreSQL's server is not counted).

After the rounds, each contender in turn writes `FOOTPRINT_TURNS` turns into a new
conversation, and the database's growth over the messages written is its bytes stored per
message: rows, indexes and (chatledger) search entries, as the database lays them out
(the SQLite file without free pages; `pg_database_size`, in whole pages).

The floors are sized like chatledger's defaults: on SQLite 4 worker threads (4
connections for aiosqlite) with writers queued on an asyncio lock, on PostgreSQL up to 20
connections (chatledger's pool keeps 10 with 10 overflow; the asyncpg pool is 10..20).
chatledger and the SDK sessions run as they ship.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite
import asyncpg
from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from agents.memory import SQLiteSession
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.common import (
    POSTGRES,
    SQLITE,
    Options,
    Results,
    Table,
    Target,
    interleaved,
    log,
    machine,
    markdown_table,
    median,
    names,
    numbers,
    parse_options,
    postgres_database,
    run_for,
)
from chatledger.domain import ChatMessage, ToolCall
from chatledger.integrations.agents import ChatLedgerSession
from chatledger.store import SQLAlchemyStore
from chatledger.store.hot import append_statement_pg
from chatledger.store.search import document_of, index_body, row_keys
from chatledger.tokens import count_message_tokens

USER_ID = "bench-user"
HISTORY_LIMIT = 50
# Conversations of the turn scenarios start with more than a read returns, so every
# read in them is a full one.
SEED_MESSAGES = 60
# Turns written to measure the bytes a message takes: 1,000 messages, enough that page
# granularity (4 KiB on SQLite, 8 KiB on PostgreSQL) is a few percent at most.
FOOTPRINT_TURNS = 250
MESSAGES_PER_TURN = 4  # the user's, the call, its result, the reply
# Issue 16's targets against the raw driver doing the same work: a turn's throughput,
# and a read of the latest messages (its p50).
MAX_TURN_OVER_FLOOR = 1.3
MAX_READ_OVER_FLOOR = 1.5
SQLITE_THREADS = 4
POSTGRES_POOL = (10, 20)
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON")

USER_TEXT = (
    "Please add a task to call the dentist tomorrow morning, and remind me that the "
    "appointment card is in the kitchen drawer."
)
TOOL_NAME = "add_task"
TOOL_ARGUMENTS = '{"title": "Call the dentist", "description": "Tomorrow morning; card in drawer"}'
TOOL_RESULT = '{"task_id": 42, "status": "created", "title": "Call the dentist"}'
REPLY_TEXT = (
    'Done: I added "Call the dentist" for tomorrow morning and noted that the card is in '
    "the kitchen drawer. Anything else?"
)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def chat_messages(call_id: str) -> list[list[ChatMessage]]:
    """A turn's three appends for chatledger."""
    call = ToolCall(call_id, TOOL_NAME, TOOL_ARGUMENTS)
    return [
        [ChatMessage.user(USER_TEXT)],
        [
            ChatMessage.assistant(tool_calls=[call]),
            ChatMessage.tool(tool_call_id=call_id, name=TOOL_NAME, content=TOOL_RESULT),
        ],
        [ChatMessage.assistant(REPLY_TEXT)],
    ]


def agent_items(call_id: str) -> list[list[dict[str, Any]]]:
    """The same turn as the SDK's runner saves it: the input item, then the model's items."""
    return [
        [{"content": USER_TEXT, "role": "user"}],
        [
            {
                "arguments": TOOL_ARGUMENTS,
                "call_id": call_id,
                "name": TOOL_NAME,
                "type": "function_call",
                "id": f"fc_{uuid.uuid4().hex}",
                "status": "completed",
            },
            {"call_id": call_id, "output": TOOL_RESULT, "type": "function_call_output"},
        ],
        [
            {
                "id": f"msg_{uuid.uuid4().hex}",
                "content": [{"annotations": [], "text": REPLY_TEXT, "type": "output_text"}],
                "role": "assistant",
                "status": "completed",
                "type": "message",
            }
        ],
    ]


# Token counts depend on lengths only, and every call id has the same length.
_TOKENS = [count_message_tokens(m) for batch in chat_messages(new_call_id()) for m in batch]

MessageValues = tuple[str, str, str | None, str | None, str | None, None, int]


def message_values(call_id: str) -> list[list[MessageValues]]:
    """A turn's three appends as the floor binds them: role, content, tool_calls (JSON),
    tool_call_id, name, metadata (NULL when empty, as chatledger stores it), token_count."""
    calls = json.dumps([{"id": call_id, "name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}])
    user, call, result, reply = _TOKENS
    return [
        [("user", USER_TEXT, None, None, None, None, user)],
        [
            ("assistant", "", calls, None, None, None, call),
            ("tool", TOOL_RESULT, None, call_id, TOOL_NAME, None, result),
        ],
        [("assistant", REPLY_TEXT, None, None, None, None, reply)],
    ]


# Filled messages are this far apart: distinct, increasing timestamps as real turns leave.
MESSAGE_INTERVAL = timedelta(seconds=15)


def _sqlite_time(moment: datetime, *, micros: bool = True) -> str:
    # SQLAlchemy's format for DateTime on SQLite; the SDK's CURRENT_TIMESTAMP has seconds.
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" + (".%f" if micros else ""))


# -- chatledger's statements, written out for the floors -----------------------------------

CONVERSATION_COLUMNS = (
    "user_id", "id", "metadata", "next_seq", "created_at", "updated_at", "head_seq",
    "head_run_start",
)  # fmt: skip
MESSAGE_COLUMNS = (
    "user_id",
    "conversation_id",
    "seq",
    "id",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "name",
    "metadata",
    "token_count",
    "created_at",
    "parent_seq",
    "run_start",
)
_READ_COLUMNS = ", ".join(c for c in MESSAGE_COLUMNS if c not in ("user_id", "run_start"))
_LEASE_FREE = "(lease_id IS NULL OR lease_expires_at <= {now})"
# The head's run, in one statement (chatledger reads the head first, then the run).
_HEAD_RUN = (
    "seq >= (SELECT head_run_start FROM conversations WHERE user_id = {user} AND id = {key}) "
    "AND seq <= (SELECT head_seq FROM conversations WHERE user_id = {user} AND id = {key})"
)
# As chatledger's: the head moves to the last appended message, its run goes on or starts.
_HEAD_MOVES = (
    "head_seq = next_seq + {count} - 1, "
    "head_run_start = CASE WHEN head_seq = next_seq - 1 THEN head_run_start ELSE next_seq END, "
    "head_run_parent = CASE WHEN head_seq = next_seq - 1 THEN head_run_parent ELSE head_seq END"
)
_RESERVED = "RETURNING next_seq, head_run_start, head_run_parent"
SQLITE_HISTORY = (
    f"SELECT {_READ_COLUMNS} FROM messages WHERE user_id = ?1 AND conversation_id = ?2 AND "
    f"{_HEAD_RUN.format(user='?1', key='?2')} ORDER BY seq DESC LIMIT ?3"
)
SQLITE_RESERVE = (
    f"UPDATE conversations SET next_seq = next_seq + ?1, {_HEAD_MOVES.format(count='?1')}, "
    f"updated_at = ?2 WHERE user_id = ?3 AND id = ?4 AND {_LEASE_FREE.format(now='?2')} "
    f"{_RESERVED}"
)
SQLITE_INSERT = (
    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})"
)
SQLITE_INDEX = (
    "INSERT INTO message_search (body, keys, user_id, conversation_id, seq, role) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
POSTGRES_HISTORY = (
    f"SELECT {_READ_COLUMNS} FROM messages WHERE user_id = $1 AND conversation_id = $2 AND "
    f"{_HEAD_RUN.format(user='$1', key='$2')} ORDER BY seq DESC LIMIT $3"
)


# -- contenders ----------------------------------------------------------------------------


class Contender(ABC):
    """One implementation under test, on one database.

    `prepare` and `fill` run once, before the rounds; each round then `open`s the
    contender (engine, pool, threads), runs its slices and `close`s it again, so that no
    contender keeps connections open while the others run.
    """

    name: ClassVar[str]

    def __init__(self, target: Target) -> None:
        self.target = target

    @property
    def database(self) -> str:
        return self.target.database

    @abstractmethod
    async def prepare(self) -> None:
        """Create the schema, once per run."""

    @abstractmethod
    async def fill(self, sizes: Sequence[int]) -> list[str]:
        """New conversations holding `sizes` messages, written in bulk; their keys."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def history(self, key: str) -> object:
        """Read the latest 50 messages, decoded."""

    @abstractmethod
    async def turn(self, key: str) -> None: ...


class LedgerSchema(Contender):
    """Contenders on chatledger's migrated schema: chatledger itself and its floors."""

    def timestamp(self, moment: datetime) -> object:
        """`created_at` as chatledger stores it: UTC text on SQLite, timestamptz on PostgreSQL."""
        return _sqlite_time(moment) if self.database == SQLITE else moment

    async def prepare(self) -> None:
        store = SQLAlchemyStore.from_url(self.target.url())
        try:
            await store.migrate()
        finally:
            await store.close()

    async def fill(self, sizes: Sequence[int]) -> list[str]:
        keys = [str(uuid.uuid4()) for _ in sizes]
        stamp = self.timestamp
        conversations, messages = [], []
        for key, size in zip(keys, sizes, strict=True):
            start = datetime.now(UTC) - size * MESSAGE_INTERVAL
            conversations.append(
                (USER_ID, key, "{}", size + 1, stamp(start), stamp(start), size or None, 1)
            )
            for first in range(0, size, 4):
                turn = [m for batch in message_values(f"call_{first:024x}") for m in batch]
                for seq, values in enumerate(turn[: size - first], start=first + 1):
                    moment = stamp(start + seq * MESSAGE_INTERVAL)
                    parent = seq - 1 or None
                    messages.append(
                        (USER_ID, key, seq, str(uuid.uuid4()), *values, moment, parent, 1)
                    )
        await self.target.load(
            [
                Table("conversations", CONVERSATION_COLUMNS, conversations),
                Table("messages", MESSAGE_COLUMNS, messages),
            ]
        )
        return keys


class ChatLedger(LedgerSchema):
    name = "chatledger"

    async def open(self) -> None:
        self.store = SQLAlchemyStore.from_url(self.target.url())

    async def close(self) -> None:
        await self.store.close()

    async def history(self, key: str) -> object:
        return await self.store.history(USER_ID, key, limit=HISTORY_LIMIT)

    async def turn(self, key: str) -> None:
        await self.history(key)
        for batch in chat_messages(new_call_id()):
            await self.store.append(USER_ID, key, batch)


def _rows(
    key: str, reserved: Sequence[Any], batch: list[MessageValues], now: object
) -> list[tuple[Any, ...]]:
    """The rows of one append, numbered up to the reserved `next_seq`, each after the one
    before (the first after the head), as chatledger does."""
    next_seq, run_start, run_parent = reserved
    first = next_seq - len(batch)
    parent = first - 1 if run_start < first else run_parent
    return [
        (USER_ID, key, seq, str(uuid.uuid4()), *values, now, parent if seq == first else seq - 1,
         run_start)
        for seq, values in enumerate(batch, start=first)
    ]  # fmt: skip


def _entries(
    key: str, rows: list[tuple[Any, ...]], search: list[str | None]
) -> list[tuple[Any, ...]]:
    """The SQLite search index's rows for an append's `rows`, as chatledger writes them."""
    keys = row_keys(USER_ID, key)
    return [
        (body, keys, USER_ID, key, row[2], row[4])
        for row, body in zip(rows, search, strict=True)
        if body is not None
    ]


def _decode(
    rows: Sequence[Sequence[Any]], parse_time: Callable[[Any], Any]
) -> list[tuple[Any, ...]]:
    """Rows oldest first with JSON and timestamps as Python values, as chatledger returns them."""
    decoded = []
    for row in reversed(rows):
        *head, tool_calls, call_id, name, metadata, tokens, created_at, parent_seq = row
        decoded.append(
            (
                *head,
                tool_calls and json.loads(tool_calls),
                call_id,
                name,
                metadata and json.loads(metadata),
                tokens,
                parse_time(created_at),
                parent_seq,
            )
        )
    return decoded


def _missing(key: str) -> RuntimeError:
    return RuntimeError(f"conversation {key} is missing or leased")


class Floor(LedgerSchema):
    """Raw SQL: one history read, then the turn's three appends, each with the search
    entries of its messages (`search`: each one's text for the index, or None)."""

    async def turn(self, key: str) -> None:
        await self.history(key)
        call_id = new_call_id()
        for batch, messages in zip(message_values(call_id), chat_messages(call_id), strict=True):
            await self.append(key, batch, [self.search_text(m) for m in messages])

    def search_text(self, message: ChatMessage) -> str | None:
        return index_body(message) if self.database == SQLITE else document_of(message)

    @abstractmethod
    async def append(
        self, key: str, batch: list[MessageValues], search: list[str | None]
    ) -> None: ...


# chatledger's append on PostgreSQL: one statement, outside a transaction.
_APPEND, _APPEND_PARAMS = append_statement_pg()
_ARRAYS = (
    "ids", "roles", "contents", "tool_calls", "tool_call_ids", "names", "metadata",
    "token_counts", "documents",
)  # fmt: skip


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query: SQLAlchemy's pool sends none either."""


class AsyncpgFloor(Floor):
    name = "floor: asyncpg"

    async def open(self) -> None:
        low, high = POSTGRES_POOL
        self.pool = await asyncpg.create_pool(
            self.target.address, min_size=low, max_size=high, reset=_keep_session
        )

    async def close(self) -> None:
        await self.pool.close()

    async def history(self, key: str) -> object:
        rows = await self.pool.fetch(POSTGRES_HISTORY, USER_ID, key, HISTORY_LIMIT)
        return _decode(rows, lambda moment: moment)

    async def append(self, key: str, batch: list[MessageValues], search: list[str | None]) -> None:
        columns = [[str(uuid.uuid4()) for _ in batch], *map(list, zip(*batch, strict=True))]
        columns[-1] = [str(tokens) for tokens in columns[-1]]  # as chatledger sends them
        params = {
            "user": USER_ID,
            "conversation": key,
            "count": len(batch),
            "now": datetime.now(UTC),
            **dict(zip(_ARRAYS, [*columns, search], strict=True)),
        }
        if await self.pool.fetchrow(_APPEND, *(params[name] for name in _APPEND_PARAMS)) is None:
            raise _missing(key)


class AiosqliteFloor(Floor):
    name = "floor: aiosqlite"

    async def open(self) -> None:
        self.write_lock = asyncio.Lock()
        self.idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for _ in range(SQLITE_THREADS):
            connection = await aiosqlite.connect(self.target.address, isolation_level=None)
            for pragma in SQLITE_PRAGMAS:
                await connection.execute(f"PRAGMA {pragma}")
            self.idle.put_nowait(connection)

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosqlite.Connection]:
        connection = await self.idle.get()
        try:
            yield connection
        finally:
            self.idle.put_nowait(connection)

    async def history(self, key: str) -> object:
        async with self.connection() as connection:
            rows = await connection.execute_fetchall(SQLITE_HISTORY, (USER_ID, key, HISTORY_LIMIT))
        return _decode(list(rows), datetime.fromisoformat)

    async def append(self, key: str, batch: list[MessageValues], search: list[str | None]) -> None:
        now = _sqlite_time(datetime.now(UTC))
        async with self.write_lock, self.connection() as connection:
            await connection.execute("BEGIN IMMEDIATE")
            try:
                reserved = await connection.execute_fetchall(
                    SQLITE_RESERVE, (len(batch), now, USER_ID, key)
                )
                if not reserved:
                    raise _missing(key)
                rows = _rows(key, reserved[0], batch, now)
                await connection.executemany(SQLITE_INSERT, rows)
                await connection.executemany(SQLITE_INDEX, _entries(key, rows, search))
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")


class Sqlite3Floor(Floor):
    name = "floor: sqlite3"

    async def open(self) -> None:
        self.write_lock = asyncio.Lock()
        self.local = threading.local()
        self.connections: list[sqlite3.Connection] = []
        self.executor = ThreadPoolExecutor(SQLITE_THREADS, initializer=self._connect)

    def _connect(self) -> None:
        connection = sqlite3.connect(
            self.target.address, isolation_level=None, check_same_thread=False
        )
        for pragma in SQLITE_PRAGMAS:
            connection.execute(f"PRAGMA {pragma}")
        self.local.connection = connection
        self.connections.append(connection)

    async def close(self) -> None:
        self.executor.shutdown()
        for connection in self.connections:
            connection.close()

    async def history(self, key: str) -> object:
        def read() -> object:
            cursor = self.local.connection.execute(SQLITE_HISTORY, (USER_ID, key, HISTORY_LIMIT))
            return _decode(cursor.fetchall(), datetime.fromisoformat)

        return await asyncio.get_running_loop().run_in_executor(self.executor, read)

    async def append(self, key: str, batch: list[MessageValues], search: list[str | None]) -> None:
        def write() -> None:
            connection = self.local.connection
            now = _sqlite_time(datetime.now(UTC))
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(SQLITE_RESERVE, (len(batch), now, USER_ID, key)).fetchone()
                if row is None:
                    raise _missing(key)
                rows = _rows(key, row, batch, now)
                connection.executemany(SQLITE_INSERT, rows)
                connection.executemany(SQLITE_INDEX, _entries(key, rows, search))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

        async with self.write_lock:
            await asyncio.get_running_loop().run_in_executor(self.executor, write)


class SessionTurns(Contender):
    """The Agents SDK sessions' turn, on one `Session` object per conversation kept for
    the slice: read the latest 50 items, then add the turn's items in three calls."""

    def open_sessions(self) -> None:
        self.sessions: dict[str, Any] = {}

    def session(self, key: str) -> Any:
        if key not in self.sessions:
            self.sessions[key] = self.new_session(key)
        return self.sessions[key]

    @abstractmethod
    def new_session(self, key: str) -> Any: ...

    async def history(self, key: str) -> object:
        return await self.session(key).get_items(limit=HISTORY_LIMIT)

    async def turn(self, key: str) -> None:
        session = self.session(key)
        await session.get_items(limit=HISTORY_LIMIT)
        for batch in agent_items(new_call_id()):
            await session.add_items(batch)


class LedgerSession(SessionTurns, LedgerSchema):
    """chatledger's own Agents SDK `Session`, on chatledger's store: the SDK sessions' turn."""

    name = "ChatLedgerSession"

    async def open(self) -> None:
        self.store = SQLAlchemyStore.from_url(self.target.url())
        self.open_sessions()

    async def close(self) -> None:
        await self.store.close()

    def new_session(self, key: str) -> Any:
        return ChatLedgerSession(self.store, USER_ID, key)


class AgentsSession(SessionTurns):
    """The OpenAI Agents SDK's sessions: one object per conversation, kept for the slice."""

    item_separators: ClassVar[tuple[str, str]]

    def timestamp(self, moment: datetime) -> object:
        if self.database == SQLITE:
            return _sqlite_time(moment, micros=False)
        # TIMESTAMP WITHOUT TIME ZONE, which CURRENT_TIMESTAMP fills in UTC on this server.
        return moment.replace(tzinfo=None)

    async def open(self) -> None:
        self.open_sessions()

    async def fill(self, sizes: Sequence[int]) -> list[str]:
        keys = [str(uuid.uuid4()) for _ in sizes]
        stamp = self.timestamp
        sessions, items = [], []
        for key, size in zip(keys, sizes, strict=True):
            start = datetime.now(UTC) - size * MESSAGE_INTERVAL
            sessions.append((key, stamp(start), stamp(start)))
            for first in range(0, size, 4):
                turn = [item for batch in agent_items(f"call_{first:024x}") for item in batch]
                for index, item in enumerate(turn[: size - first], start=first + 1):
                    data = json.dumps(item, separators=self.item_separators)
                    items.append((key, data, stamp(start + index * MESSAGE_INTERVAL)))
        await self.target.load(
            [
                Table("agent_sessions", ("session_id", "created_at", "updated_at"), sessions),
                Table("agent_messages", ("session_id", "message_data", "created_at"), items),
            ]
        )
        return keys


class AgentsSQLAlchemy(AgentsSession):
    name = "SQLAlchemySession"
    item_separators = (",", ":")

    def engine(self) -> AsyncEngine:
        return create_async_engine(
            self.target.url("aiosqlite" if self.database == SQLITE else "asyncpg")
        )

    async def prepare(self) -> None:
        engine = self.engine()
        try:
            await SQLAlchemySession("schema", engine=engine, create_tables=True).get_items()
        finally:
            await engine.dispose()

    async def open(self) -> None:
        await super().open()
        self._engine = self.engine()

    def new_session(self, key: str) -> Any:
        return SQLAlchemySession(key, engine=self._engine)

    async def close(self) -> None:
        await self._engine.dispose()


class AgentsSQLite(AgentsSession):
    name = "SQLiteSession"
    item_separators = (", ", ": ")

    async def prepare(self) -> None:
        SQLiteSession("schema", db_path=self.target.address).close()

    def new_session(self, key: str) -> Any:
        return SQLiteSession(key, db_path=self.target.address)

    async def close(self) -> None:
        for session in self.sessions.values():
            session.close()


SQLITE_CONTENDERS = (
    ChatLedger,
    LedgerSession,
    AgentsSQLAlchemy,
    AgentsSQLite,
    AiosqliteFloor,
    Sqlite3Floor,
)
POSTGRES_CONTENDERS = (ChatLedger, LedgerSession, AgentsSQLAlchemy, AsyncpgFloor)
FLOORS = (AiosqliteFloor, Sqlite3Floor, AsyncpgFloor)


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int = 5
    seconds: float = 2.0
    read_seconds: float = 0.4
    concurrency: int = 32
    sizes: tuple[int, ...] = (100, 10_000, 100_000)
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"


QUICK = Settings(rounds=2, seconds=0.25, read_seconds=0.1, sizes=(100, 1_000, 10_000))


_OPTIONS: Options = {
    "rounds": (int, "interleaved rounds"),
    "seconds": (float, "seconds of each turn slice, sequential and concurrent"),
    "read_seconds": (float, "seconds of each history-read slice"),
    "concurrency": (int, "conversations in the concurrent scenario"),
    "sizes": (numbers, "message counts of the conversations history is read from"),
    "databases": (names, "sqlite, postgresql or both"),
    "postgres_url": (str, "admin URL the run's own database is created through"),
}


def parse_args(argv: Sequence[str]) -> Settings:
    return parse_options(
        argv,
        prog="python -m bench store",
        description="Chat-turn throughput and history-read latency of the conversation store.",
        defaults=Settings(),
        quick=QUICK,
        options=_OPTIONS,
        quick_help="a smoke run of under 30 s: 2 short rounds, up to 10,000 messages",
    )


@dataclass(frozen=True)
class Conversations:
    """A contender's conversations: one for sequential turns, the concurrent ones, and one
    per history size."""

    sequential: str
    concurrent: list[str]
    history: list[str]

    @classmethod
    async def fill(cls, contender: Contender, settings: Settings) -> Conversations:
        [sequential] = await contender.fill([SEED_MESSAGES])
        concurrent = await contender.fill([SEED_MESSAGES] * settings.concurrency)
        return cls(sequential, concurrent, await contender.fill(settings.sizes))


async def measure(settings: Settings) -> str:
    """Run every contender in interleaved rounds; return the Markdown report."""
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="chatledger-bench-") as directory:
        async with AsyncExitStack() as stack:
            contenders: list[Contender] = []
            versions = []
            if "sqlite" in settings.databases:
                versions.append(f"SQLite {sqlite3.sqlite_version}")
                for kind in SQLITE_CONTENDERS:
                    path = Path(directory) / f"{kind.__name__}.db"
                    contenders.append(kind(Target(SQLITE, str(path))))
            if "postgresql" in settings.databases:
                dsn, version = await stack.enter_async_context(
                    postgres_database(settings.postgres_url, "chatledger_bench")
                )
                versions.append(f"PostgreSQL {version}")
                contenders += [kind(Target(POSTGRES, dsn)) for kind in POSTGRES_CONTENDERS]

            log(f"creating and filling {len(contenders)} contenders' conversations")
            conversations = {}
            for contender in contenders:
                await contender.prepare()
                conversations[contender] = await Conversations.fill(contender, settings)
            results, cpu = Results(), CpuPerTurn()
            for contender in interleaved(settings.rounds, contenders):
                await _round(contender, conversations[contender], settings, results, cpu)
            log("measuring bytes per message")
            footprints = {contender: await _footprint(contender) for contender in contenders}
    # Other work shares the machine; its load is part of what the figures mean.
    setup = (
        f"{machine()}; {', '.join(versions)}. Load average {load_at_start:.1f} when the run "
        f"started, {os.getloadavg()[0]:.1f} when it ended."
    )
    return report(settings, contenders, results, cpu, footprints, setup)


class CpuPerTurn(defaultdict[tuple[str, "Contender"], list[float]]):
    """Milliseconds of this process's CPU per turn, each slice's, by (scenario, contender)."""

    def __init__(self) -> None:
        super().__init__(list)

    def median_ms(self, scenario: str, contender: Contender) -> float:
        return median(self[scenario, contender])


async def _timed_turns(
    scenario: str,
    contender: Contender,
    keys: Sequence[str],
    settings: Settings,
    results: Results,
    cpu: CpuPerTurn,
) -> None:
    started = time.process_time()
    turns = await run_for(settings.seconds, contender.turn, keys)
    spent = time.process_time() - started
    results.add(scenario, contender, turns)
    cpu[scenario, contender].append(1000 * spent / len(turns.latencies))


async def _footprint(contender: Contender) -> float:
    """Bytes the database grew by per message written, over `FOOTPRINT_TURNS` turns in a
    new conversation."""
    [key] = await contender.fill([0])
    await contender.open()
    try:
        before = await contender.target.size()
        for _ in range(FOOTPRINT_TURNS):
            await contender.turn(key)
    finally:
        await contender.close()
    grown = await contender.target.size() - before
    return grown / (FOOTPRINT_TURNS * MESSAGES_PER_TURN)


async def _round(
    contender: Contender,
    conversations: Conversations,
    settings: Settings,
    results: Results,
    cpu: CpuPerTurn,
) -> None:
    await contender.open()
    try:
        # Untimed: opens the pool's connections, fills statement caches, and makes the
        # SDK's session objects.
        await asyncio.gather(*(contender.turn(key) for key in conversations.concurrent))
        await contender.turn(conversations.sequential)
        for key in conversations.history:
            await contender.history(key)

        await _timed_turns(
            "sequential", contender, [conversations.sequential], settings, results, cpu
        )
        await _timed_turns(
            "concurrent", contender, conversations.concurrent, settings, results, cpu
        )
        for size, key in zip(settings.sizes, conversations.history, strict=True):
            reads = await run_for(settings.read_seconds, contender.history, [key])
            results.add(f"history@{size}", contender, reads)
    finally:
        await contender.close()


# -- the report ----------------------------------------------------------------------------


def report(
    settings: Settings,
    contenders: list[Contender],
    results: Results,
    cpu: CpuPerTurn,
    footprints: dict[Contender, float],
    setup: str,
) -> str:
    """Markdown: the setup, a table per scenario, the ratios and the issue's targets."""
    out = [
        "## Store",
        "",
        setup,
        "",
        f"{settings.rounds} rounds. In each, every implementation in turn (the order rotates "
        f"from round to round) runs {settings.seconds:g} s of sequential turns, "
        f"{settings.seconds:g} s of turns on {settings.concurrency} conversations at once, "
        f"and {settings.read_seconds:g} s of history reads per conversation size. Figures "
        "are medians across rounds, ratios medians of the per-round ratios.",
    ]
    headers = ["database", "implementation", "turns/s", "range", "p50 ms", "p99 ms"]
    headers.append("CPU ms per turn")
    for scenario, title in (
        ("sequential", "Sequential turns, one conversation"),
        ("concurrent", f"Concurrent turns, {settings.concurrency} conversations"),
    ):
        rows = []
        for contender in contenders:
            rates = [s.rate for s in results.slices(scenario, contender)]
            rows.append(
                [
                    contender.database,
                    contender.name,
                    results.rate(scenario, contender),
                    f"{min(rates):,.0f} - {max(rates):,.0f}",
                    results.latency_ms(scenario, contender, 50),
                    results.latency_ms(scenario, contender, 99),
                    cpu.median_ms(scenario, contender),
                ]
            )
        out += ["", f"### {title}", "", markdown_table(headers, rows)]

    floors: dict[str, Contender] = {}
    for contender in contenders:
        if isinstance(contender, FLOORS):
            floors.setdefault(contender.database, contender)  # the first: same rows
    rows = []
    for contender in contenders:
        floor = floors.get(contender.database)
        over = footprints[contender] / footprints[floor] if floor else float("nan")
        rows.append([contender.database, contender.name, footprints[contender], over])
    headers = ["database", "implementation", "bytes per message", "over the floor's"]
    out += ["", f"### Bytes stored per message ({FOOTPRINT_TURNS * MESSAGES_PER_TURN:,})", ""]
    out.append(markdown_table(headers, rows))

    smallest, largest = (f"history@{size}" for size in (settings.sizes[0], settings.sizes[-1]))

    def read_over(a: Contender, b: Contender, scenario: str) -> float:
        # a's read latency over b's, within each round.
        return results.ratio((scenario, a), (scenario, b), lambda timed: timed.percentile(50))

    def growth(contender: Contender) -> float:
        # Read latency at the largest conversation over the smallest, within each round.
        return results.ratio(
            (largest, contender), (smallest, contender), lambda timed: timed.percentile(50)
        )

    sizes = [f"{size:,}" for size in settings.sizes]
    headers = ["database", "implementation"]
    headers += [f"p50 ms @{size}" for size in sizes] + [f"p99 ms @{size}" for size in sizes]
    headers.append(f"p50 @{sizes[-1]} / @{sizes[0]}")
    rows = []
    for contender in contenders:
        p50s = [results.latency_ms(f"history@{size}", contender, 50) for size in settings.sizes]
        p99s = [results.latency_ms(f"history@{size}", contender, 99) for size in settings.sizes]
        rows.append([contender.database, contender.name, *p50s, *p99s, growth(contender)])
    out += ["", f"### History read, latest {HISTORY_LIMIT} messages", ""]
    out.append(markdown_table(headers, rows))

    named = {(c.database, c.name): c for c in contenders}
    ratios: list[list[object]] = []
    targets: list[list[object]] = []

    def compare(database: str, a: Contender, b: Contender) -> tuple[float, float]:
        values = tuple(results.ratio((s, a), (s, b)) for s in ("sequential", "concurrent"))
        ratios.append([database, f"{a.name} / {b.name}", *values])
        return values[0], values[1]

    def target(goal: str, database: str, measured: str, met: bool) -> None:
        targets.append([goal, database, measured, "yes" if met else "**no**"])

    def both(values: tuple[float, float]) -> str:
        return f"sequential {values[0]:.2f}x, concurrent {values[1]:.2f}x"

    for database in (SQLITE, POSTGRES):
        if (ledger := named.get((database, ChatLedger.name))) is None:
            continue
        sdk = named.get((database, AgentsSQLAlchemy.name))
        if sdk is not None:
            values = compare(database, ledger, sdk)
            goal = "chatledger at least 3x SQLAlchemySession"
            target(goal, database, both(values), min(values) >= 3)
        sqlite_session = named.get((database, AgentsSQLite.name))
        if sqlite_session is not None:
            values = compare(database, ledger, sqlite_session)
            target("chatledger ahead of SQLiteSession", database, both(values), min(values) > 1)
        for kind in FLOORS:
            if (floor := named.get((database, kind.name))) is not None:
                values = compare(database, floor, ledger)
                goal = f"turn within {MAX_TURN_OVER_FLOOR:g}x of {floor.name}"
                target(goal, database, both(values), max(values) <= MAX_TURN_OVER_FLOOR)
                if sdk is not None:
                    compare(database, floor, sdk)
                reads = [read_over(ledger, floor, size) for size in (smallest, largest)]
                goal = f"history read within {MAX_READ_OVER_FLOOR:g}x of {floor.name}'s"
                measured = f"@{sizes[0]} {reads[0]:.2f}x, @{sizes[-1]} {reads[1]:.2f}x"
                target(goal, database, measured, max(reads) <= MAX_READ_OVER_FLOOR)
        if (session := named.get((database, LedgerSession.name))) is not None:
            # Issue 13: the same Session workload, chatledger's Session against the SDK's.
            if sdk is not None:
                values = compare(database, session, sdk)
                goal = "ChatLedgerSession at least 3x SQLAlchemySession"
                target(goal, database, both(values), min(values) >= 3)
            if sqlite_session is not None:
                values = compare(database, session, sqlite_session)
                goal = "ChatLedgerSession at least as fast as SQLiteSession"
                target(goal, database, both(values), min(values) >= 1)
        value = growth(ledger)
        goal = f"history p50 @{sizes[-1]} within 1.3x of @{sizes[0]}"
        target(goal, database, f"{value:.2f}x", value <= 1.3)

    out += ["", "### Ratios of turns/s", ""]
    out.append(
        "A floor over chatledger is how far chatledger is from the floor (lower is closer); a "
        "floor over SQLAlchemySession is the most that any code sending chatledger's "
        "statements could reach against it."
    )
    out += ["", markdown_table(["database", "ratio", "sequential", "concurrent"], ratios)]
    out += ["", "### Targets of issues 2, 13 and 16", ""]
    out.append(markdown_table(["target", "database", "measured", "met"], targets))
    return "\n".join(out)


def main(argv: Sequence[str]) -> None:
    settings = parse_args(argv)
    print(asyncio.run(measure(settings)))
