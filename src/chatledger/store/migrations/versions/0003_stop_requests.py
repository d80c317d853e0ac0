"""A stop request for a conversation's running turn.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as table:
        table.add_column(
            sa.Column("stop_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    # Not batch mode: on SQLite it would copy the table and drop the old one, and dropping
    # a parent table deletes its children's rows through ON DELETE CASCADE.
    op.execute("ALTER TABLE conversations DROP COLUMN stop_requested")
