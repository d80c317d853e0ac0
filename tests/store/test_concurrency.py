"""One total order per conversation, under concurrent appends from tasks and processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from chatledger.domain import ChatMessage
from chatledger.store import SQLAlchemyStore
from tests.factories import message_seqs

ROOT = Path(__file__).resolve().parents[2]


async def test_200_concurrent_appends_get_seqs_1_to_200(store: SQLAlchemyStore, connector) -> None:
    conversation = await store.create_conversation("alice")
    results = await asyncio.gather(
        *(store.append("alice", conversation.id, [ChatMessage.user(f"m{n}")]) for n in range(200))
    )
    assert sorted(stored.seq for [stored] in results) == list(range(1, 201))
    assert await message_seqs(connector, "alice", conversation.id) == list(range(1, 201))
    history = await store.history("alice", conversation.id, limit=500)
    assert sorted(m.content for m in history) == sorted(f"m{n}" for n in range(200))
    # Each message is stored at the seq its append call was told.
    told = {stored.content: stored.seq for [stored] in results}
    assert {m.content: m.seq for m in history} == told


async def test_concurrent_batches_stay_contiguous(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await asyncio.gather(
        *(
            store.append(
                "alice", conversation.id, [ChatMessage.user(f"{n}.{part}") for part in range(3)]
            )
            for n in range(30)
        )
    )
    history = await store.history("alice", conversation.id, limit=100)
    for start in range(0, 90, 3):
        batch = [m.content for m in history[start : start + 3]]
        owner = batch[0].split(".")[0]
        assert batch == [f"{owner}.{part}" for part in range(3)]


@pytest.mark.slow
async def test_two_processes_appending_to_one_conversation(
    database_url: str, store: SQLAlchemyStore, connector
) -> None:
    conversation = await store.create_conversation("alice")
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.store.append_worker",
            database_url,
            "alice",
            conversation.id,
            label,
            "100",
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for label in ("p1", "p2")
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
        await worker.stdin.drain()
    for worker in workers:
        _, stderr = await asyncio.wait_for(worker.communicate(), timeout=120)
        assert worker.returncode == 0, stderr.decode()

    assert await message_seqs(connector, "alice", conversation.id) == list(range(1, 201))
    history = await store.history("alice", conversation.id, limit=500)
    expected = {f"{label}-{n}" for label in ("p1", "p2") for n in range(100)}
    assert sorted(m.content for m in history) == sorted(expected)
