"""What every benchmark shares: timed slices, interleaved rounds, databases, Markdown.

The machine the benchmarks run on is small and shared with other work, so a single
measurement means little. Benchmarks run their contenders in interleaved rounds, each
contender for a time slice per round, and report the median across rounds. A ratio
between two contenders is taken within each round, where both saw the same state of the
machine, and the median of those per-round ratios is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sqlite3
import statistics
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import Any, Final, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Results",
    "Slice",
    "Table",
    "Target",
    "env",
    "interleaved",
    "log",
    "machine",
    "markdown_table",
    "median",
    "postgres_database",
    "run_for",
]

T = TypeVar("T")
S = TypeVar("S")  # a benchmark's settings dataclass
SQLITE, POSTGRES = "SQLite", "PostgreSQL"


def env(name: str) -> str | None:
    """`CHATLEDGER_BENCH_<name>`: how `make bench` passes options."""
    return os.environ.get(f"CHATLEDGER_BENCH_{name}") or None


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout is only the Markdown report."""
    print(message, file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- timing --------------------------------------------------------------------------------


@dataclass
class Slice:
    """The operations one contender completed in one time slice of one round."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")

    def percentile(self, q: int) -> float:
        """The q-th percentile latency in seconds (nearest rank: always a real sample)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[max(1, -(-q * len(ordered) // 100)) - 1]


async def run_for(
    seconds: float, operation: Callable[[str], Awaitable[object]], keys: Sequence[str]
) -> Slice:
    """Run `operation(key)` in a loop, one concurrent task per key, for about `seconds`.

    A task starts nothing new after the deadline but finishes what it is doing, and the
    slice lasts until the last task is done: every operation counted is whole.
    """
    timed = Slice()
    deadline = perf_counter() + seconds

    async def loop(key: str) -> None:
        while perf_counter() < deadline:
            began = perf_counter()
            await operation(key)
            timed.latencies.append(perf_counter() - began)

    began = perf_counter()
    async with asyncio.TaskGroup() as group:
        for key in keys:
            group.create_task(loop(key))
    timed.seconds = perf_counter() - began
    return timed


def interleaved(rounds: int, contenders: Sequence[T]) -> Iterator[T]:
    """Every contender once per round, starting one further along each round, so that
    none is always the first (on a machine just disturbed) or the last."""
    for number in range(rounds):
        log(f"round {number + 1} of {rounds}")
        start = number % len(contenders)
        yield from [*contenders[start:], *contenders[:start]]


class Results:
    """Each scenario's slices, per contender, in round order."""

    def __init__(self) -> None:
        self._slices: defaultdict[str, defaultdict[Hashable, list[Slice]]] = defaultdict(
            lambda: defaultdict(list)
        )

    def add(self, scenario: str, contender: Hashable, timed: Slice) -> None:
        self._slices[scenario][contender].append(timed)

    def slices(self, scenario: str, contender: Hashable) -> list[Slice]:
        return self._slices[scenario][contender]

    def rate(self, scenario: str, contender: Hashable) -> float:
        return median([s.rate for s in self.slices(scenario, contender)])

    def latency_ms(self, scenario: str, contender: Hashable, q: int) -> float:
        return 1000 * median([s.percentile(q) for s in self.slices(scenario, contender)])

    def ratio(
        self,
        a: tuple[str, Hashable],
        b: tuple[str, Hashable],
        metric: Callable[[Slice], float] = lambda s: s.rate,
    ) -> float:
        """Median over rounds of metric(a) / metric(b), each a (scenario, contender)."""
        pairs = zip(self.slices(*a), self.slices(*b), strict=True)
        return median([metric(x) / metric(y) for x, y in pairs])


# -- databases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Target:
    """A contender's database: an SQLite file, or a PostgreSQL database."""

    database: str  # SQLITE or POSTGRES
    address: str  # the SQLite file's path, or a postgresql:// DSN

    def url(self, driver: str = "") -> str:
        """The SQLAlchemy URL, with `driver` (e.g. "asyncpg") if given."""
        scheme = ("sqlite" if self.database == SQLITE else "postgresql") + (
            f"+{driver}" if driver else ""
        )
        if self.database == SQLITE:
            return f"{scheme}:///{self.address}"
        return make_url(self.address).set(drivername=scheme).render_as_string(False)

    async def load(self, tables: Sequence[Table]) -> None:
        """Bulk-insert rows in one transaction: COPY on PostgreSQL, executemany on SQLite."""
        if self.database == POSTGRES:
            connection = await asyncpg.connect(self.address)
            try:
                async with connection.transaction():
                    for table in tables:
                        await connection.copy_records_to_table(
                            table.name, records=table.rows, columns=table.columns
                        )
            finally:
                await connection.close()
        else:
            await asyncio.to_thread(self._load_sqlite, tables)

    async def size(self) -> int:
        """Bytes the database takes: the SQLite file with its write-ahead log folded in
        (free pages left out), or PostgreSQL's `pg_database_size`."""
        if self.database == POSTGRES:
            connection = await asyncpg.connect(self.address)
            try:
                size: int = await connection.fetchval("SELECT pg_database_size(current_database())")
                return size
            finally:
                await connection.close()
        return await asyncio.to_thread(self._sqlite_size)

    def _sqlite_size(self) -> int:
        with closing(sqlite3.connect(self.address)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            free = connection.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = connection.execute("PRAGMA page_size").fetchone()[0]
            return int((pages - free) * page_size)

    def _load_sqlite(self, tables: Sequence[Table]) -> None:
        with closing(sqlite3.connect(self.address)) as connection, connection:
            for table in tables:
                marks = ", ".join("?" * len(table.columns))
                statement = f"INSERT INTO {table.name} ({', '.join(table.columns)}) "
                connection.executemany(statement + f"VALUES ({marks})", table.rows)


@asynccontextmanager
async def postgres_database(admin_url: str, prefix: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh PostgreSQL database for one run, dropped when the block exits.

    Yields its DSN and the server's version. Only the database created here is ever
    dropped; the admin URL's own database is just where CREATE DATABASE is sent from.
    """
    admin_dsn = make_url(admin_url).set(drivername="postgresql")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(admin_dsn.render_as_string(False), timeout=10)
    try:
        version = await admin.fetchval("SHOW server_version")
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_dsn.set(database=name).render_as_string(False), version.split()[0]
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- reporting -----------------------------------------------------------------------------


def machine() -> str:
    """CPU model and count, OS and Python: the first line of every report."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table: numeric columns right-aligned, text left-aligned."""
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if right else ":---" for right in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: nothing was measured
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def numbers(text: str) -> tuple[int, ...]:
    """An option's value "100,10000" as (100, 10000)."""
    return tuple(int(part) for part in text.split(","))


def names(text: str) -> tuple[str, ...]:
    """An option's value "SQLite, postgresql" as ("sqlite", "postgresql")."""
    return tuple(part.strip().lower() for part in text.split(","))


Options = dict[str, tuple[Callable[[str], Any], str]]


def parse_options(
    argv: Sequence[str],
    *,
    prog: str,
    description: str,
    defaults: S,
    quick: S,
    options: Options,
    quick_help: str,
) -> S:
    """The settings of one benchmark: `defaults` (or `quick` with --quick), overridden by
    flags and by CHATLEDGER_BENCH_<OPTION> variables. `options` maps each field of the
    settings dataclass to (how to read its text, what it means)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{description} Each option can also be set as CHATLEDGER_BENCH_<OPTION>, "
        "e.g. CHATLEDGER_BENCH_ROUNDS=3 or CHATLEDGER_BENCH_QUICK=1.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=(env("QUICK") or "").lower() in ("1", "true", "yes"),
        help=quick_help,
    )
    for name, (kind, text) in options.items():
        default = getattr(defaults, name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        # argparse applies `type` to a string default too: values from the environment
        # arrive converted. None means "not given", and --quick or the defaults decide.
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=env(name.upper()), help=f"{text} ({shown})")
    args = vars(parser.parse_args(argv))
    base = quick if args.pop("quick") else defaults
    return replace(base, **{name: value for name, value in args.items() if value is not None})


def free_port() -> int:
    """A TCP port of 127.0.0.1 free at the moment of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its descendants so far (Linux /proc)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            # Fields after the parenthesised command name: utime and stime are 12th and 13th.
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / _TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # it exited meanwhile
    return total
