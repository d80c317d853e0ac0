"""A user's data out and in: export as JSON Lines, import an export or a ChatGPT one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from chatledger.api.dependencies import CurrentUser, Store
from chatledger.api.errors import error_response
from chatledger.api.openapi import AUTHENTICATED, errors
from chatledger.api.schemas import ImportRefusal, ImportReportPublic
from chatledger.store.transfer import ImportReport

__all__ = ["IMPORT_PATH", "router"]

IMPORT_PATH: Final = re.compile(r"/api/[^/]+/import")
_NDJSON: Final = "application/x-ndjson"

router = APIRouter(prefix="/api/{user_id}", tags=["export"], responses=AUTHENTICATED)


class ImportFormat(StrEnum):
    CHATLEDGER = "chatledger"
    CHATGPT = "chatgpt"


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {_NDJSON: {}}, "description": "The export, as JSON Lines."}},
)
async def export_data(user_id: CurrentUser, store: Store) -> StreamingResponse:
    """The user's conversations (branches, head, summaries), messages and tasks as JSON Lines."""
    lines = aiter(store.export(user_id))
    # The first line comes once the database has answered: an outage is still a plain
    # 503 here, before the response starts, not a stream that breaks off.
    first = await anext(lines)

    async def body() -> AsyncIterator[bytes]:
        yield first.encode()
        async for more in lines:
            yield more.encode()

    return StreamingResponse(
        body(),
        media_type=_NDJSON,
        headers={"Content-Disposition": 'attachment; filename="chatledger-export.jsonl"'},
    )


@router.post(
    "/import",
    response_model=ImportReportPublic,
    responses={
        **errors(408, 413),
        422: {
            "model": ImportRefusal,
            "description": "Not an export, or some of it could not be imported: the report"
            " says what went in and names the lines of what did not.",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _NDJSON: {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            },
        }
    },
)
async def import_data(
    request: Request,
    user_id: CurrentUser,
    store: Store,
    format: Annotated[
        ImportFormat,
        Query(description="`chatledger` (this API's export) or `chatgpt` (conversations.json)."),
    ] = ImportFormat.CHATLEDGER,
) -> Any:
    """Import an export or a ChatGPT conversations.json; each conversation whole or not at all."""
    if format is ImportFormat.CHATGPT:
        report = await store.import_chatgpt(user_id, await request.body())
    else:
        report = await store.import_lines(user_id, request.stream())
    return _answer(report)


def _answer(report: ImportReport) -> Any:
    body = report.to_dict()
    if report.ok:
        return body
    if report.failures:
        first = report.failures[0]
        message = f"line {first.line}: {first.message}"
        if len(report.failures) > 1:
            message += f" (and {len(report.failures) - 1} more failures)"
    else:
        message = "the file ends before its end line: it was cut short"
    response: JSONResponse = error_response(
        422, "invalid", message, "import_incomplete", report=body
    )
    return response
