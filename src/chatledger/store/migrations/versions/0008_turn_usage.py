"""Token usage per turn: tokens in and out, estimated or reported, and the model.

Turns recorded before this revision get NULL usage: not known, which is not zero.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-09

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0006"
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
    with op.batch_alter_table("turns") as table:
        table.drop_column("model")
        table.drop_column("usage_estimated")
        table.drop_column("output_tokens")
        table.drop_column("input_tokens")
