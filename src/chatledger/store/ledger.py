"""The synchronous core of writing a conversation: appends, leases and dead turns.

Every function here runs inside a unit of work (a `Connection` in an open transaction),
so that what must change together — a seq range and its rows; a dead turn's closing
messages, its lease and its idempotency key — commits together or not at all.

A conversation runs one turn at a time. The turn holds the conversation's *lease*: its
id in `conversations.lease_id`, with an expiry its replica keeps pushing forward while the
turn runs. A lease that has expired belongs to a turn whose replica died (or lost the
database for longer than the lease): whoever finds it closes that turn as `interrupted`
from what it recorded, then goes on. So no crash can hold a conversation for longer than a
lease, and no turn is ever left without its end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy import Connection, Integer, bindparam, func, insert, select, update

from chatledger.domain import (
    INTERRUPTED_TOOL_RESULT,
    ChatMessage,
    Message,
    Role,
    StreamEvent,
    ToolCall,
    TurnResult,
    TurnStatus,
    check_new_message,
    model_message,
    tool_call_records,
)
from chatledger.errors import ConflictError, NotFoundError, ValidationError
from chatledger.storage import event_id, new_id, utcnow
from chatledger.store.core import AnyRow, LeaseUse, readable_metadata
from chatledger.store.engine import Connector
from chatledger.store.hot import TurnStep, append_alone, append_batch
from chatledger.store.schema import (
    conversations,
    idempotency_keys,
    messages as message_table,
    turn_events,
    turns,
)
from chatledger.store.search import index_messages
from chatledger.tokens import TokenCounter, count_message_tokens

__all__ = [
    "HEAD",
    "MESSAGE_COLUMNS",
    "LeaseUse",
    "Writer",
    "copied",
    "event_id",
    "insert_messages",
    "message_of",
    "numbered",
    "numbered_events",
    "read_path",
    "readable_metadata",
    "require_conversation",
    "run_of",
    "run_rows",
    "unnumbered",
    "user_message_at",
]

_c = conversations.c
_m = message_table.c
_t = turns.c
_e = turn_events.c
_k = idempotency_keys.c

# In the order `message_of` unpacks them.
MESSAGE_COLUMNS: Final = (
    _m.conversation_id,
    _m.seq,
    _m.id,
    _m.role,
    _m.content,
    _m.tool_calls,
    _m.tool_call_id,
    _m.name,
    _m.metadata,
    _m.token_count,
    _m.created_at,
    _m.parent_seq,
)
_ROLES: Final = {role.value: role for role in Role}
_NO_METADATA: Final[Mapping[str, Any]] = MappingProxyType({})
# A turn's messages: its user message and everything after it. A turn makes a bounded
# number of tool calls, so this bound is only a guard.
_TURN_MESSAGES: Final = 10_000


_FREE = _c.lease_id.is_(None)
_HELD = _c.lease_id == bindparam("lease")
_INSERT_MESSAGES = insert(message_table)
# Rows per INSERT when a fork or an import stores a long branch.
_INSERT_BATCH: Final = 1_000
_RELEASE_ONLY = (
    update(conversations)
    .where(_c.user_id == bindparam("user"), _c.id == bindparam("conversation"), _HELD)
    .values(lease_id=None, lease_expires_at=None, stop_requested=False)
)
# Where a message's run starts, and that first message's parent: where reading back along
# the branch jumps to once the run is read. Two lookups by primary key rather than a
# self-join, which PostgreSQL without statistics planned as a scan of the conversation.
_RUN_START: Final = select(_m.run_start).where(
    _m.user_id == bindparam("user"),
    _m.conversation_id == bindparam("conversation"),
    _m.seq == bindparam("seq"),
)
_PARENT: Final = select(_m.parent_seq).where(
    _m.user_id == bindparam("user"),
    _m.conversation_id == bindparam("conversation"),
    _m.seq == bindparam("seq"),
)
_RUN_RANGE: Final = (
    select(*MESSAGE_COLUMNS)
    .where(
        _m.user_id == bindparam("user"),
        _m.conversation_id == bindparam("conversation"),
        _m.seq >= bindparam("low"),
        _m.seq <= bindparam("high"),
    )
    .order_by(_m.seq.desc())
    .limit(bindparam("limit", type_=Integer))
)
_RUN_RANGE_OLDEST_FIRST: Final = _RUN_RANGE.order_by(None).order_by(_m.seq)
HEAD: Final = select(_c.head_seq, _c.head_run_start, _c.head_run_parent).where(
    _c.user_id == bindparam("user"), _c.id == bindparam("conversation")
)
_CONVERSATION_EXISTS = select(_c.id).where(
    _c.user_id == bindparam("user"), _c.id == bindparam("conversation")
)
_LEASE_FOR_UPDATE = (
    select(_c.lease_id, _c.lease_expires_at)
    .where(_c.user_id == bindparam("user"), _c.id == bindparam("conversation"))
    .with_for_update()
)
_RUNNING_TURN = select(_t.user_seq, _t.idempotency_key).where(
    _t.user_id == bindparam("user"),
    _t.conversation_id == bindparam("conversation"),
    _t.id == bindparam("turn"),
    _t.status == TurnStatus.RUNNING.value,
)
_END_TURN = (
    update(turns)
    .where(
        _t.user_id == bindparam("user"),
        _t.conversation_id == bindparam("conversation"),
        _t.id == bindparam("turn"),
        _t.status == TurnStatus.RUNNING.value,
    )
    .values(status=bindparam("status"), ended_at=bindparam("now"))
)
_EVENTS = (
    select(_e.seq, _e.name, _e.data)
    .where(
        _e.user_id == bindparam("user"),
        _e.conversation_id == bindparam("conversation"),
        _e.turn_id == bindparam("turn"),
        _e.seq > bindparam("after"),
    )
    .order_by(_e.seq)
    .limit(bindparam("limit", type_=Integer))
)
_LAST_EVENT = select(func.max(_e.seq)).where(
    _e.user_id == bindparam("user"),
    _e.conversation_id == bindparam("conversation"),
    _e.turn_id == bindparam("turn"),
)
_INSERT_EVENTS = insert(turn_events)


def message_of(row: AnyRow) -> Message:
    # Unpacked by position: reading a Row's attributes by name costs about 15 times as
    # much (docs/benchmarks.md, "Where chatledger's time goes"), 11 times per message.
    (
        conversation_id,
        seq,
        message_id,
        role,
        content,
        tool_calls,
        tool_call_id,
        name,
        metadata,
        token_count,
        created_at,
        parent_seq,
    ) = row
    return Message(
        conversation_id=conversation_id,
        seq=seq,
        id=message_id,
        role=_ROLES[role],
        content=content,
        tool_calls=tuple(ToolCall(**call) for call in tool_calls) if tool_calls else (),
        tool_call_id=tool_call_id,
        name=name,
        metadata=readable_metadata(metadata) if metadata else _NO_METADATA,
        token_count=token_count,
        created_at=created_at,
        parent_seq=parent_seq,
    )


def user_message_at(conn: Connection, user_id: str, conversation_id: str, seq: int) -> Message:
    """Message `seq`, which must be a user message (a turn branches only from one).

    Raises:
        NotFoundError: no such conversation or message for this user.
        ValidationError: `not_a_user_message`.
    """
    key = {"user": user_id, "conversation": conversation_id}
    row = conn.execute(_RUN_RANGE, {**key, "low": seq, "high": seq, "limit": 1}).first()
    if row is None:
        require_conversation(conn, user_id, conversation_id)
        raise NotFoundError("message not found")
    message = message_of(row)
    if message.role is not Role.USER:
        raise ValidationError(
            f"message {seq} is a {message.role.value} message; only a user message can be"
            " edited or answered again",
            field="seq",
            code="not_a_user_message",
        )
    return message


def require_conversation(conn: Connection, user_id: str, conversation_id: str) -> None:
    key = {"user": user_id, "conversation": conversation_id}
    if conn.execute(_CONVERSATION_EXISTS, key).first() is None:
        raise NotFoundError("conversation not found")


def insert_messages(conn: Connection, user_id: str, runs: Sequence[tuple[Message, int]]) -> None:
    """Store numbered messages, each with the first seq of its run, and add them to the
    search index in the same transaction. Every way a message enters the database (an
    append, a fork, an import) goes through here, so none is left out of the index.
    """
    for first in range(0, len(runs), _INSERT_BATCH):
        batch = runs[first : first + _INSERT_BATCH]
        conn.execute(_INSERT_MESSAGES, [_row(user_id, m, run_start) for m, run_start in batch])
        index_messages(conn, user_id, [m for m, _ in batch])


def _row(user_id: str, message: Message, run_start: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "id": message.id,
        "role": message.role.value,
        "content": message.content,
        "tool_calls": [
            {"id": call.id, "name": call.name, "arguments": call.arguments}
            for call in message.tool_calls
        ]
        or None,
        "tool_call_id": message.tool_call_id,
        "name": message.name,
        "metadata": message.metadata or None,
        "token_count": message.token_count,
        "created_at": message.created_at,
        "parent_seq": message.parent_seq,
        "run_start": run_start,
    }


def unnumbered(
    conversation_id: str, message: ChatMessage, message_id: str, tokens: int, now: datetime
) -> Message:
    """A prepared message as it is stored, before it has a seq."""
    return Message(
        conversation_id=conversation_id,
        seq=0,
        id=message_id,
        role=message.role,
        content=message.content,
        tool_calls=tuple(message.tool_calls),
        tool_call_id=message.tool_call_id,
        name=message.name,
        metadata=message.metadata,
        token_count=tokens,
        created_at=now,
    )


def numbered_events(
    turn_id: str, named: Sequence[tuple[str, Any]], first_seq: int
) -> list[StreamEvent]:
    """Events of a turn's stream as they are sent, numbered from `first_seq`."""
    return [
        StreamEvent(event_id(turn_id, first_seq + offset), name, data)
        for offset, (name, data) in enumerate(named)
    ]


