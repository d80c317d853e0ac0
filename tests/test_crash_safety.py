"""Crash-proof turns in the service: a retried key never runs twice, a dead turn is closed
and taken over, a running turn's stream can be followed from anywhere.

A process that dies mid-turn leaves exactly what the store holds: its turn's rows, a lease
nobody renews. These tests build that state with the store (as a SIGKILL would leave it)
and hand it to a service; tests/process/test_crashes.py does the same with real kills.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from chatledger.domain import ChatMessage, Role, StreamEvent, ToolCall, TurnStatus
from chatledger.errors import ConflictError, UnavailableError
from chatledger.service import ChatService, _request_hash
from chatledger.store import Connector, Lease, SQLAlchemyStore
from chatledger.testing import Block, CallTool, Fail, Say, ScriptedAgent, Signal
from tests.factories import assert_invariants, row_counts
from tests.process.servers import TcpProxy

DEAD = timedelta(seconds=-1)


@pytest.fixture
async def make_service(store: SQLAlchemyStore) -> AsyncIterator[Callable[..., ChatService]]:
    services: list[ChatService] = []

    def make(agent: ScriptedAgent, **options: Any) -> ChatService:
        options.setdefault("stop_poll_interval", 0.01)
        services.append(ChatService(store, agent, **options))
        return services[-1]

    yield make
    for service in services:
        await service.drain()


async def died_mid_turn(
    store: SQLAlchemyStore,
    message: str,
    *,
    key: str | None,
    conversation_id: str | None = None,
    said: str = "",
) -> tuple[str, Lease]:
    """What a server killed after recording one tool call leaves behind: the key claimed,
    the user message, the tool pair and its task, some streamed text, a lease nobody renews."""
    lease = Lease.new(DEAD)
    async with store.transaction() as tx:
        if key is not None:
            claimed = await tx.idempotency.claim(
                "alice", key, request_hash=_request_hash(conversation_id, message, None)
            )
            assert claimed is None
        if conversation_id is None:
            conversation_id = (await tx.create_conversation("alice", title=message)).id
        await tx.turns.start(
            "alice",
            conversation_id,
            ChatMessage.user(message),
            turn_id=lease.id,
            lease_expires_at=lease.expires_at,
            idempotency_key=key,
        )
    async with store.transaction() as tx:
        task = await tx.tasks.add("alice", title="milk")
        call = ToolCall("call_1", "add_task", '{"title": "milk"}')
        result = {"task_id": task.id, "status": "created", "title": "milk"}
        await tx.append(
            "alice",
            conversation_id,
            [
                ChatMessage.assistant(tool_calls=[call]),
                ChatMessage.tool(tool_call_id=call.id, name=call.name, content=json.dumps(result)),
            ],
            lease=lease,
        )
        await tx.turns.add_events(
            "alice",
            conversation_id,
            lease.id,
            [
                ("tool_call", {"id": call.id, "name": call.name, "arguments": {"title": "milk"}}),
                ("tool_result", {"id": call.id, "result": result}),
                *([("delta", {"text": said})] if said else []),
            ],
            first_seq=2,
        )
    return conversation_id, lease


async def users_messages(store: SQLAlchemyStore, conversation_id: str) -> list[str]:
    history = await store.history("alice", conversation_id, limit=1000)
    assert_invariants(history)
    return [m.content for m in history if m.role is Role.USER]


@pytest.mark.parametrize("same_conversation", [False, True])
async def test_a_retry_of_a_dead_turns_key_answers_with_its_record_and_runs_nothing(
    store: SQLAlchemyStore,
    connector: Connector,
    make_service: Callable[..., ChatService],
    same_conversation: bool,
) -> None:
    existing = (await store.create_conversation("alice")).id if same_conversation else None
    conversation_id, _ = await died_mid_turn(
        store, "add milk", key="k", conversation_id=existing, said="Added mi"
    )
    agent = ScriptedAgent([CallTool("add_task", {"title": "milk"}), Say("Added milk.")])
    service = make_service(agent)

    result = await service.turn("alice", existing, "add milk", idempotency_key="k")

    assert agent.runs == 0
    assert result.replayed and result.interrupted and result.status is TurnStatus.INTERRUPTED
    assert result.conversation_id == conversation_id
    assert result.response == "Added mi"
    assert [(c.name, c.result["status"]) for c in result.tool_calls] == [("add_task", "created")]
    assert result.to_dict()["interrupted"] is True
    counts = await row_counts(connector, "alice")
    assert (counts["conversations"], counts["tasks"]) == (1, 1)
    assert await users_messages(store, conversation_id) == ["add milk"]
    # And again, the same answer: the key now holds it.
    again = await service.turn("alice", existing, "add milk", idempotency_key="k")
    assert again.to_dict() == result.to_dict() and agent.runs == 0
    assert await row_counts(connector, "alice") == counts


async def test_a_retry_of_a_dead_turns_key_streams_its_record(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    conversation_id, lease = await died_mid_turn(store, "add milk", key="k")
    events = [e async for e in make_service(ScriptedAgent([])).stream(
        "alice", None, "add milk", idempotency_key="k"
    )]  # fmt: skip
    assert [e.name for e in events] == ["conversation", "tool_call", "tool_result", "done"]
    assert [e.id for e in events] == [f"{lease.id}:{n}" for n in range(1, 5)]
    done = events[-1].data
    assert (done["interrupted"], done["replayed"], done["conversation_id"]) == (
        True,
        True,
        conversation_id,
    )


async def test_a_retry_while_the_turn_runs_is_409_with_retry_after(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([Signal(started), Block(release), Say("ok")])
    service = make_service(agent, lease_ttl=5)
    first = asyncio.create_task(service.turn("alice", None, "hi", idempotency_key="k"))
    await started.wait()
    with pytest.raises(ConflictError) as in_flight:
        await service.turn("alice", None, "hi", idempotency_key="k")
    assert in_flight.value.code == "idempotency_in_flight"
    assert 1 <= (in_flight.value.retry_after or 0) <= 5
    release.set()
    assert (await first).response == "ok"


async def test_the_next_turn_takes_over_a_dead_turns_conversation(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    conversation_id, lease = await died_mid_turn(store, "add milk", key="k", said="Adding")
    agent = ScriptedAgent([Say("Hello again.")])
    result = await make_service(agent).turn("alice", conversation_id, "are you there?")
    assert result.response == "Hello again."
    history = await store.history("alice", conversation_id, limit=100)
    assert_invariants(history)
    assert [(m.role, m.metadata.get("status")) for m in history] == [
        (Role.USER, None),
        (Role.ASSISTANT, None),
        (Role.TOOL, None),
        (Role.ASSISTANT, "interrupted"),
        (Role.USER, None),
        (Role.ASSISTANT, None),
    ]
    assert history[3].content == "Adding"
    # The dead turn's key was answered when it was closed: its retry replays that.
    replay = await make_service(ScriptedAgent([])).turn(
        "alice", None, "add milk", idempotency_key="k"
    )
    assert replay.interrupted and replay.turn_id == lease.id


async def test_stopping_a_dead_turn_reports_that_nothing_runs(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    conversation_id, _ = await died_mid_turn(store, "add milk", key=None)
    service = make_service(ScriptedAgent([Say("free")]))
    assert await service.stop("alice", conversation_id) is False
    assert (await service.turn("alice", conversation_id, "hi")).response == "free"


async def test_an_unexpected_failure_is_interrupted_and_its_key_never_runs_again(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent(
        [CallTool("add_task", {"title": "milk"}), Say("Added", chunks=2), Fail(RuntimeError("bug"))]
    )
    service = make_service(agent)
    events: list[StreamEvent] = []
    with pytest.raises(RuntimeError):
        async for event in service.stream("alice", None, "add milk", idempotency_key="k"):
            events.append(event)
    assert events[-1].name == "error"
    assert events[-1].data["code"] == "internal"
    retry = await service.turn("alice", None, "add milk", idempotency_key="k")
    assert agent.runs == 1
    assert retry.interrupted and retry.response == "Added"
    assert [c.name for c in retry.tool_calls] == ["add_task"]
    history = await store.history("alice", retry.conversation_id)
    assert history[-1].metadata == {"status": "interrupted", "code": "internal"}
    assert len(await store.tasks.list("alice")) == 1


async def lose_lease(store: SQLAlchemyStore, connector: Connector, conversation_id: str) -> None:
    """Expire the running turn's lease and close the turn, as another replica would."""

    def expire(conn: Any) -> None:
        conn.execute(
            text("UPDATE conversations SET lease_expires_at = '2000-01-01' WHERE id = :c"),
            {"c": conversation_id},
        )

    # The turn renews its lease every 40 ms, and a renewal between the two statements
    # revives it: as another replica would, try again until it finds the lease expired.
    for _ in range(50):
        await connector.write(expire)
        if await store.turns.take_over("alice", conversation_id) is False:
            return
    pytest.fail("the lease was never found expired")


