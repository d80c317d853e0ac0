"""`ScriptedAgent`: an agent that plays a script instead of asking a model.

    agent = ScriptedAgent([CallTool("add_task", {"title": "milk"}), Say("Added milk.")])

A `TokenUsage` in the script is reported as it stands, as a model's usage would be.

Each run of the agent plays the script from the start (or, when the script is a function,
the steps it returns for that run's input), so a test states exactly which tools are
called and what is said, and can count how often the agent really ran.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatledger.agents.base import (
    AgentEvent,
    AssistantMessage,
    TextDelta,
    TokenUsage,
    Toolbox,
    ToolCallFinished,
    ToolCallStarted,
)
from chatledger.domain import ChatMessage, ToolCall

__all__ = ["Block", "CallTool", "Fail", "Say", "ScriptedAgent", "Signal", "Step"]


@dataclass(frozen=True, slots=True)
class Say:
    """Send an assistant message, streamed in `chunks` pieces."""

    text: str
    chunks: int = 1


@dataclass(frozen=True, slots=True)
class CallTool:
    """Call a tool through the toolbox, exactly as a model's tool call would be."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fail:
    """Raise `error` from the agent."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Block:
    """Wait until `event` is set (a test's way to hold a turn in flight)."""

    event: asyncio.Event


@dataclass(frozen=True, slots=True)
class Signal:
    """Set `event` (a test's way to learn that the agent got this far)."""

    event: asyncio.Event


Step = Say | CallTool | Fail | Block | Signal | TokenUsage
Script = Sequence[Step] | Callable[[Sequence[ChatMessage]], Sequence[Step]]


class ScriptedAgent:
    """An `Agent` that plays a script instead of asking a model.

    Attributes:
        runs: how many times `run` has started.
        inputs: the messages each run received, in order.
    """

    def __init__(self, script: Script, *, summary_prefix: str = "Summary") -> None:
        self._script = script
        self._summary_prefix = summary_prefix
        self.runs = 0
        self.inputs: list[list[ChatMessage]] = []

    async def run(
        self, messages: Sequence[ChatMessage], toolbox: Toolbox
    ) -> AsyncIterator[AgentEvent]:
        self.runs += 1
        self.inputs.append(list(messages))
        steps = self._script(messages) if callable(self._script) else self._script
        for step in steps:
            if isinstance(step, Say):
                size = max(1, -(-len(step.text) // step.chunks))
                for start in range(0, len(step.text), size):
                    yield TextDelta(step.text[start : start + size])
                yield AssistantMessage(step.text)
            elif isinstance(step, CallTool):
                arguments = step.arguments
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", step.name, arguments)
                yield ToolCallStarted(call)
                yield ToolCallFinished(call, await toolbox.call(call))
            elif isinstance(step, Fail):
                raise step.error
            elif isinstance(step, Signal):
                step.event.set()
            elif isinstance(step, TokenUsage):
                yield step
            else:
                await step.event.wait()

    async def summarize(self, messages: Sequence[ChatMessage], previous: str | None) -> str:
        said = " | ".join(m.content for m in messages if m.content)
        return f"{previous}\n{said}" if previous else f"{self._summary_prefix}: {said}"


# The fake model server ------------------------------------------------------------------
