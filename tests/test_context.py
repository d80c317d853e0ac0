"""The context builder: stored history -> agent input, within a token budget."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings, strategies as st

from chatledger.context import ContextWindow, build, plan_fold
from chatledger.domain import ChatMessage, Message, Role, ToolCall
from chatledger.tokens import count_message_tokens
from tests.factories import examples

SYSTEM = "You manage the user's tasks."
SUMMARY_HEADER = "Summary of the earlier conversation (its messages are not shown):\n\n"
MARKER = re.compile(r"…\[truncated (\d+) characters\]…")
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def stored(messages: Sequence[ChatMessage], *, first_seq: int = 1) -> list[Message]:
    """Messages as the store returns them; `metadata["seq"]` lets a test trace the view."""
    return [
        Message(
            conversation_id="c1",
            seq=seq,
            id=f"m{seq}",
            role=message.role,
            content=message.content,
            tool_calls=tuple(message.tool_calls),
            tool_call_id=message.tool_call_id,
            name=message.name,
            metadata={"seq": seq},
            token_count=count_message_tokens(message),
            created_at=NOW,
            parent_seq=seq - 1 if seq > 1 else None,
        )
        for seq, message in enumerate(messages, start=first_seq)
    ]


def chat(message: ChatMessage) -> ChatMessage:
    """A message as a model sees it (a stored Message, or a ChatMessage, reduced to that)."""
    return ChatMessage(
        role=message.role,
        content=message.content,
        tool_calls=message.tool_calls,
        tool_call_id=message.tool_call_id,
        name=message.name,
        metadata=message.metadata,
    )


def seen(messages: Sequence[ChatMessage] | ChatMessage) -> Any:
    """What a model sees of one message or of a list of them."""
    if isinstance(messages, ChatMessage):
        return chat(messages)
    return [chat(message) for message in messages]


def seq_of(message: ChatMessage) -> int | None:
    seq: int | None = message.metadata.get("seq")
    return seq


def cost(*messages: ChatMessage) -> int:
    return sum(count_message_tokens(message) for message in messages)


def call(call_id: str, title: str = "milk") -> ToolCall:
    return ToolCall(call_id, "add_task", json.dumps({"title": title}))


def result(call_id: str, content: str = '{"id": 1}') -> ChatMessage:
    return ChatMessage.tool(tool_call_id=call_id, name="add_task", content=content)


def is_cut_from(message: ChatMessage, original: str, *, keep: str = "") -> bool:
    """Whether `message.content` is `original` cut in the middle behind a marker."""
    match = MARKER.search(message.content, len(keep))
    if match is None or not message.content.startswith(keep):
        return False
    head = message.content[len(keep) : match.start()]
    tail = message.content[match.end() :]
    omitted = int(match.group(1))
    return (
        omitted > 0
        and len(head) + len(tail) + omitted == len(original) - len(keep)
        and original.startswith(keep + head)
        and original.endswith(tail)
    )


# -- random conversations ----------------------------------------------------------------

short_texts = st.text(max_size=40)
huge_texts: st.SearchStrategy[str] = st.builds(
    lambda piece, times: piece * times,
    st.sampled_from(["a", "é", "字", "🙂", "word "]),
    st.integers(300, 5000),
)


@st.composite
def texts(draw: st.DrawFn) -> str:
    huge = draw(st.integers(0, 15)) == 0
    return draw(huge_texts if huge else short_texts)


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    """The newest messages of a conversation as a store would hold them, odd ones included:
    crashed turns, orphan and duplicate results, results stored apart from their call, ids
    reused every turn, and a start that may fall in the middle of a turn."""
    reuse_ids = draw(st.booleans())
    fresh_ids = itertools.count()
    messages: list[ChatMessage] = []
    for _ in range(draw(st.integers(0, 6))):
        messages.append(ChatMessage.user(draw(texts())))
        crashed = False
        for _ in range(draw(st.integers(0, 2))):
            width = draw(st.integers(1, 3))
            calls = [
                call(f"call_{i}" if reuse_ids else f"call_{next(fresh_ids)}") for i in range(width)
            ]
            messages.append(ChatMessage.assistant(draw(short_texts), tool_calls=calls))
            # Parallel calls finish in any order; a crash loses the results not yet stored.
            results = draw(st.permutations([result(c.id, draw(texts())) for c in calls]))
            crashed = draw(st.integers(0, 7)) == 0
            if crashed:
                results = results[: draw(st.integers(0, width - 1))]
            messages.extend(results)
            if crashed:
                break
        if not crashed:
            messages.append(ChatMessage.assistant(draw(texts())))
    if draw(st.booleans()):
        messages.append(ChatMessage.user(draw(texts())))
    if draw(st.integers(0, 3)) == 0:
        for stray in draw(st.lists(st.sampled_from(["call_0", "call_1", "ghost"]), max_size=2)):
            messages.insert(draw(st.integers(0, len(messages))), result(stray))
    tool_positions = [i for i, m in enumerate(messages) if m.role == Role.TOOL]
    if tool_positions and draw(st.integers(0, 3)) == 0:  # a result stored out of place
        moved = messages.pop(draw(st.sampled_from(tool_positions)))
        messages.insert(draw(st.integers(tool_positions[0], len(messages))), moved)
    start = draw(st.integers(0, len(messages)))
    return stored(messages[start:], first_seq=start + 1)


def reference_pairs(history: Sequence[Message]) -> dict[int, dict[str, int | None]]:
    """For each call message (by seq): call id -> seq of its result, None when it has none.

    Read forwards (build reads backwards): a result answers the latest earlier call with
    its id that is still waiting for one.
    """
    waiting: dict[str, int] = {}
    pairs: dict[int, dict[str, int | None]] = {}
    for message in history:
        if message.role == Role.TOOL:
            owner = waiting.pop(message.tool_call_id or "", None)
            if owner is not None:
                pairs[owner][message.tool_call_id or ""] = message.seq
        elif message.tool_calls:
            pairs[message.seq] = {}
            for tool_call in message.tool_calls:
                pairs[message.seq][tool_call.id] = None
                waiting[tool_call.id] = message.seq
    return pairs


def at_floor(message: ChatMessage, original: str, *, keep: str = "") -> bool:
    """Whether nothing more could be cut: `message` costs no more than `original` would
    with all but its first `keep` characters cut."""
    bare = keep + f"…[truncated {len(original) - len(keep)} characters]…"
    return cost(message) <= cost(replace(message, content=bare))


def check_window(
    window: ContextWindow,
    history: list[Message],
    *,
    system_prompt: str,
    summary: str | None,
    budget: int,
) -> None:
    """Every rule of the view, checked against the history it came from."""
    messages = [chat(message) for message in window.messages]
    assert messages[0] == ChatMessage.system(system_prompt)
    assert window.tokens == cost(*messages)
    body = messages[1:]
    if summary is not None:
        head = body.pop(0)
        assert head.role == Role.SYSTEM
        assert head.content == SUMMARY_HEADER + summary or is_cut_from(
            head, SUMMARY_HEADER + summary, keep=SUMMARY_HEADER
        )
    assert all(message.role != Role.SYSTEM for message in body)

    # Every call is directly followed by one result per call id, the stored one when there
    # is one (in seq order), else an explicit error; a result never appears anywhere else.
    by_seq = {message.seq: message for message in history}
    pairs = reference_pairs(history)
    position = 0
    while position < len(body):
        message = body[position]
        assert message.role != Role.TOOL, "a tool result not right after its call"
        position += 1
        if not message.tool_calls:
            continue
        results = list(itertools.takewhile(lambda m: m.role == Role.TOOL, body[position:]))
        position += len(results)
        expected = pairs[seq_of(message) or 0]
        assert sorted(r.tool_call_id or "" for r in results) == sorted(expected)
        real = [seq for seq in map(seq_of, results) if seq is not None]
        assert real == sorted(real)
        assert all(seq_of(r) is not None for r in results[: len(real)]), "errors go last"
        for r in results:
            answer = expected[r.tool_call_id or ""]
            if answer is None:
                assert seq_of(r) is None
                assert json.loads(r.content)["code"] == "missing_result"
            else:
                assert seq_of(r) == answer

    # Chronological, no duplicates, each kept message unchanged or cut behind a marker.
    kept = [seq for seq in map(seq_of, body) if seq is not None]
    assert len(kept) == len(set(kept))
    leaders = [m.metadata["seq"] for m in body if m.role != Role.TOOL]
    assert leaders == sorted(leaders)
    for message in body:
        seq = seq_of(message)
        if seq is not None:
            original = chat(by_seq[seq])
            assert message == original or (
                message == replace(original, content=message.content)
                and is_cut_from(message, original.content)
            )

    # The window is a suffix of the history; `dropped` is exactly what comes before it.
    if window.first_seq is None:
        assert kept == []
        assert list(window.dropped) == history
    else:
        assert window.first_seq == min(kept)
        assert list(window.dropped) == [m for m in history if m.seq < window.first_seq]
        left_out = [m for m in history if m.seq >= window.first_seq and m.seq not in kept]
        assert all(m.role == Role.TOOL for m in left_out)

    # The newest user message and everything after it are always there.
    users = [m for m in history if m.role == Role.USER]
    newest_user = users[-1].seq if users else None
    if newest_user is not None:
        assert all(m.seq in kept for m in history if m.seq >= newest_user and m.role != Role.TOOL)

    truncated = any(MARKER.search(message.content) for message in messages[1:])
    if truncated and newest_user is not None:
        assert min(kept) == newest_user, "older messages kept while newer ones were cut"
    if window.tokens > budget:
        # Only when nothing could give: the system prompt, then the summary and the turn in
        # progress cut as far as they go.
        assert newest_user is None or min(kept, default=newest_user) >= newest_user
        if summary is not None:
            assert at_floor(messages[1], SUMMARY_HEADER + summary, keep=SUMMARY_HEADER)
        for message in body:
            seq = seq_of(message)
            if seq is not None:  # error results are never cut
                assert at_floor(message, by_seq[seq].content)
    dropped_leaders = [m for m in window.dropped if m.role != Role.TOOL]
    if not truncated and dropped_leaders and not dropped_leaders[-1].tool_calls:
        assert window.tokens + dropped_leaders[-1].token_count > budget, "room was left unused"


@settings(max_examples=examples(300), deadline=None)  # deadline: huge messages on a shared machine
@given(
    history=histories(),
    system_prompt=texts(),
    summary=st.none() | texts(),
    headroom=st.integers(-20, 3000),
)
def test_every_rule_holds_for_any_history_and_budget(
    history: list[Message], system_prompt: str, summary: str | None, headroom: int
) -> None:
    # Budgets around what the system prompt takes: below it, and up to much more.
    budget = max(0, cost(ChatMessage.system(system_prompt)) + headroom)
    window = build(history, system_prompt=system_prompt, budget_tokens=budget, summary=summary)
    check_window(window, history, system_prompt=system_prompt, summary=summary, budget=budget)


@settings(max_examples=examples(300), deadline=None)
@given(
    history=histories(),
    system_prompt=st.none() | texts(),
    summary=st.none() | texts(),
    headroom=st.integers(0, 3000),
    chunk=st.integers(1, 6),
    max_chunks=st.integers(1, 4),
)
def test_a_fold_plan_folds_what_the_window_lost_and_never_the_latest_turn(
    history: list[Message],
    system_prompt: str | None,
    summary: str | None,
    headroom: int,
    chunk: int,
    max_chunks: int,
) -> None:
    budget = (0 if system_prompt is None else cost(ChatMessage.system(system_prompt))) + headroom
    covered = history[0].parent_seq if history else None
    plan = plan_fold(
        history,
        covered=covered,
        summary=summary,
        system_prompt=system_prompt,
        budget_tokens=budget,
        chunk=chunk,
        max_chunks=max_chunks,
    )
    full = build(history, system_prompt=system_prompt, budget_tokens=budget, summary=summary)
    roomy = build(
        history, system_prompt=system_prompt, budget_tokens=budget * 3 // 4, summary=summary
    )
    latest_user = max((i for i, m in enumerate(history) if m.role == Role.USER), default=None)
    if plan is None:
        # Nothing lost, or nothing that may be folded: all of it is the latest turn.
        assert not full.dropped or (latest_user is not None and latest_user == 0)
        return
    assert full.dropped
    assert not plan.unloaded  # the history starts where the summary ends
    folded = [m for chunk_ in plan.chunks for m in chunk_]
    # Contiguous slices of the history from where what is skipped ends, none too long.
    assert folded == list(history[plan.skipped : plan.skipped + len(folded)])
    assert all(0 < len(chunk_) <= chunk for chunk_ in plan.chunks)
    assert len(plan.chunks) <= max_chunks
    # Down to what 3/4 of the budget would drop, and never into the latest turn.
    end = plan.skipped + len(folded)
    assert end == len(roomy.dropped) or end == latest_user
    assert end <= len(roomy.dropped)
    if latest_user is not None:
        assert end <= latest_user
    # Only a backlog longer than the fold may take is skipped, and only as much as needed.
    assert plan.skipped == max(0, end - chunk * max_chunks)


def test_a_fold_plan_says_when_the_branch_holds_more_than_was_loaded() -> None:
    history = stored([ChatMessage.user("x" * 400), ChatMessage.assistant("y" * 400)] * 3)
    assert history[0].parent_seq is None
    later = [replace(m, seq=m.seq + 10, parent_seq=m.seq + 9) for m in history]
    options: dict[str, Any] = {
        "summary": None, "system_prompt": None, "budget_tokens": 300, "chunk": 10,
        "max_chunks": 2,
    }  # fmt: skip
    whole = plan_fold(history, covered=None, **options)
    assert whole is not None and not whole.unloaded
    # Loaded from the eleventh message on, with no summary up to the tenth: more is there.
    cut = plan_fold(later, covered=None, **options)
    assert cut is not None and cut.unloaded
    assert plan_fold(later, covered=10, **options) == replace(cut, unloaded=False)


# -- each rule, by example -----------------------------------------------------------------

SYSTEM_TOKENS = cost(ChatMessage.system(SYSTEM))


def test_everything_fits_in_order_after_the_system_prompt() -> None:
    history = stored(
        [ChatMessage.user("hi"), ChatMessage.assistant("hello"), ChatMessage.user("bye")]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    assert seen(window.messages) == [ChatMessage.system(SYSTEM), *map(chat, history)]
    assert window.first_seq == 1
    assert window.dropped == []
    assert window.tokens == SYSTEM_TOKENS + sum(m.token_count for m in history)


def test_the_summary_comes_second_marked_as_a_summary() -> None:
    history = stored([ChatMessage.user("and eggs?")], first_seq=41)

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000, summary="Milk was added.")

    assert seen(window.messages[1]) == ChatMessage.system(SUMMARY_HEADER + "Milk was added.")
    assert seen(window.messages[2:]) == [chat(history[0])]


def test_a_tool_call_and_its_results_are_kept_or_dropped_together() -> None:
    history = stored(
        [
            ChatMessage.user("add milk and eggs"),
            ChatMessage.assistant(tool_calls=[call("a", "milk"), call("b", "eggs")]),
            result("a"),
            result("b"),
            ChatMessage.assistant("Added both."),
            ChatMessage.user("thanks"),
        ]
    )
    # Room for both results and what follows them, but not for their call as well.
    budget = SYSTEM_TOKENS + sum(m.token_count for m in history[2:])

    window = build(history, system_prompt=SYSTEM, budget_tokens=budget)

    assert seen(window.messages[1:]) == [chat(history[4]), chat(history[5])]
    assert window.first_seq == 5
    assert window.dropped == history[:4]

    window = build(history, system_prompt=SYSTEM, budget_tokens=budget + history[1].token_count)

    assert seen(window.messages[1:]) == list(map(chat, history[1:]))


def test_a_call_without_a_stored_result_gets_an_error_result() -> None:
    history = stored(
        [
            ChatMessage.user("add milk and eggs"),
            # The turn crashed after one of two parallel calls had its result stored.
            ChatMessage.assistant(tool_calls=[call("a", "milk"), call("b", "eggs")]),
            result("b"),
            ChatMessage.user("did that work?"),
        ]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    call_message, stored_result, error, question = seen(window.messages[2:])
    assert (call_message, stored_result, question) == tuple(map(chat, history[1:]))
    assert (error.role, error.tool_call_id, error.name) == (Role.TOOL, "a", "add_task")
    body = json.loads(error.content)
    assert body["code"] == "missing_result"
    assert "no result was recorded" in body["error"].lower()
    assert window.tokens == cost(*window.messages)


def test_a_result_whose_call_is_not_in_the_history_is_left_out() -> None:
    history = stored(
        [
            result("before-the-window"),  # history starts in the middle of a turn
            ChatMessage.assistant("Done."),
            ChatMessage.user("next"),
            result("ghost"),
        ],
        first_seq=7,
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    assert seen(window.messages[1:]) == [chat(history[1]), chat(history[2])]
    assert window.first_seq == 8
    assert window.dropped == history[:1]


def test_a_second_result_for_one_call_is_left_out() -> None:
    history = stored(
        [
            ChatMessage.user("add milk"),
            ChatMessage.assistant(tool_calls=[call("a")]),
            result("a", '{"id": 1}'),
            result("a", '{"id": 2}'),
            ChatMessage.assistant("Added."),
        ]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    assert seen(window.messages[1:]) == [chat(history[i]) for i in (0, 1, 2, 4)]


def test_a_reused_call_id_pairs_each_result_with_the_nearest_call_before_it() -> None:
    history = stored(
        [
            ChatMessage.user("add milk"),
            ChatMessage.assistant(tool_calls=[call("call_0", "milk")]),
            result("call_0", '{"id": 1}'),
            ChatMessage.user("add eggs"),
            ChatMessage.assistant(tool_calls=[call("call_0", "eggs")]),
            ChatMessage.user("hello?"),  # crashed before the result: the call is an orphan
            ChatMessage.assistant(tool_calls=[call("call_0", "bread")]),
            result("call_0", '{"id": 3}'),
        ]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    roles_and_seqs = [(m.role, seq_of(m)) for m in window.messages[1:]]
    assert roles_and_seqs == [
        (Role.USER, 1),
        (Role.ASSISTANT, 2),
        (Role.TOOL, 3),
        (Role.USER, 4),
        (Role.ASSISTANT, 5),
        (Role.TOOL, None),
        (Role.USER, 6),
        (Role.ASSISTANT, 7),
        (Role.TOOL, 8),
    ]


def test_a_call_id_repeated_within_one_message_gets_one_result() -> None:
    history = stored(
        [
            ChatMessage.user("add milk and eggs"),
            ChatMessage.assistant(tool_calls=[call("call_0", "milk"), call("call_0", "eggs")]),
            result("call_0"),
        ]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    assert seen(window.messages[1:]) == list(map(chat, history))


def test_a_result_stored_apart_from_its_call_is_moved_right_after_it() -> None:
    history = stored(
        [
            ChatMessage.user("add milk and eggs"),
            ChatMessage.assistant(tool_calls=[call("a", "milk"), call("b", "eggs")]),
            result("a"),
            ChatMessage.assistant("Still adding eggs."),
            result("b"),
            ChatMessage.user("thanks"),
        ]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    assert [seq_of(m) for m in window.messages[1:]] == [1, 2, 3, 5, 4, 6]


def test_a_newest_user_message_over_the_budget_is_cut_in_the_middle() -> None:
    question = "Why does this fail?\n" + "log line\n" * 20_000 + "What should I do?"
    history = stored(
        [ChatMessage.user("hi"), ChatMessage.assistant("hello"), ChatMessage.user(question)]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=500)

    assert window.tokens <= 500
    assert window.tokens >= 500 - 2, "the cut should use the room there is"
    [cut] = window.messages[1:]
    assert cut == replace(chat(history[2]), content=cut.content)
    assert is_cut_from(cut, question)
    assert cut.content.startswith("Why does this fail?")
    assert cut.content.endswith("What should I do?")
    assert window.first_seq == 3
    assert window.dropped == history[:2]


def test_a_message_just_over_the_budget_loses_only_what_it_must() -> None:
    history = stored([ChatMessage.user("a" * 4000)])  # 1004 tokens
    budget = SYSTEM_TOKENS + 900

    window = build(history, system_prompt=SYSTEM, budget_tokens=budget)

    [cut] = window.messages[1:]
    match = MARKER.search(cut.content)
    assert match is not None
    assert int(match.group(1)) <= 450  # about 400 characters, plus room for the marker
    assert budget - 1 <= window.tokens <= budget


def test_a_huge_summary_and_a_huge_question_share_the_room() -> None:
    history = stored([ChatMessage.user("q" * 40_000)])

    window = build(history, system_prompt=SYSTEM, budget_tokens=2000, summary="s" * 40_000)

    summary, question = window.messages[1:]
    assert is_cut_from(summary, SUMMARY_HEADER + "s" * 40_000, keep=SUMMARY_HEADER)
    assert is_cut_from(question, "q" * 40_000)
    assert 2000 - 4 <= window.tokens <= 2000
    assert abs(cost(summary) - cost(question)) <= 2


def test_a_small_summary_is_not_cut_for_a_huge_question() -> None:
    history = stored([ChatMessage.user("q" * 40_000)])

    window = build(history, system_prompt=SYSTEM, budget_tokens=2000, summary="Milk was added.")

    assert window.messages[1].content == SUMMARY_HEADER + "Milk was added."
    assert is_cut_from(window.messages[2], "q" * 40_000)
    assert window.tokens <= 2000


def test_the_turn_in_progress_is_kept_whole_and_cut_rather_than_dropped() -> None:
    history = stored(
        [
            ChatMessage.user("older"),
            ChatMessage.user("list my tasks"),
            ChatMessage.assistant(tool_calls=[call("a")]),
            result("a", "[" + '{"title": "milk"}, ' * 5000 + "]"),
        ]
    )

    window = build(history, system_prompt=SYSTEM, budget_tokens=300)

    question, call_message, listing = seen(window.messages[1:])
    assert (question, call_message) == (chat(history[1]), chat(history[2]))
    assert is_cut_from(listing, history[3].content)
    assert window.tokens <= 300
    assert window.dropped == history[:1]


def test_no_older_message_is_kept_while_the_turn_in_progress_is_cut() -> None:
    history = stored(
        [
            ChatMessage.assistant("ok"),
            ChatMessage.user("compare these " * 300),
            ChatMessage.assistant(tool_calls=[call(call_id) for call_id in "abcdef"]),
            *(result(call_id, "x" * 3000) for call_id in "abcdef"),
        ]
    )

    for budget in range(200, 400):
        window = build(history, system_prompt=SYSTEM, budget_tokens=budget)

        # Cutting six results to one cap leaves a few tokens over, enough for "ok" at times.
        assert any(MARKER.search(m.content) for m in window.messages)
        assert window.first_seq == 2
        assert window.tokens <= budget


def test_a_system_prompt_over_the_budget_is_the_one_way_over_it() -> None:
    system_prompt = "Be helpful. " * 1000
    history = stored([ChatMessage.assistant("hello"), ChatMessage.user("y" * 1000)])

    window = build(history, system_prompt=system_prompt, budget_tokens=100, summary="z" * 1000)

    system, summary, question = window.messages
    assert system == ChatMessage.system(system_prompt)
    assert is_cut_from(summary, SUMMARY_HEADER + "z" * 1000, keep=SUMMARY_HEADER)
    assert at_floor(summary, SUMMARY_HEADER + "z" * 1000, keep=SUMMARY_HEADER)
    assert is_cut_from(question, "y" * 1000)
    assert at_floor(question, "y" * 1000)
    assert window.tokens == cost(*window.messages) > 100


def test_stored_token_counts_are_trusted_not_recounted() -> None:
    history = [
        replace(message, token_count=count)
        for message, count in zip(
            stored([ChatMessage.user("short"), ChatMessage.user("short too")]),
            (5000, 1),
            strict=True,
        )
    ]

    window = build(history, system_prompt=SYSTEM, budget_tokens=1000)

    assert seen(window.messages[1:]) == [chat(history[1])]
    assert window.tokens == SYSTEM_TOKENS + 1


def test_without_a_user_message_the_newest_messages_that_fit_are_kept() -> None:
    history = stored([ChatMessage.assistant("a" * 400), ChatMessage.assistant("b")])

    window = build(history, system_prompt=SYSTEM, budget_tokens=SYSTEM_TOKENS + 10)

    assert seen(window.messages[1:]) == [chat(history[1])]
    assert window.first_seq == 2

    window = build(history, system_prompt=SYSTEM, budget_tokens=SYSTEM_TOKENS)

    assert seen(window.messages) == [ChatMessage.system(SYSTEM)]
    assert window.first_seq is None
    assert window.dropped == history


def test_an_empty_history_gives_the_system_prompt_alone() -> None:
    window = build([], system_prompt=SYSTEM, budget_tokens=1000)

    assert window == ContextWindow(
        messages=[ChatMessage.system(SYSTEM)], first_seq=None, dropped=[], tokens=SYSTEM_TOKENS
    )
