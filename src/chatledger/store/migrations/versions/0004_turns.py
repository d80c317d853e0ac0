"""Turns and their event logs; idempotency keys name the turn they started.

In-flight keys written before this revision name no turn, so no retry could find what
they started: they are dropped, as the previous version would have reclaimed them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "turns",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_seq", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("user_id", "conversation_id", "id", name=op.f("pk_turns")),
        sa.ForeignKeyConstraint(
            ["user_id", "conversation_id"],
            ["conversations.user_id", "conversations.id"],
            name="fk_turns_conversation",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'stopped', 'failed', 'interrupted')",
            name="ck_turns_status",
        ),
    )
    op.create_table(
        "turn_events",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "user_id", "conversation_id", "turn_id", "seq", name=op.f("pk_turn_events")
        ),
        sa.ForeignKeyConstraint(
            ["user_id", "conversation_id", "turn_id"],
            ["turns.user_id", "turns.conversation_id", "turns.id"],
            name="fk_turn_events_turn",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_turn_events_created", "turn_events", ["created_at"])
    op.create_index(
        "ix_conversations_lease",
        "conversations",
        ["lease_expires_at"],
        postgresql_where=sa.text("lease_id IS NOT NULL"),
        sqlite_where=sa.text("lease_id IS NOT NULL"),
    )
    op.execute("DELETE FROM idempotency_keys WHERE status_code IS NULL")
    with op.batch_alter_table("idempotency_keys") as table:
        table.add_column(sa.Column("turn_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as table:
        table.drop_column("turn_id")
    op.drop_index("ix_conversations_lease", table_name="conversations")
    op.drop_index("ix_turn_events_created", table_name="turn_events")
    op.drop_table("turn_events")
    op.drop_table("turns")
