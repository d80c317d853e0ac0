"""Agents: the protocol (`chatledger.agents.base`) and its implementations."""

from chatledger.agents.base import (
    Agent,
    AgentEvent,
    AgentReply,
    AssistantMessage,
    TextDelta,
    Toolbox,
    ToolCallFinished,
    ToolCallStarted,
    run_agent,
)

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentReply",
    "AssistantMessage",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "Toolbox",
    "run_agent",
]
