"""The `chatledger` command: a composition root, like `chatledger.api.create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import sys
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


async def _serve_mcp(settings: Settings, user_id: str) -> None:
    from chatledger.tools.mcp import create_mcp_server, serve_stdio

    store = SQLAlchemyStore.from_url(settings.database_url)
    try:
        # stdout is the protocol channel from its first byte: nothing the migration
        # might print can go there.
        with contextlib.redirect_stdout(sys.stderr):
            await store.migrate()
        await serve_stdio(create_mcp_server(store.tasks, resolve_user=lambda _ctx: user_id))
    finally:
        await store.close()


@app.command("mcp")
def mcp_command(
    user: Annotated[
        str,
        typer.Option("--user", help="The user whose tasks the tools act on.", show_default=False),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the task tools over MCP on stdin/stdout, acting for one user (migrates first)."""
    if not user:
        typer.echo("error: --user must not be empty", err=True)
        raise typer.Exit(2)
    if importlib.util.find_spec("mcp") is None:
        # The MCP SDK is an optional dependency: say how to get it, not a traceback.
        typer.echo(
            "error: chatledger mcp needs the MCP SDK: pip install 'chatledger[agents]'", err=True
        )
        raise typer.Exit(1)
    settings = _settings(database_url)
    logging.basicConfig(stream=sys.stderr, level=settings.log_level.upper())
    try:
        asyncio.run(_serve_mcp(settings, user))
    except ChatLedgerError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    app()
