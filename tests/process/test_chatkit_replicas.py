"""A ChatKit thread outlives the process that started it: begun through one `chatledger
serve`, killed with SIGKILL, it continues through another on the same PostgreSQL, with
every item under the ids the front end was first told."""

from __future__ import annotations

from typing import Any

import httpx
from chatkit.types import (
    InferenceOptions,
    Thread,
    ThreadAddUserMessageParams,
    ThreadCreatedEvent,
    ThreadCreateParams,
    ThreadGetByIdParams,
    ThreadItemDoneEvent,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsGetByIdReq,
    ThreadStreamEvent,
    UserMessageInput,
    UserMessageTextContent,
)
from pydantic import BaseModel, TypeAdapter

from tests.process.conftest import StartServer
from tests.process.servers import ServerProcess, auth

EVENTS: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)


def said(text: str) -> UserMessageInput:
    return UserMessageInput(
        content=[UserMessageTextContent(text=text)],
        attachments=[],
        inference_options=InferenceOptions(),
    )


async def send(server: ServerProcess, request: BaseModel) -> httpx.Response:
    async with server.client(headers={**auth("alice"), "Content-Type": "application/json"}) as c:
        answer = await c.post("/chatkit", content=request.model_dump_json())
    assert answer.status_code == 200, answer.text
    return answer


def events(answer: httpx.Response) -> list[Any]:
    frames = [f for f in answer.text.split("\n\n") if f.strip()]
    return [EVENTS.validate_json(f.removeprefix("data: ")) for f in frames]


async def test_a_thread_continues_on_another_replica_after_a_kill(
    serve: StartServer, postgres_url: str
) -> None:
    first, second = await serve(postgres_url), await serve(postgres_url)
    created = events(
        await send(
            first, ThreadsCreateReq(params=ThreadCreateParams(input=said("add task buy milk")))
        )
    )
    [thread] = [e.thread for e in created if isinstance(e, ThreadCreatedEvent)]
    told = [e.item.id for e in created if isinstance(e, ThreadItemDoneEvent)]
    assert len(told) == 3  # the message, the task, the reply
    await first.kill()

    more = events(await send(second, ThreadsAddUserMessageReq(
        params=ThreadAddUserMessageParams(thread_id=thread.id, input=said("list my tasks"))
    )))  # fmt: skip
    told += [e.item.id for e in more if isinstance(e, ThreadItemDoneEvent)]
    answer = await send(second, ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread.id)))
    items = Thread.model_validate_json(answer.content).items.data
    assert [i.id for i in items] == told
    assert "buy milk" in items[-1].content[0].text  # type: ignore[union-attr]
