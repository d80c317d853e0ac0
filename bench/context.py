"""The context benchmark (issue 5): what a long conversation costs a turn.

Two parts.

**build**: `chatledger.context.build` alone, over a history of 10,000 stored messages in
the shapes real turns leave (user messages; assistant replies; assistant tool calls, one
or two at a time, with their results), of realistic and varied sizes, built as `Message`
objects with `token_count` from `count_message_tokens`, the newest one a user message
(the turn in progress). Three budgets: one that holds all 10,000 (the issue's "10,000-
message window"), the service's default of 8,000 tokens, and 32,000. Pure CPU: each call
is timed with `perf_counter`, in slices of many calls, the budgets in interleaved rounds.

**turn**: `await ChatService(store, agent, context_tokens=8000).turn(...)` on a
conversation of 100,000 messages against the same turn on one of 100, on SQLite and on
PostgreSQL. The long one is branched: its first turn edits the last filled user message,
so every measured turn on it runs on a branch at depth 100,000 (issue 12). The agent is
chatledger's `RulesAgent` (offline, answers at once; its rolling summary stays small by
design, where `ScriptedAgent.summarize` appends every folded message and would make a
summary of all 100,000). Every turn is "add <title>:
<description>": one `add_task` call and a reply, four stored messages of fixed size.
The conversations are filled in bulk (COPY on PostgreSQL) with turns of exactly that
shape and size, so both windows hold alike, then brought up to date the way the service
does it: one turn, then `drain()`, which folds what does not fit into the rolling summary.
Both conversations of a database share one store, one service and one table: only their
length differs. The 100-message conversation is a fresh one for every round, so it never
grows far past 100; the 100,000-message one is kept (it grows by under 3%).

A slice is a fixed number of turns on one conversation, one after another, each followed
by `drain()`: a background summary never overlaps a timed turn, and the drain is timed on
its own, not as part of the turn. turns/s is turns over the time spent in turns only.
Each slice starts with one untimed turn (and drain) as a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.common import (
    POSTGRES,
    SQLITE,
    Options,
    Results,
    Slice,
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
)
from chatledger import context
from chatledger.agents import RulesAgent
from chatledger.agents.base import AgentEvent, Toolbox
from chatledger.domain import Branch, ChatMessage, Message, ToolCall
from chatledger.service import DEFAULT_SYSTEM_PROMPT, ChatService
from chatledger.store import SQLAlchemyStore
from chatledger.tokens import MESSAGE_OVERHEAD_TOKENS, count_message_tokens

CONTEXT_TOKENS = 8000
TARGET_BUILD_MS = 5.0
TARGET_TURN_RATIO = 1.2

# -- part 1: build over a realistic history ------------------------------------------------

_WORDS = (
    "the a to and of for in on with my your this that it is be we can please task tasks "
    "list add remind call email send book buy pay check review update finish meeting "
    "tomorrow today monday friday morning evening next week report invoice dentist "
    "groceries milk flight hotel project deadline draft slides budget team client notes "
    "done pending completed title description priority high low due date before after "
    "I you should would could also then first second last one two three about from by "
    "sure here are what which when where there have has had will not no yes thanks"
).split()

TOOLS = ("add_task", "list_tasks", "complete_task", "update_task", "delete_task")

# (weight, fewest characters, most characters): mostly short, sometimes long, rarely a paste.
USER_SIZES = ((70, 15, 200), (25, 200, 800), (5, 800, 4000))
REPLY_SIZES = ((55, 40, 400), (38, 400, 1500), (7, 1500, 4000))
ARGUMENT_SIZES = ((80, 0, 120), (20, 120, 900))
RESULT_SIZES = ((55, 0, 0), (45, 200, 3000))  # 0: a one-task result; else a listing


def _length(rng: random.Random, spans: Sequence[tuple[int, int, int]]) -> int:
    [(_, low, high)] = rng.choices(spans, weights=[weight for weight, _, _ in spans])
    return rng.randint(low, high)


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    text = " ".join(words)[:length].strip()
    return text[:1].upper() + text[1:] + "." if text else ""


def _arguments(rng: random.Random, name: str) -> str:
    size = _length(rng, ARGUMENT_SIZES)
    if name == "list_tasks":
        return json.dumps({"status": rng.choice(("all", "pending", "completed"))})
    if name in ("complete_task", "delete_task"):
        return json.dumps({"task_id": rng.randint(1, 500)})
    body: dict[str, Any] = {"title": _text(rng, rng.randint(8, 60))}
    if size:
        body["description"] = _text(rng, size)
    if name == "update_task":
        body["task_id"] = rng.randint(1, 500)
    return json.dumps(body)


def _result(rng: random.Random, name: str) -> str:
    size = _length(rng, RESULT_SIZES)
    if name != "list_tasks" or not size:
        task_id = rng.randint(1, 500)
        status = {"add_task": "created", "delete_task": "deleted"}.get(name, "updated")
        return json.dumps(
            {"task_id": task_id, "status": status, "title": _text(rng, rng.randint(8, 60))}
        )
    tasks: list[dict[str, Any]] = []
    while len(json.dumps(tasks)) < size:
        tasks.append(
            {
                "id": rng.randint(1, 500),
                "title": _text(rng, rng.randint(8, 60)),
                "description": _text(rng, rng.randint(0, 120)) or None,
                "completed": rng.random() < 0.3,
                "created_at": "2026-11-21T09:14:05.123456+00:00",
            }
        )
    return json.dumps({"tasks": tasks, "count": len(tasks)})


def _turn(rng: random.Random) -> list[ChatMessage]:
    """One finished turn: user, then zero to two tool steps, then the reply."""
    messages = [ChatMessage.user(_text(rng, _length(rng, USER_SIZES)))]
    kind = rng.choices(("plain", "one", "parallel", "two"), weights=(45, 40, 10, 5))[0]
    steps = {"plain": [], "one": [1], "parallel": [2], "two": [1, 1]}[kind]
    for calls in steps:
        made = []
        for _ in range(calls):
            name = rng.choice(TOOLS)
            made.append(ToolCall(f"call_{rng.getrandbits(96):024x}", name, _arguments(rng, name)))
        # A model often says something before it calls a tool.
        preamble = _text(rng, rng.randint(20, 160)) if rng.random() < 0.3 else ""
        messages.append(ChatMessage.assistant(preamble, tool_calls=made))
        messages += [
            ChatMessage.tool(tool_call_id=call.id, name=call.name, content=_result(rng, call.name))
            for call in made
        ]
    messages.append(ChatMessage.assistant(_text(rng, _length(rng, REPLY_SIZES))))
    return messages


def realistic_history(count: int, *, seed: int = 5) -> list[Message]:
    """`count` stored messages of finished turns, then a new user message (the turn in
    progress), with seq 1..count, as the chat service would pass them to `build`."""
    rng = random.Random(seed)
    chats: list[ChatMessage] = []
    while True:
        turn = _turn(rng)
        if len(chats) + len(turn) > count - 1:
            break
        chats += turn
    while len(chats) < count - 1:  # top up with whole plain turns, or a second reply
        room = count - 1 - len(chats)
        chats += [ChatMessage.user(_text(rng, 60))] if room >= 2 else []
        chats.append(ChatMessage.assistant(_text(rng, 200)))
    chats.append(ChatMessage.user(_text(rng, 120)))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        Message(
            conversation_id="bench-conversation",
            seq=seq,
            id=str(uuid.UUID(int=rng.getrandbits(128))),
            role=m.role,
            content=m.content,
            tool_calls=m.tool_calls,
            tool_call_id=m.tool_call_id,
            name=m.name,
            metadata=m.metadata,
            token_count=count_message_tokens(m),
            created_at=start + seq * timedelta(seconds=20),
        )
        for seq, m in enumerate(chats, start=1)
    ]


@dataclass(frozen=True)
class Budget:
    label: str
    tokens: int


def _build(history: Sequence[Message], budget: int) -> context.ContextWindow:
    return context.build(history, system_prompt=DEFAULT_SYSTEM_PROMPT, budget_tokens=budget)


@dataclass
class BuildSlice(Slice):
    """A slice of `build` calls, with the garbage collections that ran during it."""

    gc_seconds: float = 0.0
    full_collections: int = 0


def time_build(history: Sequence[Message], budget: int, seconds: float) -> BuildSlice:
    """Call `build` back to back for about `seconds`, timing each call.

    The garbage collector runs as it would in a server: `build` allocates a container per
    unit, and its pauses are part of what a call costs. They are timed separately too.
    """
    timed = BuildSlice()
    collecting = 0.0

    def watch(phase: str, info: dict[str, int]) -> None:
        nonlocal collecting
        if phase == "start":
            collecting = perf_counter()
            return
        timed.gc_seconds += perf_counter() - collecting
        timed.full_collections += info["generation"] == 2

    gc.collect()
    gc.callbacks.append(watch)
    try:
        began = perf_counter()
        deadline = began + seconds
        while (start := perf_counter()) < deadline:
            _build(history, budget)
            timed.latencies.append(perf_counter() - start)
        timed.seconds = perf_counter() - began
    finally:
        gc.callbacks.remove(watch)
    return timed


@dataclass(frozen=True)
class BuildOutcome:
    budgets: list[Budget]
    # Per budget: stored messages in the window, and the tokens of the agent's input. Only
    # numbers are kept: the turns that follow should not carry 10,000 messages in the heap.
    windows: dict[Budget, tuple[int, int]]
    history_tokens: int
    results: Results


def measure_build(settings: Settings) -> BuildOutcome:
    history = realistic_history(settings.build_messages)
    history_tokens = sum(m.token_count for m in history)
    system_tokens = count_message_tokens(ChatMessage.system(DEFAULT_SYSTEM_PROMPT))
    budgets = [Budget("all fit", history_tokens + system_tokens)]
    budgets += [Budget(f"{tokens:,}", tokens) for tokens in settings.budgets]
    windows = {}
    for budget in budgets:
        window = _build(history, budget.tokens)
        windows[budget] = (len(history) - len(window.dropped), window.tokens)
    if windows[budgets[0]][0] != len(history):
        raise RuntimeError("the all-fit budget did not hold the whole history")
    log(
        f"build: {len(history):,} messages, {history_tokens:,} tokens; "
        f"{settings.rounds} rounds of {settings.build_seconds:g} s per budget"
    )
    results = Results()
    for budget in interleaved(settings.rounds, budgets):
        results.add("build", budget, time_build(history, budget.tokens, settings.build_seconds))
    return BuildOutcome(budgets, windows, history_tokens, results)


# -- part 2: a turn on a long conversation -------------------------------------------------

TITLE = "renew the apartment lease"
DESCRIPTION = (
    "Bring the signed lease, two forms of ID and the deposit cheque to the letting agent "
    "on Baker Street before noon; ask about the parking space, the broken radiator in "
    "the bedroom, and whether the contract can run for two years instead of one. Keep "
    "copies of everything, and photograph the meter readings on the way out."
)


def request(number: int) -> str:
    """Every turn's user message: the same size whatever the number (up to a million)."""
    return f"add {TITLE} {number:06d}: {DESCRIPTION}"


