"""Per-user rate limits; conversations that expire (temporary ones).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_rate_limits")),
    )
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_conversations_expires",
        "conversations",
        ["expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
        sqlite_where=sa.text("expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_expires", table_name="conversations")
    # Not batch mode: on SQLite it would copy the table and drop the old one, and dropping
    # a parent table deletes its children's rows through ON DELETE CASCADE.
    op.execute("ALTER TABLE conversations DROP COLUMN expires_at")
    op.drop_table("rate_limits")
