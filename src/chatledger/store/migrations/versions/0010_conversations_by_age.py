"""An index for listing a user's conversations by when they were created (ChatKit's
thread list), oldest or newest first.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_conversations_user_created",
        "conversations",
        ["user_id", "archived", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_user_created", table_name="conversations")
