"""Pinned and archived conversations, listed by an index that knows both.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as table:
        table.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        table.add_column(
            sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # The list reads one user's archived or unarchived conversations, pinned first, then
    # most recently updated: this index serves it as a range scan, page by page.
    op.create_index(
        "ix_conversations_user_list",
        "conversations",
        ["user_id", "archived", "pinned", "updated_at", "id"],
    )
    op.drop_index("ix_conversations_user_updated", table_name="conversations")


def downgrade() -> None:
    op.create_index(
        "ix_conversations_user_updated", "conversations", ["user_id", "updated_at", "id"]
    )
    op.drop_index("ix_conversations_user_list", table_name="conversations")
    # Not batch mode: on SQLite it would copy the table and drop the old one, and dropping
    # a parent table deletes its children's rows through ON DELETE CASCADE.
    op.execute("ALTER TABLE conversations DROP COLUMN archived")
    op.execute("ALTER TABLE conversations DROP COLUMN pinned")