def filled_turn(number: int, task_id: int) -> list[ChatMessage]:
    """The four messages `RulesAgent` leaves for `request(number)`, as the service stores
    them (the setup checks that a real turn's token counts match)."""
    title = f"{TITLE} {number:06d}"
    call = ToolCall(
        f"call_{uuid.uuid4().hex}",
        "add_task",
        json.dumps({"title": title, "description": DESCRIPTION}),
    )
    result = {"task_id": task_id, "status": "created", "title": title}
    reply = f'Added task {task_id}: "{title}", with the description "{DESCRIPTION}".'
    return [
        ChatMessage.user(request(number)),
        ChatMessage.assistant(tool_calls=[call]),
        ChatMessage.tool(tool_call_id=call.id, name="add_task", content=json.dumps(result)),
        ChatMessage.assistant(reply),
    ]


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
CONVERSATION_COLUMNS = (
    "user_id",
    "id",
    "title",
    "metadata",
    "next_seq",
    "created_at",
    "updated_at",
    "head_seq",
    "head_run_start",
)


def _stamp(database: str, moment: datetime) -> object:
    # As chatledger stores `created_at`: UTC text on SQLite, timestamptz on PostgreSQL.
    if database == SQLITE:
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return moment


def conversation_tables(
    database: str, user_id: str, conversation_id: str, size: int
) -> list[Table]:
    """The rows of a conversation of `size` messages (whole turns), 15 s apart."""
    start = datetime.now(UTC) - timedelta(seconds=15 * (size + 1))
    rows = []
    seq = 0
    for number in range(1, size // 4 + 1):
        for m in filled_turn(number, task_id=number):
            seq += 1
            calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls]
            rows.append(
                (
                    user_id,
                    conversation_id,
                    seq,
                    str(uuid.uuid4()),
                    m.role.value,
                    m.content,
                    json.dumps(calls) if calls else None,
                    m.tool_call_id,
                    m.name,
                    None,
                    count_message_tokens(m),
                    _stamp(database, start + timedelta(seconds=15 * seq)),
                    seq - 1 or None,
                    1,
                )
            )
    created = _stamp(database, start)
    conversation = (user_id, conversation_id, "bench", "{}", seq + 1, created, created, seq, 1)
    return [
        Table("conversations", CONVERSATION_COLUMNS, [conversation]),
        Table("messages", MESSAGE_COLUMNS, rows),
    ]


