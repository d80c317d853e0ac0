"""What the OpenAPI schema says of responses beyond the happy path: each operation lists
the errors it can answer with, and no others, and the event streams are described.

Every `/api/{user_id}/…` operation can be refused for its token (401, 403) and can find the
database away (503); the rest are added where they can happen: 404 where a path names
something, 408 and 413 where a body is read, 422 where there is input to refuse, 409, 502
and 504 on turns, 429 on streams.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from chatledger.api.schemas import ChatResponse, ErrorBody

__all__ = ["AUTHENTICATED", "STREAM_DOC", "errors", "event_stream", "install_schema"]

_DESCRIPTIONS: Final = {
    401: "No token, or a token that is not valid.",
    403: "The token is for another user.",
    404: "Not found, or not yours.",
    408: "The body took too long to arrive.",
    409: "A turn is running in this conversation, or under this idempotency key; retry "
    "after `Retry-After` seconds.",
    413: "The body or the message is too large.",
    422: "The request is not valid; `field` names what.",
    429: "Too many turns lately, or too many streams open; retry after `Retry-After` seconds.",
    502: "The model endpoint failed; `conversation_id` says where.",
    503: "The database is unavailable, or the server too busy; retry after `Retry-After` seconds.",
    504: "The agent ran out of time; `conversation_id` says where.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses `statuses`, each with the JSON error body."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses
    }


AUTHENTICATED: Final = errors(401, 403, 503)

STREAM_DOC: Final = """Server-sent events, in order: `conversation` {conversation_id,
turn_id, user_message_id}; `delta` {text} as the reply is written (batched); `tool_call`
{id, name, arguments} and `tool_result` {id, result} for each tool step; and `done`
{conversation_id, response, tool_calls, message_ids, turn_id, stopped, interrupted} — or
`error` {error, message, code, conversation_id} if the turn fails once started. Each
event's id is `<turn_id>:<n>`: send the last one as `Last-Event-ID` to
`GET /api/{user_id}/conversations/{id}/stream` to resume, on any replica. The turn does not
depend on the connection: if it drops, the turn still finishes and is stored."""


class _Started(BaseModel):
    conversation_id: str
    turn_id: str
    user_message_id: str


class _Delta(BaseModel):
    text: str = Field(description="The next piece of the reply.")


class _ToolCall(BaseModel):
    id: str
    name: str
    arguments: Any = Field(description="As JSON, or the model's text if it is not JSON.")


class _ToolResult(BaseModel):
    id: str = Field(description="The `tool_call` this answers.")
    result: dict[str, Any]


class _Done(ChatResponse):
    message_ids: list[str] = Field(description="The turn's messages, in order.")
    turn_id: str | None
    replayed: bool | None = Field(
        default=None, description="Present, true, when told from a stored result."
    )


_EVENTS: Final[dict[str, type[BaseModel]]] = {
    "conversation": _Started,
    "delta": _Delta,
    "tool_call": _ToolCall,
    "tool_result": _ToolResult,
    "done": _Done,
    "error": ErrorBody,
}


def event_stream(description: str) -> dict[str, Any]:
    """A 200 response of server-sent events. Its schema describes one event, as OpenAPI 3.2
    describes the items of a stream (and schemathesis checks each against it): the event's
    name, its id, and its `data`, JSON whose own schema depends on the name."""
    one_event = {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "event": {"const": name},
                    "id": {"type": "string", "description": "`<turn_id>:<n>`"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": model.model_json_schema(),
                    },
                },
                "required": ["event", "data"],
            }
            for name, model in _EVENTS.items()
        ],
        "description": STREAM_DOC,
    }
    return {"description": description, "content": {"text/event-stream": {"schema": one_event}}}


def install_schema(app: FastAPI) -> None:
    """Serve `app`'s OpenAPI schema without the 422 FastAPI adds to every operation with a
    parameter: where a 422 can happen the operation declares it, with the API's own error
    body; elsewhere (every parameter is a plain string) it cannot, and the default's body
    (FastAPI's `HTTPValidationError`) is not what this API would send anyway."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    refused = operation.get("responses", {}).get("422", {})
                    if "HTTPValidationError" in str(refused):
                        del operation["responses"]["422"]
            components = document.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
