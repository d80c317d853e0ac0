"""The task tools, as plain async calls (`TaskTools`) and over MCP (`chatledger.tools.mcp`)."""

from chatledger.tools.tasks import TASK_TOOLS, TaskRepository, TaskTools, ToolSpec

__all__ = ["TASK_TOOLS", "TaskRepository", "TaskTools", "ToolSpec"]
