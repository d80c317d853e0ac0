"""Bringing a database's schema up to date with the Alembic migrations shipped here."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

__all__ = ["alembic_config", "upgrade"]

# Any fixed number: the key of the PostgreSQL advisory lock that migrations hold.
_MIGRATION_LOCK = 0x63686C67


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration, bound to an open connection (there is no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", "chatledger.store:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade the schema to `revision` inside the connection's open transaction.

    Safe to run from every replica at start-up: on PostgreSQL they queue on an advisory
    lock and all but the first find nothing left to do; on SQLite the write transaction
    (BEGIN IMMEDIATE) serializes them the same way.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), revision)
