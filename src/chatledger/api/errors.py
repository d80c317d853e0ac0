"""Every error becomes a JSON body `{error, message, code}` with the right status, here;
under `/v1` (the OpenAI Conversations API), OpenAI's `{"error": {message, type, param,
code}}`, with the statuses the official `openai` client maps to its exceptions.

Bodies never carry a traceback, SQL, a URL, a secret or another user's data: domain
errors carry messages written to be shown. Anything unexpected becomes a bare 500 in
`RequestContextMiddleware`, outside Starlette's error middleware, which would re-raise it
for the server to log with its traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from chatledger.errors import AuthenticationError, ChatLedgerError, kind_of

__all__ = [
    "CHATKIT_PATH",
    "OPENAI_PREFIX",
    "domain_error_response",
    "error_body",
    "error_response",
    "install_error_handlers",
    "speaks_openai",
    "status_of",
]

# Where the OpenAI-compatible API is served, and its errors are OpenAI's.
OPENAI_PREFIX: Final = "/v1/"
# Where ChatKit front ends send every request.
CHATKIT_PATH: Final = "/chatkit"

log = structlog.get_logger("chatledger.api")

_STATUS: Final = {
    "too_large": 413,
    "invalid": 422,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "rate_limited": 429,
    "unavailable": 503,
    "agent_timeout": 504,
    "agent_failed": 502,
}
_HTTP_KINDS: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    431: "headers_too_large",
}


def speaks_openai(path: str) -> bool:
    """Whether a request's errors take OpenAI's shape: it is under `/v1`."""
    return path.startswith(OPENAI_PREFIX)


def status_of(error: ChatLedgerError) -> tuple[int, str]:
    """The HTTP status and error kind for a domain error."""
    kind = kind_of(error)
    return _STATUS.get(kind, 500), kind


def _openai_status(status: int, code: str) -> int:
    # OpenAI answers any request it cannot take as it is with 400 (`BadRequestError`),
    # one too large too; 422 (`UnprocessableEntityError`) is kept for a well-formed
    # request that would break a conversation: half a tool call taken away.
    if code == "would_split_tool_call":
        return 422
    return 400 if status in (413, 422) else status


def error_response(
    status: int,
    error: str,
    message: str,
    code: str,
    *,
    headers: Mapping[str, str] | None = None,
    openai: bool = False,
    **extra: Any,
) -> JSONResponse:
    """An error's response: `{error, message, code, ...extra}`, or, when `openai`,
    OpenAI's `{"error": {message, type, param, code}}` (`param` is `extra["field"]`)."""
    if openai:
        status = _openai_status(status, code)
        kind = "server_error" if status >= 500 else "invalid_request_error"
        detail = {"message": message, "type": kind, "param": extra.get("field"), "code": code}
        return JSONResponse({"error": detail}, status_code=status, headers=headers)
    body = {"error": error, "message": message, "code": code}
    body.update({key: value for key, value in extra.items() if value is not None})
    return JSONResponse(body, status_code=status, headers=headers)


def error_body(error: ChatLedgerError) -> dict[str, Any]:
    """The JSON body for a domain error, also sent in-band as a stream's `error` event."""
    body = {"error": status_of(error)[1], "message": error.message, "code": error.code}
    for name in ("field", "conversation_id"):
        if (value := getattr(error, name, None)) is not None:
            body[name] = value
    return body


def domain_error_response(error: ChatLedgerError, *, openai: bool = False) -> JSONResponse:
    """The response for a domain error: its status, its body (OpenAI's, when `openai`),
    and the headers it calls for."""
    headers = {}
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = (
            "Bearer" if error.code == "missing_token" else 'Bearer error="invalid_token"'
        )
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if openai:
        status, kind = status_of(error)
        field = getattr(error, "field", None)
        return error_response(
            status, kind, error.message, error.code, headers=headers, openai=True, field=field
        )
    return JSONResponse(error_body(error), status_code=status_of(error)[0], headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChatLedgerError)
    response = domain_error_response(exc, openai=speaks_openai(request.url.path))
    log.info("request refused", status=response.status_code, code=exc.code)
    return response


def _field(location: tuple[Any, ...]) -> str:
    # ("body", "message") -> "message"; ("query", "limit") -> "limit"
    parts = [str(part) for part in location[1:]] or [str(part) for part in location]
    return ".".join(parts)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
    field = _field(tuple(first.get("loc", ("body",))))
    message = f"{field}: {first.get('msg', 'invalid value')}"
    if first.get("type") == "json_invalid":
        field, message = "body", "the request body is not valid JSON"
    openai = speaks_openai(request.url.path)
    return error_response(422, "invalid", message, "invalid", field=field, openai=openai)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        # FastAPI answers a bare 400 when it cannot parse a JSON body at all (bytes that are
        # not UTF-8, nesting too deep for the parser). That is the same client mistake as
        # malformed JSON, which the API answers, and documents in its schema, as 422.
        return error_response(
            422,
            "invalid",
            "the request body is not valid JSON",
            "invalid",
            field="body",
            openai=speaks_openai(request.url.path),
        )
    kind = _HTTP_KINDS.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else kind.replace("_", " ")
    if exc.status_code == 404:
        message = "no such route"
    headers = dict(exc.headers or {})
    if exc.status_code in (408, 413):
        # A body left unread (too large, or too slow to come) spoils the connection.
        headers["Connection"] = "close"
    openai = speaks_openai(request.url.path)
    return error_response(exc.status_code, kind, message, kind, headers=headers, openai=openai)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ChatLedgerError, _domain_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
