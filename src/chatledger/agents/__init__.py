"""Agents: the protocol (`chatledger.agents.base`) and its implementations.

`OpenAIAgent` is imported on first use, so importing this package needs neither the OpenAI
SDK nor the Agents SDK.
"""

from typing import TYPE_CHECKING, Any

from chatledger.agents.base import (
    Agent,
    AgentEvent,
    AgentReply,
    AssistantMessage,
    TextDelta,
    TokenUsage,
    Toolbox,
    ToolCallFinished,
    ToolCallStarted,
    run_agent,
)
from chatledger.agents.rules import RulesAgent

if TYPE_CHECKING:
    from chatledger.agents.openai import OpenAIAgent

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentReply",
    "AssistantMessage",
    "OpenAIAgent",
    "RulesAgent",
    "TextDelta",
    "TokenUsage",
    "ToolCallFinished",
    "ToolCallStarted",
    "Toolbox",
    "run_agent",
]


def __getattr__(name: str) -> Any:
    if name == "OpenAIAgent":
        from chatledger.agents.openai import OpenAIAgent

        return OpenAIAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
