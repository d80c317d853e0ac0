"""The server benchmark: chat turns over real HTTP against `chatledger serve`, and the floor.

Contenders are real server processes on 127.0.0.1, all started before the first round and
stopped after the last:

- `chatledger serve --agent rules`: the offline rules agent, so that the agent costs what
  a grammar costs and the rest is chatledger's (JWT, the stateless turn, the database,
  a JSON log line per request). On SQLite (a file of its own) and on PostgreSQL (a
  database of its own, created for the run and dropped after it).
- The framework floor: a bare FastAPI app (`floor_app` below) with one POST endpoint that
  validates a body like the chat request's and returns a constant body like a chat
  response, served by uvicorn as `chatledger serve` serves (app factory, same host, access
  log off, log level warning, same number of workers).

Each runs with 1 worker process and, unless asked otherwise, 2.

With `--baseline DIR` (the `src` directory of another checkout, e.g. a `git worktree` of
an earlier commit), chatledger also runs from it on each database, in the same rounds (its
package first on `PYTHONPATH`, the installed dependencies shared; a database of its own),
and the report adds this checkout's figures over the baseline's: a machine that is shared
and noisy disturbs both alike.

The load comes from this process: 32 asyncio tasks, each a user with a token of its own,
its own conversation and its own `httpx.AsyncClient` (one keep-alive connection), sending
a turn as soon as its previous one is answered. One client shared by 32 tasks would
measure httpx's connection pool instead: on this machine it spent 3.2 ms of CPU per
request at 32 connections against 0.6 ms for 32 clients of one connection each.

Workloads: *add*, "add buy milk N", one `add_task` call per turn; *show*, "show my tasks"
on a list of 3 tasks, one `list_tasks` call. Each stores a turn's four messages. The floor
gets the requests of *add* (path, token header, body). Every response is checked: a
non-200 or an unexpected tool call aborts the run.

Besides latency and throughput, the CPU time each server's processes (the process and its
workers, not PostgreSQL's) and this client spent per request is measured from /proc, which
a busy machine disturbs much less than it disturbs timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Final

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from bench.common import (
    POSTGRES,
    SQLITE,
    Options,
    Results,
    cpu_seconds,
    free_port,
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
from chatledger.api.auth import Authenticator

ROOT: Final = Path(__file__).resolve().parents[1]
SECRET: Final = "bench-server-secret-that-is-long-enough-for-hs256"
READY_WITHIN: Final = 60.0
STOP_WITHIN: Final = 15.0
FLOOR: Final = "floor"
# How --databases names them.
SQLITE_NAME, POSTGRES_NAME = "sqlite", "postgresql"
SEED_TASKS: Final = "add eggs, then add flour, then add butter"
ADD: Final = ("add_task",)
SHOW: Final = ("list_tasks",)
# The targets of issue 16, on this 2-core machine: a turn's latency and throughput within
# 4x the floor's, its p99 within 3x the floor's p99.
MAX_FLOOR_MULTIPLE: Final = 4.0
MAX_P99_FLOOR_MULTIPLE: Final = 3.0

# -- the floor -----------------------------------------------------------------------------


class _FloorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversation_id: str | None = None
    message: str


_FLOOR_RESPONSE: Final = {
    "conversation_id": "0b7f5a52-3c1e-4f0e-9a53-3d8f6e2c9b11",
    "response": 'Added task 1: "buy milk 1".',
    "tool_calls": [
        {
            "id": "call_25a9b595563944c1adb02b02d513e26f",
            "name": "add_task",
            "arguments": {"title": "buy milk 1"},
            "result": {"task_id": 1, "status": "created", "title": "buy milk 1"},
        }
    ],
}


def floor_app() -> FastAPI:
    """The floor: what FastAPI and uvicorn cost for a request like a chat turn, no more."""
    app = FastAPI()

    @app.post("/api/{user_id}/chat")
    async def chat(user_id: str, body: _FloorRequest) -> dict[str, Any]:
        return _FLOOR_RESPONSE

    return app


# -- servers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    """A server: chatledger on a database, or the floor; with its number of workers."""

    database: str  # SQLITE, POSTGRES, or FLOOR
    workers: int
    source: str = ""
    """The `src` directory chatledger runs from: "" for this checkout's, or a baseline's."""

    @property
    def name(self) -> str:
        if self.database == FLOOR:
            return "FastAPI floor"
        return f"chatledger, {self.database}" + (" (baseline)" if self.source else "")

    @property
    def this(self) -> Contender:
        """The same server run from this checkout."""
        return replace(self, source="")

    @property
    def floor(self) -> Contender:
        return Contender(FLOOR, self.workers)

    def path(self) -> dict[str, str]:
        """The environment that runs a baseline's chatledger (nothing for this one's)."""
        if not self.source:
            return {}
        return {
            "PYTHONPATH": os.pathsep.join(filter(None, [self.source, os.environ.get("PYTHONPATH")]))
        }

    def command(self, port: int, database_url: str | None) -> list[str]:
        where = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(self.workers)]
        if self.database == FLOOR:
            # Served exactly as `chatledger serve` serves (run_server), workers included.
            run = (
                "import sys; from chatledger.api.server import run_server; "
                "run_server('bench.server:floor_app', host=sys.argv[1], port=int(sys.argv[2]), "
                "workers=int(sys.argv[3]))"
            )
            return ["-c", run, "127.0.0.1", str(port), str(self.workers)]
        assert database_url is not None
        return [
            *("-m", "chatledger", "serve", *where),
            *("--database-url", database_url, "--agent", "rules"),
        ]


@dataclass
class Server:
    contender: Contender
    process: asyncio.subprocess.Process
    port: int
    log: IO[bytes]
    log_path: Path

    @classmethod
    async def start(cls, contender: Contender, database_url: str | None, logs: Path) -> Server:
        """Start the server on a free port; `wait_ready` says when it answers."""
        port = free_port()
        baseline = "-baseline" if contender.source else ""
        path = logs / f"{contender.database}-{contender.workers}{baseline}.log"
        server_log = await asyncio.to_thread(path.open, "wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *contender.command(port, database_url),
            cwd=ROOT,
            env={**os.environ, "CHATLEDGER_JWT_SECRET": SECRET, **contender.path()},
            stdin=asyncio.subprocess.DEVNULL,
            # chatledger logs a JSON line per request, as it would in production.
            stdout=server_log,
            stderr=server_log,
            # A session of its own: stopping it reaches its workers too.
            start_new_session=True,
        )
        return cls(contender, process, port, server_log, path)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """The end of what the server printed, for an error message."""
        return self.log_path.read_bytes()[-4000:].decode(errors="replace")

    async def wait_ready(self) -> None:
        path = "/docs" if self.contender.database == FLOOR else "/readyz"
        deadline = time.monotonic() + READY_WITHIN
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as client:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.contender} exited:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(path)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.contender} is not ready:\n{self.output()}")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM; SIGKILL to its session if it is still there after STOP_WITHIN s."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_WITHIN):
                    await self.process.wait()
            except TimeoutError:
                os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self.log.close()


# -- the load ------------------------------------------------------------------------------


@dataclass
class Users:
    """The simulated users of one workload on one server: a token and a conversation each."""

    names: list[str]
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    conversations: dict[str, str | None] = field(default_factory=dict)
    turns: Counter[str] = field(default_factory=Counter)

    @classmethod
    def make(cls, prefix: str, count: int) -> Users:
        authenticator = Authenticator(secret=SECRET, algorithms=["HS256"])
        users = cls([f"{prefix}-{n}" for n in range(count)])
        for name in users.names:
            token = authenticator.issue(name, ttl=timedelta(hours=2))[0]
            users.headers[name] = {"Authorization": f"Bearer {token}"}
            users.conversations[name] = None
        return users


_numbers = itertools.count(1)


def add_message() -> str:
    return f"add buy milk {next(_numbers)}"


def show_message() -> str:
    return "show my tasks"


def turn(
    clients: Mapping[str, httpx.AsyncClient],
    users: Users,
    message: Callable[[], str],
    expect: Sequence[str] | None,
) -> Callable[[str], Awaitable[None]]:
    """A chat turn for a user, in the user's conversation, on the user's client.

    It checks the tool calls made (`expect`, unless None); any failure aborts the run, so
    the workload is never less than it says.
    """

    async def one(user: str) -> None:
        body = {"message": message(), "conversation_id": users.conversations[user]}
        response = await clients[user].post(
            f"/api/{user}/chat", json=body, headers=users.headers[user]
        )
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code} {response.text}")
        reply = response.json()
        called = [call["name"] for call in reply["tool_calls"]]
        if expect is not None and called != list(expect):
            raise RuntimeError(f"expected calls {list(expect)}, got {called}: {reply}")
        users.conversations[user] = reply["conversation_id"]
        users.turns[user] += 1

    return one


@contextlib.asynccontextmanager
async def clients_for(server: Server, users: Users) -> Any:
    """An `httpx.AsyncClient` per user, each with one keep-alive connection."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        yield {
            user: await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.base_url, limits=limits, timeout=60, trust_env=False
                )
            )
            for user in users.names
        }


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int = 5
    seconds: float = 2.5
    clients: int = 32
    workers: tuple[int, ...] = (1, 2)
    databases: tuple[str, ...] = (SQLITE_NAME, POSTGRES_NAME)
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    baseline: str = ""


