"""Fakes to test code built on chatledger without a model.

- `ScriptedAgent` plays an agent: a script of tool calls and replies
  (`chatledger.testing.agent`).
- `FakeModelServer` plays a model: an OpenAI-compatible HTTP server on 127.0.0.1, for
  code that runs a real model client (`chatledger.testing.model_server`).
"""

from chatledger.testing.agent import Block, CallTool, Fail, Say, ScriptedAgent, Signal, Step
from chatledger.testing.model_server import (
    ErrorResponse,
    FakeModelServer,
    FunctionCall,
    ModelReply,
    ModelRequest,
    ModelScript,
    ReportedUsage,
    Stall,
    Text,
    ToolCalls,
)

__all__ = [
    "Block",
    "CallTool",
    "ErrorResponse",
    "Fail",
    "FakeModelServer",
    "FunctionCall",
    "ModelReply",
    "ModelRequest",
    "ModelScript",
    "ReportedUsage",
    "Say",
    "ScriptedAgent",
    "Signal",
    "Stall",
    "Step",
    "Text",
    "ToolCalls",
]
