"""`SummaryStore`: rolling summaries of the messages before a turn's window, per branch."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from chatledger.domain import Summary, check_text
from chatledger.store.core import AnyRow, check_conversation_id, check_user_id, utcnow
from chatledger.store.engine import Connector
from chatledger.store.ledger import require_conversation
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

    async def save(
        self, user_id: str, conversation_id: str, *, content: str, upto_seq: int
    ) -> bool:
        """Store a summary of the branch up to and including message `upto_seq`.

        A conversation keeps one summary per fold: each stands in for its branch only,
        and a turn uses the newest one on its own branch (`load_context`), so an edit
        far back never sees a summary of what it replaced, and switching back to a
        branch finds its summary still there. Returns False, writing nothing, when a
        summary up to `upto_seq` exists already (another replica folded first).

        Raises:
            ValidationError: `content` is not storable text.
            NotFoundError: no such conversation.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        check_text("content", content)
        row = {
            "user_id": user_id,
            "conversation_id": conversation_id,
            "upto_seq": upto_seq,
            "content": content,
            "token_count": self._token_counter(content),
            "updated_at": utcnow(),
        }
        statement = self._db.upsert(summaries).values(**row).on_conflict_do_nothing()

        def work(conn: Connection) -> bool:
            require_conversation(conn, user_id, conversation_id)
            return bool(conn.execute(statement).rowcount)

        return await self._db.write(work)