QUICK = Settings(rounds=2, seconds=0.5, workers=(1,))


_OPTIONS: Options = {
    "rounds": (int, "interleaved rounds"),
    "seconds": (float, "seconds of each timed slice"),
    "clients": (int, "concurrent clients, each a user with one connection"),
    "workers": (numbers, "worker counts to run every server with"),
    "databases": (names, "sqlite, postgresql or both"),
    "postgres_url": (str, "admin URL the run's own databases are created through"),
    "baseline": (str, "the src directory of another checkout, run beside this one"),
}


def parse_args(argv: Sequence[str]) -> Settings:
    return parse_options(
        argv,
        prog="python -m bench server",
        description="Chat turns over HTTP against chatledger serve, and the framework floor.",
        defaults=Settings(),
        quick=QUICK,
        options=_OPTIONS,
        quick_help="a smoke run of under 30 s: 2 short rounds, 1 worker only",
    )


@dataclass
class Stand:
    """A running server and the users of each of its workloads."""

    server: Server
    workloads: dict[str, tuple[Users, Callable[[], str], Sequence[str] | None]]

    @property
    def contender(self) -> Contender:
        return self.server.contender

    @classmethod
    def of(cls, server: Server, number: int, clients: int) -> Stand:
        if server.contender.database == FLOOR:
            # The floor answers every request alike: only the add workload is run on it.
            return cls(server, {"add": (Users.make(f"add-{number}", clients), add_message, None)})
        return cls(
            server,
            {
                "add": (Users.make(f"add-{number}", clients), add_message, ADD),
                "show": (Users.make(f"show-{number}", clients), show_message, SHOW),
            },
        )

    async def seed(self) -> None:
        """Each user's conversation; and the three tasks that *show* lists."""
        for workload, (users, message, expect) in self.workloads.items():
            first, called = (
                (lambda: SEED_TASKS, ADD * 3) if workload == "show" else (message, expect)
            )
            async with clients_for(self.server, users) as clients:
                start = turn(clients, users, first, called)
                await asyncio.gather(*(start(user) for user in users.names))


