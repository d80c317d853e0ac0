"""Clients that hold on: a real `chatledger serve` cuts off slow headers and slow bodies,
refuses an unauthenticated body without waiting for it, and gives every file descriptor
back. Bounded: 50 slow connections of each kind, on 127.0.0.1, for a few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import httpx
import pytest

from chatledger.testing import FakeModelServer, Stall, Text
from tests.process.conftest import StartServer
from tests.process.servers import SECRET, ServerProcess, auth, child_env, eventually
from tests.process.test_crashes import model_env

pytestmark = pytest.mark.slow

SLOW = 50
TIMEOUT = "1"  # seconds, for headers and for bodies


def open_descriptors(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


async def closed_by_server(reader: asyncio.StreamReader, *, within: float) -> bytes:
    """Everything the server sent until it closed the connection."""
    async with asyncio.timeout(within):
        return await reader.read()


async def slow_headers(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()

        async def trickle() -> None:
            for _ in range(100):
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)

        trickling = asyncio.create_task(trickle())
        try:
            return await closed_by_server(reader, within=5)
        finally:
            trickling.cancel()
    finally:
        writer.close()


async def slow_body(port: int, headers: dict[str, str], path: str = "/api/alice/chat") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n{head}\r\n".encode()
            + b'{"message": "'
        )
        await writer.drain()
        return await closed_by_server(reader, within=5)
    finally:
        writer.close()


async def test_slow_clients_are_cut_off_and_descriptors_come_back(
    serve: StartServer, sqlite_url: str
) -> None:
    env = child_env(JWT_SECRET=SECRET, REQUEST_HEADER_TIMEOUT=TIMEOUT, REQUEST_BODY_TIMEOUT=TIMEOUT)
    server = await serve(sqlite_url, env=env)
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200
    baseline = open_descriptors(server)

    started = time.monotonic()
    headers_cut, bodies_cut = await asyncio.gather(
        asyncio.gather(*(slow_headers(server.port) for _ in range(SLOW))),
        asyncio.gather(*(slow_body(server.port, auth("alice")) for _ in range(SLOW))),
    )
    took = time.monotonic() - started

    assert all(answer == b"" for answer in headers_cut)  # closed, nothing said
    for answer in bodies_cut:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b'"code":"request_timeout"' in answer
    assert took < 5, f"the slow clients were held {took:.1f} s"

    async def back_to_baseline() -> bool:
        return open_descriptors(server) <= baseline

    await eventually(back_to_baseline, within=10, what="descriptors back to the baseline")
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_an_unauthenticated_body_is_refused_before_it_is_sent(
    serve: StartServer, sqlite_url: str
) -> None:
    # A long body deadline: the 401 must come from the token check, not from the deadline.
    env = child_env(JWT_SECRET=SECRET, REQUEST_BODY_TIMEOUT="60")
    server = await serve(sqlite_url, env=env)
    # One token for mallory: a second one minted a second later would differ from it.
    mallory = auth("mallory")
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, mallory):
        started = time.monotonic()
        answer = await slow_body(server.port, headers)
        assert time.monotonic() - started < 3
        status = 403 if headers is mallory else 401
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
    # Under /v1 the user is whoever the token says: a bad token is refused alike.
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        started = time.monotonic()
        answer = await slow_body(server.port, headers, "/v1/conversations")
        assert time.monotonic() - started < 3
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:80]
        assert b'"type":"invalid_request_error"' in answer


async def stream_status(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> int:
    """The status a stream opens with; the stream is closed at once."""
    async with client.stream(method, url, **kwargs) as response:
        return response.status_code


@pytest.mark.alone
async def test_streams_per_user_are_capped_and_given_back(
    serve: StartServer, sqlite_url: str
) -> None:
    """One user holds the most streams a process allows; 1,000 more attempts are 429 with
    Retry-After, while another user still streams; closed streams free their places."""
    async with FakeModelServer([Stall(then=Text("late"))] * 2) as model:
        env = model_env(model, MAX_STREAMS_PER_USER="4")
        server = await serve(sqlite_url, agent="openai", env=env)
        # The held turn waits out everything below, 1,000 requests included.
        async with server.client(headers=auth("alice"), timeout=120) as alice:
            created = await alice.post("/api/alice/conversations", json={})
            conversation_id = created.json()["id"]
            follow = f"/api/alice/conversations/{conversation_id}/stream"
            body = {"message": "think", "conversation_id": conversation_id}
            turn = asyncio.create_task(alice.post("/api/alice/chat", json=body))

            async def running() -> bool:
                return len(model.requests) == 1

            await eventually(running, within=15, what="the turn runs")
            async with contextlib.AsyncExitStack() as held:
                opened = [
                    await held.enter_async_context(alice.stream("GET", follow)) for _ in range(4)
                ]
                assert [r.status_code for r in opened] == [200] * 4
                # A pool wait without a deadline: on a busy machine the 1,000 requests queue
                # for the client's 100 connections longer than one request's timeout.
                async with server.client(
                    headers=auth("alice"), timeout=httpx.Timeout(30, pool=None)
                ) as attempts:
                    refused = await asyncio.gather(*(attempts.get(follow) for _ in range(1000)))
                refused_turn = await stream_status(
                    alice, "POST", "/api/alice/chat/stream", json={"message": "another"}
                )
                async with server.client(headers=auth("bob")) as bob:
                    bobs = await stream_status(
                        bob, "POST", "/api/bob/chat/stream", json={"message": "hi"}
                    )

            async def freed() -> bool:
                return await stream_status(alice, "GET", follow) == 200

            # The server learns of the closes behind the 1,000 refusals it is still
            # answering and logging, which takes tens of seconds on a busy 2-core machine.
            await eventually(freed, within=40, what="closed streams free their places")
            model.release()
            await turn
    assert {r.status_code for r in refused} == {429}
    assert {r.json()["code"] for r in refused} == {"too_many_streams"}
    assert {r.headers["Retry-After"] for r in refused} == {"5"}
    assert refused_turn == 429
    assert bobs == 200
