"""Token usage per turn: tokens in and out, estimated or reported, and the model.

Turns recorded before this revision get NULL usage: not known, which is not zero.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as table:
        table.add_column(sa.Column("input_tokens", sa.BigInteger()))
        table.add_column(sa.Column("output_tokens", sa.BigInteger()))
        table.add_column(sa.Column("usage_estimated", sa.Boolean()))
        table.add_column(sa.Column("model", sa.String(255)))
    op.create_index("ix_turns_user_started", "turns", ["user_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_turns_user_started", table_name="turns")
    # Not batch mode: on SQLite it would copy the table and drop the old one, and dropping
    # a parent table deletes its children's rows through ON DELETE CASCADE.
    op.execute("ALTER TABLE turns DROP COLUMN model")
    op.execute("ALTER TABLE turns DROP COLUMN usage_estimated")
    op.execute("ALTER TABLE turns DROP COLUMN output_tokens")
    op.execute("ALTER TABLE turns DROP COLUMN input_tokens")
