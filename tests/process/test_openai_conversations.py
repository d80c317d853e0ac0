"""The OpenAI Conversations API under `/v1`, through the official `openai` client (sync and
async, unchanged but for `base_url` and `api_key`) and the Agents SDK's own
`OpenAIConversationsSession`, against a real `chatledger serve` on each database.

One server per database serves the whole module; each test is a user of its own. What the
database holds afterwards is read through a store of the test's own on the same database.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from agents import (
    Agent,
    OpenAIConversationsSession,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    SQLiteSession,
    function_tool,
)
from openai import AsyncOpenAI, OpenAI

from chatledger.domain import ChatMessage, Role, ToolCall
from chatledger.store import SQLAlchemyStore
from chatledger.testing import FakeModelServer, FunctionCall, Text, ToolCalls
from tests.conftest import DATABASES
from tests.factories import assert_invariants
from tests.integrations.items_examples import EXAMPLES
from tests.process.servers import READY_WITHIN, SECRET, child_env, free_port, token_for

CLIENTS = ("sync", "async")


@dataclass(frozen=True)
class Served:
    base_url: str
    database_url: str


@pytest.fixture(scope="module", params=DATABASES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A `chatledger serve` for this module, on SQLite or PostgreSQL; stopped (SIGTERM,
    then SIGKILL to its session) whatever the tests did."""
    directory = tmp_path_factory.mktemp("openai")
    if request.param == "sqlite":
        database_url = f"sqlite:///{directory / 'chatledger.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    port = free_port()
    with (directory / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatledger", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--database-url", database_url, "--agent", "rules"],
            cwd=directory,
            env=child_env(JWT_SECRET=SECRET),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_WITHIN
        while True:
            assert process.poll() is None, (directory / "server.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/readyz", trust_env=False).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.1)
        yield Served(base_url, database_url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(served: Served) -> AsyncIterator[SQLAlchemyStore]:
    opened = SQLAlchemyStore.from_url(served.database_url)
    yield opened
    await opened.close()


_opened: list[OpenAI | AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _opened:
        await _(_opened.pop().close())


def _client(kind: str, served: Served, user: str, *, key: str | None = None) -> Any:
    """A client of `kind` for `user` (or whoever `key` says), closed after the test."""
    client_class = OpenAI if kind == "sync" else AsyncOpenAI
    client = client_class(
        base_url=f"{served.base_url}/v1", api_key=key or token_for(user), max_retries=0
    )
    _opened.append(client)
    return client


async def _(value: Any) -> Any:
    """What a call of either client gives: the sync client's at once, the async one's
    once awaited."""
    return await value if inspect.isawaitable(value) else value


async def _all(pages: Any) -> list[Any]:
    """Every item of a listing, page after page, as the client fetches them."""
    if hasattr(pages, "__aiter__"):
        return [item async for item in pages]
    return list(pages)


def _user_item(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _api(served: Served, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{served.base_url}/api/{user}",
        headers={"Authorization": f"Bearer {token_for(user)}"},
        trust_env=False,
        timeout=30,
    )


# -- every endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
async def test_every_endpoint(served: Served, store: SQLAlchemyStore, user: str, kind: str) -> None:
    client = _client(kind, served, user)
    created = await _(
        client.conversations.create(
            items=[_user_item("Add milk"), {"role": "assistant", "content": "Added."}],
            metadata={"topic": "shopping"},
        )
    )
    assert created.object == "conversation" and created.id.startswith("conv_")
    assert created.metadata == {"topic": "shopping"}
    assert abs(created.created_at - time.time()) < 60
    assert (await _(client.conversations.retrieve(created.id))).id == created.id

    updated = await _(client.conversations.update(created.id, metadata={"topic": "food"}))
    assert updated.metadata == {"topic": "food"}

    added = await _(
        client.conversations.items.create(
            created.id,
            items=[
                _user_item("And bread"),
                {"type": "function_call", "call_id": "c1", "name": "add_task",
                 "arguments": '{"title": "bread"}'},
                {"type": "function_call_output", "call_id": "c1", "output": '{"id": 2}'},
            ],
        )
    )  # fmt: skip
    assert added.object == "list" and [item.type for item in added.data] == [
        "message", "function_call", "function_call_output",
    ]  # fmt: skip
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id
    assert added.has_more is False

    listed = await _all(await _(client.conversations.items.list(created.id, order="asc")))
    assert [item.id for item in listed] == ["msg_1", "msg_2", "msg_3", "fc_4", "fco_5"]
    first = listed[0]
    assert first.role == "user" and first.status == "completed"
    assert first.content[0].type == "input_text" and first.content[0].text == "Add milk"
    assert listed[3].name == "add_task" and listed[3].call_id == "c1"

    one = await _(client.conversations.items.retrieve("fc_4", conversation_id=created.id))
    assert one.model_dump() == listed[3].model_dump()

    after = await _(client.conversations.items.delete("fco_5", conversation_id=created.id))
    assert after.id == created.id and after.object == "conversation"
    listed = await _all(await _(client.conversations.items.list(created.id)))
    assert [item.id for item in listed] == ["fc_4", "msg_3", "msg_2", "msg_1"]  # desc
    with pytest.raises(openai.NotFoundError):
        await _(client.conversations.items.retrieve("fco_5", conversation_id=created.id))

    # The same conversation under /api.
    own_id = created.id.removeprefix("conv_")
    async with _api(served, user) as api:
        messages = (await api.get(f"/conversations/{own_id}/messages")).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1]["tool_calls"][0]["id"] == "c1"

    deleted = await _(client.conversations.delete(created.id))
    assert (deleted.id, deleted.object, deleted.deleted) == (
        created.id, "conversation.deleted", True,
    )  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        await _(client.conversations.retrieve(created.id))
    assert (await store.list_conversations(user)).items == []


async def test_every_item_type_comes_back_with_its_id(served: Served, user: str) -> None:
    client = _client("async", served, user)
    examples = {name: item for name, item in EXAMPLES.items() if name != "unknown_future_type"}
    conversation = await _(client.conversations.create())
    names = list(examples)
    for start in range(0, len(names), 20):
        batch = [examples[name] for name in names[start : start + 20]]
        await _(client.conversations.items.create(conversation.id, items=batch))
    async with httpx.AsyncClient(trust_env=False) as raw:
        body = (
            await raw.get(
                f"{served.base_url}/v1/conversations/{conversation.id}/items",
                params={"order": "asc", "limit": 100},
                headers={"Authorization": f"Bearer {token_for(user)}"},
            )
        ).json()
    returned = dict(zip(names, body["data"], strict=True))
    for seq, name in enumerate(names, 1):
        item, sent = returned[name], examples[name]
        kind = sent.get("type", "message" if "role" in sent else "item_reference")
        assert item["id"].endswith(f"_{seq}") and item["type"] == kind, name
        if kind != "message":  # everything sent comes back, but the id
            assert {k: v for k, v in item.items() if k != "id"} == {
                **{k: v for k, v in sent.items() if k != "id"}, "type": kind,
            }, name  # fmt: skip
    # Messages come back in full form, as OpenAI's API returns them.
    assert returned["easy_user"] == {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": "Add milk\r\nplease"}],
        "x_extra": EXAMPLES["easy_user"]["x_extra"],
    }
    assert returned["easy_assistant"]["content"] == [
        {"type": "output_text", "text": "Sure.", "annotations": []}
    ]
    output = EXAMPLES["output_message"]
    assert returned["output_message"] == {
        **output,
        "id": f"msg_{names.index('output_message') + 1}",
    }


# -- pagination ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
async def test_pages_in_both_orders_give_every_item_once(
    served: Served, store: SQLAlchemyStore, user: str, kind: str
) -> None:
    client = _client(kind, served, user)
    conversation = await _(client.conversations.create())
    own_id = conversation.id.removeprefix("conv_")
    await _(client.conversations.items.create(
        conversation.id, items=[_user_item(f"m{n}") for n in range(20)]
    ))  # fmt: skip
    # A message chatledger wrote, that reads as three items: its text and two calls.
    calls = (ToolCall("a", "add_task", "{}"), ToolCall("b", "add_task", "{}"))
    await store.append(
        user,
        own_id,
        [
            ChatMessage.assistant("On it.", tool_calls=calls),
            ChatMessage(role=Role.TOOL, content="1", tool_call_id="a"),
            ChatMessage(role=Role.TOOL, content="2", tool_call_id="b"),
            ChatMessage.assistant("Done."),
        ],
    )
    everything = await _all(
        await _(client.conversations.items.list(conversation.id, order="asc", limit=100))
    )
    ids = [item.id for item in everything]
    assert ids[20:] == ["msg_21", "fc_21_1", "fc_21_2", "fco_22", "fco_23", "msg_24"]
    assert len(ids) == 26
    for limit in (1, 2, 3, 7):
        for order, expected in (("asc", ids), ("desc", ids[::-1])):
            listed = await _all(
                await _(client.conversations.items.list(conversation.id, order=order, limit=limit))
            )
            assert [item.id for item in listed] == expected, (order, limit)
    page = await _(client.conversations.items.list(conversation.id, limit=3, after="fc_21_2"))
    assert [item.id for item in page.data] == ["fc_21_1", "msg_21", "msg_20"]
    assert page.has_more is True and page.last_id == "msg_20"

    # Taking one call of the three-item message out leaves the other, and its result.
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await _(client.conversations.items.delete("fc_21_1", conversation_id=conversation.id))
    assert refused.value.body["code"] == "would_split_tool_call"  # type: ignore[index]
    await _(client.conversations.items.delete("fco_22", conversation_id=conversation.id))
    await _(client.conversations.items.delete("msg_21", conversation_id=conversation.id))
    listed = await _all(await _(client.conversations.items.list(conversation.id, order="asc")))
    assert [item.type for item in listed[20:]] == [
        "function_call", "function_call", "function_call_output", "message",
    ]  # fmt: skip
    history = await store.history(user, own_id, limit=100)
    assert [m.content for m in history[20:]] == ["", "2", "Done."]
    assert [c.id for c in history[20].tool_calls] == ["a", "b"]  # "a" is now unanswered
    # Every earlier version is kept, as after an edit.
    versions = await store.siblings(user, own_id, [history[20]])
    assert versions[history[20].seq] == [21, history[20].seq]


# -- bad input ----------------------------------------------------------------------------


def _refused(error: openai.APIStatusError, param: str | None, code: str) -> None:
    """An OpenAI-shaped error body: message, type, param, code."""
    assert isinstance(error.body, dict)
    assert set(error.body) == {"message", "type", "param", "code"}, error.body
    assert error.body["type"] == "invalid_request_error" and error.body["message"]
    assert (error.body["param"], error.body["code"]) == (param, code), error.body


@pytest.mark.parametrize("kind", CLIENTS)
async def test_bad_input_is_a_400_and_nothing_is_stored(
    served: Served, store: SQLAlchemyStore, user: str, kind: str
) -> None:
    client = _client(kind, served, user)
    conversation = await _(client.conversations.create(items=[_user_item("kept")]))
    own_id = conversation.id.removeprefix("conv_")
    refusals: list[tuple[list[Any], str, str]] = [
        ([{"type": "hologram_call", "id": "h"}], "items[0].type", "unknown_item_type"),
        ([_user_item(str(n)) for n in range(21)], "items", "invalid_item_count"),
        ([], "items", "invalid_item_count"),
        ([_user_item("a\x00b")], "items[0]", "invalid"),
        ([{"role": "robot", "content": "x"}], "items[0]", "invalid"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "items[0]", "invalid"),
        (["not an object"], "items[0]", "invalid"),
        ([{"type": "message", "role": "user"}], "items[0].content", "invalid"),
        ([_user_item("x" * 300_000)], "content", "too_large"),  # the store keeps 256 KiB
    ]
    for items, param, code in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            await _(client.conversations.items.create(conversation.id, items=items))
        _refused(refused.value, param, code)
        with pytest.raises(openai.BadRequestError) as refused:
            await _(client.conversations.create(items=items or [{"type": "nope"}]))
    # The client cannot even encode a lone surrogate; JSON can carry one, escaped.
    async with httpx.AsyncClient(trust_env=False) as raw:
        answer = await raw.post(
            f"{served.base_url}/v1/conversations/{conversation.id}/items",
            content=b'{"items": [{"role": "user", "content": "lone \\ud800"}]}',
            headers={"Authorization": f"Bearer {token_for(user)}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "items[0]"
    # A 1 MiB item is refused before its body is read.
    with pytest.raises(openai.BadRequestError) as refused:
        await _(client.conversations.items.create(
            conversation.id, items=[_user_item("x" * (1 << 20))]
        ))  # fmt: skip
    assert refused.value.body["code"] == "too_large"  # type: ignore[index]
    for metadata in ({f"k{n}": "v" for n in range(17)}, {"k": 1}, {"k" * 65: "v"}, ["x"]):
        with pytest.raises(openai.BadRequestError) as refused:
            await _(client.conversations.create(metadata=metadata))  # type: ignore[arg-type]
        _refused(refused.value, "metadata", "invalid")
    with pytest.raises(openai.BadRequestError) as refused:
        await _(client.conversations.create(extra_body={"colour": "red"}))
    with pytest.raises(openai.BadRequestError) as refused:
        await _(client.conversations.retrieve("not-a-conversation"))
    _refused(refused.value, "conversation_id", "invalid_id")
    for bad_item in ("msg_0", "msg_x", "fc_1_0", "item", "msg_1_" + "9" * 19, "msg_" + "9" * 19):
        with pytest.raises(openai.BadRequestError) as refused:
            await _(client.conversations.items.retrieve(bad_item, conversation_id=conversation.id))
        _refused(refused.value, "item_id", "invalid_id")
    for params in ({"limit": 0}, {"limit": 101}, {"order": "up"}, {"after": "x"}):
        with pytest.raises(openai.BadRequestError):
            await _(client.conversations.items.list(conversation.id, **params))
    with pytest.raises(openai.BadRequestError) as refused:
        await _(client.conversations.items.list(conversation.id, include=["everything"]))  # type: ignore[list-item]
    _refused(refused.value, "include", "invalid")
    # Nothing of it was stored: the one conversation, its one message.
    assert [c.id for c in (await store.list_conversations(user)).items] == [own_id]
    assert [m.content for m in await store.history(user, own_id)] == ["kept"]


@pytest.mark.parametrize("kind", CLIENTS)
async def test_a_bad_key_is_a_401_and_a_missing_thing_a_404(
    served: Served, user: str, kind: str
) -> None:
    for key in ("not-a-jwt", token_for(user).replace(".", "x.", 1)):
        stranger = _client(kind, served, user, key=key)
        with pytest.raises(openai.AuthenticationError) as refused:
            await _(stranger.conversations.create())
        assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    client = _client(kind, served, user)
    missing = f"conv_{uuid.uuid4()}"
    with pytest.raises(openai.NotFoundError) as refused:
        await _(client.conversations.retrieve(missing))
    assert refused.value.body["code"] == "not_found"  # type: ignore[index]
    conversation = await _(client.conversations.create(items=[_user_item("hi")]))
    with pytest.raises(openai.NotFoundError):
        await _(client.conversations.items.retrieve("msg_2", conversation_id=conversation.id))
    with pytest.raises(openai.NotFoundError):  # the right seq, the wrong kind of item
        await _(client.conversations.items.retrieve("fc_1", conversation_id=conversation.id))
    with pytest.raises(openai.NotFoundError):
        await _(client.conversations.items.delete("msg_2", conversation_id=conversation.id))


async def test_another_users_conversation_is_not_found_and_stays_as_it_was(
    served: Served, store: SQLAlchemyStore, user: str
) -> None:
    owner = _client("async", served, user)
    conversation = await _(owner.conversations.create(
        items=[_user_item("mine")], metadata={"k": "v"}
    ))  # fmt: skip
    other = _client("async", served, f"{user}-other")
    cid = conversation.id
    attempts = [
        other.conversations.retrieve(cid),
        other.conversations.update(cid, metadata={"k": "stolen"}),
        other.conversations.items.create(cid, items=[_user_item("theirs")]),
        other.conversations.items.retrieve("msg_1", conversation_id=cid),
        other.conversations.items.delete("msg_1", conversation_id=cid),
        other.conversations.delete(cid),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            await attempt
    with pytest.raises(openai.NotFoundError):
        await other.conversations.items.list(cid)
    own_id = cid.removeprefix("conv_")
    assert (await store.get_conversation(user, own_id)).metadata == {"k": "v"}
    assert [m.content for m in await store.history(user, own_id)] == ["mine"]
    assert (await store.list_conversations(f"{user}-other")).items == []


# -- one conversation, both ways ----------------------------------------------------------


async def test_a_chat_conversation_reads_under_v1_and_back(served: Served, user: str) -> None:
    async with _api(served, user) as api:
        reply = await api.post("/chat", json={"message": "add task buy milk"})
        assert reply.status_code == 200, reply.text
        own_id = reply.json()["conversation_id"]
        client = _client("async", served, user)
        items = await _all(await client.conversations.items.list(f"conv_{own_id}", order="asc"))
        assert [item.type for item in items] == [
            "message", "function_call", "function_call_output", "message",
        ]  # fmt: skip
        assert items[0].content[0].text == "add task buy milk"
        assert items[1].name == "add_task" and items[2].call_id == items[1].call_id
        await client.conversations.items.create(
            f"conv_{own_id}", items=[_user_item("What is on my list?")]
        )
        listed = await api.get("/conversations")
        assert own_id in [c["id"] for c in listed.json()["items"]]
        reply = await api.post(
            "/chat", json={"message": "list my tasks", "conversation_id": own_id}
        )
        assert reply.status_code == 200, reply.text
        messages = (await api.get(f"/conversations/{own_id}/messages")).json()["items"]
    assert "What is on my list?" in [m["content"] for m in messages]
    created = await client.conversations.create(items=[_user_item("from v1")])
    async with _api(served, user) as api:
        listed = await api.get("/conversations")
    assert created.id.removeprefix("conv_") in [c["id"] for c in listed.json()["items"]]


# -- the Agents SDK's own OpenAIConversationsSession ------------------------------------------


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


TURNS = 5


async def _model_views(session: Any) -> list[Any]:
    """What the model was sent on each turn of a scripted tool-calling conversation: its
    messages, tool calls and tool outputs, as the fake server reads them on any API."""
    script: list[Any] = []
    for turn in range(TURNS):
        script += [
            ToolCalls([FunctionCall("add", {"a": turn, "b": 1})]),
            Text(f"It is {turn + 1}."),
        ]
    config = RunConfig(tracing_disabled=True)
    async with FakeModelServer(script) as server:
        model_client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
        model = OpenAIResponsesModel("fake-model", model_client)
        agent = Agent(name="calc", instructions="Add.", model=model, tools=[add])
        for turn in range(TURNS):
            result = await Runner.run(agent, f"{turn} + 1?", session=session, run_config=config)
            assert result.final_output == f"It is {turn + 1}."
        await model_client.close()
        return [
            (request.messages, request.tool_outputs, [c.name for c in request.tool_calls])
            for request in server.requests
        ]


async def test_openai_conversations_session_holds_a_tool_calling_conversation(
    served: Served, store: SQLAlchemyStore, user: str
) -> None:
    reference = SQLiteSession("reference")
    try:
        expected = await _model_views(reference)
    finally:
        reference.close()
    client = _client("async", served, user)
    session = OpenAIConversationsSession(openai_client=client)
    assert await _model_views(session) == expected
    assert len(expected) == 2 * TURNS and expected[-1][1]  # tool outputs reached the model
    own_id = session.session_id.removeprefix("conv_")
    history = await store.history(user, own_id, limit=1000)
    assert_invariants(history, branch=True)
    assert len(history) == 4 * TURNS  # user, call, output, answer: each a message

    popped = await session.pop_item()
    assert popped is not None and popped["content"][0]["text"] == f"It is {TURNS}."
    assert len(await session.get_items()) == 4 * TURNS - 1
    await session.clear_session()
    assert (await store.list_conversations(user)).items == []
