"""What every part of the store shares: ids and clocks (from `chatledger.storage`), row
types and argument checks."""

from __future__ import annotations

from typing import Any, Final, TypeAlias

from sqlalchemy import Row

from chatledger.domain import check_metadata, check_text, check_written_text
from chatledger.errors import NotFoundError, ValidationError
from chatledger.storage import new_id, utcnow

__all__ = [
    "MAX_BIGINT",
    "MAX_CONVERSATION_METADATA_CHARS",
    "MAX_CONVERSATION_TITLE_CHARS",
    "UNSET",
    "AnyRow",
    "Unset",
    "check_conversation_id",
    "check_conversation_metadata",
    "check_conversation_title",
    "check_limit",
    "check_user_id",
    "new_id",
    "utcnow",
]

MAX_BIGINT: Final = 2**63 - 1
MAX_CONVERSATION_TITLE_CHARS: Final = 200
# A conversation's metadata is read with every listing: kept small.
MAX_CONVERSATION_METADATA_CHARS: Final = 16 * 1024

AnyRow: TypeAlias = Row[*tuple[Any, ...]]


class Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()
"""Default for update arguments: leave the field as it is (None would clear it)."""


def check_user_id(user_id: object) -> str:
    text = check_text("user_id", user_id, max_chars=255)
    if not text:
        raise ValidationError("user_id must not be empty", field="user_id")
    return text


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("limit must be a positive integer", field="limit")
    return limit


def check_conversation_id(value: object) -> str:
    # Ids are opaque to callers: a value that cannot be an id simply matches nothing, and
    # must not reach the database (PostgreSQL rejects NUL in a parameter).
    try:
        return check_text("conversation_id", value, max_chars=64)
    except ValidationError:
        raise NotFoundError("conversation not found") from None


def check_conversation_title(title: object) -> str | None:
    """A conversation's title as stored: stripped, None when blank."""
    if title is None:
        return None
    text = check_written_text("title", title, max_chars=MAX_CONVERSATION_TITLE_CHARS)
    return text.strip() or None


def check_conversation_metadata(metadata: object) -> dict[str, Any]:
    return check_metadata("metadata", metadata, max_chars=MAX_CONVERSATION_METADATA_CHARS)