class CountingAgent:
    """`RulesAgent`, counting its summarize calls and noting the size of each input."""

    def __init__(self) -> None:
        self._agent = RulesAgent()
        self.summarize_calls = 0
        self.input_sizes: list[int] = []

    def run(self, messages: Sequence[ChatMessage], toolbox: Toolbox) -> AsyncIterator[AgentEvent]:
        self.input_sizes.append(len(messages))
        return self._agent.run(messages, toolbox)

    async def summarize(self, messages: Sequence[ChatMessage], previous: str | None) -> str:
        self.summarize_calls += 1
        return await self._agent.summarize(messages, previous)


@dataclass
class TurnSlice(Slice):
    """A slice of turns; `seconds` counts the turns only, not the drains between them."""

    drains: list[float] = field(default_factory=list)
    folds: list[float] = field(default_factory=list)  # the drains in which a fold ran
    summarize_calls: int = 0
    input_messages: list[int] = field(default_factory=list)
    messages_before: int = 0
    messages_after: int = 0
    rows_after_summary: int = 0


@dataclass(eq=False)
class Contender:
    """One conversation size on one database; a fresh conversation per round, or one kept."""

    database: str
    size: int
    store: SQLAlchemyStore
    service: ChatService
    agent: CountingAgent
    user_id: str
    conversations: list[str]  # one per round, or a single one kept for every round
    number: int = 0  # the last request number sent

    def conversation(self, round_number: int) -> str:
        return self.conversations[min(round_number, len(self.conversations) - 1)]

    async def turn(
        self, conversation_id: str, branch: Branch | None = None
    ) -> tuple[float, float, int]:
        """One turn, then a drain: (turn seconds, drain seconds, summarize calls)."""
        self.number += 1
        calls = self.agent.summarize_calls
        began = perf_counter()
        await self.service.turn(self.user_id, conversation_id, request(self.number), branch=branch)
        ended = perf_counter()
        await self.service.drain()
        return ended - began, perf_counter() - ended, self.agent.summarize_calls - calls

    async def length(self, conversation_id: str) -> int:
        return (await self.store.get_conversation(self.user_id, conversation_id)).message_count

    async def slice(self, conversation_id: str, turns: int) -> TurnSlice:
        await self.turn(conversation_id)  # warm-up, untimed
        timed = TurnSlice(messages_before=await self.length(conversation_id))
        for _ in range(turns):
            self.agent.input_sizes.clear()
            seconds, drained, calls = await self.turn(conversation_id)
            timed.latencies.append(seconds)
            timed.seconds += seconds
            timed.drains.append(drained)
            timed.input_messages += self.agent.input_sizes
            if calls:
                timed.folds.append(drained)
                timed.summarize_calls += calls
        timed.messages_after = await self.length(conversation_id)
        _, after = await self.store.load_context(
            self.user_id, conversation_id, limit=CONTEXT_TOKENS // MESSAGE_OVERHEAD_TOKENS
        )
        timed.rows_after_summary = len(after)
        return timed


