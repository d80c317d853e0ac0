"""The file's lines: the format's name and version, the fields each kind of line has, and
`read_lines`, which reads a file in chunks as numbered JSON objects, never holding it
whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, Final

__all__ = [
    "FORMAT",
    "KEYS",
    "MESSAGE_PAGE",
    "PAGE",
    "VERSION",
    "Located",
    "Unreadable",
    "read_lines",
]

FORMAT: Final = "chatledger.export"
VERSION: Final = 1
# Rows read or written per statement: a user's history is streamed, never held whole.
PAGE: Final = 500
MESSAGE_PAGE: Final = 1_000

KEYS: Final = {
    "conversation": frozenset(
        {
            "type", "id", "title", "metadata", "created_at", "updated_at", "expires_at",
            "pinned", "archived", "head_seq", "message_count",
        }
    ),
    "message": frozenset(
        {
            "type", "conversation_id", "seq", "parent_seq", "id", "role", "content",
            "tool_calls", "tool_call_id", "name", "metadata", "created_at",
        }
    ),
    "summary": frozenset({"type", "conversation_id", "upto_seq", "content", "updated_at"}),
    "task": frozenset(
        {"type", "id", "title", "description", "completed", "created_at", "updated_at"}
    ),
    "end": frozenset({"type", "conversations", "messages", "tasks"}),
}  # fmt: skip


class Unreadable:
    """A line that could not be read as a JSON object."""

    def __init__(self, message: str) -> None:
        self.message = message


Located = tuple[int, "dict[str, Any] | Unreadable"]


async def _chunks(data: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, AsyncIterable):
        async for chunk in data:
            yield chunk
    else:
        for chunk in data:
            yield chunk


async def read_lines(
    data: AsyncIterable[bytes] | Iterable[bytes], *, max_line_bytes: int
) -> AsyncIterator[Located]:
    """The file's non-blank lines, numbered from 1, each a JSON object or why it is not.

    `data` is the file in chunks split anywhere. A line over `max_line_bytes` is never
    held whole: it is skipped to its end and reported.
    """
    number = 0
    pending = bytearray()
    skipping = False
    async for chunk in _chunks(data):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            number += 1
            piece = chunk[start:end]
            if skipping or len(pending) + len(piece) > max_line_bytes:
                yield number, Unreadable(f"the line is longer than {max_line_bytes} bytes")
            elif pending or piece.strip():
                pending += piece
                yield number, _parse(bytes(pending))
            pending.clear()
            skipping = False
            start = end + 1
        if not skipping:
            pending += chunk[start:]
            if len(pending) > max_line_bytes:
                pending.clear()
                skipping = True
    if skipping:
        yield number + 1, Unreadable(f"the line is longer than {max_line_bytes} bytes")
    elif pending.strip():
        yield number + 1, _parse(bytes(pending))


def _parse(raw: bytes) -> dict[str, Any] | Unreadable:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Unreadable("the line is not UTF-8")
    except (ValueError, RecursionError):
        return Unreadable("the line is not JSON")
    if not isinstance(value, dict):
        return Unreadable("the line is not a JSON object")
    return value
