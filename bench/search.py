"""The search benchmark: query latency as the corpus grows, and what keeping the index in
step costs an append.

Corpus: 100 users; conversations of 100 messages (user and assistant in turn, every tenth
a tool result), each message 5 to 60 words drawn from a vocabulary of 20,000 made-up words
with Zipf frequencies (s = 1), as words of natural text have them: the commonest is in
most messages, the 2,000th in about one in 300. It grows (10,000 → 100,000 → 1,000,000
messages by default) in one SQLite file and one PostgreSQL database; at each size:

- **Queries**, through `SQLAlchemyStore.search` (first page of 20, snippets made), one
  class at a time for a time slice, each query a random user's: a rare word (vocabulary
  rank 2,000 to 20,000), a mid word (50 to 500), a common word (1 to 10), two words
  (5 to 50 and 50 to 500), and a prefix (the first 3 letters of a mid word, then `*`).
- **Appends** of one user message of 32 words, sequentially, with the index kept in step
  and without it (`index_messages` replaced by a no-op: the same store, statements and
  database, less the index write).

Contenders run in interleaved rounds (`bench/common.py`); latencies are the median over
rounds of each slice's percentile. The corpus is loaded with bulk SQL, not `append` (a
million appends take most of an hour): messages and conversations by COPY (executemany
on SQLite), and index rows as chatledger writes them — on PostgreSQL by
`to_tsvector('simple', content)` in SQL, on SQLite FTS5 rows with the same key words. The
made-up words are lowercase ASCII separated by spaces, which chatledger makes into the
same terms, and that tsvector into the one `index_messages` writes (both checked before
loading), so the index holds what `index_messages` would have written.

    python -m bench search [--sizes 10000,100000,1000000] [--rounds N] [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import asyncpg

from bench.common import (
    POSTGRES,
    SQLITE,
    Options,
    Results,
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
from chatledger.domain import ChatMessage
from chatledger.store import SQLAlchemyStore, ledger
from chatledger.store.fulltext import index_terms, index_text
from chatledger.store.search import row_keys, tsvector

VOCABULARY = 20_000
PER_CONVERSATION = 100
PAGE = 20
_STAMP = datetime(2026, 12, 1, tzinfo=UTC)
_MESSAGE_COLUMNS = (
    *("user_id", "conversation_id", "seq", "id"),
    *("role", "content", "token_count", "created_at"),
)


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    seconds: float = 2.0
    append_seconds: float = 2.0
    users: int = 100
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"


QUICK = Settings(rounds=2, seconds=0.3, append_seconds=0.3, sizes=(10_000, 20_000))

_OPTIONS: Options = {
    "rounds": (int, "interleaved rounds"),
    "seconds": (float, "seconds of each query-class slice"),
    "append_seconds": (float, "seconds of each append slice"),
    "users": (int, "users the messages belong to"),
    "sizes": (numbers, "message counts measured at, growing"),
    "databases": (names, "sqlite, postgresql or both"),
    "postgres_url": (str, "admin URL the run's own database is created through"),
}


def parse_args(argv: Sequence[str]) -> Settings:
    return parse_options(
        argv,
        prog="python -m bench search",
        description="Search latency at growing corpus sizes, and the index's cost to appends.",
        defaults=Settings(),
        quick=QUICK,
        options=_OPTIONS,
        quick_help="a smoke run: 2 short rounds, up to 20,000 messages",
    )


# -- the corpus ----------------------------------------------------------------------------


class Corpus:
    """Made-up words with Zipf frequencies, and messages made of them."""

    def __init__(self, seed: int = 12) -> None:
        self.random = random.Random(seed)
        consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
        words: dict[str, None] = {}
        while len(words) < VOCABULARY:
            syllables = self.random.randint(2, 4)
            word = "".join(
                self.random.choice(consonants) + self.random.choice(vowels)
                for _ in range(syllables)
            )
            words.setdefault(word, None)
        self.words = list(words)  # by rank: the first is the commonest
        self.cumulative = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))

    def text(self, count: int | None = None) -> str:
        count = count or self.random.randint(5, 60)
        return " ".join(self.random.choices(self.words, cum_weights=self.cumulative, k=count))

    def ranked(self, low: int, high: int) -> str:
        """A word of vocabulary rank `low` to `high` (1 is the commonest)."""
        return self.words[self.random.randint(low, high) - 1]


QUERY_CLASSES: dict[str, Callable[[Corpus], str]] = {
    "rare word": lambda c: c.ranked(2_000, VOCABULARY),
    "mid word": lambda c: c.ranked(50, 500),
    "common word": lambda c: c.ranked(1, 10),
    "two words": lambda c: f"{c.ranked(5, 50)} {c.ranked(50, 500)}",
    "prefix": lambda c: c.ranked(50, 500)[:3] + "*",
}


@dataclass
class Chunk:
    conversations: list[tuple[str, str]] = field(default_factory=list)  # (user, id)
    messages: list[tuple[str, str, int, str, str]] = field(default_factory=list)


def make_chunk(corpus: Corpus, users: int, conversations: int, first: int) -> Chunk:
    """`conversations` new conversations, numbered from `first`, users in turn."""
    chunk = Chunk()
    for number in range(first, first + conversations):
        user = f"user{number % users:03d}"
        conversation_id = str(uuid.UUID(int=corpus.random.getrandbits(128), version=4))
        chunk.conversations.append((user, conversation_id))
        for seq in range(1, PER_CONVERSATION + 1):
            role = "tool" if seq % 10 == 0 else ("user" if seq % 2 else "assistant")
            chunk.messages.append((user, conversation_id, seq, role, corpus.text()))
    return chunk


# -- loading -------------------------------------------------------------------------------


def _load_sqlite(path: str, chunk: Chunk) -> None:
    stamp = _STAMP.replace(tzinfo=None).isoformat(" ", "microseconds")
    with closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO conversations (user_id, id, title, metadata, next_seq, created_at,"
            " updated_at) VALUES (?, ?, NULL, '{}', ?, ?, ?)",
            [(u, c, PER_CONVERSATION + 1, stamp, stamp) for u, c in chunk.conversations],
        )
        db.executemany(
            "INSERT INTO messages (user_id, conversation_id, seq, id, role, content,"
            " token_count, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (u, c, s, f"{c}:{s}", r, text, len(text) // 4, stamp)
                for u, c, s, r, text in chunk.messages
            ],
        )
        db.executemany(
            "INSERT INTO message_search (body, keys, user_id, conversation_id, seq, role)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(text, row_keys(u, c), u, c, s, r) for u, c, s, r, text in chunk.messages],
        )


async def _load_postgres(dsn: str, chunk: Chunk) -> None:
    db = await asyncpg.connect(dsn)
    try:
        async with db.transaction():
            await db.copy_records_to_table(
                "conversations",
                columns=("user_id", "id", "metadata", "next_seq", "created_at", "updated_at"),
                records=[
                    (u, c, "{}", PER_CONVERSATION + 1, _STAMP, _STAMP)
                    for u, c in chunk.conversations
                ],
            )
            await db.copy_records_to_table(
                "messages",
                columns=_MESSAGE_COLUMNS,
                records=[
                    (u, c, s, f"{c}:{s}", r, text, len(text) // 4, _STAMP)
                    for u, c, s, r, text in chunk.messages
                ],
            )
            await db.execute(
                "INSERT INTO message_search (user_id, conversation_id, seq, role, document)"
                " SELECT user_id, conversation_id, seq, role, to_tsvector('simple', content)"
                " FROM messages WHERE conversation_id = ANY($1::text[])",
                [c for _, c in chunk.conversations],
            )
        await db.execute("VACUUM ANALYZE conversations, messages, message_search")
    finally:
        await db.close()


async def load(target: Target, chunk: Chunk) -> None:
    if target.database == POSTGRES:
        await _load_postgres(target.address, chunk)
    else:
        await asyncio.to_thread(_load_sqlite, target.address, chunk)


# -- measuring -----------------------------------------------------------------------------


def _cycle(values: Sequence[Any]) -> Iterator[Any]:
    return itertools.cycle(values)


def _no_index(*args: Any) -> None:
    return None


@dataclass
class Database:
    """One engine's store, and what it holds."""

    target: Target
    store: SQLAlchemyStore
    appended_to: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.target.database