async def test_a_turn_that_loses_its_lease_stops_and_records_nothing_more(
    store: SQLAlchemyStore, connector: Connector, make_service: Callable[..., ChatService]
) -> None:
    # Its replica could not renew the lease (say the database was away from it) and
    # another closed the turn: it must not write after that, or the record would fork.
    reached = asyncio.Event()
    agent = ScriptedAgent([Say("Working"), Signal(reached), Block(asyncio.Event())])
    service = make_service(agent, lease_ttl=0.2)
    conversation = await store.create_conversation("alice")
    running = asyncio.create_task(service.turn("alice", conversation.id, "go"))
    await reached.wait()
    await lose_lease(store, connector, conversation.id)
    with pytest.raises(UnavailableError) as lost:
        await running
    assert lost.value.code == "turn_interrupted"
    history = await store.history("alice", conversation.id)
    assert_invariants(history)
    assert [m.metadata.get("status") for m in history] == [None, "interrupted"]


async def test_a_turn_that_loses_its_lease_leaves_no_write_behind(
    store: SQLAlchemyStore, connector: Connector, make_service: Callable[..., ChatService]
) -> None:
    # Text streamed just before the lease is found lost waits to be written in a batch:
    # that write must not outlive the turn, or it would run against a pool closed under
    # it (a connection the garbage collector finds checked out, as CI once did).
    reached, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([Signal(reached), Block(release), Say("late"), Block(asyncio.Event())])
    service = make_service(agent, lease_ttl=0.2)
    conversation = await store.create_conversation("alice")
    running = asyncio.create_task(service.turn("alice", conversation.id, "go"))
    await reached.wait()
    await lose_lease(store, connector, conversation.id)
    release.set()
    with pytest.raises(UnavailableError):
        await running
    await service.drain()
    assert {task for task in asyncio.all_tasks() if task is not asyncio.current_task()} == set()


