"""Toolsets through the real chat turn and store: Python tools, several toolsets, and how
a call outside chatledger's database is recorded (before it runs, closed if it never
returns)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from chatledger.domain import Role
from chatledger.errors import ConfigurationError
from chatledger.service import ChatService
from chatledger.store import SQLAlchemyStore
from chatledger.testing import CallTool, Say, ScriptedAgent
from chatledger.tools import FunctionToolset, TaskToolset, tool
from tests.factories import assert_invariants

seen_users: list[str] = []
# Made anew by each test's fixture: an asyncio.Event belongs to the loop that first waits.
events: dict[str, asyncio.Event] = {}


@tool(read_only=True, destructive=False, idempotent=True, open_world=False)
async def convert(
    value: Annotated[float, Field(description="the distance")],
    unit: Literal["km", "mi"] = "km",
) -> dict[str, Any]:
    """Convert a distance between kilometres and miles.

    This second paragraph is not part of the description.
    """
    factor = 0.621371 if unit == "km" else 1 / 0.621371
    return {"value": round(value * factor, 3), "unit": "mi" if unit == "km" else "km"}


@tool
async def whoami(user_id: str) -> str:
    """Say whose turn this is."""
    seen_users.append(user_id)
    return user_id


@tool
async def explode() -> None:
    """Fail."""
    raise RuntimeError("secret detail that must not reach the model")


@tool
async def linger() -> str:
    """Wait until released."""
    events["started"].set()
    await events["hold"].wait()
    return "released"


@tool
async def flood() -> str:
    """Return far more text than any model could read."""
    return "x" * 300_000


@tool
async def unserialisable() -> object:
    """Return what JSON cannot hold."""
    return object()


TOOLS = FunctionToolset("python", [convert, whoami, explode, linger, flood, unserialisable])


@pytest.fixture
async def service(store: SQLAlchemyStore) -> AsyncIterator[Callable[..., ChatService]]:
    made: list[ChatService] = []

    def make(agent: ScriptedAgent, **options: Any) -> ChatService:
        toolsets = options.pop("toolsets", [TaskToolset(), TOOLS])
        made.append(ChatService(store, agent, toolsets=toolsets, **options))
        return made[-1]

    seen_users.clear()
    events.update(started=asyncio.Event(), hold=asyncio.Event())
    yield make
    events["hold"].set()
    for one in made:
        await one.drain()


def results(store_messages: list[Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(tool, result, metadata) of each tool message."""
    return [
        (m.name, json.loads(m.content), dict(m.metadata))
        for m in store_messages
        if m.role is Role.TOOL
    ]


def test_a_python_tool_has_the_schema_of_its_signature() -> None:
    assert convert.spec.description == "Convert a distance between kilometres and miles."
    assert convert.spec.parameters == {
        "type": "object",
        "properties": {
            "value": {"type": "number", "description": "the distance", "title": "Value"},
            "unit": {"enum": ["km", "mi"], "type": "string", "default": "km", "title": "Unit"},
        },
        "required": ["value"],
        "additionalProperties": False,
    }
    assert (convert.spec.read_only, convert.spec.destructive) == (True, False)
    # The turn's user is the service's to give: not a parameter the model sees.
    assert whoami.spec.parameters["properties"] == {}


def test_what_cannot_be_a_tool_is_refused_when_it_is_made() -> None:
    def blocking(value: int) -> int:
        return value

    async def untyped(value):  # type: ignore[no-untyped-def]
        return value

    async def splat(*values: int) -> int:
        return len(values)

    for function, says in ((blocking, "async"), (untyped, "no type"), (splat, r"\*args")):
        with pytest.raises(TypeError, match=says):
            tool(function)
    with pytest.raises(ValueError, match="share a name"):
        FunctionToolset("twice", [convert, convert])


