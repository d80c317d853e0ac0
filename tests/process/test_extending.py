"""Your own agent and tools under `chatledger serve --app`, as real processes: the units
example end to end, and a tool outside our database cut off by SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import httpx

from chatledger.testing import FakeModelServer, FunctionCall, Text, ToolCalls
from tests.process.conftest import StartServer
from tests.process.servers import SECRET, auth, child_env, eventually
from tests.process.test_crashes import send_until_answered

EXAMPLE = Path(__file__).parents[2] / "examples" / "units"


def example_env(model: FakeModelServer, **settings: str) -> dict[str, str]:
    env = child_env(JWT_SECRET=SECRET, **settings)
    env.update(OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="test")
    return env


async def test_the_units_example_serves_a_turn_with_its_own_agent_and_tools(
    serve: StartServer, sqlite_url: str, tmp_path: Path
) -> None:
    servers = tmp_path / "mcp.json"
    # The example's mcp.json runs `python`; here, this interpreter.
    config = json.loads((EXAMPLE / "mcp.json").read_text())
    config["mcpServers"]["constants"]["command"] = sys.executable
    servers.write_text(json.dumps(config))
    script = [
        ToolCalls(
            [FunctionCall("convert_length", {"value": 5, "from_unit": "km", "to_unit": "mi"})]
        ),
        ToolCalls([FunctionCall("physical_constant", {"name": "speed of light"})]),
        Text("5 km is 3.106856 mi; light goes 299792458 m/s."),
    ]
    async with FakeModelServer(script) as model:
        env = example_env(model, MCP_SERVERS=str(servers))
        server = await serve(sqlite_url, app="units_app:setup", cwd=EXAMPLE, env=env)
        async with server.client(headers=auth("alice")) as client:
            response = await client.post("/api/alice/chat", json={"message": "5 km in miles?"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"] == "5 km is 3.106856 mi; light goes 299792458 m/s."
    assert [(call["name"], call["result"]) for call in body["tool_calls"]] == [
        ("convert_length", {"value": 3.106856, "unit": "mi"}),
        (
            "physical_constant",
            {
                # The MCP SDK's text for a structured result: the same object, indented.
                "content": json.dumps(
                    {"name": "speed of light", "value": 299792458.0, "unit": "m/s"}, indent=2
                ),
                "structured": {"name": "speed of light", "value": 299792458.0, "unit": "m/s"},
            },
        ),
    ]
    first = model.requests[0]
    # The example's own instructions, once; its tools and the MCP server's, no task tools.
    assert [text for role, text in first.messages if role != "user"] == [
        "You convert units. Use convert_length for lengths and physical_constant when the user "
        "asks about a physical constant. Answer with the number and its unit, in one sentence."
    ]
    assert sorted(first.tool_names) == ["convert_length", "physical_constant"]


async def test_a_tool_call_cut_off_by_sigkill_is_closed_as_interrupted(
    serve: StartServer, sqlite_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    script = [ToolCalls([FunctionCall("slow_lookup", {"topic": "tides"})]), Text("Recovered.")]
    async with FakeModelServer(script) as model:
        env = example_env(model, LEASE_SECONDS="2")
        env["SLEEPY_MARKER"] = str(marker)
        options = {
            "app": "sleepy_app:setup",
            "agent": "openai",
            "cwd": Path(__file__).parent,
            "env": env,
        }
        first = await serve(sqlite_url, **options)
        async with first.client(headers=auth("alice"), timeout=5) as client:
            first_try = {"message": "look up tides"}
            turn = asyncio.create_task(
                client.post("/api/alice/chat", json=first_try, headers={"Idempotency-Key": "tides"})
            )

            async def tool_started() -> bool:
                return marker.exists()

            await eventually(tool_started, within=20, what="the tool runs")
            await first.kill()
            with contextlib.suppress(httpx.HTTPError):
                await turn

        second = await serve(sqlite_url, **options)
        async with second.client(headers=auth("alice")) as client:
            # The client retries its request, same key: the answer is what the dead turn
            # did, and the tool does not run a second time.
            retried = await send_until_answered(client, "alice", first_try, key="tides")
            [conversation] = (await client.get("/api/alice/conversations")).json()["items"]
            again = await send_until_answered(
                client,
                "alice",
                {"message": "and now?", "conversation_id": conversation["id"]},
                key="after-the-crash",
            )
            messages = (
                await client.get(f"/api/alice/conversations/{conversation['id']}/messages")
            ).json()["items"]

    assert retried.status_code == 200, retried.text
    assert retried.json()["interrupted"] is True
    assert [call["result"]["code"] for call in retried.json()["tool_calls"]] == ["interrupted"]
    assert marker.read_text() == "tides\n"
    assert again.status_code == 200, again.text
    assert again.json()["response"] == "Recovered."
    # The model's input held the call with its interrupted result: no orphan.
    last = model.requests[-1]
    assert last.orphan() is None
    assert [json.loads(output)["code"] for output in last.tool_outputs.values()] == ["interrupted"]
    # And so does the record: the crashed turn closed as interrupted, its call answered.
    tool_results = [m for m in messages if m["role"] == "tool"]
    assert [json.loads(m["content"])["code"] for m in tool_results] == ["interrupted"]
    crashed = [m for m in messages if m["role"] == "assistant" and m["content"] == ""]
    assert crashed