async def test_a_running_turns_stream_can_be_followed_and_resumed(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    halfway, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent(
        [
            CallTool("add_task", {"title": "milk"}),
            Say("Added milk, ", chunks=2),
            Signal(halfway),
            Block(release),
            Say("and that is all."),
        ]
    )
    service = make_service(agent)
    conversation = await store.create_conversation("alice")
    live: list[StreamEvent] = []

    async def listen() -> None:
        async for event in service.stream("alice", conversation.id, "add milk"):
            live.append(event)

    listening = asyncio.create_task(listen())
    await halfway.wait()
    following = await service.attach("alice", conversation.id)
    assert following is not None
    early = [await anext(following) for _ in range(3)]
    # Another listener picks up after the second event, as a reconnecting browser would.
    resumed = await service.attach("alice", conversation.id, last_event_id=early[1].id)
    assert resumed is not None
    release.set()
    await listening
    followed = early + [event async for event in following]
    picked_up = [event async for event in resumed]
    assert followed == live
    assert picked_up == live[2:]
    assert live[-1].name == "done"
    assert "".join(e.data["text"] for e in live if e.name == "delta") == (
        "Added milk, and that is all."
    )
    # Over: nothing to attach to.
    assert await service.attach("alice", conversation.id) is None


async def test_a_stale_or_foreign_last_event_id_starts_from_the_beginning(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    reached, release = asyncio.Event(), asyncio.Event()
    service = make_service(ScriptedAgent([Signal(reached), Block(release), Say("ok")]))
    conversation = await store.create_conversation("alice")
    running = asyncio.create_task(service.turn("alice", conversation.id, "go"))
    await reached.wait()
    for stale in ("someone-else:7", "garbage", ":", "x" * 200):
        following = await service.attach("alice", conversation.id, last_event_id=stale)
        assert following is not None
        assert (await anext(following)).name == "conversation"
        await following.aclose()
    release.set()
    await running


async def test_attaching_to_a_dead_turn_closes_it_and_finds_nothing(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    conversation_id, _ = await died_mid_turn(store, "add milk", key=None)
    assert await make_service(ScriptedAgent([])).attach("alice", conversation_id) is None
    assert (await store.get_conversation("alice", conversation_id)).running_turn_id is None
    assert await store.turns.running("alice", conversation_id) is None


async def test_a_follower_sees_a_turn_whose_replica_dies_end_as_interrupted(
    store: SQLAlchemyStore, connector: Connector, make_service: Callable[..., ChatService]
) -> None:
    # Alive when attached; then its replica stops renewing (here: its lease is run out by
    # hand), and the follower itself closes it.
    lease = Lease.new(timedelta(minutes=1))
    conversation = await store.create_conversation("alice")
    await store.turns.start(
        "alice",
        conversation.id,
        ChatMessage.user("go"),
        turn_id=lease.id,
        lease_expires_at=lease.expires_at,
    )
    await store.turns.add_events(
        "alice", conversation.id, lease.id, [("delta", {"text": "half"})], first_seq=2
    )
    service = make_service(ScriptedAgent([]), lease_ttl=0.2)
    following = await service.attach("alice", conversation.id)
    assert following is not None
    assert [(await anext(following)).name for _ in range(2)] == ["conversation", "delta"]

    def expire(conn: Any) -> None:
        conn.execute(
            text("UPDATE conversations SET lease_expires_at = '2000-01-01' WHERE id = :c"),
            {"c": conversation.id},
        )

    await connector.write(expire)
    [done] = [event async for event in following]
    assert done.name == "done" and done.data["interrupted"] is True
    assert done.data["response"] == "half"


async def test_a_closing_write_that_fails_is_retried_until_the_database_is_back(
    postgres_url: str,
) -> None:
    # PostgreSQL reached through a proxy this test cuts while the turn writes its end.
    upstream = make_url(postgres_url)
    proxy = TcpProxy(upstream.host or "127.0.0.1", upstream.port or 5432)
    await proxy.start()
    store = SQLAlchemyStore.from_url(
        upstream.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    )
    user = f"retry-{uuid.uuid4()}"
    try:
        thought, go_on = asyncio.Event(), asyncio.Event()
        agent = ScriptedAgent(
            [CallTool("add_task", {"title": "milk"}), Signal(thought), Block(go_on), Say("Done.")]
        )
        service = ChatService(store, agent, stop_poll_interval=0.01)
        running = asyncio.create_task(service.turn(user, None, "add milk", idempotency_key="k"))
        await thought.wait()
        await proxy.stop()
        go_on.set()
        # The turn's end fails for as long as the database is away (the first retry waits
        # 0.1 s, the next 0.2 s); it must still be trying when it comes back.
        await asyncio.sleep(0.5)
        await proxy.start()
        result = await running
        await service.drain()
    finally:
        await store.close()
        await proxy.stop()
    assert (result.response, result.status) == ("Done.", TurnStatus.COMPLETED)
    check = SQLAlchemyStore.from_url(postgres_url)
    try:
        history = await check.history(user, result.conversation_id)
        assert_invariants(history)
        assert history[-1].content == "Done." and history[-1].metadata == {}
    finally:
        await check.close()
