"""Token usage: what one turn spent, and what a user's turns spent over days.

`TokenUsage` is the tokens a model took in and gave out, with the model's name and whether
the numbers are the model's own report or our estimate (`estimate_usage`, with the
`TokenCounter` of `chatledger.tokens`). An agent sends it as an event of its run; the turn
adds up what it hears and records the sum with the turn.

`UsageReport` sums recorded turns per UTC day and per conversation, over a period of
whole days that `check_period` bounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final

from chatledger.domain import ChatMessage
from chatledger.errors import ValidationError
from chatledger.tokens import TokenCounter, approximate_tokens, count_message_tokens

__all__ = [
    "MAX_REPORTED_TOKENS",
    "MAX_USAGE_DAYS",
    "ConversationUsage",
    "DayUsage",
    "TokenUsage",
    "UsageReport",
    "UsageTotals",
    "check_period",
    "estimate_usage",
]

# The longest period one report covers: a leap year. A bound keeps the report's cost
# (rows read, and the days and conversations it lists) bounded too.
MAX_USAGE_DAYS: Final = 366
# The most tokens one report of usage may claim: the largest integer a JSON number carries
# exactly (a browser reads anything larger wrong), far beyond any model's real numbers.
MAX_REPORTED_TOKENS: Final = 2**53 - 1


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens one or more model requests took in and gave out.

    Attributes:
        input_tokens: tokens sent to the model (the prompt), summed over its requests.
        output_tokens: tokens the model produced.
        model: the model's name, or None when it is not known.
        estimated: the numbers, or some of them, are our count, not the model's report.

    Raises:
        ValueError: a count is not an integer from 0 to `MAX_REPORTED_TOKENS`.
    """

    input_tokens: int
    output_tokens: int
    model: str | None = None
    estimated: bool = False

    def __post_init__(self) -> None:
        for count in (self.input_tokens, self.output_tokens):
            if (
                isinstance(count, bool)
                or not isinstance(count, int)
                or not 0 <= count <= MAX_REPORTED_TOKENS
            ):
                raise ValueError(f"a token count must be from 0 to {MAX_REPORTED_TOKENS}")

    def __add__(self, other: TokenUsage) -> TokenUsage:
        """Both together: the sums (held at `MAX_REPORTED_TOKENS`), estimated if either
        is, and the later one's model when it names one."""
        return TokenUsage(
            min(self.input_tokens + other.input_tokens, MAX_REPORTED_TOKENS),
            min(self.output_tokens + other.output_tokens, MAX_REPORTED_TOKENS),
            other.model or self.model,
            self.estimated or other.estimated,
        )


def estimate_usage(
    sent: Sequence[ChatMessage],
    produced: Iterable[ChatMessage],
    *,
    model: str | None,
    counter: TokenCounter = approximate_tokens,
    extra_input: int = 0,
) -> TokenUsage:
    """Our estimate of one model request: the messages it was sent (plus `extra_input`
    tokens of instructions or tool definitions) in, the messages it produced out."""
    return TokenUsage(
        min(
            extra_input + sum(count_message_tokens(m, counter) for m in sent),
            MAX_REPORTED_TOKENS,
        ),
        min(sum(count_message_tokens(m, counter) for m in produced), MAX_REPORTED_TOKENS),
        model,
        estimated=True,
    )


def check_period(
    first_day: object, last_day: object, *, names: tuple[str, str] = ("first_day", "last_day")
) -> tuple[date, date]:
    """The period from `first_day` to `last_day`, both included, if a report may cover it.

    `names` are the fields the errors name (the API's are `from` and `to`).

    Raises:
        ValidationError: a bound is not a date (`invalid_date`), the last day comes before
            the first (`invalid_range`), or the period is longer than `MAX_USAGE_DAYS`
            (`range_too_long`).
    """
    for name, day in zip(names, (first_day, last_day), strict=True):
        # A datetime is a date too, but one whose time of day would be silently dropped.
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValidationError(f"{name} must be a date", field=name, code="invalid_date")
    assert isinstance(first_day, date) and isinstance(last_day, date)
    if last_day < first_day:
        raise ValidationError(
            f"{names[1]} ({last_day}) is before {names[0]} ({first_day})",
            field=names[1],
            code="invalid_range",
        )
    if last_day - first_day >= timedelta(days=MAX_USAGE_DAYS):
        raise ValidationError(
            f"a report covers at most {MAX_USAGE_DAYS} days, from {names[0]} to {names[1]}"
            " included",
            field=names[1],
            code="range_too_long",
        )
    return first_day, last_day


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What a set of ended turns spent.

    Attributes:
        input_tokens, output_tokens: summed over the turns that recorded usage.
        turns: the turns, whether or not they recorded usage.
        estimated_turns: turns whose usage is (partly) our estimate.
        unknown_turns: turns with no usage recorded: they ended before chatledger recorded
            usage, their server died mid-turn, or their agent reported none.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    turns: int = 0
    estimated_turns: int = 0
    unknown_turns: int = 0

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.turns + other.turns,
            self.estimated_turns + other.estimated_turns,
            self.unknown_turns + other.unknown_turns,
        )


@dataclass(frozen=True, slots=True)
class DayUsage:
    """What a user's turns that started on one day (UTC) spent."""

    day: date
    totals: UsageTotals


@dataclass(frozen=True, slots=True)
class ConversationUsage:
    """What a user's turns in one conversation spent within a report's period."""

    conversation_id: str
    title: str | None
    totals: UsageTotals


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A user's token usage from `first_day` to `last_day` (both included, UTC).

    A turn counts on the day it started, once it has ended. A deleted conversation's turns
    are deleted with it, and count nowhere.

    Attributes:
        days: only the days with turns, oldest first.
        conversations: only those with turns in the period; most tokens first.
    """

    first_day: date
    last_day: date
    total: UsageTotals = field(default_factory=UsageTotals)
    days: list[DayUsage] = field(default_factory=list)
    conversations: list[ConversationUsage] = field(default_factory=list)
