"""chatledger: a conversation store and stateless chat server for tool-calling AI agents.

Importing this package needs no database driver and no web framework; the store lives in
`chatledger.store`, the server in `chatledger.api`.
"""

from chatledger.domain import (
    ChatMessage,
    Conversation,
    Message,
    Page,
    Role,
    Task,
    TaskFilter,
    ToolCall,
)
from chatledger.errors import (
    AgentError,
    AgentTimeoutError,
    ChatLedgerError,
    ConflictError,
    ModelError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    ValidationError,
)

__all__ = [
    "AgentError",
    "AgentTimeoutError",
    "ChatLedgerError",
    "ChatMessage",
    "ConflictError",
    "Conversation",
    "Message",
    "ModelError",
    "NotFoundError",
    "Page",
    "Role",
    "Task",
    "TaskFilter",
    "TooLargeError",
    "ToolCall",
    "UnavailableError",
    "ValidationError",
]
