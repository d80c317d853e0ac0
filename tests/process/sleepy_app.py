"""An `--app` factory for the crash test: the built-in agent and task tools, plus a Python
tool that announces it has started (a file named by SLEEPY_MARKER) and then sleeps."""

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
    await asyncio.to_thread(Path(os.environ["SLEEPY_MARKER"]).write_text, topic)
    await asyncio.sleep(600)
    return "found"


def setup(settings: Settings) -> AgentSetup:
    return AgentSetup(
        agent=build_agent(settings), toolsets=[FunctionToolset("slow", [slow_lookup])]
    )
