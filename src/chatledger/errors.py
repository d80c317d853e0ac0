"""Every error chatledger raises on purpose.

    ChatLedgerError
     ├── ValidationError        bad input; names the field (HTTP 422)
     │    └── TooLargeError      input over a configured size (HTTP 413)
     ├── AuthenticationError    no credentials, or bad ones (HTTP 401)
     ├── PermissionDeniedError  credentials for another user (HTTP 403)
     ├── NotFoundError          missing, or belongs to another user (HTTP 404)
     ├── ConflictError          conversation_busy, idempotency_* , lease_lost (HTTP 409)
     ├── RateLimitedError       too many turns or open streams, for now (HTTP 429)
     ├── UnavailableError       the database cannot be reached right now (HTTP 503)
     ├── AgentError             the agent failed; carries the conversation id
     │    ├── ModelError         the model endpoint answered with an error (HTTP 502)
     │    └── AgentTimeoutError  the agent ran past its time limit (HTTP 504)
     └── ConfigurationError     settings the server refuses to start with

Messages are safe to show a client: they never contain SQL, URLs, secrets or another
user's data. `code` is a stable machine-readable string.
"""

from __future__ import annotations

from typing import Final

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
    "RateLimitedError",
    "TooLargeError",
    "UnavailableError",
    "ValidationError",
    "kind_of",
]


class ChatLedgerError(Exception):
    code = "error"
    # Seconds after which trying again can succeed (HTTP `Retry-After`), when that is known.
    retry_after: float | None = None

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

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RateLimitedError(ChatLedgerError):
    code = "rate_limited"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UnavailableError(ChatLedgerError):
    code = "unavailable"
    retry_after = 1.0

    def __init__(self, message: str, *, code: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


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


# Most specific first: a TooLargeError is also a ValidationError.
_KINDS: Final[tuple[tuple[type[ChatLedgerError], str], ...]] = (
    (TooLargeError, "too_large"),
    (ValidationError, "invalid"),
    (AuthenticationError, "unauthorized"),
    (PermissionDeniedError, "forbidden"),
    (NotFoundError, "not_found"),
    (ConflictError, "conflict"),
    (RateLimitedError, "rate_limited"),
    (UnavailableError, "unavailable"),
    (AgentTimeoutError, "agent_timeout"),
    (AgentError, "agent_failed"),
)
# A retried request with the same key but a different body is a mistake in the request
# itself, not a clash with another request.
_CODE_KINDS: Final = {"idempotency_mismatch": "invalid"}


def kind_of(error: ChatLedgerError) -> str:
    """The kind of an error, as error bodies and stream `error` events name it:
    invalid, too_large, not_found, conflict, unavailable, agent_failed, ... or internal."""
    if error.code in _CODE_KINDS:
        return _CODE_KINDS[error.code]
    for kind, name in _KINDS:
        if isinstance(error, kind):
            return name
    return "internal"
