"""`ChatLedgerSession` against the Agents SDK's own `SQLiteSession`, on both databases.

The SDK's session is the reference: the same operations give the same results (a
Hypothesis differential test), and a `Runner` sends the model the same input over many
turns with either. Then what only chatledger has: the same conversation through the
chat service, the store's history and the context builder; and bad input refused whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, SessionSettings, function_tool
from agents.memory import SQLiteSession
from hypothesis import HealthCheck, given, settings, strategies as st
from openai import AsyncOpenAI

from chatledger.context import build
from chatledger.domain import ChatMessage, Role
from chatledger.errors import ConflictError, NotFoundError, TooLargeError, ValidationError
from chatledger.integrations.agents import ChatLedgerSession
from chatledger.integrations.items import OPENAI_ITEM
from chatledger.service import ChatService
from chatledger.storage import Lease
from chatledger.store import Connector, SQLAlchemyStore
from chatledger.testing import (
    CallTool,
    FakeModelServer,
    FunctionCall,
    Say,
    ScriptedAgent,
    Text,
    ToolCalls,
)
from tests.factories import assert_invariants, examples, snapshot
from tests.integrations.items_examples import EXAMPLES, sdk_item_types

USER = "alice"


# -- every item type round-trips ---------------------------------------------------------


def test_the_examples_cover_every_item_type_of_the_sdk() -> None:
    types = sdk_item_types()
    covered = {item.get("type", "message" if "role" in item else "item_reference")
               for item in EXAMPLES.values()}  # fmt: skip
    assert types <= covered, types - covered


async def test_every_item_type_comes_back_equal_field_by_field(store: SQLAlchemyStore) -> None:
    session = ChatLedgerSession(store, USER)
    items: list[Any] = [copy.deepcopy(item) for item in EXAMPLES.values()]
    await session.add_items(items)
    assert await session.get_items() == list(EXAMPLES.values())
    # One at a time too, and in a new session object (another process) on the same id.
    again = ChatLedgerSession(store, USER, session.session_id)
    assert await again.get_items(limit=3) == list(EXAMPLES.values())[-3:]
    for expected in reversed(EXAMPLES.values()):
        assert await again.pop_item() == expected
    assert await again.pop_item() is None


async def test_items_become_native_messages_where_chatledger_has_them(
    store: SQLAlchemyStore,
) -> None:
    session = ChatLedgerSession(store, USER)
    names = ["easy_user", "easy_developer", "output_message", "function_call",
             "function_call_output", "reasoning", "mcp_call"]  # fmt: skip
    await session.add_items([EXAMPLES[name] for name in names])  # type: ignore[misc]
    history = await store.history(USER, session.session_id)
    shown = [(m.role, m.content, [c.name for c in m.tool_calls], m.tool_call_id, m.name)
             for m in history]  # fmt: skip
    assert shown == [
        (Role.USER, "Add milk\nplease", [], None, None),
        (Role.SYSTEM, "Hi", [], None, None),
        (Role.ASSISTANT, "Done.Not that.", [], None, None),
        (Role.ASSISTANT, "", ["add_task"], None, None),
        (Role.TOOL, '{"id": 1}', [], "call_1", "add_task"),
        (Role.ASSISTANT, "", [], None, None),
        (Role.ASSISTANT, "", [], None, None),
    ]
    assert history[3].tool_calls[0].parsed_arguments() == {"title": "milk"}
    assert history[5].metadata[OPENAI_ITEM] == EXAMPLES["reasoning"]
    # The items kept as they are do not reach a chat model; the pair does, whole.
    window = build(history, system_prompt=None, budget_tokens=10_000)
    assert [m.role for m in window.messages] == [
        Role.USER, Role.SYSTEM, Role.ASSISTANT, Role.ASSISTANT, Role.TOOL,
    ]  # fmt: skip


# -- the SDK's SQLiteSession is the reference ---------------------------------------------


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


_ITEMS = st.one_of(
    st.sampled_from(list(EXAMPLES.values())),
    # Text the store can hold: bad text is refused (test_bad_input...), not compared.
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20).map(
        _user
    ),
)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(_ITEMS, max_size=4)),
        st.tuples(st.just("get"), st.one_of(st.none(), st.integers(-1, 6))),
        st.tuples(st.just("pop")),
        st.tuples(st.just("clear")),
    ),
    max_size=15,
)


async def _play(session: Any, ops: list[tuple[Any, ...]]) -> list[Any]:
    results = []
    for op in ops:
        if op[0] == "add":
            results.append(await session.add_items(copy.deepcopy(op[1])))
        elif op[0] == "get":
            results.append(await session.get_items(op[1]))
        elif op[0] == "pop":
            results.append(await session.pop_item())
        else:
            results.append(await session.clear_session())
    results.append(await session.get_items())
    return results


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_OPS, limit=st.sampled_from([None, 2]))
def test_any_sequence_of_operations_gives_what_sqlite_session_gives(
    database_url: str, ops: list[tuple[Any, ...]], limit: int | None
) -> None:
    async def both() -> None:
        store = SQLAlchemyStore.from_url(database_url)
        reference = SQLiteSession("s", session_settings=SessionSettings(limit=limit))
        try:
            ours = ChatLedgerSession(store, USER, session_settings=SessionSettings(limit=limit))
            assert await _play(ours, ops) == await _play(reference, ops)
        finally:
            reference.close()
            await store.close()

    asyncio.run(both())


# -- a Runner over many turns -------------------------------------------------------------


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


TURNS = 10


def _script() -> list[Any]:
    replies: list[Any] = []
    for turn in range(TURNS):
        replies.append(ToolCalls([FunctionCall("add", {"a": turn, "b": 1})]))
        replies.append(Text(f"It is {turn + 1}."))
    return replies


@contextlib.asynccontextmanager
async def _agent() -> AsyncIterator[tuple[FakeModelServer, Agent[Any]]]:
    async with FakeModelServer(_script()) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
        model = OpenAIResponsesModel("fake-model", client)
        yield server, Agent(name="calc", instructions="Add.", model=model, tools=[add])
        await client.close()


async def _inputs(session: Any, *, streamed: bool) -> list[Any]:
    config = RunConfig(tracing_disabled=True)
    async with _agent() as (server, agent):
        for turn in range(TURNS):
            question = f"What is {turn} + 1?"
            if streamed:
                result = Runner.run_streamed(agent, question, session=session, run_config=config)
                async for _ in result.stream_events():
                    pass
            else:
                result = await Runner.run(agent, question, session=session, run_config=config)
            assert result.final_output == f"It is {turn + 1}."
        return [request.body["input"] for request in server.requests]


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
async def test_the_model_gets_the_same_input_every_turn_as_with_sqlite_session(
    store: SQLAlchemyStore, streamed: bool
) -> None:
    reference = SQLiteSession("s")
    try:
        expected = await _inputs(reference, streamed=streamed)
    finally:
        reference.close()
    session = ChatLedgerSession(store, USER)
    assert await _inputs(session, streamed=streamed) == expected
    assert len(expected) == 2 * TURNS
    history = await store.history(USER, session.session_id, limit=1000)
    assert_invariants(history, branch=True)


# -- one conversation, both ways ----------------------------------------------------------


async def test_a_chat_conversation_continues_through_a_session_and_back(
    store: SQLAlchemyStore,
) -> None:
    agent = ScriptedAgent([CallTool("add_task", {"title": "milk"}), Say("Added milk.")])
    service = ChatService(store, agent, summarize=False)
    first = await service.turn(USER, None, "Add milk")
    session = ChatLedgerSession(store, USER, first.conversation_id)
    items = await session.get_items()
    assert [item.get("type", item.get("role")) for item in items] == [
        "user", "function_call", "function_call_output", "assistant",
    ]  # fmt: skip
    assert items[0] == {"role": "user", "content": "Add milk"}
    assert items[1]["name"] == "add_task" and items[2]["call_id"] == items[1]["call_id"]
    # The session's turn, as a Runner would save it.
    await session.add_items(
        [
            {"role": "user", "content": "And bread"},
            {**EXAMPLES["reasoning"]},
            {
                "type": "function_call",
                "call_id": "c9",
                "name": "add_task",
                "arguments": '{"title": "bread"}',
            },
            {"type": "function_call_output", "call_id": "c9", "output": '{"id": 2}'},
            {
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "id": "m9",
                "content": [{"type": "output_text", "text": "Added bread.", "annotations": []}],
            },
        ]
    )
    await service.turn(USER, first.conversation_id, "Thanks")
    history = await store.history(USER, first.conversation_id, limit=100)
    assert_invariants(history, branch=True)
    # The chat agent's input holds both turns, pairs whole, and not the reasoning item.
    seen = agent.inputs[-1]
    assert [m.content for m in seen if m.role is Role.USER] == ["Add milk", "And bread", "Thanks"]
    assert [m.tool_call_id for m in seen if m.role is Role.TOOL] == [
        items[1]["call_id"], "c9",
    ]  # fmt: skip
    assert all(m.content or m.tool_calls for m in seen if m.role is Role.ASSISTANT)
    window = build(history, system_prompt="s", budget_tokens=10_000)
    assert len(window.messages) == len(history)  # the system prompt in, the reasoning out
    assert (await session.get_items())[-1] == {"role": "assistant", "content": "Added milk."}


async def test_pop_and_clear_keep_every_message(store: SQLAlchemyStore) -> None:
    session = ChatLedgerSession(store, USER)
    await session.add_items([_user("a"), _user("b")])  # type: ignore[list-item]
    assert await session.pop_item() == _user("b")
    await session.add_items([_user("c")])  # type: ignore[list-item]
    assert await session.get_items() == [_user("a"), _user("c")]
    await session.clear_session()
    assert await session.get_items() == []
    await session.add_items([_user("d")])  # type: ignore[list-item]
    assert await session.get_items() == [_user("d")]
    conversation = await store.get_conversation(USER, session.session_id)
    assert conversation.message_count == 4
    assert [m.content for m in await store.history(USER, session.session_id, leaf=3)] == [
        "a", "c",
    ]  # fmt: skip


async def test_a_session_is_one_users_conversation(store: SQLAlchemyStore) -> None:
    session = ChatLedgerSession(store, USER)
    assert session.session_id == ""
    assert await session.get_items() == [] and await session.pop_item() is None
    await session.clear_session()
    assert (await store.list_conversations(USER)).items == []  # nothing created by reads
    await session.add_items([_user("mine")])  # type: ignore[list-item]
    assert session.session_id
    for other in (ChatLedgerSession(store, "bob", session.session_id),
                  ChatLedgerSession(store, USER, "no-such-conversation")):  # fmt: skip
        with pytest.raises(NotFoundError):
            await other.get_items()
        with pytest.raises(NotFoundError):
            await other.add_items([_user("theirs")])  # type: ignore[list-item]
    assert await session.get_items() == [_user("mine")]


async def test_a_running_chat_turn_makes_the_session_wait(store: SQLAlchemyStore) -> None:
    session = ChatLedgerSession(store, USER)
    await session.add_items([_user("a")])  # type: ignore[list-item]
    lease = Lease.new(timedelta(minutes=1))
    await store.turns.start(
        USER,
        session.session_id,
        ChatMessage.user("busy"),
        turn_id=lease.id,
        lease_expires_at=lease.expires_at,
    )
    for attempt in (session.add_items([_user("b")]), session.pop_item(), session.clear_session()):  # type: ignore[list-item]
        with pytest.raises(ConflictError):
            await attempt
    assert await session.get_items() == [_user("a"), _user("busy")]


# -- bad input ---------------------------------------------------------------------------


BAD: dict[str, Any] = {
    "not an object": "hello",
    "a list": [_user("x")],
    "no type": {"content": "x"},
    "a type that is not text": {"type": 3},
    "a role chatledger has no place for": {"role": "tool", "content": "x"},
    "NUL": _user("a\x00b"),
    "a lone surrogate": _user("a\ud800b"),
    "NUL in a key": {"type": "reasoning", "a\x00": 1},
    "a function call without call_id": {"type": "function_call", "name": "f", "arguments": ""},
    "an output without call_id": {"type": "function_call_output", "output": "x"},
    "not JSON": {"type": "reasoning", "value": {1, 2}},
    "NaN": {"type": "reasoning", "value": float("nan")},
    "1 MiB": _user("x" * (1 << 20)),
    "nested too deep": {
        "type": "reasoning",
        "deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    },
}


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
async def test_bad_input_is_refused_and_nothing_is_stored(
    store: SQLAlchemyStore, connector: Connector, bad: Any
) -> None:
    existing = ChatLedgerSession(store, USER)
    await existing.add_items([_user("before")])  # type: ignore[list-item]
    before = await snapshot(connector, USER)
    for session in (existing, ChatLedgerSession(store, USER)):
        with pytest.raises(ValidationError):  # TooLargeError is one
            await session.add_items([_user("fine"), bad])
    assert await snapshot(connector, USER) == before
    with pytest.raises(ValidationError):
        await existing.add_items("not a list")  # type: ignore[arg-type]
    assert issubclass(TooLargeError, ValidationError)
