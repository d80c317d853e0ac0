"""An `--app` factory for the crash test: the built-in agent and task tools, plus a Python
tool that notes each start (a line in the file SLEEPY_MARKER names) and then sleeps."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from chatledger.compose import AgentSetup, build_agent
from chatledger.settings import Settings
from chatledger.tools import FunctionToolset, tool


@tool
async def slow_lookup(topic: str) -> str:
    """Look a topic up, slowly."""
    await asyncio.to_thread(_note_start, topic)
    await asyncio.sleep(600)
    return "found"


def _note_start(topic: str) -> None:
    # A line per run, so that a test can count how often the tool really ran.
    with Path(os.environ["SLEEPY_MARKER"]).open("a") as marker:
        marker.write(topic + "\n")


def setup(settings: Settings) -> AgentSetup:
    return AgentSetup(
        agent=build_agent(settings), toolsets=[FunctionToolset("slow", [slow_lookup])]
    )
