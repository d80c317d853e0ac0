"""Full-text search over messages, with every stored message indexed.

PostgreSQL: the `message_search` table, a tsvector per message under a GIN index.
SQLite: an FTS5 table of the same name. Both hold the terms `chatledger.store.fulltext`
makes of a message's text; the backfill runs that code over every user, assistant and tool
message, a thousand at a time, so it takes as long as reading them all.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from chatledger.store.fulltext import index_terms
from chatledger.store.search import row_keys, tsvector
from chatledger.store.unicode_marks import spacing_marks

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1_000
_SCAN = sa.text(
    "SELECT user_id, conversation_id, seq, role, content FROM messages"
    " WHERE role IN ('user', 'assistant', 'tool')"
    " AND (user_id, conversation_id, seq) > (:user_id, :conversation_id, :seq)"
    " ORDER BY user_id, conversation_id, seq LIMIT :limit"
)
_PG_INSERT = sa.text(
    "INSERT INTO message_search (user_id, conversation_id, seq, role, document)"
    " VALUES (:user_id, :conversation_id, :seq, :role, CAST(:document AS tsvector))"
)
_FTS_INSERT = sa.text(
    "INSERT INTO message_search (body, keys, user_id, conversation_id, seq, role)"
    " VALUES (:body, :keys, :user_id, :conversation_id, :seq, :role)"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.create_table(
            "message_search",
            sa.Column("user_id", sa.String(255), nullable=False),
            sa.Column("conversation_id", sa.String(64), nullable=False),
            sa.Column("seq", sa.BigInteger(), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("document", postgresql.TSVECTOR(), nullable=False),
            sa.PrimaryKeyConstraint(
                "user_id", "conversation_id", "seq", name=op.f("pk_message_search")
            ),
            sa.ForeignKeyConstraint(
                ["user_id", "conversation_id", "seq"],
                ["messages.user_id", "messages.conversation_id", "messages.seq"],
                ondelete="CASCADE",
                name="fk_message_search_message",
            ),
        )
        op.create_index(
            "ix_message_search_document",
            "message_search",
            ["document"],
            postgresql_using="gin",
        )
        insert = _PG_INSERT
    else:
        # unicode61 takes spacing marks (Devanagari vowel signs...) for separators, which
        # PostgreSQL does not: made token characters, a word is one token in both.
        op.execute(
            "CREATE VIRTUAL TABLE message_search USING fts5("
            "body, keys, user_id UNINDEXED, conversation_id UNINDEXED, seq UNINDEXED,"
            ' role UNINDEXED, tokenize = "unicode61 remove_diacritics 2'
            f" tokenchars '{spacing_marks()}'\")"
        )
        version = bind.execute(sa.text("SELECT sqlite_version()")).scalar_one()
        if tuple(int(part) for part in version.split(".")[:2]) >= (3, 42):
            # Deleted rows leave nothing of their words in the index (older SQLite keeps
            # them in its segments until FTS5 merges those).
            op.execute(
                "INSERT INTO message_search (message_search, rank) VALUES ('secure-delete', 1)"
            )
        insert = _FTS_INSERT
    after = {"user_id": "", "conversation_id": "", "seq": 0}
    while rows := bind.execute(_SCAN, {**after, "limit": _BATCH}).all():
        batch = []
        for user_id, conversation_id, seq, role, content in rows:
            terms = index_terms(content)
            if terms:
                batch.append(
                    {
                        "user_id": user_id,
                        "conversation_id": conversation_id,
                        "seq": seq,
                        "role": role,
                        "document": tsvector(terms),
                        "body": " ".join(terms),
                        "keys": row_keys(user_id, conversation_id),
                    }
                )
        if batch:
            bind.execute(insert, batch)
        user_id, conversation_id, seq = rows[-1][:3]
        after = {"user_id": user_id, "conversation_id": conversation_id, "seq": seq}


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_message_search_document", table_name="message_search")
    op.drop_table("message_search")
