"""Every error chatledger raises on purpose.

    ChatLedgerError
     ├── ValidationError        bad input; names the field (HTTP 422)
     │    └── TooLargeError      input over a configured size (HTTP 413)
     ├── AuthenticationError    no credentials, or bad ones (HTTP 401)
     ├── PermissionDeniedError  credentials for another user (HTTP 403)
     ├── NotFoundError          missing, or belongs to another user (HTTP 404)
     ├── ConflictError          conversation_busy, idempotency_* , lease_lost (HTTP 409)
     ├── UnavailableError       the database cannot be reached right now (HTTP 503)
     ├── AgentError             the agent failed; carries the conversation id
     │    ├── ModelError         the model endpoint answered with an error (HTTP 502)
     │    └── AgentTimeoutError  the agent ran past its time limit (HTTP 504)
     └── ConfigurationError     settings the server refuses to start with

Messages are safe to show a client: they never contain SQL, URLs, secrets or another
user's data. `code` is a stable machine-readable string.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AgentTimeoutError",
    "AuthenticationError",
    "ChatLedgerError",
    "ConfigurationError",
    "ConflictError",
    "ModelError",
    "NotFoundError",
    "PermissionDeniedError",
    "TooLargeError",
    "UnavailableError",
    "ValidationError",
]


class ChatLedgerError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ValidationError(ChatLedgerError):
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.field = field


class TooLargeError(ValidationError):
    code = "too_large"


class AuthenticationError(ChatLedgerError):
    code = "invalid_token"


class PermissionDeniedError(ChatLedgerError):
    code = "forbidden"


class NotFoundError(ChatLedgerError):
    code = "not_found"


class ConflictError(ChatLedgerError):
    code = "conflict"


class UnavailableError(ChatLedgerError):
    code = "unavailable"


class AgentError(ChatLedgerError):
    code = "agent_error"

    def __init__(
        self, message: str, *, conversation_id: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.conversation_id = conversation_id


class ModelError(AgentError):
    code = "model_error"


class AgentTimeoutError(AgentError):
    code = "agent_timeout"


class ConfigurationError(ChatLedgerError):
    code = "configuration"