def numbered(
    batch: Sequence[Message], first_seq: int, run_start: int, run_parent: int | None
) -> list[Message]:
    """A batch as stored from `first_seq` on, in the run `run_start` starts.

    The batch continues from the head: the first message's parent is the head (the
    message before it, when that was the head), each next one's the one before.
    """
    first_parent = first_seq - 1 if run_start < first_seq else run_parent
    return [
        replace(
            m,
            seq=first_seq + offset,
            parent_seq=first_parent if offset == 0 else first_seq + offset - 1,
        )
        for offset, m in enumerate(batch)
    ]


def copied(message: Message, *, conversation_id: str, seq: int) -> Message:
    """A copy of `message` as message `seq` of a linear conversation (a fork), with an id of
    its own."""
    return replace(
        message,
        conversation_id=conversation_id,
        seq=seq,
        id=new_id(),
        parent_seq=seq - 1 if seq > 1 else None,
    )


def run_of(
    conn: Connection, user_id: str, conversation_id: str, seq: int
) -> tuple[int, int | None]:
    """The first seq of the run message `seq` ends, and that first message's parent.

    Raises:
        NotFoundError: no message `seq` in the conversation.
    """
    key = {"user": user_id, "conversation": conversation_id}
    run_start = conn.execute(_RUN_START, {**key, "seq": seq}).scalar()
    if run_start is None:
        raise NotFoundError("message not found")
    parent: int | None = conn.execute(_PARENT, {**key, "seq": run_start}).scalar()
    return run_start, parent