async def matches(db: Database, user: str, query: str) -> int:
    """How many of the user's messages a query matches (its whole result, unpaged)."""
    count = 0
    cursor = None
    while True:
        page = await db.store.search(user, query, limit=50, cursor=cursor)
        count += len(page.items)
        if page.next_cursor is None or count >= 1_000:
            return count
        cursor = page.next_cursor


def _appender(db: Database, corpus: Corpus) -> Callable[[str], Awaitable[object]]:
    targets = _cycle(db.appended_to)
    texts = _cycle([corpus.text(32) for _ in range(500)])

    async def append(_: str) -> object:
        user, conversation_id = next(targets)
        return await db.store.append(user, conversation_id, [ChatMessage.user(next(texts))])

    return append


def _searcher(
    db: Database, queries: Sequence[tuple[str, str]]
) -> Callable[[str], Awaitable[object]]:
    cycle = _cycle(queries)

    async def search(_: str) -> object:
        user, query = next(cycle)
        return await db.store.search(user, query, limit=PAGE)

    return search


@dataclass
class Outcome:
    results: Results = field(default_factory=Results)
    # (size, class, database) -> median number of the user's matches (capped at 1,000)
    matched: dict[tuple[int, str, str], float] = field(default_factory=dict)
    load_seconds: dict[tuple[int, str], float] = field(default_factory=dict)