@dataclass
class CpuTimes:
    """CPU milliseconds per request of each slice: the server's and the client's."""

    samples: defaultdict[tuple[str, Contender], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def server_ms(self, workload: str, contender: Contender) -> float:
        return median([server for server, _ in self.samples[workload, contender]])

    def client_ms(self, workload: str, contender: Contender) -> float:
        return median([client for _, client in self.samples[workload, contender]])

    def ratio(self, a: tuple[str, Contender], b: tuple[str, Contender]) -> float:
        """Median over rounds of a's server CPU per request over b's."""
        pairs = zip(self.samples[a], self.samples[b], strict=True)
        return median([x[0] / y[0] for x, y in pairs])


async def run_slice(stand: Stand, settings: Settings, results: Results, cpu: CpuTimes) -> None:
    pid = stand.server.process.pid
    for workload, (users, message, expect) in stand.workloads.items():
        async with clients_for(stand.server, users) as clients:
            operation = turn(clients, users, message, expect)
            # Untimed: every connection opened, every worker warmed up.
            await asyncio.gather(*(operation(user) for user in users.names))
            server_before, client_before = cpu_seconds(pid), time.process_time()
            timed = await run_for(settings.seconds, operation, users.names)
            server_cpu = cpu_seconds(pid) - server_before
            client_cpu = time.process_time() - client_before
        results.add(workload, stand.contender, timed)
        count = len(timed.latencies)
        cpu.samples[workload, stand.contender].append(
            (1000 * server_cpu / count, 1000 * client_cpu / count)
        )


async def measure(settings: Settings) -> str:
    """Start every server, run the interleaved rounds, and return the Markdown report."""
    load_at_start = os.getloadavg()[0]
    started = time.monotonic()
    versions = [f"SQLite {sqlite3.sqlite_version}"] if SQLITE_NAME in settings.databases else []
    with tempfile.TemporaryDirectory(prefix="chatledger-bench-server-") as directory:
        async with AsyncExitStack() as stack:
            servers: list[Server] = []

            async def start(contender: Contender, url: str | None) -> None:
                server = await Server.start(contender, url, Path(directory))
                stack.push_async_callback(server.stop)
                servers.append(server)

            sources = [""] + ([settings.baseline] if settings.baseline else [])
            for workers in settings.workers:
                await start(Contender(FLOOR, workers), None)
                for number, source in enumerate(sources):
                    if SQLITE_NAME in settings.databases:
                        path = Path(directory) / f"chatledger-{workers}-{number}.db"
                        await start(Contender(SQLITE, workers, source), f"sqlite:///{path}")
                    if POSTGRES_NAME in settings.databases:
                        dsn, version = await stack.enter_async_context(
                            postgres_database(settings.postgres_url, "chatledger_bench_server")
                        )
                        await start(Contender(POSTGRES, workers, source), dsn)
            if POSTGRES_NAME in settings.databases:
                versions.append(f"PostgreSQL {version}")
            log(f"starting {len(servers)} servers")
            await asyncio.gather(*(server.wait_ready() for server in servers))
            stands = [Stand.of(s, n, settings.clients) for n, s in enumerate(servers)]
            log("seeding conversations")
            for stand in stands:
                await stand.seed()
            results, cpu = Results(), CpuTimes()
            for stand in interleaved(settings.rounds, stands):
                await run_slice(stand, settings, results, cpu)
    packages = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("httpx", "uvicorn", "fastapi")
    )
    setup = (
        f"{machine()}; {', '.join(versions)}; {packages}. Load average {load_at_start:.1f} "
        f"when the run started, {os.getloadavg()[0]:.1f} when it ended; the run took "
        f"{time.monotonic() - started:.0f} s."
    )
    return report(settings, stands, results, cpu, setup)


