"""FakeModelServer, checked with the official OpenAI client and with raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from chatledger.domain import ToolCall
from chatledger.testing import (
    ErrorResponse,
    FakeModelServer,
    FunctionCall,
    ModelReply,
    ModelRequest,
    Stall,
    Text,
    ToolCalls,
)

USER = {"role": "user", "content": "add milk"}


@contextlib.asynccontextmanager
async def client_for(server: FakeModelServer) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    async with client:
        yield client


def chat_call(call_id: str, name: str = "add_task", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# Chat Completions ------------------------------------------------------------------------


async def test_chat_text_and_the_request_it_answered() -> None:
    async with FakeModelServer([Text("Added milk.")]) as server, client_for(server) as client:
        completion = await client.chat.completions.create(model="m", messages=[USER])

    assert completion.choices[0].message.content == "Added milk."
    assert completion.choices[0].finish_reason == "stop"
    [request] = server.requests
    assert request.api == "chat_completions" and not request.stream
    assert request.body == {"model": "m", "messages": [USER]}
    assert request.messages == [("user", "add milk")]


async def test_chat_tool_calls_streamed_in_pieces() -> None:
    calls = [
        FunctionCall("add_task", {"title": "milk"}, id="call_a"),
        FunctionCall("add_task", '{"title": "eggs"}'),
    ]
    async with (
        FakeModelServer([ToolCalls(calls, text="Adding both.")]) as server,
        client_for(server) as client,
    ):
        stream = await client.chat.completions.create(
            model="m",
            messages=[USER],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Adding both."
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    ids = {d.index: d.id for d in deltas if d.id}
    arguments = {
        i: "".join(d.function.arguments or "" for d in deltas if d.index == i) for i in ids
    }
    assert ids == {0: "call_a", 1: "call_1"}
    assert arguments == {0: '{"title": "milk"}', 1: '{"title": "eggs"}'}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # With include_usage the last chunk has no choices, only the usage.
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_chat_stream_is_framed_as_the_real_api_frames_it() -> None:
    async with FakeModelServer([Text("Hi there", chunks=2)]) as server:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{server.base_url}/chat/completions",
                json={"model": "m", "messages": [USER], "stream": True},
            )

    assert response.headers["content-type"].startswith("text/event-stream")
    frames = response.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    events = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-2]]
    assert all(frame.startswith("data: {") for frame in frames[:-2])
    assert {event["object"] for event in events} == {"chat.completion.chunk"}
    assert [e["choices"][0]["delta"].get("content") for e in events] == ["", "Hi t", "here", None]


@pytest.mark.parametrize(
    ("messages", "refusal"),
    [
        pytest.param(
            [USER, {"role": "assistant", "content": None, "tool_calls": [chat_call("c1")]}],
            "The following tool_call_ids did not have response messages: c1",
            id="call-without-result",
        ),
        pytest.param(
            [
                USER,
                {"role": "assistant", "tool_calls": [chat_call("c1"), chat_call("c2")]},
                {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            ],
            "The following tool_call_ids did not have response messages: c2",
            id="one-of-two-parallel-calls-without-result",
        ),
        pytest.param(
            [
                USER,
                {"role": "assistant", "tool_calls": [chat_call("c1")]},
                {"role": "user", "content": "hello?"},
                {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            ],
            "The following tool_call_ids did not have response messages: c1",
            id="result-not-right-after-its-call",
        ),
        pytest.param(
            [USER, {"role": "tool", "tool_call_id": "c9", "content": "{}"}],
            "messages with role 'tool' must be a response to a preceeding message",
            id="result-without-call",
        ),
        pytest.param(
            [
                USER,
                {"role": "assistant", "tool_calls": [chat_call("c1")]},
                {"role": "tool", "tool_call_id": "c1", "content": "{}"},
                {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            ],
            "messages with role 'tool' must be a response to a preceeding message",
            id="second-result-for-one-call",
        ),
    ],
)
async def test_chat_refuses_orphans_like_the_real_api(
    messages: list[dict[str, Any]], refusal: str
) -> None:
    async with FakeModelServer([Text("fine")]) as server, client_for(server) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="m", messages=messages)
        # The refusal used up no reply: the next valid request gets the first one.
        completion = await client.chat.completions.create(model="m", messages=[USER])

    assert refused.value.status_code == 400
    assert refusal in refused.value.message
    assert refused.value.type == "invalid_request_error"
    assert completion.choices[0].message.content == "fine"
    assert len(server.requests) == 2 and server.requests[0].orphan() is not None


async def test_chat_accepts_paired_calls_and_shows_them() -> None:
    messages = [
        USER,
        {
            "role": "assistant",
            "content": "Adding.",
            "tool_calls": [chat_call("c1", arguments="{}")],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
        {"role": "assistant", "content": "Done."},
    ]
    async with FakeModelServer([Text("fine")]) as server, client_for(server) as client:
        await client.chat.completions.create(model="m", messages=messages)

    [request] = server.requests
    assert request.tool_calls == [ToolCall("c1", "add_task", "{}")]
    assert request.tool_outputs == {"c1": '{"ok": true}'}
    assert request.messages == [
        ("user", "add milk"),
        ("assistant", "Adding."),
        ("assistant", "Done."),
    ]


# Responses -------------------------------------------------------------------------------


async def test_responses_text_and_tool_calls() -> None:
    script = [
        Text("Hello."),
        ToolCalls([FunctionCall("list_tasks", {"status": "pending"}, id="call_l")]),
    ]
    async with FakeModelServer(script) as server, client_for(server) as client:
        hello = await client.responses.create(model="m", input="hi", instructions="Be brief.")
        calls = await client.responses.create(model="m", input="list pending")

    assert hello.output_text == "Hello."
    [call] = calls.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == (
        "call_l",
        "list_tasks",
        '{"status": "pending"}',
    )
    assert server.requests[0].messages == [("system", "Be brief."), ("user", "hi")]


async def test_responses_stream_sends_the_typed_events_in_order() -> None:
    script = [ToolCalls([FunctionCall("add_task", {"title": "milk"})], text="Adding.")]
    async with FakeModelServer(script) as server, client_for(server) as client:
        stream = await client.responses.create(model="m", input="add milk", stream=True)
        events = [event async for event in stream]

    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    message, call = completed.response.output
    assert message.type == "message" and call.type == "function_call"
    assert call.arguments == '{"title": "milk"}'


async def test_responses_stream_is_framed_with_event_names_and_no_done() -> None:
    async with FakeModelServer([Text("Hi")]) as server:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{server.base_url}/responses", json={"model": "m", "input": "hi", "stream": True}
            )

    frames = response.text.split("\n\n")
    assert frames[-1] == "" and "[DONE]" not in response.text
    for frame in frames[:-1]:
        name, data = frame.split("\n")
        assert name.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]


@pytest.mark.parametrize(
    ("items", "refusal"),
    [
        pytest.param(
            [{"type": "function_call", "call_id": "c1", "name": "add_task", "arguments": "{}"}],
            "No tool output found for function call c1.",
            id="call-without-output",
        ),
        pytest.param(
            [{"type": "function_call_output", "call_id": "c9", "output": "{}"}],
            "No tool call found for function call output with call_id c9.",
            id="output-without-call",
        ),
        pytest.param(
            [
                {"type": "function_call_output", "call_id": "c1", "output": "{}"},
                {"type": "function_call", "call_id": "c1", "name": "add_task", "arguments": "{}"},
            ],
            "No tool call found for function call output with call_id c1.",
            id="output-before-its-call",
        ),
    ],
)
async def test_responses_refuses_orphans_like_the_real_api(
    items: list[dict[str, Any]], refusal: str
) -> None:
    async with FakeModelServer([Text("fine")]) as server, client_for(server) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="m", input=[USER, *items])

    assert refused.value.status_code == 400
    assert refused.value.body == {
        "message": refusal,
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert server.requests[0].orphan() == refusal


async def test_responses_accepts_paired_calls_and_shows_them() -> None:
    items = [
        USER,
        {"type": "function_call", "call_id": "c1", "name": "add_task", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": '{"ok": true}'},
    ]
    async with FakeModelServer([Text("fine")]) as server, client_for(server) as client:
        await client.responses.create(model="m", input=items)

    [request] = server.requests
    assert request.tool_calls == [ToolCall("c1", "add_task", "{}")]
    assert request.tool_outputs == {"c1": '{"ok": true}'}


# Script, errors and stalls ---------------------------------------------------------------


async def test_an_error_reply_is_an_openai_style_error() -> None:
    script = [ErrorResponse(429, "Rate limit reached.", "requests", "rate_limit_exceeded")]
    async with FakeModelServer(script) as server, client_for(server) as client:
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="m", messages=[USER])

    assert raised.value.status_code == 429
    assert raised.value.body == {
        "message": "Rate limit reached.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


async def test_a_request_past_the_end_of_the_script_gets_a_500_that_says_so() -> None:
    async with FakeModelServer([]) as server, client_for(server) as client:
        with pytest.raises(openai.InternalServerError, match="no reply for request 1"):
            await client.responses.create(model="m", input="hi")


async def test_a_script_function_sees_each_request() -> None:
    def echo(request: ModelRequest) -> ModelReply:
        return Text(f"you said {request.messages[-1][1]!r}")

    async with FakeModelServer(echo) as server, client_for(server) as client:
        first = await client.responses.create(model="m", input="one")
        second = await client.responses.create(model="m", input="two")

    assert (first.output_text, second.output_text) == ("you said 'one'", "you said 'two'")


async def test_a_stall_answers_once_released() -> None:
    arrived = threading.Event()

    def stall(request: ModelRequest) -> ModelReply:
        arrived.set()
        return Stall(then=Text("late"))

    async with FakeModelServer(stall) as server, client_for(server) as client:
        answer = asyncio.create_task(client.responses.create(model="m", input="hi"))
        await asyncio.to_thread(arrived.wait)
        assert not answer.done()
        server.release()
        response = await answer

    assert response.output_text == "late"


async def test_a_stall_still_waiting_does_not_keep_the_server_from_stopping() -> None:
    async with FakeModelServer([Stall()]) as server, client_for(server) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.responses.create(model="m", input="hi")
    # Leaving the block stopped the server although the stalled request never ended.
    with pytest.raises(RuntimeError, match="not running"):
        server.release()


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_reply_paused_halfway_sends_its_first_pieces_then_the_rest_once_released(
    api: str,
) -> None:
    reply = Text("Added milk for you!!", chunks=2, pause_after=1)
    async with FakeModelServer([reply]) as server, client_for(server) as client:
        if api == "chat":
            stream = await client.chat.completions.create(model="m", messages=[USER], stream=True)
            texts = (c.choices[0].delta.content async for c in stream if c.choices)
        else:
            events = await client.responses.create(model="m", input="add milk", stream=True)
            texts = (e.delta async for e in events if e.type == "response.output_text.delta")
        pieces = [piece async for piece in _until(texts, "Added milk")]
        assert server.replies_sent == 0
        rest = asyncio.create_task(_collect(texts))
        await asyncio.sleep(0.05)  # long enough for a piece that was not held to arrive
        assert not rest.done()
        server.release()
        pieces += await rest
    assert "".join(p for p in pieces if p) == "Added milk for you!!"
    assert server.replies_sent == 1


async def _until(texts: AsyncIterator[str | None], wanted: str) -> AsyncIterator[str | None]:
    seen = ""
    async for text in texts:
        yield text
        seen += text or ""
        if seen == wanted:
            return


async def _collect(texts: AsyncIterator[str | None]) -> list[str | None]:
    return [text async for text in texts]