async def measure(settings: Settings) -> str:
    load_at_start = os.getloadavg()[0]
    step = settings.users * PER_CONVERSATION
    if any(size % step for size in settings.sizes) or list(settings.sizes) != sorted(
        settings.sizes
    ):
        raise SystemExit(f"sizes must grow, each a multiple of {step:,}")
    corpus = Corpus()
    sample = corpus.text()
    assert index_text(sample) == sample, "the made-up words must be indexed as they are"
    written = tsvector(index_terms(sample))
    outcome = Outcome()
    versions = []
    with tempfile.TemporaryDirectory(prefix="chatledger-search-") as directory:
        async with AsyncExitStack() as stack:
            targets = []
            if "sqlite" in settings.databases:
                versions.append(f"SQLite {sqlite3.sqlite_version}")
                targets.append(Target(SQLITE, str(Path(directory) / "search.db")))
            if "postgresql" in settings.databases:
                dsn, version = await stack.enter_async_context(
                    postgres_database(settings.postgres_url, "chatledger_search")
                )
                versions.append(f"PostgreSQL {version}")
                targets.append(Target(POSTGRES, dsn))
                check = await asyncpg.connect(dsn)
                same = await check.fetchval(
                    "SELECT to_tsvector('simple', $1) = CAST($2 AS tsvector)", sample, written
                )
                await check.close()
                assert same, "to_tsvector must make what index_messages writes"
            databases = []
            for target in targets:
                store = SQLAlchemyStore.from_url(target.url())
                stack.push_async_callback(store.close)
                await store.migrate()
                databases.append(Database(target, store))
            loaded = 0
            for size in settings.sizes:
                chunk = make_chunk(
                    corpus,
                    settings.users,
                    conversations=(size - loaded) // PER_CONVERSATION,
                    first=loaded // PER_CONVERSATION,
                )
                for db in databases:
                    log(f"search: loading {size - loaded:,} messages into {db.name}")
                    began = perf_counter()
                    await load(db.target, chunk)
                    outcome.load_seconds[size, db.name] = perf_counter() - began
                loaded = size
                del chunk
                await _measure_size(size, databases, corpus, settings, outcome)
    setup = (
        f"{machine()}; {', '.join(versions)}. Load average {load_at_start:.1f} when the run "
        f"started, {os.getloadavg()[0]:.1f} when it ended."
    )
    return report(settings, [db.name for db in databases], outcome, setup)


