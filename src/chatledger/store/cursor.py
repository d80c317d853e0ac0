"""Opaque cursors: where the next page starts, signed with HMAC over the user id.

Listing conversations pages by keyset: its cursor holds the sort key of the last row of a
page, and never an OFFSET (cost grows with depth, rows shift under concurrent writes).
Search pages by a bounded offset (`chatledger.store.search` says why). Either way a cursor
edited by hand, or issued to another user, fails verification instead of steering the
query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chatledger.errors import ValidationError

__all__ = [
    "decode_age_cursor",
    "decode_cursor",
    "encode_age_cursor",
    "encode_cursor",
    "sign",
    "verify",
]

_MAC_BYTES = 16


def _mac(key: bytes, user_id: str, payload: bytes) -> bytes:
    message = user_id.encode("utf-8") + b"\x00" + payload
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _invalid() -> ValidationError:
    return ValidationError("cursor is not valid", field="cursor")


def sign(key: bytes, user_id: str, fields: Sequence[Any]) -> str:
    """A cursor holding `fields` (JSON values), for `user_id` only."""
    raw = json.dumps(list(fields), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw + _mac(key, user_id, raw)).decode("ascii").rstrip("=")


def verify(key: bytes, user_id: str, cursor: str) -> list[Any]:
    """The fields a cursor holds, if `key` signed it for `user_id`.

    Raises:
        ValidationError: the cursor is malformed, tampered with, or another user's.
    """
    try:
        blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise _invalid() from None
    raw, mac = blob[:-_MAC_BYTES], blob[-_MAC_BYTES:]
    if len(blob) <= _MAC_BYTES or not hmac.compare_digest(mac, _mac(key, user_id, raw)):
        raise _invalid()
    try:
        fields = json.loads(raw)
    except ValueError:
        raise _invalid() from None
    if not isinstance(fields, list):
        raise _invalid()
    return fields


def encode_cursor(
    key: bytes, user_id: str, pinned: bool, updated_at: datetime, conversation_id: str
) -> str:
    return sign(key, user_id, [pinned, updated_at.isoformat(), conversation_id])


def decode_cursor(key: bytes, user_id: str, cursor: str) -> tuple[bool, datetime, str]:
    """Return the `(pinned, updated_at, conversation_id)` a cursor points after.

    Raises:
        ValidationError: the cursor is malformed, tampered with, or another user's.
    """
    invalid = _invalid()
    fields = verify(key, user_id, cursor)
    try:
        # A cursor from before pinning (two fields) points among the unpinned ones.
        pinned, stamp, conversation_id = fields if len(fields) == 3 else [False, *fields]
        updated_at = datetime.fromisoformat(stamp)
    except (ValueError, TypeError):
        raise invalid from None
    if (
        not isinstance(pinned, bool)
        or not isinstance(conversation_id, str)
        or updated_at.tzinfo is None
    ):
        raise invalid
    return pinned, updated_at, conversation_id


# Marks a cursor of the listing by age, so that neither listing takes the other's.
_BY_AGE = "created"


def encode_age_cursor(key: bytes, user_id: str, created_at: datetime, conversation_id: str) -> str:
    return sign(key, user_id, [_BY_AGE, created_at.isoformat(), conversation_id])


def decode_age_cursor(key: bytes, user_id: str, cursor: str) -> tuple[datetime, str]:
    """Return the `(created_at, conversation_id)` a cursor of the listing by age points
    after.

    Raises:
        ValidationError: the cursor is malformed, tampered with, another user's, or the
            other listing's.
    """
    invalid = _invalid()
    fields = verify(key, user_id, cursor)
    if len(fields) != 3 or fields[0] != _BY_AGE or not isinstance(fields[2], str):
        raise invalid
    try:
        created_at = datetime.fromisoformat(fields[1])
    except (ValueError, TypeError):
        raise invalid from None
    if created_at.tzinfo is None:
        raise invalid
    return created_at, fields[2]
