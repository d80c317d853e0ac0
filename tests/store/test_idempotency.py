"""Idempotency keys: claim once, replay the stored response, never take over a key in flight."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from chatledger.errors import ValidationError
from chatledger.store import SQLAlchemyStore


async def test_the_first_claim_owns_the_key_and_later_ones_see_it_in_flight(
    store: SQLAlchemyStore,
) -> None:
    assert await store.idempotency.claim("alice", "k1", request_hash="h") is None
    record = await store.idempotency.claim("alice", "k1", request_hash="h")
    assert record is not None
    assert (record.request_hash, record.status_code, record.response) == ("h", None, None)


async def test_a_completed_key_replays_status_and_body(store: SQLAlchemyStore) -> None:
    await store.idempotency.claim("alice", "k1", request_hash="h")
    body = {"conversation_id": "c1", "response": "Added.", "tool_calls": []}
    await store.idempotency.complete(
        "alice", "k1", conversation_id="c1", status_code=200, response=body
    )
    record = await store.idempotency.claim("alice", "k1", request_hash="h")
    assert record is not None
    assert (record.status_code, record.response, record.conversation_id) == (200, body, "c1")


async def test_keys_are_scoped_per_user(store: SQLAlchemyStore) -> None:
    await store.idempotency.claim("alice", "shared", request_hash="a")
    await store.idempotency.complete(
        "alice", "shared", conversation_id=None, status_code=200, response={"secret": "alice"}
    )
    assert await store.idempotency.claim("bob", "shared", request_hash="b") is None
    await store.idempotency.complete(
        "bob", "shared", conversation_id=None, status_code=201, response={"mine": "bob"}
    )
    alices = await store.idempotency.claim("alice", "shared", request_hash="a")
    assert alices is not None and alices.response == {"secret": "alice"}


async def test_concurrent_claims_have_exactly_one_winner(store: SQLAlchemyStore) -> None:
    results = await asyncio.gather(
        *(store.idempotency.claim("alice", "race", request_hash="h") for _ in range(20))
    )
    assert sum(result is None for result in results) == 1


async def test_a_key_in_flight_is_never_taken_over_however_old(store: SQLAlchemyStore) -> None:
    # What became of its request is for its turn to tell: reclaiming the key after a
    # while is what let a retry after a crash run the turn a second time.
    await store.idempotency.claim("alice", "k", request_hash="old")
    record = await store.idempotency.claim(
        "alice", "k", request_hash="new", expire_after=timedelta(0)
    )
    assert record is not None and record.request_hash == "old" and record.status_code is None


async def test_a_finished_key_is_claimed_anew_only_once_expired(store: SQLAlchemyStore) -> None:
    await store.idempotency.claim("alice", "k", request_hash="h")
    await store.idempotency.complete(
        "alice", "k", conversation_id=None, status_code=200, response={}
    )
    kept = await store.idempotency.claim("alice", "k", request_hash="h2")
    assert kept is not None and kept.status_code == 200
    assert (
        await store.idempotency.claim("alice", "k", request_hash="h2", expire_after=timedelta(0))
        is None
    )


async def test_purge_deletes_old_keys_of_every_user(store: SQLAlchemyStore) -> None:
    for user in ("alice", "bob"):
        await store.idempotency.claim(user, "k", request_hash="h")
    assert await store.idempotency.purge(older_than=timedelta(hours=1)) == 0
    assert await store.idempotency.purge(older_than=timedelta(0)) == 2


@pytest.mark.parametrize("key", ["", "k" * 256, "a\x00b"])
async def test_invalid_keys_are_refused(store: SQLAlchemyStore, key: str) -> None:
    with pytest.raises(ValidationError):
        await store.idempotency.claim("alice", key, request_hash="h")
