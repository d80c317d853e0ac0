"""The stateless turn (ChatService) on both databases, with a scripted agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from chatledger.domain import ChatMessage, Role, ToolCall, TurnStatus, tool_call_records
from chatledger.errors import (
    AgentTimeoutError,
    ConflictError,
    ModelError,
    NotFoundError,
    TooLargeError,
    ValidationError,
)
from chatledger.service import ChatService
from chatledger.store import SQLAlchemyStore
from chatledger.testing import Block, CallTool, Fail, Say, ScriptedAgent, Signal
from chatledger.tools.base import ToolSpec
from tests.factories import assert_invariants, row_counts, snapshot


async def full_history(store: SQLAlchemyStore, user: str, conversation_id: str):
    history = await store.history(user, conversation_id, limit=100_000)
    assert_invariants(history)
    return history


@pytest.fixture
async def make_service(store: SQLAlchemyStore) -> AsyncIterator[Callable[..., ChatService]]:
    """ChatService(store, agent, **options), drained before the store closes."""
    services: list[ChatService] = []

    def make(agent: ScriptedAgent, **options: Any) -> ChatService:
        services.append(ChatService(store, agent, **options))
        return services[-1]

    yield make
    for service in services:
        await service.drain()


@pytest.fixture
def add_milk() -> ScriptedAgent:
    return ScriptedAgent([CallTool("add_task", {"title": "buy milk"}), Say("Added buy milk.")])


async def test_a_turn_records_every_step_in_order(
    store: SQLAlchemyStore, add_milk: ScriptedAgent, make_service: Callable[..., ChatService]
) -> None:
    service = make_service(add_milk)
    result = await service.turn("alice", None, "add buy milk")

    assert result.response == "Added buy milk."
    [call] = result.tool_calls
    assert (call.name, call.arguments) == ("add_task", {"title": "buy milk"})
    assert call.result == {"task_id": 1, "status": "created", "title": "buy milk"}
    assert result.to_dict() == {
        "conversation_id": result.conversation_id,
        "response": "Added buy milk.",
        "tool_calls": [call.to_dict()],
    }

    history = await full_history(store, "alice", result.conversation_id)
    assert [(m.role, m.content) for m in history] == [
        (Role.USER, "add buy milk"),
        (Role.ASSISTANT, ""),
        (Role.TOOL, json.dumps(call.result)),
        (Role.ASSISTANT, "Added buy milk."),
    ]
    assert history[1].tool_calls[0].id == history[2].tool_call_id == call.id
    assert result.message_ids == [m.id for m in history]
    assert [t.title for t in await store.tasks.list("alice")] == ["buy milk"]
    conversation = await store.get_conversation("alice", result.conversation_id)
    assert conversation.title == "add buy milk"


async def test_the_agent_sees_the_stored_history_and_the_new_message(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([Say("ok")])
    service = make_service(agent, system_prompt="be brief")
    first = await service.turn("alice", None, "one")
    await service.turn("alice", first.conversation_id, "two")
    seen = agent.inputs[-1]
    assert [(m.role, m.content) for m in seen] == [
        (Role.SYSTEM, "be brief"),
        (Role.USER, "one"),
        (Role.ASSISTANT, "ok"),
        (Role.USER, "two"),
    ]


async def test_a_new_service_on_a_reopened_store_continues_the_conversation(
    database_url: str, add_milk: ScriptedAgent
) -> None:
    first_store = SQLAlchemyStore.from_url(database_url)
    first = ChatService(first_store, add_milk)
    result = await first.turn("alice", None, "add buy milk")
    await first.drain()
    await first_store.close()

    second_store = SQLAlchemyStore.from_url(database_url)
    try:
        agent = ScriptedAgent([CallTool("complete_task", {"task_id": 1}), Say("Done.")])
        second = ChatService(second_store, agent)
        await second.turn("alice", result.conversation_id, "mark it done")
        await second.drain()
        assert [m.content for m in agent.inputs[0] if m.role is Role.USER] == [
            "add buy milk",
            "mark it done",
        ]
        [task] = await second_store.tasks.list("alice")
        assert task.completed
        await full_history(second_store, "alice", result.conversation_id)
    finally:
        await second_store.close()


async def test_someone_elses_or_a_missing_conversation_is_not_found_and_nothing_is_stored(
    store: SQLAlchemyStore,
    connector,
    add_milk: ScriptedAgent,
    make_service: Callable[..., ChatService],
) -> None:
    service = make_service(add_milk)
    bobs = await service.turn("bob", None, "bob's secret")
    before = await snapshot(connector, "bob")
    for conversation_id in (bobs.conversation_id, "does-not-exist"):
        with pytest.raises(NotFoundError):
            await service.turn("alice", conversation_id, "add buy milk")
    assert await snapshot(connector, "bob") == before
    assert set((await row_counts(connector, "alice")).values()) == {0}
    assert add_milk.runs == 1


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("", ValidationError),
        ("   \n", ValidationError),
        ("a\x00b", ValidationError),
        ("\ud800", ValidationError),
        ("x" * 101, TooLargeError),
    ],
)
async def test_bad_messages_are_refused_before_anything_is_stored(
    store: SQLAlchemyStore,
    connector,
    add_milk: ScriptedAgent,
    message: str,
    error: type,
    make_service: Callable[..., ChatService],
) -> None:
    service = make_service(add_milk, max_message_chars=100)
    with pytest.raises(error) as raised:
        await service.turn("alice", None, message)
    assert raised.value.field == "message"
    assert set((await row_counts(connector, "alice")).values()) == {0}
    assert add_milk.runs == 0


async def test_a_retry_with_the_same_key_replays_without_running_the_agent(
    store: SQLAlchemyStore,
    connector,
    add_milk: ScriptedAgent,
    make_service: Callable[..., ChatService],
) -> None:
    service = make_service(add_milk)
    first = await service.turn("alice", None, "add buy milk", idempotency_key="k1")
    counts = await row_counts(connector, "alice")
    again = await service.turn("alice", None, "add buy milk", idempotency_key="k1")
    assert again.replayed and not first.replayed
    assert again.to_dict() == first.to_dict()
    assert add_milk.runs == 1
    assert await row_counts(connector, "alice") == counts


async def test_the_same_key_with_a_different_message_is_a_mismatch(
    store: SQLAlchemyStore,
    connector,
    add_milk: ScriptedAgent,
    make_service: Callable[..., ChatService],
) -> None:
    service = make_service(add_milk)
    await service.turn("alice", None, "add buy milk", idempotency_key="k1")
    counts = await row_counts(connector, "alice")
    with pytest.raises(ConflictError) as raised:
        await service.turn("alice", None, "add eggs", idempotency_key="k1")
    assert raised.value.code == "idempotency_mismatch"
    assert await row_counts(connector, "alice") == counts


async def test_twenty_concurrent_requests_with_one_key_run_the_agent_once(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent(
        [Signal(started), Block(release), CallTool("add_task", {"title": "milk"}), Say("ok")]
    )
    service = make_service(agent)
    first = asyncio.create_task(service.turn("alice", None, "add milk", idempotency_key="k"))
    await started.wait()
    others = await asyncio.gather(
        *(service.turn("alice", None, "add milk", idempotency_key="k") for _ in range(19)),
        return_exceptions=True,
    )
    assert all(isinstance(o, ConflictError) and o.code == "idempotency_in_flight" for o in others)
    assert all(isinstance(o, ConflictError) and o.retry_after for o in others)
    release.set()
    result = await first
    replays = await asyncio.gather(
        *(service.turn("alice", None, "add milk", idempotency_key="k") for _ in range(5))
    )
    assert {r.conversation_id for r in replays} == {result.conversation_id}
    assert agent.runs == 1
    history = await full_history(store, "alice", result.conversation_id)
    assert [m.role for m in history].count(Role.USER) == 1
    assert len(await store.tasks.list("alice")) == 1


async def test_a_second_turn_on_a_busy_conversation_is_refused_before_storing_anything(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([Say("first"), Signal(started), Block(release)])
    service = make_service(agent)
    conversation = await store.create_conversation("alice")
    running = asyncio.create_task(service.turn("alice", conversation.id, "one"))
    await started.wait()
    with pytest.raises(ConflictError) as busy:
        await service.turn("alice", conversation.id, "two", idempotency_key="retry-me")
    assert busy.value.code == "conversation_busy" and busy.value.retry_after
    release.set()
    await running
    # The refused request stored nothing, and its key is free for the retry.
    history = await full_history(store, "alice", conversation.id)
    assert [m.content for m in history if m.role is Role.USER] == ["one"]
    await service.turn("alice", conversation.id, "two", idempotency_key="retry-me")


async def test_an_agent_that_runs_too_long_times_out_and_the_turn_is_closed(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    never = asyncio.Event()
    agent = ScriptedAgent(
        [CallTool("add_task", {"title": "milk"}), Say("half", chunks=2), Block(never)]
    )
    service = make_service(agent, agent_timeout=0.2)
    with pytest.raises(AgentTimeoutError) as raised:
        await service.turn("alice", None, "add milk", idempotency_key="k")
    conversation_id = raised.value.conversation_id
    assert conversation_id is not None
    history = await full_history(store, "alice", conversation_id)
    assert history[-1].metadata == {"status": "failed", "code": "agent_timeout"}
    assert history[-1].content == "half"
    assert len(await store.tasks.list("alice")) == 1
    # The stored failure is replayed for the same key, and the conversation is free again.
    with pytest.raises(AgentTimeoutError):
        await service.turn("alice", None, "add milk", idempotency_key="k")
    assert agent.runs == 1
    agent_after = make_service(ScriptedAgent([Say("back")]))
    assert (await agent_after.turn("alice", conversation_id, "hello?")).response == "back"


async def test_a_model_error_carries_the_conversation_id(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([Fail(ModelError("the model endpoint answered 500"))])
    with pytest.raises(ModelError) as raised:
        await make_service(agent).turn("alice", None, "hi")
    history = await full_history(store, "alice", raised.value.conversation_id)
    assert history[-1].metadata == {"status": "failed", "code": "model_error"}


async def test_a_turn_cancelled_after_a_tool_ran_keeps_the_tool_step(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    tool_ran, never = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([CallTool("add_task", {"title": "milk"}), Signal(tool_ran), Block(never)])
    service = make_service(agent)
    conversation = await store.create_conversation("alice")
    turn = asyncio.create_task(service.turn("alice", conversation.id, "add milk"))
    await tool_ran.wait()
    for running in list(service._running):
        running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn
    history = await full_history(store, "alice", conversation.id)
    assert [m.role for m in history] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    assert history[-1].metadata == {"status": "interrupted", "code": "cancelled"}
    assert len(await store.tasks.list("alice")) == 1


async def test_the_model_cannot_act_for_another_user(
    store: SQLAlchemyStore, connector, make_service: Callable[..., ChatService]
) -> None:
    bobs = await store.tasks.add("bob", title="bob's task")
    before = await snapshot(connector, "bob")
    agent = ScriptedAgent(
        [
            CallTool("delete_task", {"task_id": bobs.id}),
            CallTool("complete_task", {"task_id": bobs.id, "user_id": "bob"}),
            CallTool("add_task", {"title": "planted", "user_id": "bob"}),
            Say("done"),
        ]
    )
    result = await make_service(agent).turn("alice", None, "delete task 1")
    assert [c.result["code"] for c in result.tool_calls] == [
        "not_found",
        "invalid_arguments",
        "invalid_arguments",
    ]
    assert await snapshot(connector, "bob") == before
    assert await store.tasks.list("alice") == []


async def test_tool_calls_beyond_the_limit_get_an_error_result(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([CallTool("list_tasks")] * 4 + [Say("stopping")])
    result = await make_service(agent, max_tool_calls=2).turn("alice", None, "loop")
    assert [c.result.get("code") for c in result.tool_calls] == [
        None,
        None,
        "tool_limit",
        "tool_limit",
    ]
    await full_history(store, "alice", result.conversation_id)


async def test_text_before_a_tool_call_is_stored_with_the_call(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([Say("Let me look."), CallTool("list_tasks"), Say("Nothing yet.")])
    result = await make_service(agent).turn("alice", None, "what's pending?")
    history = await full_history(store, "alice", result.conversation_id)
    assert (history[1].content, history[1].tool_calls[0].name) == ("Let me look.", "list_tasks")
    assert result.response == "Nothing yet."


async def test_the_stream_reports_each_step_as_it_happens(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([CallTool("add_task", {"title": "milk"}), Say("Added.", chunks=3)])
    events = [e async for e in make_service(agent).stream("alice", None, "add milk")]
    names = [e.name for e in events]
    assert names[:3] == ["conversation", "tool_call", "tool_result"]
    assert set(names[3:-1]) == {"delta"} and names[-1] == "done"
    assert "".join(e.data["text"] for e in events if e.name == "delta") == "Added."
    turn_id = events[0].data["turn_id"]
    assert [e.id for e in events] == [f"{turn_id}:{n}" for n in range(1, len(events) + 1)]
    assert events[-1].data["conversation_id"] == events[0].data["conversation_id"]
    assert events[-1].data["response"] == "Added."


async def test_a_consumer_that_goes_away_does_not_stop_the_turn(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    release = asyncio.Event()
    agent = ScriptedAgent([Block(release), CallTool("add_task", {"title": "milk"}), Say("Added.")])
    service = make_service(agent)
    stream: AsyncIterator = service.stream("alice", None, "add milk")
    started = await anext(stream)
    assert started.name == "conversation"
    await stream.aclose()
    release.set()
    await service.drain()
    history = await full_history(store, "alice", started.data["conversation_id"])
    assert history[-1].content == "Added."
    assert len(await store.tasks.list("alice")) == 1


async def test_a_stop_from_another_replica_ends_the_turn_as_stopped(
    database_url: str, store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    reached, never = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent(
        [
            CallTool("add_task", {"title": "milk"}),
            Say("Adding milk. Now I will think for a long", chunks=4),
            Signal(reached),
            Block(never),
        ]
    )
    service = make_service(agent, stop_poll_interval=0.01)
    conversation = await store.create_conversation("alice")
    turn = asyncio.create_task(
        service.turn("alice", conversation.id, "add milk", idempotency_key="k")
    )
    await reached.wait()

    other_store = SQLAlchemyStore.from_url(database_url)
    try:
        other_replica = ChatService(other_store, ScriptedAgent([Say("unused")]))
        assert await other_replica.stop("alice", conversation.id) is True
    finally:
        await other_store.close()

    result = await turn
    assert result.stopped
    assert result.response == "Adding milk. Now I will think for a long"
    assert result.to_dict()["stopped"] is True
    history = await full_history(store, "alice", conversation.id)
    assert history[-1].metadata == {"status": "stopped"}
    assert [t.title for t in await store.tasks.list("alice")] == ["milk"]
    # The conversation is free again, the stop request is gone, and a retry replays.
    replay = await service.turn("alice", conversation.id, "add milk", idempotency_key="k")
    assert replay.replayed and replay.stopped
    assert await service.stop("alice", conversation.id) is False
    after = make_service(ScriptedAgent([Say("hello again")]), stop_poll_interval=0.01)
    assert (await after.turn("alice", conversation.id, "hi")).response == "hello again"


async def test_a_stop_request_for_someone_elses_conversation_is_not_found(
    store: SQLAlchemyStore, make_service: Callable[..., ChatService]
) -> None:
    bobs = await store.create_conversation("bob")
    with pytest.raises(NotFoundError):
        await make_service(ScriptedAgent([])).stop("alice", bobs.id)


# A model may escape a NUL (or an unpaired surrogate) in its arguments' JSON text, or
# write a number JSON has no room for (NaN, 1e400, which Python parses as infinite): the
# text is stored as it came, but parsed, it holds what no database stores, and a turn's
# result (its idempotency answer, a JSONB column) must still be written.
UNSTORABLE_ARGUMENTS = [
    '{"title": "milk\\u0000", "note": "\\ud800"}',
    '{"title": "milk", "count": NaN}',
    '{"title": "milk", "count": 1e400}',
]


@pytest.mark.parametrize("arguments", UNSTORABLE_ARGUMENTS)
@pytest.mark.parametrize("key", [None, "k1"])
async def test_arguments_json_cannot_store_are_recorded_as_their_text(
    store: SQLAlchemyStore, key: str | None, arguments: str
) -> None:
    agent = ScriptedAgent([CallTool("add_task", arguments), Say("Nothing added.")])
    service = ChatService(store, agent)
    try:
        result = await service.turn("alice", None, "add milk", idempotency_key=key)
        [record] = result.tool_calls
        assert (result.response, record.arguments) == ("Nothing added.", arguments)
        if key is not None:
            again = await service.turn("alice", None, "add milk", idempotency_key=key)
            assert again.to_record() == result.to_record()
    finally:
        await service.drain()
    messages = await store.history("alice", result.conversation_id)
    assert messages[1].tool_calls[0].arguments == arguments
    assert_invariants(messages)


@pytest.mark.parametrize("content", ['{"found": "a\\u0000b"}', '{"found": NaN}'])
def test_a_tool_result_json_cannot_store_is_recorded_as_its_text(content: str) -> None:
    call = ToolCall(id="c1", name="lookup", arguments="{}")
    messages = [
        ChatMessage.assistant("", tool_calls=[call]),
        ChatMessage.tool(tool_call_id="c1", name="lookup", content=content),
    ]
    [record] = tool_call_records(messages)
    assert record.result == {"output": content}


# How long a model talks is not the caller's error: a reply (or the text before a tool
# call) longer than a message may be is stored cut to that length, marked, and the turn
# ends as it went.
@pytest.mark.parametrize("before_the_call", [False, True])
async def test_a_model_text_longer_than_a_message_is_cut_and_the_turn_ends(
    store: SQLAlchemyStore, before_the_call: bool
) -> None:
    too_long = "x" * (store.max_message_chars + 10)
    script = (
        [Say(too_long), CallTool("list_tasks"), Say("Done.")]
        if before_the_call
        else [Say(too_long)]
    )
    service = ChatService(store, ScriptedAgent(script))
    try:
        result = await service.turn("alice", None, "talk")
        assert result.status is TurnStatus.COMPLETED
    finally:
        await service.drain()
    messages = await store.history("alice", result.conversation_id)
    cut = messages[1]
    assert (len(cut.content), cut.metadata) == (store.max_message_chars, {"truncated": True})
    assert (await store.turns.running("alice", result.conversation_id)) is None
    assert_invariants(messages)


# What a model says may hold characters no database stores (a NUL, an unpaired
# surrogate): they become U+FFFD, streamed or not, and the turn ends as it went.
@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"], ids=["nul", "lone surrogate"])
@pytest.mark.parametrize("chunks", [1, 3])
async def test_model_text_no_database_stores_is_replaced_and_the_turn_ends(
    store: SQLAlchemyStore, text: str, chunks: int
) -> None:
    service = ChatService(store, ScriptedAgent([Say(text, chunks=chunks)]))
    try:
        result = await service.turn("alice", None, "go")
    finally:
        await service.drain()
    assert (result.status, result.response) == (TurnStatus.COMPLETED, "a\ufffdb")
    assert (await store.turns.running("alice", result.conversation_id)) is None
    messages = await store.history("alice", result.conversation_id)
    assert messages[-1].content == "a\ufffdb"


class _Returns:
    """A toolset whose one tool, `probe`, returns `result` as it is."""

    name = "probe_set"

    def __init__(self, result: Any) -> None:
        self._result = result
        self.specs = (ToolSpec("probe", "returns a fixed value"),)

    async def call(self, user_id: str, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return self._result


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# A tool's result is recorded whatever it holds: characters no database stores become
# U+FFFD (a file name decoded with surrogateescape); what JSON cannot be written from (an
# integer past Python's 4,300-digit limit, nesting past the encoder's) becomes the tool's
# error, for the model to explain.
@pytest.mark.parametrize(
    ("result", "recorded"),
    [
        ({"name": "report\udcff.txt"}, {"name": "report\ufffd.txt"}),
        ({"x": 10**5000}, {"error": "the tool's result could not be written as JSON"}),
        (_nested(2000), {"error": "the tool's result could not be written as JSON"}),
    ],
    ids=["lone surrogate", "5000-digit integer", "2000 levels"],
)
async def test_a_tool_result_is_recorded_whatever_it_holds(
    store: SQLAlchemyStore, result: dict[str, Any], recorded: dict[str, Any]
) -> None:
    agent = ScriptedAgent([CallTool("probe"), Say("done")])
    service = ChatService(store, agent, toolsets=[_Returns(result)])
    try:
        turn = await service.turn("alice", None, "go", idempotency_key="k")
        again = await service.turn("alice", None, "go", idempotency_key="k")
    finally:
        await service.drain()
    assert turn.status is TurnStatus.COMPLETED
    [record] = turn.tool_calls
    assert recorded.items() <= record.result.items()
    assert again.to_record() == turn.to_record()
    assert_invariants(await store.history("alice", turn.conversation_id))


# A model's tool call is the model's writing too: characters no database stores, in its
# arguments, name or id, become U+FFFD in the record, a name longer than a message holds
# is cut (and an unknown name is refused as any unknown tool is), and the turn ends as it
# went, instead of failing the request.
@pytest.mark.parametrize(
    "call",
    [
        CallTool("add_task", '{"title": "milk\ud800"}'),
        CallTool("add_task", '{"title": "milk"}\x00'),
        CallTool("add\x00task", {"title": "milk"}),
        CallTool("", {"title": "milk"}),
        CallTool("add_task" * 40, {"title": "milk"}),
    ],
    ids=["surrogate in arguments", "NUL after arguments", "NUL in name", "empty name", "long name"],
)
async def test_a_tool_call_no_database_stores_is_recorded_and_the_turn_ends(
    store: SQLAlchemyStore, call: CallTool
) -> None:
    service = ChatService(store, ScriptedAgent([call, Say("done")]))
    try:
        result = await service.turn("alice", None, "go")
    finally:
        await service.drain()
    assert (result.status, result.response) == (TurnStatus.COMPLETED, "done")
    messages = await store.history("alice", result.conversation_id)
    assert_invariants(messages)
    [recorded] = [c for m in messages for c in m.tool_calls]
    assert "\x00" not in recorded.arguments + recorded.name
    assert "\ud800" not in recorded.arguments
