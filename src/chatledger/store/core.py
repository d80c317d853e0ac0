"""What every part of the store shares: ids and clocks (from `chatledger.storage`), row
types, argument checks, and what an append does with a conversation's lease."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Final, TypeAlias

from sqlalchemy import Row

from chatledger.domain import (
    MAX_JSON_DEPTH,
    check_metadata,
    check_text,
    check_written_text,
    json_depth,
)
from chatledger.errors import NotFoundError, ValidationError
from chatledger.storage import new_id, utcnow

__all__ = [
    "MAX_BIGINT",
    "MAX_CONVERSATION_METADATA_CHARS",
    "MAX_CONVERSATION_TITLE_CHARS",
    "UNSET",
    "AnyRow",
    "LeaseUse",
    "Unset",
    "check_conversation_id",
    "check_conversation_metadata",
    "check_conversation_title",
    "check_limit",
    "check_user_id",
    "new_id",
    "readable_metadata",
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


class LeaseUse(Enum):
    """What an append does with the conversation's lease."""

    NONE = "none"  # an append outside any turn: refused while a turn runs
    TAKE = "take"  # a turn's first append: takes the free lease
    HOLD = "hold"  # an append of the turn holding the lease: keeps and renews it
    RELEASE = "release"  # the turn's last append: gives it up


def readable_metadata(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """Stored metadata as it can be returned. Versions before 0.2 stored metadata nested
    any depth, which no response can carry; such a value is replaced by a note (the row
    is left as it is, and a new value can be set)."""
    if json_depth(metadata) <= MAX_JSON_DEPTH:
        return metadata
    return {"unreadable": f"stored nested deeper than {MAX_JSON_DEPTH} levels; set it anew"}
