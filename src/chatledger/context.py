"""Stored history -> agent input: the newest messages that fit a token budget.

`build` is a pure function. Its output, in order:

1. the system prompt;
2. the rolling summary of older messages, if there is one, marked as a summary;
3. the newest history that fits, whole units at a time, oldest first.

A *unit* is what is never split: an assistant message with tool calls together with one
result per call. Any other message is a unit of its own, but for one that only keeps an
OpenAI item chatledger has no equivalent for (`domain.is_kept_item`: a reasoning item, a
hosted tool call), which is left out: it has no text and no tool pair. A tool result belongs to the
nearest earlier call with its id that has no result yet (some model servers reuse ids such
as `call_0` every turn), wherever it was stored; the unit sits at its call's place, the
results right after the call in seq order, because model APIs require a call's results to
follow it directly. A call with no stored result (a crashed turn) gets a synthetic error
result instead, so the request stays valid and the model learns the outcome is unknown. A
result whose call is not in the history (history that starts mid-turn, a second result for
one call) is left out. So the output never starts with a tool result, and never holds a
call without its result or a result without its call.

The newest user message and everything after it (the turn in progress) are always kept,
and so is the summary. When they do not fit, their contents are cut in the middle, behind
a visible `…[truncated N characters]…` marker, fairly: each is cut down to a common cap
that makes the total fit, so none crowds the others out. Older units fill what budget is
left, newest first, until the first that does not fit: the window is always a suffix of
the history, so a summary covering everything before it never overlaps it.

Token costs follow `chatledger.tokens`: a stored message costs its stored `token_count`
(never recounted), anything made or cut here costs `count_message_tokens` with `counter`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from chatledger.domain import ChatMessage, Message, Role, ToolCall, is_kept_item
from chatledger.tokens import TokenCounter, approximate_tokens, count_message_tokens

__all__ = ["ContextWindow", "FoldPlan", "build", "plan_fold"]

_SUMMARY_HEADER = "Summary of the earlier conversation (its messages are not shown):\n\n"

_MISSING_RESULT = json.dumps(
    {
        "error": "No result was recorded for this tool call: it was interrupted, "
        "and may or may not have taken effect.",
        "code": "missing_result",
    }
)

_by_seq = attrgetter("seq")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextWindow:
    """What `build` chose: the agent's input and where it starts in the history.

    To keep a rolling summary, fold `dropped` into it: the summary then covers every
    message before `first_seq` (all of the history when `first_seq` is None), and the next
    turn needs to load only the messages after that.

    Attributes:
        messages: the agent's input: system prompt, summary, then the window.
        first_seq: seq of the oldest stored message in the window; None when none is in it.
        dropped: every history message before the window, oldest first (all of them when
            `first_seq` is None): what a summary should absorb.
        tokens: the total cost of `messages`.
    """

    messages: list[ChatMessage]
    first_seq: int | None
    dropped: Sequence[Message]
    tokens: int


class _Unit(NamedTuple):
    # A tuple rather than a dataclass: one is made per message in the window, and
    # `build` must stay cheap for windows of thousands of messages.
    start: int  # index of the unit's first message (never a tool result) in the history
    stored: tuple[Message, ...]  # the first message, then its tool results in seq order
    synthetic: tuple[tuple[ChatMessage, int], ...]  # error results and their cost
    tokens: int


# The per-message loop runs thousands of times per call: a NamedTuple's own constructor is
# Python code (tuple.__new__ is not), and an enum member looked up on its class each time
# costs more than the comparison itself (docs/benchmarks.md, "Context").
_new_unit = tuple.__new__
_TOOL = Role.TOOL
_USER = Role.USER


def build(
    history: Sequence[Message],
    *,
    system_prompt: str | None,
    budget_tokens: int,
    summary: str | None = None,
    counter: TokenCounter = approximate_tokens,
) -> ContextWindow:
    """Turn the newest stored messages of a conversation into an agent's input.

    The work grows with the window, not with `history`: it is read backwards from the end
    only as far as the window reaches.

    Args:
        history: the newest messages of one conversation, in seq order. It may start in
            the middle of a turn and may hold a crashed turn's orphans.
        system_prompt: the first message; never cut. None for none, for an agent that
            brings its own instructions.
        budget_tokens: the most tokens the output may cost. It is exceeded only when it
            cannot hold the system prompt with the summary and the turn in progress cut to
            their markers: with the user message last, as the chat service builds it, when
            the system prompt leaves less than about 50 tokens. The output is then exactly
            those, and `tokens` tells by how much it is over.
        summary: what the conversation said before `history`, if anything.
        counter: counts the tokens of a text; it should be the one the store counted with.

    Returns:
        The agent's input, where it starts, and what did not fit.
    """
    system = None if system_prompt is None else ChatMessage.system(system_prompt)
    system_tokens = 0 if system is None else count_message_tokens(system, counter)
    units = _units_newest_first(history, counter)
    newest_user = next(
        (i for i in range(len(history) - 1, -1, -1) if history[i].role is _USER), None
    )
    # The turn in progress: the units from the newest user message on. Without a user
    # message there is none, and every unit competes for the room.
    turn: list[_Unit] = []
    if newest_user is not None:
        for unit in units:
            turn.append(unit)
            if unit.start == newest_user:
                break

    # Always kept, cut if need be: (message, tokens, length of a prefix never cut).
    pinned: list[tuple[ChatMessage, int, int]] = []
    if summary is not None:
        summary_message = ChatMessage.system(_SUMMARY_HEADER + summary)
        pinned.append(
            (summary_message, count_message_tokens(summary_message, counter), len(_SUMMARY_HEADER))
        )
    for unit in reversed(turn):
        pinned.extend((message, message.token_count, 0) for message in unit.stored)
        # An error result is small, and cut it would no longer say what happened: keep it all.
        pinned.extend((message, tokens, len(message.content)) for message, tokens in unit.synthetic)
    fitted, shortened = _fit(pinned, budget_tokens - system_tokens, counter)
    tokens = system_tokens + sum(cost for _, cost in fitted)

    older: list[_Unit] = []
    # Once the turn had to be cut there is no room for older history: tokens left over are
    # rounding, and spending them on older messages while the newest are cut is backwards.
    if not shortened:
        for unit in units:
            if tokens + unit.tokens > budget_tokens:
                break
            older.append(unit)
            tokens += unit.tokens

    messages = [] if system is None else [system]
    if summary is not None:
        messages.append(fitted.pop(0)[0])
    for unit in reversed(older):
        # A stored Message is a ChatMessage: it goes in as it is, without a copy.
        messages += unit.stored
        if unit.synthetic:
            messages += (message for message, _ in unit.synthetic)
    messages.extend(message for message, _ in fitted)

    kept = older or turn
    start = kept[-1].start if kept else len(history)
    return ContextWindow(
        messages=messages,
        first_seq=history[start].seq if kept else None,
        dropped=history[:start],
        tokens=tokens,
    )


def _units_newest_first(history: Sequence[Message], counter: TokenCounter) -> Iterator[_Unit]:
    """Group `history` into units, newest first, reading it backwards only as far as asked."""
    # Tool results met (walking backwards) whose call is not reached yet, by call id. The
    # last in each list was stored first: the one that answers the call; any other is a
    # duplicate. A call takes the whole list, so an older call with the same id gets only
    # results stored before this one: the nearest-earlier-call rule.
    waiting: dict[str, list[Message]] = {}
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        if message.role is _TOOL:
            if message.tool_call_id is not None:
                waiting.setdefault(message.tool_call_id, []).append(message)
            continue
        if not message.tool_calls:
            # A reasoning item, a hosted tool call ...: nothing a model reads. (The
            # content test first: it spares almost every message the call.)
            if not message.content and is_kept_item(message):
                continue
            yield _new_unit(_Unit, (index, (message,), (), message.token_count))
            continue
        results: list[Message] = []
        synthetic: list[tuple[ChatMessage, int]] = []
        tokens = message.token_count
        answered: set[str] = set()  # an id repeated in one message is answered once
        for call in message.tool_calls:
            if call.id in answered:
                continue
            answered.add(call.id)
            found = waiting.pop(call.id, None)
            if found:
                results.append(found[-1])
                tokens += found[-1].token_count
            else:
                missing = _missing_result(call)
                cost = count_message_tokens(missing, counter)
                synthetic.append((missing, cost))
                tokens += cost
        results.sort(key=_by_seq)
        yield _new_unit(_Unit, (index, (message, *results), tuple(synthetic), tokens))


def _missing_result(call: ToolCall) -> ChatMessage:
    return ChatMessage.tool(tool_call_id=call.id, name=call.name, content=_MISSING_RESULT)


def _fit(
    pinned: list[tuple[ChatMessage, int, int]], room: int, counter: TokenCounter
) -> tuple[list[tuple[ChatMessage, int]], bool]:
    """Cut the contents of `pinned` (message, tokens, length of a prefix never cut) to fit
    `room`; returns each message with its cost, and whether they did not fit whole."""
    fulls = [tokens for _, tokens, _ in pinned]
    if not pinned or sum(fulls) <= room:
        return [(message, tokens) for message, tokens, _ in pinned], False
    floors = [
        tokens
        if len(message.content) <= keep
        else min(tokens, count_message_tokens(_cut(message, keep, 0), counter))
        for message, tokens, keep in pinned
    ]
    # The highest cap on every message's cost that makes the total fit. It stays 0 when
    # even the floors (contents cut to their markers) do not fit: the over-budget case.
    low, high = 0, max(fulls)
    while low < high:
        cap = (low + high + 1) // 2
        total = sum(min(full, max(floor, cap)) for full, floor in zip(fulls, floors, strict=True))
        if total <= room:
            low = cap
        else:
            high = cap - 1
    fitted = []
    for (message, tokens, keep), floor in zip(pinned, floors, strict=True):
        target = min(tokens, max(floor, low))
        fitted.append(
            (message, tokens) if target >= tokens else _truncate(message, keep, target, counter)
        )
    return fitted, True


def _truncate(
    message: ChatMessage, keep: int, target: int, counter: TokenCounter
) -> tuple[ChatMessage, int]:
    """The message with the most content that costs at most `target` (or, when even the
    bare marker costs more, the bare marker), and its cost."""
    best = _cut(message, keep, 0)
    best_tokens = count_message_tokens(best, counter)
    # A longer cut text costs no less under any sensible counter, so a binary search finds
    # the longest that fits; with an odd counter it still only ever returns one that fits.
    low, high = 0, len(message.content) - keep - 1
    while low < high:
        kept = (low + high + 1) // 2
        candidate = _cut(message, keep, kept)
        tokens = count_message_tokens(candidate, counter)
        if tokens <= target:
            low, best, best_tokens = kept, candidate, tokens
        else:
            high = kept - 1
    return best, best_tokens


def _cut(message: ChatMessage, keep: int, kept: int) -> ChatMessage:
    """`message` with `kept` characters of its content after the first `keep`, half from
    each end, around a marker saying how many were cut."""
    content = message.content
    head = keep + (kept + 1) // 2
    tail = len(content) - kept // 2
    omitted = len(content) - keep - kept
    # A plain ChatMessage even when a stored Message was cut: the cut text is no longer
    # the stored message, and must not carry its id or token count.
    return ChatMessage(
        role=message.role,
        content=f"{content[:head]}…[truncated {omitted} characters]…{content[tail:]}",
        tool_calls=message.tool_calls,
        tool_call_id=message.tool_call_id,
        name=message.name,
        metadata=message.metadata,
    )


@dataclass(frozen=True, slots=True)
class FoldPlan:
    """What to fold into a branch's rolling summary, and how.

    Attributes:
        chunks: the slices of the history to fold, in order: contiguous, each at most
            `chunk` messages long, the last one ending the fold.
        skipped: how many loaded messages before the first chunk are left unsummarized
            (a backlog longer than one fold may take): the summary should say so.
        unloaded: whether the branch holds messages after the summary that the turn did
            not even load (more than its window's rows): they are skipped too.
    """

    chunks: list[Sequence[Message]]
    skipped: int
    unloaded: bool


def plan_fold(
    history: Sequence[Message],
    *,
    covered: int | None,
    summary: str | None,
    system_prompt: str | None,
    budget_tokens: int,
    chunk: int,
    max_chunks: int,
    counter: TokenCounter = approximate_tokens,
) -> FoldPlan | None:
    """When and how much of `history` (a branch's messages after the summary that covers
    it up to message `covered`, or from its first) to fold into that summary; None when no
    fold is due.

    A fold is due only when the window no longer holds every message after the summary,
    and then goes down to 3/4 of the budget, so that the next few turns need none (each is
    a model call for a model agent). It never reaches into the latest turn: its raw
    messages are what the next turn follows. A backlog beyond `max_chunks` chunks is
    skipped up to its most recent part (the raw messages stay; only the summary misses
    them), so the model gets the context nearest the window at once.
    """
    if not build(
        history,
        system_prompt=system_prompt,
        budget_tokens=budget_tokens,
        summary=summary,
        counter=counter,
    ).dropped:
        return None
    roomy = build(
        history,
        system_prompt=system_prompt,
        budget_tokens=budget_tokens * 3 // 4,
        summary=summary,
        counter=counter,
    )
    # The window drops the oldest first: what it drops is a prefix of the history.
    end = len(roomy.dropped)
    latest_user = max((i for i, m in enumerate(history) if m.role is _USER), default=None)
    if latest_user is not None:
        end = min(end, latest_user)
    start = max(0, end - chunk * max_chunks)
    chunks = [history[first : min(end, first + chunk)] for first in range(start, end, chunk)]
    if not chunks:
        return None
    unloaded = history[0].parent_seq != covered
    return FoldPlan(chunks, skipped=start, unloaded=unloaded)