async def test_python_tools_run_validated_for_the_turns_user_and_are_recorded(
    store: SQLAlchemyStore, service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent(
        [
            CallTool("convert", {"value": 10}),
            CallTool("convert", {"value": "ten"}),
            CallTool("convert", {"value": 1, "unit": "parsec", "extra": True}),
            CallTool("whoami", {"user_id": "bob"}),
            CallTool("explode"),
            CallTool("unserialisable"),
            CallTool("no_such_tool"),
            CallTool("convert", "[1, 2]"),
            CallTool("add_task", {"title": "run 10 km"}),
            Say("done"),
        ]
    )
    result = await service(agent, max_tool_calls=20).turn("alice", None, "go")

    history = await store.history("alice", result.conversation_id, limit=100)
    assert_invariants(history)
    python = {"toolset": "python"}
    assert results(history) == [
        ("convert", {"value": 6.214, "unit": "mi"}, python),
        (
            "convert",
            {"error": "value: Input should be a valid number, unable to parse string as a number",
             "code": "invalid_arguments"},
            python,
        ),
        (
            "convert",
            {"error": "unit: Input should be 'km' or 'mi'; extra: Extra inputs are not permitted",
             "code": "invalid_arguments"},
            python,
        ),
        ("whoami", {"result": "alice"}, python),
        ("explode", {"error": "the tool failed", "code": "tool_failed"}, python),
        ("unserialisable", {"error": "the tool failed", "code": "tool_failed"}, python),
        ("no_such_tool",
         {"error": "there is no tool called 'no_such_tool'", "code": "unknown_tool"}, {}),
        ("convert", {"error": "arguments must be a JSON object", "code": "invalid_arguments"}, {}),
        ("add_task",
         {"task_id": 1, "status": "created", "title": "run 10 km"}, {"toolset": "tasks"}),
    ]  # fmt: skip
    # The model's user_id went nowhere; the tool acted for alice.
    assert seen_users == ["alice"]
    # The HTTP body's records are the same pairs.
    assert [record.name for record in result.tool_calls] == [
        name for name, _, _ in results(history)
    ]
    assert result.tool_calls[0].result == {"value": 6.214, "unit": "mi"}
    assert result.response == "done"


async def test_a_tool_past_its_timeout_gets_an_error_result(
    store: SQLAlchemyStore, service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([CallTool("linger"), CallTool("convert", {"value": 1}), Say("ok")])
    result = await service(agent, tool_timeout=0.3).turn("alice", None, "go")

    history = await store.history("alice", result.conversation_id, limit=100)
    assert_invariants(history)
    assert [r for _, r, _ in results(history)] == [
        {"error": "the tool did not answer within 0.3 seconds", "code": "tool_timeout"},
        {"value": 0.621, "unit": "mi"},
    ]


async def test_a_turn_stopped_while_a_tool_runs_closes_the_call_as_interrupted(
    store: SQLAlchemyStore, service: Callable[..., ChatService]
) -> None:
    chat = service(ScriptedAgent([CallTool("linger"), Say("never")]), stop_poll_interval=0.05)
    turn = asyncio.create_task(chat.turn("alice", None, "go"))
    await asyncio.wait_for(events["started"].wait(), 10)
    [conversation] = (await store.list_conversations("alice")).items
    # The call is in the record before the tool returns: a crash now leaves it to close.
    in_flight = await store.history("alice", conversation.id, limit=100)
    assert [m.role for m in in_flight] == [Role.USER, Role.ASSISTANT]
    assert in_flight[-1].tool_calls[0].name == "linger"

    assert await chat.stop("alice", conversation.id) is True
    result = await asyncio.wait_for(turn, 10)

    history = await store.history("alice", conversation.id, limit=100)
    assert_invariants(history)
    assert [m.role for m in history] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    assert json.loads(history[2].content)["code"] == "interrupted"
    assert [record.result["code"] for record in result.tool_calls] == ["interrupted"]
    assert result.status.value == "stopped"


async def test_a_tool_name_offered_twice_is_refused(store: SQLAlchemyStore) -> None:
    @tool(name="add_task")
    async def shadow(title: str) -> str:
        """Not the real one."""
        return title

    with pytest.raises(ConfigurationError, match="'add_task' is offered by both the 'tasks' and"):
        ChatService(
            store,
            ScriptedAgent([]),
            toolsets=[TaskToolset(), FunctionToolset("mine", [shadow])],
        )


async def test_a_result_too_large_to_store_is_an_error_the_model_sees(
    store: SQLAlchemyStore, service: Callable[..., ChatService]
) -> None:
    agent = ScriptedAgent([CallTool("flood"), Say("that was too much")])
    result = await service(agent).turn("alice", None, "go")

    history = await store.history("alice", result.conversation_id, limit=100)
    assert_invariants(history)
    assert [r for _, r, _ in results(history)] == [
        {
            "error": "the tool's result is too large: 300,014 characters, at most 250,000",
            "code": "result_too_large",
        }
    ]
    assert result.response == "that was too much"


async def test_a_tool_name_no_model_api_takes_is_left_out(
    store: SQLAlchemyStore, caplog: pytest.LogCaptureFixture
) -> None:
    @tool(name="weather.today")
    async def dotted() -> str:
        """Not a valid function name for a model API."""
        return "sunny"

    offered: list[list[str]] = []

    class Peek(ScriptedAgent):
        async def run(self, messages, toolbox):  # type: ignore[no-untyped-def]
            offered.append([spec.name for spec in toolbox.specs])
            async for event in super().run(messages, toolbox):
                yield event

    chat = ChatService(
        store,
        Peek([CallTool("weather.today"), Say("ok")]),
        toolsets=[TaskToolset(), FunctionToolset("mine", [convert, dotted])],
    )
    result = await chat.turn("alice", None, "weather?")
    await chat.drain()

    assert offered == [
        ["add_task", "list_tasks", "complete_task", "delete_task", "update_task", "convert"]
    ]
    assert result.tool_calls[0].result["code"] == "unknown_tool"
    assert "'weather.today' of the 'mine' toolset is left out" in caplog.text


async def test_hostile_arguments_are_refused_and_recorded_whole(
    store: SQLAlchemyStore, service: Callable[..., ChatService]
) -> None:
    nested = '{"value": ' + "[" * 1000 + "]" * 1000 + "}"
    huge = {"value": 1, "unit": "x" * 300_000}
    agent = ScriptedAgent([CallTool("convert", nested), CallTool("convert", huge), Say("no")])
    result = await service(agent).turn("alice", None, "go")

    history = await store.history("alice", result.conversation_id, limit=100)
    assert_invariants(history)
    assert [r for _, r, _ in results(history)] == [
        {"error": "arguments must be a JSON object", "code": "invalid_arguments"},
        {"error": "unit: Input should be 'km' or 'mi'", "code": "invalid_arguments"},
    ]
    # What the model asked is kept as it asked it, however hostile.
    calls = [call for message in history for call in message.tool_calls]
    assert [call.arguments for call in calls] == [nested, json.dumps(huge)]
