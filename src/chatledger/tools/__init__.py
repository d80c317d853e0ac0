"""Tools for agents: the `Toolset` protocol, the task tools (`TaskToolset`, `TaskTools`),
Python functions as tools, the task tools over MCP (`chatledger.tools.mcp`), and the tools
of the user's own MCP servers (`chatledger.tools.mcp_servers`, which needs `mcp`)."""

from chatledger.tools.base import (
    AnyToolset,
    ManagedToolset,
    StoreToolset,
    Toolset,
    ToolSpec,
    ToolStore,
)
from chatledger.tools.functions import FunctionToolset, PythonTool, tool
from chatledger.tools.tasks import TASK_TOOLS, TaskRepository, TaskTools, TaskToolset

__all__ = [
    "TASK_TOOLS",
    "AnyToolset",
    "FunctionToolset",
    "ManagedToolset",
    "PythonTool",
    "StoreToolset",
    "TaskRepository",
    "TaskTools",
    "TaskToolset",
    "ToolSpec",
    "ToolStore",
    "Toolset",
    "tool",
]
