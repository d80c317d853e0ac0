"""`TurnStore`: chat turns as the database sees them — started, kept alive, ended, streamed.

A turn starts with one unit of work that stores its user message, takes the
conversation's lease and records the turn; it ends with one that stores its last messages,
frees the lease, completes its idempotency key and ends its stream. In between, its
replica renews the lease; if the replica dies, the next request on the conversation (or
`close_expired`, which every server runs) closes the turn as interrupted. See
`chatledger.store.ledger`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, bindparam, delete, select

from chatledger.domain import (
    Branch,
    ChatMessage,
    Message,
    StreamEvent,
    TurnResult,
    TurnStatus,
    tool_call_records,
)
from chatledger.errors import ConflictError, NotFoundError, UnavailableError, ValidationError
from chatledger.storage import Ending, RunningTurn, utcnow
from chatledger.store.core import LeaseUse, check_conversation_id, check_user_id
from chatledger.store.engine import Connector
from chatledger.store.hot import TurnEnd, TurnStep, renew_lease, write_step
from chatledger.store.ledger import Writer, numbered_events, user_message_at
from chatledger.store.schema import (
    MODEL_NAME_CHARS,
    conversations,
    turn_events,
)
from chatledger.usage import TokenUsage

__all__ = ["RunningTurn", "TurnStore"]

_c = conversations.c
_e = turn_events.c

_LEASE: Final = select(_c.lease_id, _c.lease_expires_at).where(
    _c.user_id == bindparam("user"), _c.id == bindparam("conversation")
)
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def _model_name(name: str | None) -> str | None:
    """A model's name as a turn records it: cut to the column's length, without the
    characters a database refuses (the name comes from settings or an agent, unchecked)."""
    if name is None:
        return None
    return _UNSTORABLE.sub("", name)[:MODEL_NAME_CHARS] or None


class TurnStore:
    """Turns of each user's conversations; reach it as `SQLAlchemyStore.turns`."""

    def __init__(self, db: Connector, writer: Writer) -> None:
        self._db = db
        self._writer = writer

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
    ) -> tuple[Message, StreamEvent]:
        """Store the user message and start the turn on it, taking the lease; a dead
        turn's lease is taken over (that turn closed first).

        The turn continues from the head, or from `branch`: its `message` a new version of
        user message `branch.seq`, or (no `message`) a new reply to that message. The head
        moves there in the same transaction, so the turn reads that branch only.

        Returns:
            The user message the turn answers and the stream's first event,
            `conversation`.

        Raises:
            NotFoundError: no such conversation, or message `branch.seq`, for this user.
            ValidationError: `branch.seq` is not a user message; a regeneration with a
                message or anything else without one.
            ConflictError: `conversation_busy`, with `retry_after`.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        if (message is None) != (branch is not None and not branch.edit):
            raise ValidationError("only a regeneration starts a turn without a message")
        prepared = [] if message is None else self._writer.prepare([message])
        writer = self._writer

        def step(user_message_id: str) -> tuple[TurnStep, StreamEvent]:
            started = {
                "conversation_id": conversation_id,
                "turn_id": turn_id,
                "user_message_id": user_message_id,
            }
            events = numbered_events(turn_id, [("conversation", started)], 1)
            first = TurnStep(
                turn_id, events, first_event=1, starts=True, idempotency_key=idempotency_key
            )
            return first, events[0]

        lease: dict[str, Any] = {"lease_id": turn_id, "lease_expires_at": lease_expires_at}
        if branch is None:  # the common start, from the head
            first, event = step(prepared[0][1])
            [stored] = await self._writer.append_alone(
                self._db, user_id, conversation_id, prepared, use=LeaseUse.TAKE, step=first, **lease
            )
            return stored, event

        def work(conn: Connection) -> tuple[Message, StreamEvent]:
            assert branch is not None
            now = utcnow()
            origin = user_message_at(conn, user_id, conversation_id, branch.seq)
            # The head moves to where the turn starts, and the lease is taken, in one
            # statement that a running turn refuses.
            start_at = origin.parent_seq if branch.edit else origin.seq
            writer.move_head(
                conn, user_id, conversation_id, start_at, now=now, use=LeaseUse.TAKE, **lease
            )
            if not branch.edit:  # a new reply to a user message stored before
                first, event = step(origin.id)
                write_step(conn, user_id, conversation_id, first, user_seq=origin.seq, now=now)
                return origin, event
            first, event = step(prepared[0][1])
            [stored] = writer.append(
                conn, user_id, conversation_id, prepared,
                now=now, use=LeaseUse.HOLD, step=first, **lease,
            )  # fmt: skip
            return stored, event

        return await self._db.write(work)

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
    ) -> tuple[list[Message], list[StreamEvent]]:
        """Store a step of a running turn: its `messages` (renewing its lease until
        `lease_expires_at`) and the events `named`, numbered from `first_seq`, on its
        stream. On PostgreSQL one statement (outside a transaction, one round trip).

        Raises:
            ConflictError: `lease_lost`, the turn no longer holds the conversation (it
                was closed, and its stream ended, by someone who found it dead).
        """
        prepared = self._writer.prepare(messages)
        events = numbered_events(turn_id, named, first_seq)
        step = TurnStep(turn_id, events, first_event=first_seq)
        stored = await self._writer.append_alone(
            self._db, user_id, conversation_id, prepared,
            use=LeaseUse.HOLD, lease_id=turn_id, lease_expires_at=lease_expires_at, step=step,
        )  # fmt: skip
        return stored, events

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
    ) -> tuple[TurnResult, list[Message], list[StreamEvent]]:
        """End a running turn: store `closing` (its last messages; the last one is the
        reply), free the lease, mark the turn and record its `usage` (None: not known),
        complete its key, end its stream: on PostgreSQL one statement.

        Returns:
            The turn's result, the messages stored, and the events sent.

        `earlier` are the turn's messages stored before (its user message first); `events`
        go on its stream before `done` (or `error`, for a failed ending).

        Raises:
            ConflictError: `lease_lost`, the turn had already been closed (taken over
                after its lease ran out): nothing is stored.
        """
        prepared = self._writer.prepare(closing)
        # Everything the statement stores is known before it runs: the messages' ids and
        # text (only their seqs come from the database), so the result too.
        messages = [*earlier, *(m for m, _, _ in prepared)]
        result = TurnResult(
            conversation_id=conversation_id,
            response=prepared[-1][0].content,
            tool_calls=tool_call_records(messages),
            message_ids=[*(m.id for m in earlier), *(i for _, i, _ in prepared)],
            turn_id=turn_id,
            status=ending.status,
        )
        record = result.to_record()
        last: tuple[str, Any] = ("done", record)
        if ending.error is not None:
            last = ("error", dict(ending.error))
        sent = numbered_events(turn_id, [*events, last], first_event_seq)
        answer: tuple[int, Any] = (200, record)
        if ending.error_status is not None:
            answer = (ending.error_status, ending.error)
        step = TurnStep(
            turn_id,
            sent,
            first_event=first_event_seq,
            ends=TurnEnd(
                status=ending.status.value,
                input_tokens=None if usage is None else usage.input_tokens,
                output_tokens=None if usage is None else usage.output_tokens,
                usage_estimated=None if usage is None else usage.estimated,
                model=None if usage is None else _model_name(usage.model),
                key_status=answer[0],
                key_response=answer[1],
            ),
            idempotency_key=idempotency_key,
        )
        stored = await self._writer.append_alone(
            self._db,
            user_id,
            conversation_id,
            prepared,
            use=LeaseUse.RELEASE,
            lease_id=turn_id,
            step=step,
        )
        return result, stored, sent

    async def renew(
        self, user_id: str, conversation_id: str, turn_id: str, *, expires_at: datetime
    ) -> bool | None:
        """Push the lease of a running turn forward.

        Returns:
            Whether the turn has been asked to stop; None if it no longer holds the lease
            (it was closed by someone who found the lease expired).
        """
        return await renew_lease(self._db, user_id, conversation_id, turn_id, expires_at)

    async def add_events(
        self,
        user_id: str,
        conversation_id: str,
        turn_id: str,
        named: Sequence[tuple[str, Any]],
        *,
        first_seq: int,
    ) -> list[StreamEvent]:
        """Append events to a running turn's stream, numbered from `first_seq`.

        Raises:
            ConflictError: `lease_lost`, the turn no longer holds the conversation (it
                was closed, and its stream ended, by someone who found it dead).
        """
        key = {"user": user_id, "conversation": conversation_id}

        def work(conn: Connection) -> list[StreamEvent]:
            # FOR SHARE waits for a closer holding the row, and holds one off meanwhile:
            # otherwise both could number an event after the same last one.
            holder = conn.execute(_LEASE.with_for_update(read=True), key).scalar()
            if holder != turn_id:
                raise ConflictError(
                    "this turn no longer holds the conversation: it was closed",
                    code="lease_lost",
                )
            return self._writer.add_events(
                conn, user_id, conversation_id, turn_id, named, first_seq=first_seq, now=utcnow()
            )

        return await self._db.write(work)

    async def events(
        self, user_id: str, conversation_id: str, turn_id: str, *, after: int, limit: int = 500
    ) -> list[StreamEvent]:
        """A turn's stored events numbered after `after`, oldest first."""
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        return await self._db.read(
            lambda conn: self._writer.events(
                conn, user_id, conversation_id, turn_id, after=after, limit=limit
            )
        )

    async def running(self, user_id: str, conversation_id: str) -> RunningTurn | None:
        """The turn holding the conversation's lease, alive or dead; None if none does.

        Raises:
            NotFoundError: no such conversation for this user.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        key = {"user": user_id, "conversation": conversation_id}
        row = await self._db.read(lambda conn: conn.execute(_LEASE, key).first())
        if row is None:
            raise NotFoundError("conversation not found")
        lease_id, expires_at = row
        return None if lease_id is None else RunningTurn(lease_id, expires_at)

    async def take_over(self, user_id: str, conversation_id: str) -> bool:
        """Close the conversation's turn as interrupted if its lease has run out.

        Returns:
            True if a live turn holds the conversation, False if none does (now).

        Raises:
            NotFoundError: no such conversation for this user.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)

        def work(conn: Connection) -> bool:
            try:
                self._writer.take_over(conn, user_id, conversation_id, now=utcnow())
            except ConflictError:
                return True
            return False

        return await self._db.write(work)

    async def resolve(
        self, user_id: str, conversation_id: str, turn_id: str
    ) -> TurnResult | RunningTurn | None:
        """What became of a turn an idempotency key started and has no answer for.

        Returns:
            `RunningTurn` if it is still running (its lease is alive); its result if it had
            died (it is closed now, as interrupted, and its key completed); None if it is
            not running, or its conversation is gone.
        """

        def work(conn: Connection) -> TurnResult | RunningTurn | None:
            now = utcnow()
            key = {"user": user_id, "conversation": conversation_id}
            row = conn.execute(_LEASE.with_for_update(), key).first()
            if row is None or row.lease_id != turn_id:
                return None
            running = RunningTurn(row.lease_id, row.lease_expires_at)
            if running.alive(now):
                return running
            return self._writer.close_turn(
                conn, user_id, conversation_id, turn_id, status=TurnStatus.INTERRUPTED, now=now
            )

        return await self._db.write(work)

    async def close_expired(self, *, limit: int = 100) -> int:
        """Close, as interrupted, turns whose lease has run out (their replica died).

        Every server runs this now and then, so a dead turn is closed within seconds
        even if nobody comes back to its conversation. Safe from many replicas at once.
        A turn that cannot be closed (a bug) does not keep the others open: they are
        closed, then its error is raised.

        Returns:
            How many turns were closed.

        Raises:
            UnavailableError: the database is away (the sweep stops there).
            ExceptionGroup: the errors of the turns that could not be closed.
        """
        now = utcnow()
        # The most recently expired first: a turn that cannot be closed (a bug) sinks
        # behind every turn that dies after it, and never keeps those open.
        expired = (
            select(_c.user_id, _c.id)
            .where(_c.lease_id.is_not(None), _c.lease_expires_at <= now)
            .order_by(_c.lease_expires_at.desc())
            .limit(limit)
        )
        found = await self._db.read(lambda conn: conn.execute(expired).all())
        closed = 0
        failures: list[Exception] = []
        for user_id, conversation_id in found:

            def work(conn: Connection, user_id: str = user_id, cid: str = conversation_id) -> bool:
                try:
                    return self._writer.take_over(conn, user_id, cid, now=utcnow())
                except (ConflictError, NotFoundError):
                    return False  # renewed, or deleted, since it was found

            try:
                closed += await self._db.write(work)
            except UnavailableError:
                raise
            except Exception as error:  # raised below, with the others'
                failures.append(error)
        if failures:
            raise ExceptionGroup("dead turns that could not be closed", failures)
        return closed

    async def purge_events(self, *, older_than: timedelta) -> int:
        """Delete every user's stream events stored longer ago than `older_than`.

        The events of a finished turn are only needed by a client still catching up with
        it; the turn's messages hold everything it did.
        """
        statement = delete(turn_events).where(_e.created_at < utcnow() - older_than)
        return await self._db.write(lambda conn: int(conn.execute(statement).rowcount))
