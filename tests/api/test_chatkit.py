"""`POST /chatkit`: ChatKit's protocol over real HTTP through the app, on both databases,
with requests built from the ChatKit SDK's own types.

What is asserted: the events a ChatKit front end receives, the ids it is told (the same
when it reloads the thread), the same conversation through `/api`, isolation between
users, and that a refused request stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from chatkit.types import (
    AssistantMessageItem,
    ErrorEvent,
    InferenceOptions,
    ItemFeedbackParams,
    ItemsFeedbackReq,
    ItemsListParams,
    ItemsListReq,
    Page,
    TaskItem,
    Thread,
    ThreadAddClientToolOutputParams,
    ThreadAddUserMessageParams,
    ThreadCreatedEvent,
    ThreadCreateParams,
    ThreadDeleteParams,
    ThreadGetByIdParams,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadListParams,
    ThreadMetadata,
    ThreadRetryAfterItemParams,
    ThreadsAddClientToolOutputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadStreamEvent,
    ThreadsUpdateReq,
    ThreadUpdatedEvent,
    ThreadUpdateParams,
    UserMessageInput,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
)
from pydantic import BaseModel, TypeAdapter

from chatledger.agents import OpenAIAgent
from chatledger.testing import (
    Block,
    FakeModelServer,
    FunctionCall,
    Say,
    ScriptedAgent,
    Signal,
    Text,
    ToolCalls,
)
from tests.api.conftest import Server, auth

EVENTS: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)
ITEMS: TypeAdapter[Page[ThreadItem]] = TypeAdapter(Page[ThreadItem])


def said(text: str) -> UserMessageInput:
    return UserMessageInput(
        content=[UserMessageTextContent(text=text)],
        attachments=[],
        inference_options=InferenceOptions(),
    )


async def send(server: Server, user: str, request: BaseModel | bytes) -> httpx.Response:
    body = request if isinstance(request, bytes) else request.model_dump_json()
    headers = {**auth(user), "Content-Type": "application/json"}
    return await server.client.post("/chatkit", content=body, headers=headers)


def events(response: httpx.Response) -> list[Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f.strip()]
    assert all(f.startswith("data: ") for f in frames), frames
    return [EVENTS.validate_json(f.removeprefix("data: ")) for f in frames]


async def thread_of(server: Server, user: str, thread_id: str) -> Thread:
    answer = await send(
        server, user, ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread_id))
    )
    assert answer.status_code == 200, answer.text
    return Thread.model_validate_json(answer.content)


async def create(server: Server, user: str, text: str) -> tuple[str, list[Any]]:
    streamed = events(
        await send(server, user, ThreadsCreateReq(params=ThreadCreateParams(input=said(text))))
    )
    [created] = [e for e in streamed if isinstance(e, ThreadCreatedEvent)]
    return created.thread.id, streamed


def done_items(streamed: list[Any]) -> list[Any]:
    return [e.item for e in streamed if isinstance(e, ThreadItemDoneEvent)]


# -- a turn ----------------------------------------------------------------------------------


async def test_a_new_thread_is_answered_by_chatledgers_turn_with_its_tool_calls(
    server: Server,
) -> None:
    thread_id, streamed = await create(server, "alice", "Add milk")
    kinds = [type(e).__name__ for e in streamed]
    assert kinds[0] == "ThreadCreatedEvent"
    assert not [e for e in streamed if isinstance(e, ThreadItemRemovedEvent)]  # foreseen
    user, task, reply = done_items(streamed)
    assert isinstance(user, UserMessageItem) and user.content[0].text == "Add milk"
    assert isinstance(task, TaskItem) and task.task.title == "add_task"  # type: ignore[union-attr]
    assert task.task.status_indicator == "complete" and '"title": "buy milk"' in (
        task.task.content or ""
    )  # type: ignore[union-attr]
    assert isinstance(reply, AssistantMessageItem) and reply.content[0].text == "Added buy milk."
    added = [e.item.id for e in streamed if isinstance(e, ThreadItemAddedEvent)]
    assert task.id in added  # shown as running before its result came
    [titled] = [e for e in streamed if isinstance(e, ThreadUpdatedEvent)]
    assert titled.thread.title == "Add milk"

    # A reload shows the same items under the same ids.
    thread = await thread_of(server, "alice", thread_id)
    assert [i.id for i in thread.items.data] == [user.id, task.id, reply.id]
    assert thread.title == "Add milk"
    # The same conversation through chatledger's own API: the tool call whole.
    answer = await server.client.get(
        f"/api/alice/conversations/{thread_id}/messages", headers=auth("alice")
    )
    messages = answer.json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["name"] == "add_task"
    assert messages[2]["tool_call_id"] == messages[1]["tool_calls"][0]["id"]
    tasks = (await server.client.get("/api/alice/tasks", headers=auth("alice"))).json()
    assert [t["title"] for t in tasks["items"]] == ["buy milk"]


async def test_a_thread_continues_from_chatkit_and_from_the_chat_api(server: Server) -> None:
    thread_id, _ = await create(server, "alice", "Add milk")
    streamed = events(await send(server, "alice", ThreadsAddUserMessageReq(
        params=ThreadAddUserMessageParams(thread_id=thread_id, input=said("And bread"))
    )))  # fmt: skip
    assert [type(i).__name__ for i in done_items(streamed)] == [
        "UserMessageItem", "TaskItem", "AssistantMessageItem",
    ]  # fmt: skip
    assert (await server.chat("alice", "Thanks", conversation_id=thread_id)).status_code == 200
    thread = await thread_of(server, "alice", thread_id)
    texts = [i.content[0].text for i in thread.items.data if isinstance(i, UserMessageItem)]
    assert texts == ["Add milk", "And bread", "Thanks"]
    # The chat API's turn reads as ChatKit items too, its tool call a task.
    assert [type(i).__name__ for i in thread.items.data[-3:]] == [
        "UserMessageItem", "TaskItem", "AssistantMessageItem",
    ]  # fmt: skip
    # The agent saw the whole conversation each time, pairs whole.
    agent = server.agent
    assert isinstance(agent, ScriptedAgent)
    assert [m.content for m in agent.inputs[-1] if m.role.value == "user"] == texts


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
async def test_items_page_in_both_orders_each_once(server: Server, limit: int) -> None:
    thread_id, _ = await create(server, "alice", "one")
    for text in ("two", "three"):
        await send(server, "alice", ThreadsAddUserMessageReq(
            params=ThreadAddUserMessageParams(thread_id=thread_id, input=said(text))
        ))  # fmt: skip
    everything = [i.id for i in (await thread_of(server, "alice", thread_id)).items.data]
    assert len(everything) == 9  # three turns of user, task, reply
    for order, expected in (("asc", everything), ("desc", everything[::-1])):
        seen: list[str] = []
        after = None
        for _ in range(20):
            answer = await send(server, "alice", ItemsListReq(params=ItemsListParams(
                thread_id=thread_id, limit=limit, order=order, after=after  # type: ignore[arg-type]
            )))  # fmt: skip
            page = ITEMS.validate_json(answer.content)
            assert len(page.data) <= limit
            seen += [i.id for i in page.data]
            if not page.has_more:
                break
            after = page.after
        assert seen == expected, (order, limit)


async def test_threads_list_rename_both_ways_and_delete(server: Server) -> None:
    ids = [(await create(server, "alice", f"thread {n}"))[0] for n in range(3)]
    listed: list[str] = []
    after = None
    while True:
        answer = await send(
            server, "alice", ThreadsListReq(params=ThreadListParams(limit=2, after=after))
        )
        page = TypeAdapter(Page[ThreadMetadata]).validate_json(answer.content)
        listed += [t.id for t in page.data]
        if not page.has_more:
            break
        after = page.after
    assert listed == ids[::-1]  # newest first
    answer = await send(server, "alice", ThreadsListReq(params=ThreadListParams(order="asc")))
    assert [
        t.id for t in TypeAdapter(Page[ThreadMetadata]).validate_json(answer.content).data
    ] == ids

    renamed = await send(
        server,
        "alice",
        ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=ids[0], title="Groceries")),
    )
    assert Thread.model_validate_json(renamed.content).title == "Groceries"
    conversation = await server.client.get(
        f"/api/alice/conversations/{ids[0]}", headers=auth("alice")
    )
    assert conversation.json()["title"] == "Groceries"
    await server.client.patch(
        f"/api/alice/conversations/{ids[1]}", json={"title": "Work"}, headers=auth("alice")
    )
    assert (await thread_of(server, "alice", ids[1])).title == "Work"

    assert (
        await send(server, "alice", ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=ids[2])))
    ).status_code == 200
    gone = await server.client.get(f"/api/alice/conversations/{ids[2]}", headers=auth("alice"))
    assert gone.status_code == 404


async def test_a_retry_answers_the_message_again_and_keeps_the_first_answer(
    make_server: Any,
) -> None:
    agent = ScriptedAgent(lambda messages: [Say(f"Answer {len(messages)}")])
    async with make_server(agent) as server:
        thread_id, streamed = await create(server, "alice", "Hello")
        user, first = done_items(streamed)
        again = events(await send(server, "alice", ThreadsRetryAfterItemReq(
            params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=user.id)
        )))  # fmt: skip
        [second] = done_items(again)
        assert isinstance(second, AssistantMessageItem) and second.id != first.id
        thread = await thread_of(server, "alice", thread_id)
        assert [i.id for i in thread.items.data] == [user.id, second.id]
        # The first answer is kept, as a version of its own.
        answer = await server.client.get(
            f"/api/alice/conversations/{thread_id}/messages", headers=auth("alice")
        )
        reply = answer.json()["items"][-1]
        assert reply["sibling_count"] == 2


async def test_a_real_model_through_the_openai_agent(make_server: Any) -> None:
    script = [
        ToolCalls([FunctionCall("add_task", {"title": "milk"})]),
        Text("Added milk.", chunks=4),
    ]
    async with FakeModelServer(script) as model:
        agent = OpenAIAgent("fake-model", base_url=model.base_url, api_key="sk-test")
        async with contextlib.aclosing(agent), make_server(agent) as server:
            thread_id, streamed = await create(server, "alice", "add milk")
            thread = await thread_of(server, "alice", thread_id)
    deltas = [e for e in streamed if type(e).__name__ == "ThreadItemUpdatedEvent"]
    assert deltas  # the reply streamed as it was written
    assert not [e for e in streamed if isinstance(e, ThreadItemRemovedEvent)]
    assert [type(i).__name__ for i in thread.items.data] == [
        "UserMessageItem", "TaskItem", "AssistantMessageItem",
    ]  # fmt: skip
    assert [i.id for i in thread.items.data] == [i.id for i in done_items(streamed)]
    assert thread.items.data[-1].content[0].text == "Added milk."  # type: ignore[union-attr]


# -- isolation and bad input ---------------------------------------------------------------


async def test_another_users_thread_is_not_found_in_every_request(server: Server) -> None:
    thread_id, streamed = await create(server, "alice", "Add milk")
    user_item = done_items(streamed)[0]
    before = await thread_of(server, "alice", thread_id)
    attempts: list[BaseModel] = [
        ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread_id)),
        ItemsListReq(params=ItemsListParams(thread_id=thread_id)),
        ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title="mine now")),
        ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=thread_id)),
        ThreadsAddUserMessageReq(
            params=ThreadAddUserMessageParams(thread_id=thread_id, input=said("hi"))
        ),
        ThreadsRetryAfterItemReq(
            params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=user_item.id)
        ),
        ThreadsAddClientToolOutputReq(
            params=ThreadAddClientToolOutputParams(thread_id=thread_id, result={})
        ),
        ItemsFeedbackReq(
            params=ItemFeedbackParams(thread_id=thread_id, item_ids=[user_item.id], kind="positive")
        ),
    ]
    for attempt in attempts:
        answer = await send(server, "bob", attempt)
        assert answer.status_code == 404, (attempt.type, answer.text)  # type: ignore[attr-defined]
        assert answer.json()["code"] == "not_found"
    assert await thread_of(server, "alice", thread_id) == before
    listed = await send(server, "bob", ThreadsListReq(params=ThreadListParams()))
    assert TypeAdapter(Page[ThreadMetadata]).validate_json(listed.content).data == []


async def test_refused_requests_store_nothing(server: Server) -> None:
    attachment = said("look").model_copy(update={"attachments": ["atc_1"]})
    refusals: list[tuple[bytes | BaseModel, int, str]] = [
        (b"{not json", 422, "invalid"),
        (b'{"type": "threads.teleport", "params": {}}', 422, "invalid"),
        (b'{"type": "threads.create", "params": {"input": {"content": 5}}}', 422, "invalid"),
        (
            ThreadsCreateReq(params=ThreadCreateParams(input=attachment)),
            422,
            "attachments_unsupported",
        ),
        (ThreadsCreateReq(params=ThreadCreateParams(input=said("bell\x07"))), 422, "invalid"),
        (ThreadsCreateReq(params=ThreadCreateParams(input=said("   "))), 422, "invalid"),
        (ThreadsCreateReq(params=ThreadCreateParams(input=said("x" * 32_001))), 413, "too_large"),
        (
            ThreadsCreateReq(params=ThreadCreateParams(input=said("x" * 2_000_000))),
            413,
            "too_large",
        ),
    ]
    for request, status, code in refusals:
        answer = await send(server, "alice", request)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    conversations = await server.client.get("/api/alice/conversations", headers=auth("alice"))
    assert conversations.json()["items"] == []
    # The longest message the chat API takes, ChatKit takes too (its item kept beside it).
    longest = await send(
        server, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=said("x" * 32_000)))
    )
    assert isinstance(events(longest)[0], ThreadCreatedEvent)
    # Requests this thread cannot take: no client tool call waits; a retry from a reply.
    thread_id, streamed = await create(server, "alice", "Add milk")
    before = await thread_of(server, "alice", thread_id)
    reply_id = done_items(streamed)[-1].id
    for request in (
        ThreadsAddClientToolOutputReq(
            params=ThreadAddClientToolOutputParams(thread_id=thread_id, result={})
        ),
        ThreadsRetryAfterItemReq(
            params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=reply_id)
        ),
    ):
        answer = await send(server, "alice", request)
        assert (answer.status_code, answer.json()["code"]) == (422, "not_applicable"), answer.text
    assert await thread_of(server, "alice", thread_id) == before
    anonymous = await server.client.post("/chatkit", content=b"{}")
    assert anonymous.status_code == 401


@pytest.mark.parametrize("first", ["chat api", "chatkit"])
async def test_a_message_while_a_turn_runs_is_an_error_event_and_stores_nothing(
    make_server: Any, first: str
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent([Signal(started), Block(release), Say("Done.")])
    async with make_server(agent) as server:
        created = await server.client.post(
            "/api/alice/conversations", json={}, headers=auth("alice")
        )
        thread_id = created.json()["id"]
        if first == "chat api":
            running = asyncio.create_task(server.chat("alice", "slow", conversation_id=thread_id))
        else:
            running = asyncio.create_task(send(server, "alice", ThreadsAddUserMessageReq(
                params=ThreadAddUserMessageParams(thread_id=thread_id, input=said("slow"))
            )))  # fmt: skip
        await started.wait()
        answer = await send(server, "alice", ThreadsAddUserMessageReq(
            params=ThreadAddUserMessageParams(thread_id=thread_id, input=said("meanwhile"))
        ))  # fmt: skip
        [refused] = [e for e in events(answer) if isinstance(e, ErrorEvent)]
        assert refused.allow_retry and "another turn" in (refused.message or "")
        release.set()
        assert (await running).status_code == 200
        thread = await thread_of(server, "alice", thread_id)
        messages = await server.client.get(
            f"/api/alice/conversations/{thread_id}/messages", headers=auth("alice")
        )
    # The refused message was never stored: the thread is the first turn, whole.
    assert [type(i).__name__ for i in thread.items.data] == [
        "UserMessageItem", "AssistantMessageItem",
    ]  # fmt: skip
    assert [m["content"] for m in messages.json()["items"]] == ["slow", "Done."]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "message",
    [
        said("hi").model_copy(update={"quoted_text": "a\x00b"}),
        said("hi").model_copy(update={"quoted_text": "q" * 300_000}),  # past the store's 256 KiB
        said("hi").model_copy(update={"inference_options": InferenceOptions(model="m\x00")}),
        UserMessageInput(
            content=[UserMessageTagContent(id="t", text="hi", data=_nested(40))],
            attachments=[],
            inference_options=InferenceOptions(),
        ),
    ],
    ids=["quoted-nul", "quoted-too-long", "model-nul", "tag-data-too-deep"],
)
async def test_a_message_the_store_refuses_makes_no_thread(
    server: Server, message: UserMessageInput
) -> None:
    # What a message keeps besides its text is checked before the thread is made: the
    # request is a plain error, not a stream broken after an empty thread was stored.
    for request in (
        ThreadsCreateReq(params=ThreadCreateParams(input=message)),
        ThreadsAddUserMessageReq(
            params=ThreadAddUserMessageParams(thread_id="not-yet", input=message)
        ),
    ):
        answer = await send(server, "alice", request)
        assert answer.status_code in (413, 422), answer.text
        assert answer.json()["field"] == "params.input"
    conversations = await server.client.get("/api/alice/conversations", headers=auth("alice"))
    assert conversations.json()["items"] == []


async def test_requests_chatledger_does_not_serve_are_refused_not_internal_errors(
    server: Server,
) -> None:
    thread_id, _ = await create(server, "alice", "Add milk")
    before = await thread_of(server, "alice", thread_id)
    action = {"type": "x", "payload": {}}
    refusals: list[tuple[dict[str, Any], str, int, str]] = [
        (
            {"type": "attachments.create", "params": {"name": "a.txt", "size": 1,
                                                      "mime_type": "text/plain"}},
            "alice", 422, "attachments_unsupported",
        ),
        (
            {"type": "attachments.delete", "params": {"attachment_id": "atc_1"}},
            "alice", 422, "attachments_unsupported",
        ),
        (
            {"type": "input.transcribe", "params": {"audio_base64": "AAAA",
                                                    "mime_type": "audio/webm"}},
            "alice", 422, "not_supported",
        ),
        (
            {"type": "threads.sync_custom_action", "params": {"thread_id": thread_id,
                                                              "action": action}},
            "alice", 422, "not_supported",
        ),
        (  # another user's thread is still not found
            {"type": "threads.sync_custom_action", "params": {"thread_id": thread_id,
                                                              "action": action}},
            "bob", 404, "not_found",
        ),
    ]  # fmt: skip
    for body, user, status, code in refusals:
        answer = await send(server, user, json.dumps(body).encode())
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert await thread_of(server, "alice", thread_id) == before


async def test_a_retry_from_an_item_the_thread_does_not_have_is_not_found(server: Server) -> None:
    thread_id, streamed = await create(server, "alice", "Add milk")
    bobs_thread, bobs = await create(server, "bob", "Add bread")
    before = await thread_of(server, "alice", thread_id)
    for item_id in ("message_missing", "cl_999", done_items(bobs)[0].id):
        answer = await send(server, "alice", ThreadsRetryAfterItemReq(
            params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=item_id)
        ))  # fmt: skip
        assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), answer.text
    assert await thread_of(server, "alice", thread_id) == before
    # Bob's retry from Alice's message, in his own thread: not found either.
    answer = await send(server, "bob", ThreadsRetryAfterItemReq(
        params=ThreadRetryAfterItemParams(thread_id=bobs_thread, item_id=done_items(streamed)[0].id)
    ))  # fmt: skip
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), answer.text


async def test_chatkit_fields_chatkit_cannot_read_do_not_break_the_thread(server: Server) -> None:
    # Metadata set through /api under the key ChatKit's thread fields are kept in.
    created = await server.client.post(
        "/api/alice/conversations",
        json={"title": "Mine", "metadata": {"chatkit_thread": {"status": "bad"}}},
        headers=auth("alice"),
    )
    thread_id = created.json()["id"]
    thread = await thread_of(server, "alice", thread_id)
    assert (thread.title, thread.status.type) == ("Mine", "active")
    listed = await send(server, "alice", ThreadsListReq(params=ThreadListParams()))
    assert listed.status_code == 200, listed.text
    assert [t.id for t in TypeAdapter(Page[ThreadMetadata]).validate_json(listed.content).data] == [
        thread_id
    ]
    # A message whose kept item is not one ChatKit reads (an edited export, imported).
    other, streamed = await create(server, "alice", "Add milk")
    user_id = done_items(streamed)[0].id
    export = await server.client.get("/api/alice/export", headers=auth("alice"))
    lines = [json.loads(line) for line in export.text.splitlines() if line.strip()]
    for line in lines:
        if line.get("type") == "message" and "chatkit_item" in line["metadata"]:
            line["metadata"]["chatkit_item"] = {"type": "bogus", "id": user_id}
    imported = await server.client.post(
        "/api/bob/import",
        content="\n".join(json.dumps(line) for line in lines).encode(),
        headers={**auth("bob"), "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 200, imported.text
    [copy] = [c["id"] for c in imported.json()["conversations"] if c["source_id"] == other]
    thread = await thread_of(server, "bob", copy)
    assert [type(i).__name__ for i in thread.items.data] == [
        "UserMessageItem", "TaskItem", "AssistantMessageItem",
    ]  # fmt: skip
    assert thread.items.data[0].content[0].text == "Add milk"  # type: ignore[union-attr]
    # Its kept id is not one the thread shows: not found, not an internal error.
    answer = await send(server, "bob", ThreadsRetryAfterItemReq(
        params=ThreadRetryAfterItemParams(thread_id=copy, item_id=user_id)
    ))  # fmt: skip
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), answer.text


async def test_a_fork_reads_as_a_thread_of_its_own(server: Server) -> None:
    thread_id, _ = await create(server, "alice", "Add milk")
    fork = await server.client.post(
        f"/api/alice/conversations/{thread_id}/fork", json={}, headers=auth("alice")
    )
    assert fork.status_code == 201, fork.text
    fork_id = fork.json()["id"]
    thread = await thread_of(server, "alice", fork_id)
    assert len(thread.items.data) == 3
    # ChatKit's own items too (the user's message was made by ChatKit in the original).
    assert {item.thread_id for item in thread.items.data} == {fork_id}
    original = await thread_of(server, "alice", thread_id)
    assert {item.thread_id for item in original.items.data} == {thread_id}


async def test_chatkit_streams_count_among_the_users_open_streams(make_server: Any) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    agent = ScriptedAgent(lambda _: [Signal(started), Block(release), Say("Done.")])
    async with make_server(agent, max_streams_per_user=1) as server:
        first = asyncio.create_task(
            send(server, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=said("one"))))
        )
        await started.wait()
        answer = await send(
            server, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=said("two")))
        )
        assert (answer.status_code, answer.json()["code"]) == (429, "too_many_streams")
        # A request that does not stream is served.
        listed = await send(server, "alice", ThreadsListReq(params=ThreadListParams()))
        assert listed.status_code == 200
        release.set()
        done = events(await first)
        assert isinstance(done[-1], ThreadUpdatedEvent | ThreadItemDoneEvent)
        conversations = await server.client.get("/api/alice/conversations", headers=auth("alice"))
        assert [c["title"] for c in conversations.json()["items"]] == ["one"]
        # The place is given back when the stream is over.
        again = await send(
            server, "alice", ThreadsCreateReq(params=ThreadCreateParams(input=said("three")))
        )
        assert again.status_code == 200


async def test_chatkits_stop_stops_the_turn_and_keeps_what_was_said(make_server: Any) -> None:
    """ChatKit's Stop closes the stream: the turn stops as the stop endpoint stops it."""
    started, release = asyncio.Event(), asyncio.Event()
    first = [Say("Working on it."), Signal(started), Block(release), Say("never")]
    agent = ScriptedAgent(lambda messages: first if len(messages) <= 2 else [Say("Next.")])
    async with make_server(agent) as server:
        created = await server.client.post(
            "/api/alice/conversations", json={}, headers=auth("alice")
        )
        thread_id = created.json()["id"]
        body = (
            ThreadsAddUserMessageReq(
                params=ThreadAddUserMessageParams(thread_id=thread_id, input=said("Do it"))
            )
            .model_dump_json()
            .encode()
        )
        sent: list[bytes] = []
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append(body)
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # the client closes the stream once the turn is under way
            return {"type": "http.disconnect"}

        async def respond(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and b"Working" in message.get("body", b""):
                gone.set()

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/chatkit", "raw_path": b"/chatkit",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
            "server": ("chatledger", 80),
            "headers": [
                (b"host", b"chatledger"), (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"authorization", auth("alice")["Authorization"].encode()),
            ],
        }  # fmt: skip
        await asyncio.wait_for(server.app(scope, receive, respond), timeout=10)
        await asyncio.wait_for(started.wait(), timeout=10)
        # The turn was stopped, not left to run: it ends, well before the agent's timeout
        # (5 s here) would have ended it, with its agent still blocked.
        for _ in range(40):
            conversation = await server.client.get(
                f"/api/alice/conversations/{thread_id}", headers=auth("alice")
            )
            if not conversation.json()["running"]:
                break
            await asyncio.sleep(0.05)
        assert not conversation.json()["running"]
        again = await server.chat("alice", "Next", conversation_id=thread_id)
        assert again.status_code == 200, again.text
        release.set()
        messages = await server.client.get(
            f"/api/alice/conversations/{thread_id}/messages", headers=auth("alice")
        )
    contents = [m["content"] for m in messages.json()["items"]]
    assert contents[:2] == ["Do it", "Working on it."]
    assert "never" not in contents
