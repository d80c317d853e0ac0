"""A turn's stream, read back: followed while it runs (from any replica, from any event
on), or told again from a finished turn's stored result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Final

from chatledger.domain import StreamEvent, TurnResult
from chatledger.storage import Store, event_id, utcnow

__all__ = ["attach", "told"]

# An attached stream checks for new events this often.
_POLL_SECONDS: Final = 0.1
_TERMINAL: Final = frozenset({"done", "error"})


async def attach(
    store: Store,
    user_id: str,
    conversation_id: str,
    last_event_id: str | None,
    *,
    lease_ttl: timedelta,
) -> AsyncIterator[StreamEvent] | None:
    """The events of the turn running in a conversation, from its first or after
    `last_event_id`; None if no turn is running (one whose lease ran out is closed here).

    Raises:
        NotFoundError: no such conversation for this user.
    """
    running = await store.turns.running(user_id, conversation_id)
    if running is None:
        return None
    if not running.alive(utcnow()):
        await store.turns.take_over(user_id, conversation_id)
        return None
    after = 0
    if last_event_id is not None:
        turn_id, _, number = last_event_id.rpartition(":")
        if turn_id == running.turn_id and number.isdecimal():
            after = int(number)
    return _follow(store, user_id, conversation_id, running.turn_id, after, lease_ttl)


async def _follow(
    store: Store,
    user_id: str,
    conversation_id: str,
    turn_id: str,
    after: int,
    lease_ttl: timedelta,
) -> AsyncIterator[StreamEvent]:
    # The turn's end and its last event are written together, so reading events until
    # `done` or `error` is enough; the lease is looked at now and then only to notice
    # a turn whose replica died (closing it writes its `done`).
    checks_every = max(1, round(lease_ttl.total_seconds() / 2 / _POLL_SECONDS))
    quiet = 0
    while True:
        events = await store.turns.events(user_id, conversation_id, turn_id, after=after)
        for event in events:
            yield event
            if event.name in _TERMINAL:
                return
        if events:
            after = int(events[-1].id.rpartition(":")[2])
            quiet = 0
            continue
        quiet += 1
        if quiet % checks_every == 0:
            running = await store.turns.running(user_id, conversation_id)
            if running is None or running.turn_id != turn_id:
                quiet = -1  # ended: one more read picks up its last events
            elif not running.alive(utcnow()):
                await store.turns.take_over(user_id, conversation_id)
                continue
        if quiet == -1:
            for event in await store.turns.events(user_id, conversation_id, turn_id, after=after):
                yield event
            return
        await asyncio.sleep(_POLL_SECONDS)


def told(result: TurnResult) -> list[StreamEvent]:
    """A stored result told as the stream that first produced it."""
    named: list[tuple[str, dict[str, Any]]] = [
        (
            "conversation",
            {
                "conversation_id": result.conversation_id,
                "turn_id": result.turn_id,
                "user_message_id": result.message_ids[0] if result.message_ids else None,
            },
        )
    ]
    for call in result.tool_calls:
        named.append(("tool_call", {"id": call.id, "name": call.name, "arguments": call.arguments}))
        named.append(("tool_result", {"id": call.id, "result": call.result}))
    if result.response:
        named.append(("delta", {"text": result.response}))
    named.append(("done", {**result.to_record(), "replayed": True}))
    turn_id = result.turn_id or "replay"
    return [
        StreamEvent(event_id(turn_id, number), name, data)
        for number, (name, data) in enumerate(named, start=1)
    ]