@dataclass
class Setup:
    """How one database's conversations were made and brought up to date."""

    database: str
    fill_seconds: dict[int, float] = field(default_factory=dict)
    first_turn_ms: dict[int, float] = field(default_factory=dict)
    first_drain_seconds: dict[int, float] = field(default_factory=dict)
    first_summarize_calls: dict[int, int] = field(default_factory=dict)
    token_check: str = ""


async def prepare(
    target: Target, settings: Settings, stack: AsyncExitStack
) -> tuple[list[Contender], Setup]:
    """Migrate, fill both sizes in bulk, and bring every conversation up to date."""
    store = SQLAlchemyStore.from_url(target.url())
    stack.push_async_callback(store.close)
    await store.migrate()
    agent = CountingAgent()
    service = ChatService(store, agent, context_tokens=CONTEXT_TOKENS)
    setup = Setup(target.database)
    contenders = []
    small, large = settings.sizes
    for size, count in ((small, settings.rounds), (large, 1)):
        user_id = f"bench-{size}"
        conversations = [str(uuid.uuid4()) for _ in range(count)]
        began = perf_counter()
        for conversation_id in conversations:
            await target.load(conversation_tables(target.database, user_id, conversation_id, size))
        setup.fill_seconds[size] = perf_counter() - began
        contender = Contender(
            target.database, size, store, service, agent, user_id, conversations, size // 4
        )
        # The long conversation goes on from an edit of its last filled turn: every turn
        # measured on it runs on a branch at depth `size`, read back across two runs.
        branch = Branch(size - 3, edit=True) if size == large else None
        for index, conversation_id in enumerate(conversations):
            seconds, drained, calls = await contender.turn(conversation_id, branch)
            if index == 0:
                setup.first_turn_ms[size] = 1000 * seconds
                setup.first_drain_seconds[size] = drained
                setup.first_summarize_calls[size] = calls
        contenders.append(contender)
        log(
            f"{target.database}: {count} conversation(s) of {size:,} messages filled in "
            f"{setup.fill_seconds[size]:.1f} s; first turn {setup.first_turn_ms[size]:.0f} ms, "
            f"its fold {setup.first_drain_seconds[size]:.2f} s "
            f"({setup.first_summarize_calls[size]} summarize calls)"
        )
    # The filled turns must cost what real ones do, or the two windows would not hold alike.
    first = contenders[0]
    real = await store.history(first.user_id, first.conversation(0), limit=4)
    filled = [count_message_tokens(m) for m in filled_turn(first.number, task_id=1)]
    setup.token_check = (
        f"tokens per message of a real turn {[m.token_count for m in real]}, "
        f"of a filled one {filled}"
    )
    if abs(sum(m.token_count for m in real) - sum(filled)) > 8:
        raise RuntimeError(f"filled turns are not the size of real ones: {setup.token_check}")
    return contenders, setup