def run_rows(
    conn: Connection,
    user_id: str,
    conversation_id: str,
    low: int,
    high: int,
    limit: int,
    *,
    oldest_first: bool = False,
) -> list[Any]:
    """The newest `limit` rows of seqs `low` to `high` (one run, or part of one), newest
    first (or the oldest, oldest first): one range scan of the primary key."""
    window = {"user": user_id, "conversation": conversation_id, "low": low, "high": high}
    statement = _RUN_RANGE_OLDEST_FIRST if oldest_first else _RUN_RANGE
    return list(conn.execute(statement, {**window, "limit": limit}))


def read_path(
    conn: Connection,
    user_id: str,
    conversation_id: str,
    seq: int | None,
    *,
    limit: int,
    run: tuple[int, int | None] | None = None,
    after: int = 0,
    before: int | None = None,
) -> list[Any]:
    """The newest `limit` rows of the branch ending at message `seq` (it and each one's
    parent, back to the root), of those after seq `after` and before `before`, newest
    first.

    One range scan per run of consecutive seqs (a linear conversation is one run), plus
    one lookup per jump to an earlier run: the cost follows `limit` and the branches met,
    never the conversation's length. `run` is `run_of(seq)`, when already known.

    Raises:
        NotFoundError: no message `seq` in the conversation.
    """
    rows: list[Any] = []
    while seq is not None and seq > after and len(rows) < limit:
        run_start, run_parent = run or run_of(conn, user_id, conversation_id, seq)
        high = seq if before is None else min(seq, before - 1)
        low = max(run_start, after + 1)
        if low <= high:
            rows += run_rows(conn, user_id, conversation_id, low, high, limit - len(rows))
        if run_start <= after:
            break  # nothing after `after` is left on the branch
        seq, run = run_parent, None
    return rows


