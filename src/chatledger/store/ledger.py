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
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy import Connection, Integer, bindparam, func, insert, select, update

from chatledger.domain import (
    INTERRUPTED_TOOL_RESULT,
    MAX_JSON_DEPTH,
    ChatMessage,
    Message,
    Role,
    StreamEvent,
    ToolCall,
    TurnResult,
    TurnStatus,
    check_new_message,
    json_depth,
    tool_call_records,
)
from chatledger.errors import ConflictError, NotFoundError
from chatledger.storage import event_id, new_id
from chatledger.store.core import AnyRow
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
    "MESSAGE_COLUMNS",
    "LeaseUse",
    "Writer",
    "event_id",
    "message_of",
    "readable_metadata",
    "require_conversation",
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
)
_ROLES: Final = {role.value: role for role in Role}
_NO_METADATA: Final[Mapping[str, Any]] = MappingProxyType({})
# A turn's messages: its user message and everything after it. A turn makes a bounded
# number of tool calls, so this bound is only a guard.
_TURN_MESSAGES: Final = 10_000


class LeaseUse(Enum):
    """What an append does with the conversation's lease."""

    NONE = "none"  # an append outside any turn: refused while a turn runs
    TAKE = "take"  # a turn's first append: takes the free lease
    HOLD = "hold"  # an append of the turn holding the lease: keeps and renews it
    RELEASE = "release"  # the turn's last append: gives it up


def _reserve(condition: Any, **values: Any) -> Any:
    return (
        update(conversations)
        .where(_c.user_id == bindparam("user"), _c.id == bindparam("conversation"), condition)
        .values(next_seq=_c.next_seq + bindparam("count"), updated_at=bindparam("now"), **values)
        .returning(_c.next_seq)
    )


_FREE = _c.lease_id.is_(None)
_HELD = _c.lease_id == bindparam("lease")
# Built once, at import: built per call, each would be constructed and cache-keyed again
# on every append.
_RESERVE: Final = {
    LeaseUse.NONE: _reserve(_FREE),
    LeaseUse.TAKE: _reserve(
        _FREE,
        lease_id=bindparam("lease"),
        lease_expires_at=bindparam("expires"),
        # A stop request belongs to the turn it was made for.
        stop_requested=False,
    ),
    LeaseUse.HOLD: _reserve(_HELD, lease_expires_at=bindparam("expires")),
    LeaseUse.RELEASE: _reserve(_HELD, lease_id=None, lease_expires_at=None, stop_requested=False),
}
_INSERT_MESSAGES = insert(message_table)
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
_TURN_MESSAGES_QUERY = (
    select(*MESSAGE_COLUMNS)
    .where(
        _m.user_id == bindparam("user"),
        _m.conversation_id == bindparam("conversation"),
        _m.seq >= bindparam("from_seq"),
    )
    .order_by(_m.seq)
    .limit(bindparam("limit", type_=Integer))
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


def readable_metadata(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """Stored metadata as it can be returned. Versions before 0.2 stored metadata nested
    any depth, which no response can carry; such a value is replaced by a note (the row
    is left as it is, and a new value can be set)."""
    if json_depth(metadata) <= MAX_JSON_DEPTH:
        return metadata
    return {"unreadable": f"stored nested deeper than {MAX_JSON_DEPTH} levels; set it anew"}


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
    )


def require_conversation(conn: Connection, user_id: str, conversation_id: str) -> None:
    key = {"user": user_id, "conversation": conversation_id}
    if conn.execute(_CONVERSATION_EXISTS, key).first() is None:
        raise NotFoundError("conversation not found")


def _row(user_id: str, message: Message) -> dict[str, Any]:
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
    }


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
    ) -> list[Message]:
        """Reserve a contiguous range of seq and insert `prepared` there, all or none,
        with their entries in the search index.

        Concurrent appends serialize on the conversation row, so seq stays gap-free. An
        append that needs a free conversation and finds a dead turn's lease closes that
        turn first; a live lease refuses it.

        Raises:
            NotFoundError: no such conversation for this user.
            ConflictError: `conversation_busy` (a live turn holds the lease, with
                `retry_after`), or `lease_lost` (`use` needs a lease no longer held).
        """
        params = {
            "user": user_id,
            "conversation": conversation_id,
            "now": now,
            "count": len(prepared),
            "lease": lease_id,
            "expires": lease_expires_at,
        }
        next_seq = conn.execute(_RESERVE[use], params).scalar()
        if next_seq is None:
            if use in (LeaseUse.HOLD, LeaseUse.RELEASE):
                require_conversation(conn, user_id, conversation_id)
                raise ConflictError(
                    "this turn no longer holds the conversation: it was closed",
                    code="lease_lost",
                )
            self.take_over(conn, user_id, conversation_id, now=now)
            next_seq = conn.execute(_RESERVE[use], params).scalar()
            if next_seq is None:
                raise ConflictError(
                    "another turn is running in this conversation",
                    code="conversation_busy",
                    retry_after=1,
                )
        first_seq = next_seq - len(prepared)
        stored = [
            Message(
                conversation_id=conversation_id,
                seq=first_seq + offset,
                id=message_id,
                role=m.role,
                content=m.content,
                tool_calls=tuple(m.tool_calls),
                tool_call_id=m.tool_call_id,
                name=m.name,
                metadata=m.metadata,
                token_count=tokens,
                created_at=now,
            )
            for offset, (m, message_id, tokens) in enumerate(prepared)
        ]
        conn.execute(_INSERT_MESSAGES, [_row(user_id, m) for m in stored])
        index_messages(conn, user_id, stored)
        return stored

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
        stream ends with `done`. Returns the result, or None when there is no such
        running turn (then only the lease, if the turn held it, is freed).
        """
        key = {"user": user_id, "conversation": conversation_id, "turn": turn_id}
        turn = conn.execute(_RUNNING_TURN, key).first()
        if turn is None:
            # A lease without a running turn row (taken by a version before turns were
            # recorded): nothing to close but the lease itself.
            conn.execute(
                _RESERVE[LeaseUse.RELEASE],
                {**key, "lease": turn_id, "now": now, "count": 0, "expires": None},
            )
            return None
        user_seq, idempotency_key = turn
        recorded = [
            message_of(row)
            for row in conn.execute(
                _TURN_MESSAGES_QUERY, {**key, "from_seq": user_seq, "limit": _TURN_MESSAGES}
            )
        ]
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
        text = _unrecorded_text(events)[: self.max_message_chars]
        closing.append(ChatMessage.assistant(text, metadata={"status": status.value}))
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
            response=text,
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
        events = [
            StreamEvent(event_id(turn_id, first_seq + offset), name, data)
            for offset, (name, data) in enumerate(named)
        ]
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