@dataclass(frozen=True)
class TurnOutcome:
    contenders: list[Contender]
    setups: list[Setup]
    results: Results
    versions: list[str]


async def measure_turns(settings: Settings) -> TurnOutcome:
    with tempfile.TemporaryDirectory(prefix="chatledger-bench-") as directory:
        async with AsyncExitStack() as stack:
            targets = []
            versions = []
            if "sqlite" in settings.databases:
                versions.append(f"SQLite {sqlite3.sqlite_version}")
                targets.append(Target(SQLITE, str(Path(directory) / "context.db")))
            if "postgresql" in settings.databases:
                dsn, version = await stack.enter_async_context(
                    postgres_database(settings.postgres_url, "chatledger_bench_context")
                )
                versions.append(f"PostgreSQL {version}")
                targets.append(Target(POSTGRES, dsn))
            contenders: list[Contender] = []
            setups = []
            for target in targets:
                made, setup = await prepare(target, settings, stack)
                contenders += made
                setups.append(setup)
            results = Results()
            log(f"turns: {settings.rounds} rounds of {settings.turns} turns per conversation")
            order = interleaved(settings.rounds, contenders)
            for index, contender in enumerate(order):
                round_number = index // len(contenders)
                conversation_id = contender.conversation(round_number)
                timed = await contender.slice(conversation_id, settings.turns)
                results.add("turn", contender, timed)
    return TurnOutcome(contenders, setups, results, versions)


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int = 7
    build_messages: int = 10_000
    build_seconds: float = 1.5
    budgets: tuple[int, ...] = (CONTEXT_TOKENS, 32_000)
    turns: int = 100
    sizes: tuple[int, int] = (100, 100_000)
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"


QUICK = Settings(rounds=2, build_seconds=0.3, turns=15, sizes=(100, 10_000))


def _pair(text: str) -> tuple[int, int]:
    sizes = numbers(text)
    if len(sizes) != 2 or sizes[0] >= sizes[1] or any(n % 4 or n < 4 for n in sizes):
        raise argparse.ArgumentTypeError("two sizes, small then large, each a multiple of 4")
    return sizes[0], sizes[1]


