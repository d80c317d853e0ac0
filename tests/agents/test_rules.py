"""RulesAgent against the real task tools and store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

import pytest

from chatledger.agents import (
    Agent,
    AssistantMessage,
    RulesAgent,
    TextDelta,
    TokenUsage,
    ToolCallFinished,
    ToolCallStarted,
    run_agent,
)
from chatledger.agents.rules_grammar import parse
from chatledger.agents.rules_summary import Ledger
from chatledger.domain import ChatMessage, ToolCall
from chatledger.store import SQLAlchemyStore
from chatledger.tools import TASK_TOOLS, TaskRepository, TaskTools, ToolSpec
from tests.agents.corpus import CASES, HELD_OUT, HELD_OUT_3, LOOKUP, SEED, Case

PASS_RATE = 0.95


class RecordingToolbox:
    """One user's task tools on the real store; remembers every call it was asked to run."""

    def __init__(self, tasks: TaskRepository, user_id: str) -> None:
        self._tools = TaskTools(tasks, user_id)
        self.calls: list[ToolCall] = []

    @property
    def specs(self) -> Sequence[ToolSpec]:
        return TASK_TOOLS

    async def call(self, call: ToolCall) -> dict[str, Any]:
        self.calls.append(call)
        return await self._tools.call(call.name, call.arguments)

    def made(self) -> list[tuple[str, Any]]:
        return [(call.name, json.loads(call.arguments)) for call in self.calls]


async def turn(
    agent: RulesAgent, history: Sequence[ChatMessage], text: str, toolbox: RecordingToolbox
) -> tuple[str, list[ChatMessage]]:
    """One chat turn; returns the reply and the history with the turn stored as the
    service stores it (user, each tool call and its result, the reply)."""
    messages = [*history, ChatMessage.user(text)]
    reply = await run_agent(agent, messages, toolbox)
    for finished in reply.tool_calls:
        messages.append(ChatMessage.assistant(tool_calls=[finished.call]))
        messages.append(
            ChatMessage.tool(
                tool_call_id=finished.call.id,
                name=finished.call.name,
                content=json.dumps(finished.result),
            )
        )
    messages.append(ChatMessage.assistant(reply.content))
    return reply.content, messages


async def seed(store: SQLAlchemyStore, user_id: str) -> None:
    for title, description, done in SEED:
        task = await store.tasks.add(user_id, title=title, description=description)
        if done:
            await store.tasks.complete(user_id, task.id)


async def play(store: SQLAlchemyStore, user_id: str, case: Case) -> str | None:
    """Run one corpus case; returns what went wrong, or None when it passed."""
    await seed(store, user_id)
    agent = RulesAgent()
    history = list(case.history)
    for text in case.before:
        _, history = await turn(agent, history, text, RecordingToolbox(store.tasks, user_id))
    toolbox = RecordingToolbox(store.tasks, user_id)
    reply, _ = await turn(agent, history, case.say, toolbox)
    problems = []
    if toolbox.made() != list(case.calls):
        problems.append(f"called {toolbox.made()}, expected {list(case.calls)}")
    missing = [word for word in case.reply if word.lower() not in reply.lower()]
    if missing:
        problems.append(f"reply {reply!r} lacks {missing}")
    return "; ".join(problems) or None


# Scored and reported one by one: a batch written before the grammar learned it shows
# how the agent does on phrasings it has not seen, which the grown cases cannot.
BATCHES = {
    "grown with the grammar": CASES,
    "held out, batches 1-2": HELD_OUT,
    "held out, batch 3": HELD_OUT_3,
}


