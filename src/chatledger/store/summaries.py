"""`SummaryStore`: each conversation's rolling summary of the messages before its window."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from chatledger.domain import Summary, check_text
from chatledger.errors import ValidationError
from chatledger.store.core import AnyRow, check_conversation_id, check_user_id, utcnow
from chatledger.store.engine import Connector
from chatledger.store.schema import summaries
from chatledger.tokens import TokenCounter

__all__ = ["SummaryStore"]

_s = summaries.c

SELECT_SUMMARY = select(_s.upto_seq, _s.content, _s.token_count, _s.updated_at).where(
    _s.user_id == bindparam("user"), _s.conversation_id == bindparam("conversation")
)


def summary_of(row: AnyRow) -> Summary:
    return Summary(
        upto_seq=row.upto_seq,
        content=row.content,
        token_count=row.token_count,
        updated_at=row.updated_at,
    )


class SummaryStore:
    """Rolling summaries; reach it as `SQLAlchemyStore.summaries`."""

    def __init__(self, db: Connector, token_counter: TokenCounter) -> None:
        self._db = db
        self._token_counter = token_counter

    async def get(self, user_id: str, conversation_id: str) -> Summary | None:
        """The conversation's summary, or None if it has none (or is not the user's)."""
        key = {
            "user": check_user_id(user_id),
            "conversation": check_conversation_id(conversation_id),
        }
        row = await self._db.read(lambda conn: conn.execute(SELECT_SUMMARY, key).first())
        return None if row is None else summary_of(row)

    async def save(
        self,
        user_id: str,
        conversation_id: str,
        *,
        content: str,
        upto_seq: int,
        replaces: int | None,
    ) -> bool:
        """Store a summary covering every message up to `upto_seq`, if nobody got there first.

        `replaces` is the `upto_seq` of the summary this one was folded from (None: there
        was none). When another replica has saved a summary in the meantime, nothing is
        written and False is returned: a summary never moves backwards or forks.

        Raises:
            ValidationError: `content` is not storable text, or `upto_seq` does not move on.
            NotFoundError: no such conversation (only when creating the first summary).
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        check_text("content", content)
        if replaces is not None and upto_seq <= replaces:
            raise ValidationError("a new summary must cover more messages", field="upto_seq")
        values: dict[str, Any] = {
            "upto_seq": upto_seq,
            "content": content,
            "token_count": self._token_counter(content),
            "updated_at": utcnow(),
        }
        key = {"user_id": user_id, "conversation_id": conversation_id}
        if replaces is None:
            statement: Any = (
                self._db.upsert(summaries).values(**key, **values).on_conflict_do_nothing()
            )
        else:
            statement = (
                update(summaries)
                .where(
                    _s.user_id == user_id,
                    _s.conversation_id == conversation_id,
                    _s.upto_seq == replaces,
                )
                .values(values)
            )

        def work(conn: Connection) -> bool:
            return bool(conn.execute(statement).rowcount)

        return await self._db.write(work)