_OPTIONS: Options = {
    "rounds": (int, "interleaved rounds, for both parts"),
    "build_messages": (int, "messages in the history build runs over"),
    "build_seconds": (float, "seconds of each build slice"),
    "budgets": (numbers, "token budgets for build besides the one that holds everything"),
    "turns": (int, "timed turns per conversation per round"),
    "sizes": (_pair, "the short and the long conversation, in messages"),
    "databases": (names, "sqlite, postgresql or both"),
    "postgres_url": (str, "admin URL the run's own database is created through"),
}


def parse_args(argv: Sequence[str]) -> Settings:
    return parse_options(
        argv,
        prog="python -m bench context",
        description="The context builder over a 10,000-message window, and a turn on a "
        "100,000-message conversation against a 100-message one.",
        defaults=Settings(),
        quick=QUICK,
        options=_OPTIONS,
        quick_help="a smoke run of under 30 s: 2 short rounds, 10,000 messages at most",
    )


# -- the report ----------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return 1000 * seconds


def _count(value: float) -> str:
    return f"{value:,.0f}"


def build_report(settings: Settings, outcome: BuildOutcome) -> list[str]:
    results = outcome.results
    rows = []
    for budget in outcome.budgets:
        in_window, window_tokens = outcome.windows[budget]
        slices: list[BuildSlice] = results.slices("build", budget)  # type: ignore[assignment]
        p50s = [_ms(s.percentile(50)) for s in slices]
        calls = [len(s.latencies) for s in slices]
        rows.append(
            [
                budget.label,
                _count(budget.tokens),
                _count(in_window),
                _count(window_tokens),
                results.latency_ms("build", budget, 50),
                f"{min(p50s):.2f} - {max(p50s):.2f}",
                results.latency_ms("build", budget, 99),
                _count(median(calls)),
                median([_ms(s.gc_seconds) / len(s.latencies) for s in slices]),
                median([100 * s.full_collections / len(s.latencies) for s in slices]),
            ]
        )
    headers = [
        "budget",
        "budget tokens",
        "messages in window",
        "window tokens",
        "p50 ms",
        "p50 range",
        "p99 ms",
        "calls per slice",
        "GC ms per call",
        "full GCs per 100 calls",
    ]
    return [
        "",
        f"### build over {settings.build_messages:,} stored messages",
        "",
        f"The history holds {outcome.history_tokens:,} tokens; no summary. {settings.rounds} "
        f"rounds of a {settings.build_seconds:g} s slice per budget, the garbage collector "
        "on (its pauses counted in the calls they interrupt, and shown on their own). p50 and "
        "p99 are medians across rounds of each slice's percentiles.",
        "",
        markdown_table(headers, rows),
    ]