async def test_corpus_score(
    store: SQLAlchemyStore, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    database = database_url.split(":", 1)[0]
    assert len({case.say for cases in BATCHES.values() for case in cases}) >= 60
    lines, passed, total = [], 0, 0
    for name, cases in BATCHES.items():
        failures = []
        for index, case in enumerate(cases):
            problem = await play(store, f"corpus-{name}-{index}", case)
            if problem is not None:
                failures.append(f"  {case.say!r}: {problem}")
        batch_passed = len(cases) - len(failures)
        lines.append(f"[{database}] rules corpus, {name}: {batch_passed}/{len(cases)}")
        lines.extend(failures)
        passed, total = passed + batch_passed, total + len(cases)
    lines.append(f"[{database}] rules corpus: {passed}/{total} = {passed / total:.1%}")
    # Past pytest's capture, so the scores show in every run, not only with -s.
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert passed / total >= PASS_RATE, "\n".join(lines)


async def test_follow_up_completes_the_task_just_added(store: SQLAlchemyStore) -> None:
    await seed(store, "alice")  # among them an older "buy milk", task 1
    agent = RulesAgent()
    _, history = await turn(agent, [], "add buy milk", RecordingToolbox(store.tasks, "alice"))
    [new] = [task for task in await store.tasks.list("alice") if task.id > len(SEED)]

    toolbox = RecordingToolbox(store.tasks, "alice")
    reply, _ = await turn(agent, history, "mark it done", toolbox)

    assert toolbox.made() == [("complete_task", {"task_id": new.id})]
    assert reply == f'Marked task {new.id} "buy milk" as done.'
    assert (await store.tasks.get("alice", new.id)).completed
    assert not (await store.tasks.get("alice", 1)).completed


async def test_ambiguous_title_asks_and_changes_nothing(store: SQLAlchemyStore) -> None:
    await seed(store, "alice")
    before = await store.tasks.list("alice")
    agent = RulesAgent()
    toolbox = RecordingToolbox(store.tasks, "alice")

    reply, history = await turn(agent, [], "delete the milk task", toolbox)

    assert toolbox.made() == [LOOKUP]
    assert "#1 buy milk" in reply and "#6 buy oat milk" in reply
    assert reply.endswith("?")
    assert await store.tasks.list("alice") == before

    answer = RecordingToolbox(store.tasks, "alice")
    reply, _ = await turn(agent, history, "the first one", answer)
    assert answer.made() == [("delete_task", {"task_id": 1})]
    assert [t.id for t in await store.tasks.list("alice")] == [2, 3, 4, 5, 6, 7, 8]


async def test_tool_errors_are_explained(store: SQLAlchemyStore) -> None:
    agent = RulesAgent()
    cases = {
        "delete task 9": "I couldn't find task 9.",
        "mark task 0 as done": "task numbers are whole numbers",
        "add " + "x" * 201: "title is longer than 200 characters",
        "rename task 1 to " + "y" * 201: "title is longer than 200 characters",
    }
    await store.tasks.add("alice", title="buy milk")
    for text, explanation in cases.items():
        reply, _ = await turn(agent, [], text, RecordingToolbox(store.tasks, "alice"))
        assert explanation in reply, (text[:30], reply)
        assert "{" not in reply and "not_found" not in reply
    assert [t.title for t in await store.tasks.list("alice")] == ["buy milk"]


async def test_oversized_requests_are_refused_without_tool_calls(store: SQLAlchemyStore) -> None:
    agent = RulesAgent()
    toolbox = RecordingToolbox(store.tasks, "alice")
    many, _ = await turn(agent, [], " and ".join(["add milk"] * 11), toolbox)
    long, _ = await turn(agent, [], "add " + "z" * 2000, toolbox)
    assert "at most 10" in many and "too long" in long
    assert toolbox.calls == []


def test_parsing_hostile_text_stays_fast() -> None:
    # Each of these once took seconds to minutes: regex backtracking over runs of
    # separators, and re-parsing the growing first command at every separator.
    hostile = [", " * 1000, ",," * 1000, "add " + "x, " * 660, "x and add " * 200]
    for text in hostile:
        started = time.perf_counter()
        parse(text[:2000])
        assert time.perf_counter() - started < 1, text[:20]


async def conversation(store: SQLAlchemyStore, user_id: str) -> list[ChatMessage]:
    agent = RulesAgent()
    history: list[ChatMessage] = []
    for text in (
        "add buy stamps and add post the letters",
        "remind me to call mom",
        "mark buy stamps done",
        "rename task 2 to post the letters today",
        "delete task 3",
        "add buy milk, then add buy oat milk",
        "delete milk",
    ):
        _, history = await turn(agent, history, text, RecordingToolbox(store.tasks, user_id))
    return history


async def test_summary_lists_changes_and_open_questions(store: SQLAlchemyStore) -> None:
    agent = RulesAgent()
    history = await conversation(store, "alice")

    summary = await agent.summarize(history, None)

    assert summary.splitlines() == [
        "Conversation summary (chatledger rules v1)",
        'Added: #1 "buy stamps", #2 "post the letters", #3 "call mom", #4 "buy milk",'
        ' #5 "buy oat milk"',
        'Completed: #1 "buy stamps"',
        'Updated: #2 "post the letters today"',
        'Deleted: #3 "call mom"',
        'Last task mentioned: #5 "buy oat milk"',
        'Open question: "delete milk" -> "More than one task matches \\"milk\\": #4 buy milk,'
        ' #5 buy oat milk. Which one should I delete?"',
    ]

    # The next summary folds the newer turns into this one; answering closes the question.
    _, later = await turn(agent, history, "#4", RecordingToolbox(store.tasks, "alice"))
    merged = await agent.summarize(later[len(history) :], summary)
    assert 'Deleted: #3 "call mom", #4 "buy milk"' in merged.splitlines()
    assert 'Last task mentioned: #4 "buy milk"' in merged.splitlines()
    assert "Open question" not in merged

    # Another agent's summary is kept, ahead of this agent's own lines.
    foreign = await agent.summarize(later[len(history) :], "The user likes short answers.")
    assert foreign.startswith("The user likes short answers.\nConversation summary")
    assert await agent.summarize([], None) == (
        "Conversation summary (chatledger rules v1)\nNo tasks changed yet."
    )


async def test_earlier_turns_are_answered_from_the_summary_alone(store: SQLAlchemyStore) -> None:
    agent = RulesAgent()
    summary = await agent.summarize(await conversation(store, "alice"), None)
    # The context builder drops the old turns and passes the summary in their place.
    history = [ChatMessage.system(f"Summary of the earlier conversation:\n{summary}")]

    toolbox = RecordingToolbox(store.tasks, "alice")
    reply, _ = await turn(agent, history, "what did I add earlier?", toolbox)

    assert toolbox.made() == []
    assert reply.splitlines() == [
        "Earlier in this conversation you added:",
        '- #1 "buy stamps", done since',
        '- #2 "post the letters" (now "post the letters today")',
        '- #3 "call mom", deleted since',
        '- #4 "buy milk"',
        '- #5 "buy oat milk"',
    ]

    # The open question survives too: its answer still acts on the right task.
    toolbox = RecordingToolbox(store.tasks, "alice")
    await turn(agent, history, "the second one", toolbox)
    assert toolbox.made() == [("delete_task", {"task_id": 5})]


async def test_events_stream_tool_calls_then_the_reply(store: SQLAlchemyStore) -> None:
    agent = RulesAgent()
    assert isinstance(agent, Agent)
    toolbox = RecordingToolbox(store.tasks, "alice")
    messages = [ChatMessage.user("add milk and show my tasks")]

    events = [event async for event in agent.run(messages, toolbox)]

    kinds = [type(event) for event in events]
    assert kinds[:4] == [ToolCallStarted, ToolCallFinished, ToolCallStarted, ToolCallFinished]
    assert set(kinds[4:-2]) == {TextDelta} and kinds[-2:] == [AssistantMessage, TokenUsage]
    started = [e.call for e in events if isinstance(e, ToolCallStarted)]
    finished = [e.call for e in events if isinstance(e, ToolCallFinished)]
    assert started == finished == toolbox.calls
    assert all(re.fullmatch(r"call_[0-9a-f]{32}", call.id) for call in started)
    assert len({call.id for call in started}) == 2
    final = events[-2]
    assert isinstance(final, AssistantMessage)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == final.content
    assert final.content == 'Added task 1: "milk".\nYou have 1 task:\n- #1 milk'


async def test_its_usage_is_an_estimate_of_what_a_model_would_read_and_write(
    store: SQLAlchemyStore,
) -> None:
    # No model, so nothing to report: the estimate (about four bytes a token, four more
    # per message and per tool call) of the same exchange with a model, marked so.
    toolbox = RecordingToolbox(store.tasks, "alice")
    messages = [ChatMessage.user("add milk and show my tasks")]  # 26 bytes

    reply = await run_agent(RulesAgent(), messages, toolbox)

    # In: 7 + 4. Out: add_task {"title": "milk"} 4 + (2 + 5 + 4); list_tasks
    # {"status": "all"} 4 + (3 + 5 + 4); the reply's 48 bytes 12 + 4.
    assert reply.usage == TokenUsage(11, 47, model="rules", estimated=True)


def test_a_long_summary_stays_small_and_keeps_count_of_what_it_leaves_out() -> None:
    ledger = Ledger()
    for task_id in range(1, 101):
        ledger.observe(
            "add_task", {"task_id": task_id, "status": "created", "title": f"t{task_id}"}
        )
    first = ledger.render()
    again = Ledger.parse(first)
    for task_id in range(101, 111):
        again.observe("add_task", {"task_id": task_id, "status": "created", "title": f"t{task_id}"})
    added = again.render().split("Added: ", 1)[1].split("\n")[0]
    listed = re.findall(r'#(\d+) "t\d+"', added)
    elided = int(re.search(r"… (\d+) more …", added)[1])  # type: ignore[index]
    assert listed[:5] == ["1", "2", "3", "4", "5"] and listed[-1] == "110"
    assert len(listed) == 25 and len(listed) + elided == 110
    assert len(first) < 1200


async def test_an_offer_to_add_waits_for_yes_even_across_a_summary(
    store: SQLAlchemyStore,
) -> None:
    agent = RulesAgent()
    toolbox = RecordingToolbox(store.tasks, "alice")
    reply, history = await turn(agent, [], 'call "grandma" \\o/', toolbox)
    assert toolbox.made() == []
    assert reply.endswith('Should I add "call \\"grandma\\" \\\\o/" as a new task?')

    # Anything but a yes leaves the list alone, and a yes with nothing offered adds nothing.
    for answer in ("no", "maybe later", "show my tasks"):
        toolbox = RecordingToolbox(store.tasks, "alice")
        await turn(agent, history, answer, toolbox)
        assert "add_task" not in [name for name, _ in toolbox.made()], answer
    toolbox = RecordingToolbox(store.tasks, "alice")
    await turn(agent, [], "yes", toolbox)
    assert toolbox.made() == []

    # The offer is an open question of the summary: the title comes back exactly.
    summary = await agent.summarize(history, None)
    toolbox = RecordingToolbox(store.tasks, "alice")
    await turn(agent, [ChatMessage.system(summary)], "Yes!", toolbox)
    assert toolbox.made() == [("add_task", {"title": 'call "grandma" \\o/'})]


async def test_the_second_one_counts_in_the_list_shown_in_the_same_message(
    store: SQLAlchemyStore,
) -> None:
    await seed(store, "alice")
    toolbox = RecordingToolbox(store.tasks, "alice")
    await turn(RulesAgent(), [], "show my pending tasks and delete the second one", toolbox)
    assert toolbox.made() == [
        ("list_tasks", {"status": "pending"}),
        ("delete_task", {"task_id": 2}),
    ]
