"""`IdempotencyStore`: responses kept under client-chosen keys, so a retry never runs twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, select, update

from chatledger.domain import check_text
from chatledger.errors import ValidationError
from chatledger.storage import IdempotencyRecord, utcnow
from chatledger.store.core import check_user_id
from chatledger.store.engine import Connector
from chatledger.store.schema import idempotency_keys

__all__ = ["IdempotencyRecord", "IdempotencyStore"]

_t = idempotency_keys.c


def _check_key(key: object) -> str:
    text = check_text("idempotency_key", key, max_chars=255)
    if not text:
        raise ValidationError("idempotency key must not be empty", field="idempotency_key")
    return text


class IdempotencyStore:
    """Idempotency keys of each user; reach it as `SQLAlchemyStore.idempotency`."""

    def __init__(self, db: Connector) -> None:
        self._db = db

    async def claim(
        self,
        user_id: str,
        key: str,
        *,
        request_hash: str,
        expire_after: timedelta = timedelta(hours=24),
    ) -> IdempotencyRecord | None:
        """Claim `key` for a new request, or return what is already stored under it.

        Returns None when the caller now owns the key and must run the request: the key
        was new, or its answer has expired. Otherwise returns the stored record, finished
        or in flight; the caller compares `request_hash` to tell a retry from a different
        request. A key in flight is never taken over here, however old: what became of
        its request is for its turn to tell (`TurnStore.resolve`), or a retry could run
        the request twice.
        """
        user_id = check_user_id(user_id)
        key = _check_key(key)
        now = utcnow()
        fresh = {
            "request_hash": request_hash,
            "conversation_id": None,
            "turn_id": None,
            "status_code": None,
            "response": None,
            "created_at": now,
        }
        # One statement claims a new key or renews an expired answer; a live key is left
        # alone, and the caller reads it instead.
        claim = (
            self._db.upsert(idempotency_keys)
            .values(user_id=user_id, key=key, **fresh)
            .on_conflict_do_update(
                index_elements=[_t.user_id, _t.key],
                set_=fresh,
                where=_t.status_code.is_not(None) & (_t.created_at <= now - expire_after),
            )
            .returning(_t.key)
        )
        stored = select(
            _t.request_hash,
            _t.conversation_id,
            _t.turn_id,
            _t.status_code,
            _t.response,
            _t.created_at,
        ).where(_t.user_id == user_id, _t.key == key)

        def work(conn: Connection) -> IdempotencyRecord | None:
            if conn.execute(claim).first() is not None:
                return None
            row = conn.execute(stored).one()
            return IdempotencyRecord(
                request_hash=row.request_hash,
                conversation_id=row.conversation_id,
                turn_id=row.turn_id,
                status_code=row.status_code,
                response=row.response,
                created_at=row.created_at,
            )

        return await self._db.write(work)

    async def complete(
        self,
        user_id: str,
        key: str,
        *,
        conversation_id: str | None,
        status_code: int,
        response: Any,
    ) -> None:
        """Store the finished response under a key taken with `claim`."""
        statement = (
            update(idempotency_keys)
            .where(_t.user_id == user_id, _t.key == key)
            .values(conversation_id=conversation_id, status_code=status_code, response=response)
        )
        await self._db.write(lambda conn: conn.execute(statement))

    async def purge(self, *, older_than: timedelta) -> int:
        """Delete every user's keys older than `older_than`; returns how many went."""
        statement = delete(idempotency_keys).where(_t.created_at < utcnow() - older_than)
        return await self._db.write(lambda conn: int(conn.execute(statement).rowcount))