def turn_report(settings: Settings, outcome: TurnOutcome) -> tuple[list[str], list[list[object]]]:
    results = outcome.results
    out = ["", "### Setup: filling and bringing the conversations up to date", ""]
    rows: list[list[object]] = []
    for setup in outcome.setups:
        for size in settings.sizes:
            conversations = settings.rounds if size == settings.sizes[0] else 1
            rows.append(
                [
                    setup.database,
                    f"{size:,}",
                    conversations,
                    setup.fill_seconds[size],
                    setup.first_turn_ms[size],
                    setup.first_drain_seconds[size] * 1000,
                    setup.first_summarize_calls[size],
                ]
            )
    headers = [
        "database",
        "messages",
        "conversations",
        "bulk fill s",
        "first turn ms",
        "first fold ms",
        "summarize calls",
    ]
    out.append(markdown_table(headers, rows))
    out += ["", "; ".join(f"{s.database}: {s.token_check}" for s in outcome.setups) + "."]

    rows = []
    for contender in outcome.contenders:
        slices: list[TurnSlice] = results.slices("turn", contender)  # type: ignore[assignment]
        rates = [s.rate for s in slices]
        drains = [d for s in slices for d in s.drains]
        folds = [d for s in slices for d in s.folds]
        turns = sum(len(s.latencies) for s in slices)
        rows.append(
            [
                contender.database,
                f"{contender.size:,}",
                f"{min(s.messages_before for s in slices):,} - "
                f"{max(s.messages_after for s in slices):,}",
                results.rate("turn", contender),
                f"{min(rates):,.0f} - {max(rates):,.0f}",
                results.latency_ms("turn", contender, 50),
                results.latency_ms("turn", contender, 99),
                _count(median([n for s in slices for n in s.input_messages])),
                _count(median([s.rows_after_summary for s in slices])),
                _ms(median(drains)),
                f"{len(folds)} of {turns}",
                _ms(median(folds)),
                sum(s.summarize_calls for s in slices) / max(1, len(folds)),
            ]
        )
    headers = [
        "database",
        "conversation",
        "messages during slices",
        "turns/s",
        "range",
        "p50 ms",
        "p99 ms",
        "agent input messages",
        "messages after summary",
        "drain p50 ms",
        "turns followed by a fold",
        "fold drain p50 ms",
        "summarize calls per fold",
    ]
    out += ["", f"### A turn, {CONTEXT_TOKENS:,}-token context", ""]
    out.append(
        f"{settings.rounds} rounds; in each, every conversation in turn (the order rotates) "
        f"runs {settings.turns} turns one after another, each followed by `drain()`. turns/s "
        "counts the time in turns only; p50 and p99 are medians across rounds of each "
        "slice's percentiles. *agent input messages*: the median length of the agent's input "
        "(system prompt, summary, window); *messages after summary*: what `load_context` "
        "returned after the last turn of a slice. A drain in which no fold ran still builds "
        "the window once more, in the background, to see that nothing needs folding."
    )
    out += ["", markdown_table(headers, rows)]

    by_key = {(c.database, c.size): c for c in outcome.contenders}
    small, large = settings.sizes
    ratio_rows: list[list[object]] = []
    targets: list[list[object]] = []
    for database in (SQLITE, POSTGRES):
        if (short := by_key.get((database, small))) is None:
            continue
        long = by_key[(database, large)]

        def ratio(q: int, a: Contender = long, b: Contender = short) -> float:
            return results.ratio(("turn", a), ("turn", b), lambda s: s.percentile(q))

        p50, p99 = ratio(50), ratio(99)
        rate = results.ratio(("turn", short), ("turn", long))
        ratio_rows.append([database, p50, p99, rate])
        targets.append(
            [
                f"turn at {large:,} within {TARGET_TURN_RATIO}x of the turn at {small:,}",
                database,
                f"p50 {p50:.2f}x, p99 {p99:.2f}x, turns/s {rate:.2f}x",
                "yes" if max(p50, rate) <= TARGET_TURN_RATIO else "**no**",
            ]
        )
    headers = [
        "database",
        f"p50 @{large:,} / @{small:,}",
        f"p99 @{large:,} / @{small:,}",
        f"turns/s @{small:,} / @{large:,}",
    ]
    out += ["", "### Long over short conversation, per-round ratios", ""]
    out.append(markdown_table(headers, ratio_rows))
    return out, targets


def report(settings: Settings, built: BuildOutcome, turned: TurnOutcome, setup: str) -> str:
    out = ["## Context", "", setup]
    out += build_report(settings, built)
    turn_lines, targets = turn_report(settings, turned)
    out += turn_lines
    window = built.budgets[0]
    p50 = built.results.latency_ms("build", window, 50)
    p99 = built.results.latency_ms("build", window, 99)
    messages = built.windows[window][0]
    targets.insert(
        0,
        [
            f"build over a {messages:,}-message window under {TARGET_BUILD_MS:g} ms",
            "-",
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms",
            "yes" if p50 < TARGET_BUILD_MS else "**no**",
        ],
    )
    out += ["", "### Targets of issue 5", ""]
    out.append(markdown_table(["target", "database", "measured", "met"], targets))
    return "\n".join(out)


async def measure(settings: Settings) -> str:
    began = time.monotonic()
    load_at_start = os.getloadavg()[0]
    built = measure_build(settings)
    gc.collect()
    turned = await measure_turns(settings)
    setup = (
        f"{machine()}; {', '.join(turned.versions)}. Load average {load_at_start:.1f} when "
        f"the run started, {os.getloadavg()[0]:.1f} when it ended; the run took "
        f"{time.monotonic() - began:.0f} s."
    )
    return report(settings, built, turned, setup)


def main(argv: Sequence[str]) -> None:
    settings = parse_args(argv)
    print(asyncio.run(measure(settings)))
