"""Branches: every message has a parent, every conversation a head, every branch its
summaries.

Until now each conversation was one line of messages 1, 2, ..., n: each message's parent
is the one before it, every message is in one run starting at 1, and the head is the last.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as table:
        table.add_column(sa.Column("parent_seq", sa.BigInteger()))
        # The default fills the existing rows (all in the run that starts at 1) and is
        # dropped below: every append writes the column itself.
        table.add_column(
            sa.Column("run_start", sa.BigInteger(), nullable=False, server_default="1")
        )
    op.execute("UPDATE messages SET parent_seq = seq - 1 WHERE seq > 1")
    with op.batch_alter_table("messages") as table:
        table.alter_column("run_start", server_default=None)
    op.create_index(
        "ix_messages_run_starts",
        "messages",
        ["user_id", "conversation_id", "parent_seq"],
        postgresql_where=sa.text("run_start = seq"),
        sqlite_where=sa.text("run_start = seq"),
    )
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("head_seq", sa.BigInteger()))
        table.add_column(sa.Column("head_run_start", sa.BigInteger()))
        table.add_column(sa.Column("head_run_parent", sa.BigInteger()))
    op.execute(
        "UPDATE conversations SET head_seq = next_seq - 1, head_run_start = 1 WHERE next_seq > 1"
    )
    # One summary per fold, each standing in for its own branch.
    with op.batch_alter_table("summaries", recreate="always") as table:
        table.drop_constraint("pk_summaries", type_="primary")
        table.create_primary_key("pk_summaries", ["user_id", "conversation_id", "upto_seq"])


def downgrade() -> None:
    # Only the head's branch can be kept in a table without branches: the others would
    # interleave with it. Refuse rather than lose them.
    branched = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM messages"
                " WHERE (parent_seq IS NULL AND seq > 1) OR parent_seq <> seq - 1"
            )
        )
        .scalar()
    )
    if branched:
        raise RuntimeError(
            "cannot downgrade below 0007: some conversations have branches (edited or"
            " regenerated messages), which the older schema cannot hold"
        )
    op.execute(
        "DELETE FROM summaries WHERE upto_seq < (SELECT max(s.upto_seq) FROM summaries s"
        " WHERE s.user_id = summaries.user_id"
        " AND s.conversation_id = summaries.conversation_id)"
    )
    with op.batch_alter_table("summaries", recreate="always") as table:
        table.drop_constraint("pk_summaries", type_="primary")
        table.create_primary_key("pk_summaries", ["user_id", "conversation_id"])
    # Not batch mode: on SQLite it would copy the table and drop the old one, and dropping
    # a parent table deletes its children's rows through ON DELETE CASCADE.
    op.execute("ALTER TABLE conversations DROP COLUMN head_run_parent")
    op.execute("ALTER TABLE conversations DROP COLUMN head_run_start")
    op.execute("ALTER TABLE conversations DROP COLUMN head_seq")
    op.drop_index("ix_messages_run_starts", table_name="messages")
    with op.batch_alter_table("messages") as table:
        table.drop_column("run_start")
        table.drop_column("parent_seq")
