"""A unit-conversion assistant served by chatledger: an agent of its own, one Python tool,
and (through CHATLEDGER_MCP_SERVERS) one external MCP server.

    chatledger serve --app units_app:setup       # from this directory

`setup` is the factory `--app` calls with chatledger's settings; it returns what to serve.
"""

from __future__ import annotations

from typing import Annotated, Literal

from agents import Agent
from pydantic import Field

from chatledger.agents.openai import OpenAIAgent
from chatledger.compose import AgentSetup
from chatledger.errors import ConfigurationError
from chatledger.settings import Settings
from chatledger.tools import FunctionToolset, tool

Unit = Literal["mm", "cm", "m", "km", "in", "ft", "yd", "mi"]
METRES: dict[str, float] = {
    "mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0,
    "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344,
}  # fmt: skip


@tool(read_only=True, destructive=False, idempotent=True, open_world=False)
async def convert_length(
    value: Annotated[float, Field(description="the length to convert")],
    from_unit: Unit,
    to_unit: Unit,
) -> dict[str, float | str]:
    """Convert a length from one unit to another."""
    return {"value": round(value * METRES[from_unit] / METRES[to_unit], 6), "unit": to_unit}


INSTRUCTIONS = (
    "You convert units. Use convert_length for lengths and physical_constant when the user "
    "asks about a physical constant. Answer with the number and its unit, in one sentence."
)


def setup(settings: Settings) -> AgentSetup:
    """What chatledger serves: our own Agents SDK agent, with our tools and no task tools."""
    if settings.openai_api_key is None:
        raise ConfigurationError("the units assistant needs OPENAI_API_KEY")
    agent = OpenAIAgent(
        settings.model,
        api=settings.openai_api,
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get_secret_value(),
        agent=Agent(name="units", instructions=INSTRUCTIONS),
    )
    return AgentSetup(
        agent=agent,
        toolsets=[FunctionToolset("units", [convert_length])],
        task_tools=False,
        # The agent brings its own instructions: no second system prompt.
        system_prompt=None,
    )