# -- the report ----------------------------------------------------------------------------


def report(
    settings: Settings,
    stands: list[Stand],
    results: Results,
    cpu: CpuTimes,
    setup: str,
) -> str:
    """Markdown: the setup, the measurements, the ratios to the floor, the targets."""
    out = [
        "## Server",
        "",
        setup,
        "",
        f"{settings.rounds} rounds; in each, every server in turn (the order rotates) runs "
        f"{settings.seconds:g} s of each of its workloads with {settings.clients} concurrent "
        "clients. The clients run in the benchmark's process, on the same cores as the "
        "servers. Figures are medians across rounds; ratios are medians of per-round ratios "
        "against the floor with the same number of workers. CPU is per request: the "
        "server's processes (not PostgreSQL's), and the client's.",
    ]
    ordered = sorted(
        stands,
        key=lambda s: (
            s.contender.workers,
            s.contender.database != FLOOR,
            s.contender.database,
            s.contender.source,
        ),
    )
    measured: list[list[object]] = []
    ratios: list[list[object]] = []
    targets: list[list[object]] = []
    against_baseline: list[list[object]] = []
    for stand in ordered:
        contender = stand.contender
        for workload, (users, _, _) in stand.workloads.items():
            rates = [s.rate for s in results.slices(workload, contender)]
            p99 = results.latency_ms(workload, contender, 99)
            measured.append(
                [
                    contender.name,
                    contender.workers,
                    FLOOR if contender.database == FLOOR else workload,
                    results.rate(workload, contender),
                    f"{min(rates):,.0f} - {max(rates):,.0f}",
                    results.latency_ms(workload, contender, 50),
                    p99,
                    cpu.server_ms(workload, contender),
                    cpu.client_ms(workload, contender),
                    "-" if contender.database == FLOOR else median(list(users.turns.values())),
                ]
            )
            if contender.database == FLOOR:
                continue
            this, floor = (workload, contender), ("add", contender.floor)
            latency = results.ratio(this, floor, lambda timed: timed.percentile(50))
            tail = results.ratio(this, floor, lambda timed: timed.percentile(99))
            throughput = results.ratio(floor, this)
            server_cpu = cpu.ratio(this, floor)
            ratios.append(
                [contender.name, contender.workers, workload, latency, tail, throughput, server_cpu]
            )
            if contender.source:
                head = (workload, contender.this)
                against_baseline.append(
                    [
                        contender.database,
                        contender.workers,
                        workload,
                        results.ratio(head, this),
                        results.ratio(this, head, lambda timed: timed.percentile(99)),
                        cpu.ratio(this, head),
                    ]
                )
                continue
            where = f"{contender.database}, {contender.workers} worker(s), {workload}"
            measures = f"p50 {latency:.1f}x, req/s {throughput:.1f}x, server CPU {server_cpu:.1f}x"
            targets.append(
                [
                    f"a turn within {MAX_FLOOR_MULTIPLE:g}x the floor",
                    where,
                    measures,
                    _met(max(latency, throughput) <= MAX_FLOOR_MULTIPLE),
                ]
            )
            targets.append(
                [
                    f"p99 within {MAX_P99_FLOOR_MULTIPLE:g}x the floor's "
                    f"at {settings.clients} clients",
                    where,
                    f"{p99:.0f} ms, {tail:.1f}x",
                    _met(tail <= MAX_P99_FLOOR_MULTIPLE),
                ]
            )
    headers = ["server", "workers", "workload", "req/s", "range", "p50 ms", "p99 ms"]
    headers += ["server CPU ms", "client CPU ms", "turns per conversation at the end"]
    out += [
        "",
        f"### Requests with {settings.clients} clients",
        "",
        markdown_table(headers, measured),
    ]
    headers = ["server", "workers", "workload", "p50 / floor p50", "p99 / floor p99"]
    headers += ["floor req/s / req/s", "server CPU / floor's"]
    out += ["", "### Turn over floor", "", markdown_table(headers, ratios)]
    if against_baseline:
        headers = ["database", "workers", "workload", "req/s / baseline's"]
        headers += ["baseline p99 / p99", "baseline server CPU / server CPU"]
        out += ["", "### Against the baseline (above 1: this checkout is better)", ""]
        out.append(markdown_table(headers, against_baseline))
    out += ["", "### Targets of issue 16", ""]
    out.append(markdown_table(["target", "where", "measured", "met"], targets))
    return "\n".join(out)


def _met(met: bool) -> str:
    return "yes" if met else "**no**"


def main(argv: Sequence[str]) -> None:
    settings = parse_args(argv)
    if settings.baseline:
        settings = replace(settings, baseline=str(Path(settings.baseline).resolve()))
    print(asyncio.run(measure(settings)))
