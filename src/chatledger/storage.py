"""The store as the chat turn sees it: the `Store` protocol and the records it trades in.

`ChatService` and `Turn` depend on this, not on `chatledger.store`, so the core imports no
database driver or SQLAlchemy (`tests/test_imports.py` holds that), and another store
could stand behind the same turn. `chatledger.store.SQLAlchemyStore` is the one that
ships; `chatledger.compose` hands it over. What each method promises is documented where
it is implemented, in `chatledger.store`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from chatledger.domain import (
    Branch,
    ChatMessage,
    Conversation,
    Message,
    StreamEvent,
    Summary,
    TurnResult,
    TurnStatus,
)
from chatledger.tools.tasks import TaskRepository
from chatledger.usage import TokenUsage

__all__ = [
    "Ending",
    "IdempotencyKeys",
    "IdempotencyRecord",
    "Lease",
    "RateLimits",
    "RunningTurn",
    "Store",
    "Summaries",
    "TurnRecords",
    "event_id",
    "new_id",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def event_id(turn_id: str, seq: int) -> str:
    """A stream event's id: its turn and its number in that turn's stream."""
    return f"{turn_id}:{seq}"


@dataclass(frozen=True, slots=True)
class Lease:
    """A running turn's claim on its conversation: the turn's id, and until when it holds
    unless renewed; see `SQLAlchemyStore.append` and `TurnStore`."""

    id: str
    expires_at: datetime

    @classmethod
    def new(cls, ttl: timedelta) -> Lease:
        return cls(new_id(), utcnow() + ttl)


@dataclass(frozen=True, slots=True)
class RunningTurn:
    """The turn holding a conversation's lease, and until when (unless renewed)."""

    turn_id: str
    expires_at: datetime

    def alive(self, now: datetime) -> bool:
        return self.expires_at > now

    def retry_after(self, now: datetime) -> int:
        """Seconds until a new turn may start here if this one's replica has died."""
        return max(1, math.ceil((self.expires_at - now).total_seconds()))


@dataclass(frozen=True, slots=True)
class Ending:
    """How a turn ends.

    `error`, when set, is the stream's last event instead of `done`. `error_status`, when
    set, is what its idempotency key replays, with `error` as the body (an agent failure,
    502 or 504); otherwise the key answers with the turn's result.
    """

    status: TurnStatus
    error: Mapping[str, Any] | None = None
    error_status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    """What is stored under a key. `status_code` is None while the first request runs;
    `turn_id` names the chat turn it started (None for other requests)."""

    request_hash: str
    conversation_id: str | None
    turn_id: str | None
    status_code: int | None
    response: Any
    created_at: datetime


class TurnRecords(Protocol):
    """A store's record of turns: `chatledger.store.turns.TurnStore`."""

    async def start(
        self,
        user_id: str,
        conversation_id: str,
        message: ChatMessage | None,
        *,
        turn_id: str,
        lease_expires_at: datetime,
        idempotency_key: str | None = None,
        branch: Branch | None = None,
    ) -> tuple[Message, StreamEvent]: ...

    async def finish(
        self,
        user_id: str,
        conversation_id: str,
        turn_id: str,
        closing: Sequence[ChatMessage],
        *,
        earlier: Sequence[Message],
        ending: Ending,
        usage: TokenUsage | None = None,
        idempotency_key: str | None,
        events: Sequence[tuple[str, Any]],
        first_event_seq: int,
    ) -> tuple[TurnResult, list[Message], list[StreamEvent]]: ...

    async def renew(
        self, user_id: str, conversation_id: str, turn_id: str, *, expires_at: datetime
    ) -> bool | None: ...

    async def record(
        self,
        user_id: str,
        conversation_id: str,
        turn_id: str,
        messages: Sequence[ChatMessage],
        named: Sequence[tuple[str, Any]],
        *,
        lease_expires_at: datetime,
        first_seq: int,
    ) -> tuple[list[Message], list[StreamEvent]]: ...

    async def add_events(
        self,
        user_id: str,
        conversation_id: str,
        turn_id: str,
        named: Sequence[tuple[str, Any]],
        *,
        first_seq: int,
    ) -> list[StreamEvent]: ...

    async def events(
        self, user_id: str, conversation_id: str, turn_id: str, *, after: int, limit: int = 500
    ) -> list[StreamEvent]: ...

    async def running(self, user_id: str, conversation_id: str) -> RunningTurn | None: ...

    async def take_over(self, user_id: str, conversation_id: str) -> bool: ...

    async def resolve(
        self, user_id: str, conversation_id: str, turn_id: str
    ) -> TurnResult | RunningTurn | None: ...


class IdempotencyKeys(Protocol):
    """A store's idempotency keys: `chatledger.store.idempotency.IdempotencyStore`."""

    async def claim(
        self,
        user_id: str,
        key: str,
        *,
        request_hash: str,
        expire_after: timedelta = ...,
    ) -> IdempotencyRecord | None: ...


class RateLimits(Protocol):
    """A store's per-user counters: `chatledger.store.limits.RateLimitStore`."""

    async def take(self, user_id: str, *, limit: int, window: timedelta) -> None: ...


class Summaries(Protocol):
    """A store's rolling summaries: `chatledger.store.summaries.SummaryStore`."""

    async def save(
        self,
        user_id: str,
        conversation_id: str,
        *,
        content: str,
        upto_seq: int,
    ) -> bool: ...


class Store(Protocol):
    """What a chat turn, and the usage it records, need of a store:
    `chatledger.store.SQLAlchemyStore`."""

    @property
    def tasks(self) -> TaskRepository: ...

    @property
    def turns(self) -> TurnRecords: ...

    @property
    def idempotency(self) -> IdempotencyKeys: ...

    @property
    def rate_limits(self) -> RateLimits: ...

    @property
    def summaries(self) -> Summaries: ...

    @property
    def max_message_chars(self) -> int:
        """The longest content a message may have."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Store]:
        """A store whose methods share one write transaction, committed on exit."""
        ...

    async def create_conversation(
        self,
        user_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        temporary: bool = False,
    ) -> Conversation: ...

    async def append(
        self,
        user_id: str,
        conversation_id: str,
        messages: Sequence[ChatMessage],
        *,
        lease: Lease | None = None,
        release_lease: bool = False,
    ) -> list[Message]: ...

    async def request_stop(self, user_id: str, conversation_id: str) -> bool: ...

    async def stop_requested(self, user_id: str, conversation_id: str, lease: Lease) -> bool: ...

    async def load_context(
        self, user_id: str, conversation_id: str, *, limit: int
    ) -> tuple[Summary | None, list[Message]]: ...
