"""The server's sweep of dead turns: it keeps going whatever one turn does to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from chatledger.store import Connector, SQLAlchemyStore
from chatledger.testing import ScriptedAgent
from tests.factories import start_turn, turns_refuse_updates


async def _dead_turn(store: SQLAlchemyStore, user: str) -> str:
    conversation = await store.create_conversation(user)
    await start_turn(store, conversation.id, user=user, ttl=-timedelta(minutes=1))
    return conversation.id


async def _closed_within(store: SQLAlchemyStore, user: str, conversation_id: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if await store.turns.running(user, conversation_id) is None:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_turn_that_cannot_be_closed_does_not_stop_the_sweep(
    make_server: Callable[..., Any], store: SQLAlchemyStore, connector: Connector
) -> None:
    # Sweeps every 0.1 s. The refused turn fails every one of them; the others, and
    # those that die later, are still closed.
    async with make_server(ScriptedAgent([]), lease_seconds=0.2):
        async with turns_refuse_updates(connector, "mallory"):
            refused = await _dead_turn(store, "mallory")
            first = await _dead_turn(store, "alice")
            assert await _closed_within(store, "alice", first)
            await asyncio.sleep(0.3)  # sweeps that failed on mallory's turn
            later = await _dead_turn(store, "bob")
            assert await _closed_within(store, "bob", later)
            assert await store.turns.running("mallory", refused) is not None
        assert await _closed_within(store, "mallory", refused)
