"""The agent protocol: history and tools in, a stream of events out.

An agent reads the conversation as `ChatMessage`s (already cut to fit its budget by
`chatledger.context`) and acts only through the `Toolbox` it is given. It never touches
the database: the toolbox the chat service passes runs each tool and records the call and
its result before returning, so a tool's effect and its record are never apart.

An agent's stream, in order of occurrence:

- `TextDelta`: a piece of assistant text as it is produced (for streaming to a client);
- `ToolCallStarted`: the agent is about to call a tool;
- `ToolCallFinished`: the tool returned (the result is already recorded);
- `AssistantMessage`: a complete assistant text message. An agent may send several (text
  before a tool call, then the answer); the last one is the reply;
- `TokenUsage`: the tokens a model request (or several) took in and gave out, as the model
  reported them or as estimated (`chatledger.usage.estimate_usage`). An agent sends one per
  request, or one for its run; the turn records their sum. Send it as soon as it is known:
  a run that is stopped or fails keeps what it reported before. A turn whose agent reports
  none records its usage as unknown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from chatledger.domain import ChatMessage, ToolCall
from chatledger.tools import ToolSpec
from chatledger.usage import TokenUsage

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentReply",
    "AssistantMessage",
    "TextDelta",
    "TokenUsage",
    "ToolCallFinished",
    "ToolCallStarted",
    "Toolbox",
    "run_agent",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    call: ToolCall
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AssistantMessage:
    content: str


AgentEvent = TextDelta | ToolCallStarted | ToolCallFinished | AssistantMessage | TokenUsage


class Toolbox(Protocol):
    """The tools an agent may call, bound to the verified user of the turn."""

    @property
    def specs(self) -> Sequence[ToolSpec]: ...

    async def call(self, call: ToolCall) -> dict[str, Any]:
        """Run one tool call and return its JSON result (or an `{"error", "code"}` object).

        Tool failures are results, not exceptions, so the agent can explain them.
        """
        ...


@runtime_checkable
class Agent(Protocol):
    def run(self, messages: Sequence[ChatMessage], toolbox: Toolbox) -> AsyncIterator[AgentEvent]:
        """Answer the last user message of `messages`, calling tools through `toolbox`.

        Raises:
            ModelError: the model endpoint failed (the turn is answered with 502).
        """
        ...

    async def summarize(self, messages: Sequence[ChatMessage], previous: str | None) -> str:
        """Fold `messages` into `previous` (a summary of what came before them, or None).

        The result replaces older history in the agent's input, so it must keep what a
        later turn could need: what was asked, what the tools did, what is still open.
        """
        ...


@dataclass(frozen=True, slots=True)
class AgentReply:
    """Everything an agent did in one run, collected from its stream."""

    content: str
    tool_calls: list[ToolCallFinished] = field(default_factory=list)
    usage: TokenUsage | None = None  # the sum of what it reported; None if nothing


async def run_agent(agent: Agent, messages: Sequence[ChatMessage], toolbox: Toolbox) -> AgentReply:
    """Run `agent` to the end without streaming; returns its reply, tool calls and usage."""
    content = ""
    tool_calls = []
    usage: TokenUsage | None = None
    async for event in agent.run(messages, toolbox):
        if isinstance(event, AssistantMessage):
            content = event.content
        elif isinstance(event, ToolCallFinished):
            tool_calls.append(event)
        elif isinstance(event, TokenUsage):
            usage = event if usage is None else usage + event
    return AgentReply(content, tool_calls, usage)