def read_path_oldest_first(
    conn: Connection,
    user_id: str,
    conversation_id: str,
    seq: int | None,
    *,
    limit: int,
    run: tuple[int, int | None] | None = None,
    after: int = 0,
    before: int | None = None,
) -> list[Any]:
    """The oldest `limit` rows of the branch ending at message `seq`, of those after seq
    `after` and before `before`, oldest first: `read_path`'s other end.

    The runs are found first, newest to oldest (one lookup per jump, no rows read), then
    read oldest first, one range scan each, until `limit` rows are in: the cost follows
    `limit` and the branches met, never the conversation's length.

    Raises:
        NotFoundError: no message `seq` in the conversation.
    """
    runs: list[tuple[int, int]] = []
    while seq is not None and seq > after:
        run_start, run_parent = run or run_of(conn, user_id, conversation_id, seq)
        runs.append((max(run_start, after + 1), seq if before is None else min(seq, before - 1)))
        if run_start <= after:
            break
        seq, run = run_parent, None
    rows: list[Any] = []
    for low, high in reversed(runs):
        if len(rows) >= limit:
            break
        if low > high:
            continue
        rows += run_rows(
            conn, user_id, conversation_id, low, high, limit - len(rows), oldest_first=True
        )
    return rows


class Writer:
    """Writes messages, leases and turn records in units of work.

    Args:
        max_message_chars: longest content or metadata a message may have.
        token_counter: counts each message's tokens, stored with it.
    """

    def __init__(self, *, max_message_chars: int, token_counter: TokenCounter) -> None:
        self.max_message_chars = max_message_chars
        self.token_counter = token_counter

    def prepare(self, messages: Sequence[ChatMessage]) -> list[tuple[ChatMessage, str, int]]:
        """Validate messages (raising before any statement runs), give each an id, count
        its tokens: everything that needs no database."""
        checked = [check_new_message(m, max_chars=self.max_message_chars) for m in messages]
        return [(m, new_id(), count_message_tokens(m, self.token_counter)) for m in checked]

    async def try_append(
        self,
        db: Connector,
        user_id: str,
        conversation_id: str,
        prepared: Sequence[tuple[ChatMessage, str, int]],
        *,
        now: datetime,
        use: LeaseUse = LeaseUse.NONE,
        lease_id: str | None = None,
        lease_expires_at: datetime | None = None,
        step: TurnStep | None = None,
    ) -> list[Message] | None:
        """`append` as a unit of work of its own, on PostgreSQL one statement
        (`hot.append_alone`): None, with nothing stored, where the conversation is
        missing or its lease is not as `use` needs it, which `append`, in a transaction,
        says and (for a dead turn's lease) mends."""
        batch = [unnumbered(conversation_id, m, i, t, now) for m, i, t in prepared]
        reserved = await append_alone(
            db, user_id, conversation_id, batch, now=now,
            use=use, lease_id=lease_id, lease_expires_at=lease_expires_at, step=step,
        )  # fmt: skip
        return None if reserved is None else numbered(batch, *reserved)

    async def append_alone(
        self,
        db: Connector,
        user_id: str,
        conversation_id: str,
        prepared: Sequence[tuple[ChatMessage, str, int]],
        **append: Any,
    ) -> list[Message]:
        """`append` as a unit of work of its own: one statement where it can
        (`try_append`: on PostgreSQL, one round trip outside a transaction), and the full
        unit where that stored nothing, which says why (a conversation gone, a lease lost
        or held) or, for a dead turn's lease, takes it over first. `append` are the
        keyword arguments of `append` but `now`."""
        stored = await self.try_append(
            db, user_id, conversation_id, prepared, now=utcnow(), **append
        )
        if stored is None:
            stored = await db.write(
                lambda conn: self.append(
                    conn, user_id, conversation_id, prepared, now=utcnow(), **append
                )
            )
        return stored

    def append(
        self,
        conn: Connection,
        user_id: str,
        conversation_id: str,
        prepared: Sequence[tuple[ChatMessage, str, int]],
        *,
        now: datetime,
        use: LeaseUse = LeaseUse.NONE,
        lease_id: str | None = None,
        lease_expires_at: datetime | None = None,
        step: TurnStep | None = None,
    ) -> list[Message]:
        """Reserve a contiguous range of seq and insert `prepared` there, all or none,
        with their entries in the search index and the records of the turn `step` they
        belong to.

        Concurrent appends serialize on the conversation row, so seq stays gap-free. An
        append that needs a free conversation and finds a dead turn's lease closes that
        turn first; a live lease refuses it.

        Raises:
            NotFoundError: no such conversation for this user.
            ConflictError: `conversation_busy` (a live turn holds the lease, with
                `retry_after`), or `lease_lost` (`use` needs a lease no longer held).
        """
        batch = [unnumbered(conversation_id, m, i, t, now) for m, i, t in prepared]

        def attempt() -> list[Message] | None:
            reserved = append_batch(
                conn, user_id, conversation_id, batch, now=now,
                use=use, lease_id=lease_id, lease_expires_at=lease_expires_at, step=step,
            )  # fmt: skip
            return None if reserved is None else numbered(batch, *reserved)

        stored = attempt()
        if stored is None:
            if use in (LeaseUse.HOLD, LeaseUse.RELEASE):
                require_conversation(conn, user_id, conversation_id)
                raise ConflictError(
                    "this turn no longer holds the conversation: it was closed",
                    code="lease_lost",
                )
            self.take_over(conn, user_id, conversation_id, now=now)
            stored = attempt()
            if stored is None:
                raise ConflictError(
                    "another turn is running in this conversation",
                    code="conversation_busy",
                    retry_after=1,
                )
        return stored

    def move_head(
        self,
        conn: Connection,
        user_id: str,
        conversation_id: str,
        seq: int | None,
        *,
        now: datetime,
        use: LeaseUse = LeaseUse.NONE,
        lease_id: str | None = None,
        lease_expires_at: datetime | None = None,
    ) -> None:
        """Make message `seq` the head (None: before the first message), so that the next
        append continues from it; `use` is NONE or TAKE (the conversation must be free).

        Raises:
            NotFoundError: no such conversation for this user.
            ConflictError: `conversation_busy`, a live turn holds the conversation.
        """
        values: dict[str, Any] = {"head_seq": seq, "head_run_start": None, "head_run_parent": None}
        if seq is not None:
            run_start, run_parent = run_of(conn, user_id, conversation_id, seq)
            values.update(head_run_start=run_start, head_run_parent=run_parent)
        if use is LeaseUse.TAKE:
            values.update(
                lease_id=lease_id, lease_expires_at=lease_expires_at, stop_requested=False
            )
        elif use is not LeaseUse.NONE:
            raise ValueError(f"moving the head cannot {use.value} a lease")
        statement = (
            update(conversations)
            .where(_c.user_id == user_id, _c.id == conversation_id, _FREE)
            .values(updated_at=now, **values)
        )
        if not conn.execute(statement).rowcount:
            # Free it from a dead turn, or say it is busy (or not there).
            self.take_over(conn, user_id, conversation_id, now=now)
            if not conn.execute(statement).rowcount:
                raise ConflictError(
                    "another turn is running in this conversation",
                    code="conversation_busy",
                    retry_after=1,
                )

    def take_over(
        self, conn: Connection, user_id: str, conversation_id: str, *, now: datetime
    ) -> bool:
        """Free the conversation if the turn holding it is dead, closing that turn.

        Returns:
            True if it closed a turn, False if the conversation was free already.

        Raises:
            NotFoundError: no such conversation for this user.
            ConflictError: `conversation_busy`, a live turn holds it (`retry_after` is
                when its lease would run out if its replica stopped renewing it).
        """
        key = {"user": user_id, "conversation": conversation_id}
        # FOR UPDATE: of two requests that find the same dead turn, one closes it.
        row = conn.execute(_LEASE_FOR_UPDATE, key).first()
        if row is None:
            raise NotFoundError("conversation not found")
        lease_id, expires_at = row
        if lease_id is None:
            return False
        if expires_at > now:
            raise ConflictError(
                "another turn is running in this conversation",
                code="conversation_busy",
                retry_after=max(1, math.ceil((expires_at - now).total_seconds())),
            )
        self.close_turn(
            conn, user_id, conversation_id, lease_id, status=TurnStatus.INTERRUPTED, now=now
        )
        return True

    def close_turn(
        self,
        conn: Connection,
        user_id: str,
        conversation_id: str,
        turn_id: str,
        *,
        status: TurnStatus,
        now: datetime,
    ) -> TurnResult | None:
        """End a turn that will not end by itself, from what it recorded.

        Its recorded tool pairs stay; a call recorded without its result (a tool outside
        our database, whose process died) gets an `interrupted` result; an assistant
        message marked with `status` holds the text it had streamed since its last tool
        call; the lease goes; its idempotency key, if it had one, is completed with the
        result, so a retry answers with it instead of running the turn again; and its
        stream ends with `done`. Its token usage stays unknown (NULL, not zero): what its
        agent reported was held by the process that died. Returns the result, or None when
        there is no such running turn (then only the lease, if the turn held it, is freed).
        """
        key = {"user": user_id, "conversation": conversation_id, "turn": turn_id}
        turn = conn.execute(_RUNNING_TURN, key).first()
        if turn is None:
            # A lease without a running turn row (taken by a version before turns were
            # recorded): nothing to close but the lease itself.
            conn.execute(_RELEASE_ONLY, {**key, "lease": turn_id})
            return None
        user_seq, idempotency_key = turn
        # The turn's messages are the branch from the head (where it appended) back to
        # its user message: a regenerated reply's earlier versions are not among them.
        head = conn.execute(HEAD, key).one()
        path = read_path(
            conn,
            user_id,
            conversation_id,
            head.head_seq,
            run=(head.head_run_start, head.head_run_parent),
            after=user_seq - 1,
            limit=_TURN_MESSAGES,
        )
        recorded = [message_of(row) for row in reversed(path)]
        events = self.events(conn, user_id, conversation_id, turn_id, after=0)
        answered = {m.tool_call_id for m in recorded if m.role is Role.TOOL}
        closing: list[ChatMessage] = [
            ChatMessage.tool(
                tool_call_id=call.id, name=call.name, content=_json(INTERRUPTED_TOOL_RESULT)
            )
            for message in recorded
            for call in message.tool_calls
            if call.id not in answered
        ]
        # Stored events hold the text as streamed, JSON-escaped (an escaped NUL reads back
        # as a NUL): it is recorded as a live turn records what its agent says.
        closing.append(
            model_message(
                _unrecorded_text(events),
                max_chars=self.max_message_chars,
                metadata={"status": status.value},
            )
        )
        stored = self.append(
            conn,
            user_id,
            conversation_id,
            self.prepare(closing),
            now=now,
            use=LeaseUse.RELEASE,
            lease_id=turn_id,
        )
        conn.execute(_END_TURN, {**key, "status": status.value, "now": now})
        turn_messages = [*recorded, *stored]
        result = TurnResult(
            conversation_id=conversation_id,
            response=closing[-1].content,
            tool_calls=tool_call_records(turn_messages),
            message_ids=[m.id for m in turn_messages],
            turn_id=turn_id,
            status=status,
        )
        if idempotency_key is not None:
            self.complete_key(conn, user_id, idempotency_key, result)
        last = events[-1].id.rsplit(":", 1)[1] if events else "0"
        self.add_events(
            conn,
            user_id,
            conversation_id,
            turn_id,
            [
                *(
                    ("tool_result", {"id": m.tool_call_id, "result": INTERRUPTED_TOOL_RESULT})
                    for m in stored
                    if m.role is Role.TOOL
                ),
                ("done", result.to_record()),
            ],
            first_seq=int(last) + 1,
            now=now,
        )
        return result

    @staticmethod
    def complete_key(conn: Connection, user_id: str, key: str, result: TurnResult) -> None:
        conn.execute(
            update(idempotency_keys)
            .where(_k.user_id == user_id, _k.key == key)
            .values(
                conversation_id=result.conversation_id,
                status_code=200,
                response=result.to_record(),
            )
        )

    @staticmethod
    def add_events(
        conn: Connection,
        user_id: str,
        conversation_id: str,
        turn_id: str,
        named: Sequence[tuple[str, Any]],
        *,
        first_seq: int,
        now: datetime,
    ) -> list[StreamEvent]:
        """Store events numbered from `first_seq`; returns them as sent."""
        events = numbered_events(turn_id, named, first_seq)
        if events:
            conn.execute(
                _INSERT_EVENTS,
                [
                    {
                        "user_id": user_id,
                        "conversation_id": conversation_id,
                        "turn_id": turn_id,
                        "seq": first_seq + offset,
                        "name": event.name,
                        "data": json.dumps(event.data, ensure_ascii=False),
                        "created_at": now,
                    }
                    for offset, event in enumerate(events)
                ],
            )
        return events

    @staticmethod
    def events(
        conn: Connection,
        user_id: str,
        conversation_id: str,
        turn_id: str,
        *,
        after: int,
        limit: int = 100_000,
    ) -> list[StreamEvent]:
        """The turn's events numbered after `after`, in order."""
        params = {
            "user": user_id,
            "conversation": conversation_id,
            "turn": turn_id,
            "after": after,
            "limit": limit,
        }
        return [
            StreamEvent(event_id(turn_id, seq), name, json.loads(data))
            for seq, name, data in conn.execute(_EVENTS, params)
        ]

    @staticmethod
    def last_event(conn: Connection, user_id: str, conversation_id: str, turn_id: str) -> int:
        key = {"user": user_id, "conversation": conversation_id, "turn": turn_id}
        return conn.execute(_LAST_EVENT, key).scalar() or 0


def _unrecorded_text(events: Sequence[StreamEvent]) -> str:
    """What the turn streamed since its last recorded step: text no message holds yet.

    Text said before a tool call is stored with the call, so only the deltas after the
    last tool call are still unrecorded.
    """
    steps = ("tool_call", "tool_result")
    last_step = max(
        (index for index, event in enumerate(events) if event.name in steps), default=-1
    )
    return "".join(
        str(event.data.get("text", ""))
        for event in events[last_step + 1 :]
        if event.name == "delta"
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