async def _measure_size(
    size: int, databases: list[Database], corpus: Corpus, settings: Settings, outcome: Outcome
) -> None:
    users = [f"user{n:03d}" for n in range(settings.users)]
    queries = {
        name: [(corpus.random.choice(users), make(corpus)) for _ in range(2_000)]
        for name, make in QUERY_CLASSES.items()
    }
    for db in databases:
        for name, sample in queries.items():
            counts = [await matches(db, user, query) for user, query in sample[:9]]
            outcome.matched[size, name, db.name] = median(counts)
        if not db.appended_to:
            for user in users[:10]:
                conversation = await db.store.create_conversation(user)
                db.appended_to.append((user, conversation.id))
    log(f"search: measuring queries at {size:,} messages")
    for db in interleaved(settings.rounds, databases):
        for name, sample in queries.items():
            search = _searcher(db, sample)
            await search("warm")
            timed = await run_for(settings.seconds, search, ["q"])
            outcome.results.add(f"{size}:{name}", db.name, timed)
    log(f"search: measuring appends at {size:,} messages")
    contenders = [(db, indexed) for db in databases for indexed in (True, False)]
    for db, indexed in interleaved(settings.rounds, contenders):
        append = _appender(db, corpus)
        original = ledger.index_messages
        if not indexed:
            ledger.index_messages = _no_index
        try:
            await append("warm")
            timed = await run_for(settings.append_seconds, append, ["a"])
        finally:
            ledger.index_messages = original
        outcome.results.add(f"{size}:append", (db.name, indexed), timed)


# -- the report ----------------------------------------------------------------------------


def report(settings: Settings, databases: list[str], outcome: Outcome, setup: str) -> str:
    results = outcome.results
    out = [f"### Search ({settings.users} users, {settings.rounds} rounds)\n", setup + "\n"]
    out.append("Loading (bulk SQL, seconds per step):\n")
    out.append(
        markdown_table(
            ["messages", *databases],
            [
                [f"{size:,}", *(outcome.load_seconds[size, name] for name in databases)]
                for size in settings.sizes
            ],
        )
    )
    out.append("\nQuery latency through `store.search` (first page of 20), ms:\n")
    headers = ["query", "messages", "user's matches"]
    for name in databases:
        headers += [f"{name} p50", f"{name} p99", f"{name} queries"]
    rows = []
    for query_class in QUERY_CLASSES:
        for size in settings.sizes:
            row: list[object] = [query_class, f"{size:,}"]
            row.append(_matches(outcome.matched[size, query_class, databases[0]]))
            for name in databases:
                scenario = f"{size}:{query_class}"
                count = sum(len(s.latencies) for s in results.slices(scenario, name))
                row += [
                    results.latency_ms(scenario, name, 50),
                    results.latency_ms(scenario, name, 99),
                    count,
                ]
            rows.append(row)
    out.append(markdown_table(headers, rows))
    first, last = settings.sizes[0], settings.sizes[-1]
    growth = [
        [
            query_class,
            *(
                results.latency_ms(f"{last}:{query_class}", name, 50)
                / results.latency_ms(f"{first}:{query_class}", name, 50)
                for name in databases
            ),
        ]
        for query_class in QUERY_CLASSES
    ]
    out.append(f"\np50 growth from {first:,} to {last:,} messages ({last // first}x the data):\n")
    out.append(markdown_table(["query", *databases], growth))
    out.append("\nAppend of one 32-word user message, sequential, ms:\n")
    rows = []
    for size in settings.sizes:
        for name in databases:
            scenario = f"{size}:append"
            rows.append(
                [
                    f"{size:,}",
                    name,
                    results.latency_ms(scenario, (name, True), 50),
                    results.latency_ms(scenario, (name, False), 50),
                    results.latency_ms(scenario, (name, True), 99),
                    results.latency_ms(scenario, (name, False), 99),
                    results.ratio((scenario, (name, False)), (scenario, (name, True))),
                ]
            )
    out.append(
        markdown_table(
            [
                "messages",
                "database",
                "p50 indexed",
                "p50 without",
                "p99 indexed",
                "p99 without",
                "cost ratio",
            ],
            rows,
        )
    )
    out.append(
        "\ncost ratio: time per append with the index kept in step over time without it "
        "(median of per-round throughput ratios).\n"
    )
    return "\n".join(out)


def _matches(value: float) -> str:
    return "1,000+" if value >= 1_000 else f"{value:,.0f}"


def main(argv: Sequence[str]) -> None:
    settings = parse_args(argv)
    print(asyncio.run(measure(settings)))
