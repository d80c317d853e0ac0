"""The `chatledger` command: a composition root, like `chatledger.api.create_app`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from chatledger.errors import ChatLedgerError
from chatledger.settings import Settings
from chatledger.store import SQLAlchemyStore

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///path.db or postgresql://...; default: CHATLEDGER_DATABASE_URL.",
        show_default=False,
    ),
]


@app.callback()
def _root() -> None:
    """chatledger: conversations of tool-calling agents, kept in a database."""


def _settings(database_url: str | None) -> Settings:
    settings = Settings()
    if database_url is not None:
        settings.database_url = database_url
    return settings


async def _migrate(settings: Settings) -> None:
    store = SQLAlchemyStore.from_url(settings.database_url)
    try:
        await store.migrate()
    finally:
        await store.close()


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the database schema (safe to run from many replicas at once)."""
    try:
        asyncio.run(_migrate(_settings(database_url)))
    except ChatLedgerError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo("database is up to date")


def main() -> None:
    app()
