"""The `chatledger` command: a composition root, like `chatledger.api.create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from sqlalchemy.engine import make_url

from chatledger.errors import ChatLedgerError, UnavailableError
from chatledger.settings import Settings
from chatledger.store import SQLAlchemyStore
from chatledger.terminal import (
    ChatBackend,
    LocalChat,
    PlainReader,
    PromptReader,
    RemoteChat,
    Screen,
    converse,
    not_chatledger,
    show_conversations,
)

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="chatledger: conversations of tool-calling agents, kept in a database.",
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///path.db or postgresql://...; default: CHATLEDGER_DATABASE_URL.",
        show_default=False,
    ),
]


# Settings that configure how tokens are checked: `serve --dev` brings its own.
_AUTH_SETTINGS = ("CHATLEDGER_JWT_SECRET", "BETTER_AUTH_SECRET", "CHATLEDGER_JWKS_URL")


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"chatledger {version('chatledger')}")
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
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


def _database_label(url: str) -> str:
    """Where a database URL points, for people: an SQLite file's full path, or the URL
    with its password hidden."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(Path(parsed.database or "").resolve())
    return parsed.render_as_string(hide_password=True)


def _run(work: Coroutine[Any, Any, None], *, database_url: str | None = None) -> None:
    """Run `work`; a chatledger error is one line on stderr and exit status 1. When the
    database is what failed, the line says which database, and why."""
    try:
        asyncio.run(work)
    except UnavailableError as error:
        cause = error.__cause__
        reason = getattr(cause, "orig", None) or cause
        where = f" at {_database_label(database_url)}" if database_url else ""
        why = f": {str(reason).splitlines()[0]}" if reason is not None and str(reason) else ""
        typer.echo(f"error: cannot use the database{where}{why}", err=True)
        raise typer.Exit(1) from None
    except ChatLedgerError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the database schema (safe to run from many replicas at once)."""
    settings = _settings(database_url)
    _run(_migrate(settings), database_url=settings.database_url)
    typer.echo("database is up to date")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    agent: Annotated[
        Literal["rules", "openai"] | None,
        typer.Option(help="rules (offline) or openai; default: openai if OPENAI_API_KEY is set."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    app_factory: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="Serve your own agent and tools: package.module:factory, a function that"
            " takes the Settings and returns a chatledger.compose.AgentSetup.",
            show_default=False,
        ),
    ] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Development: sign in as anyone, with a JWT secret made up for this server.",
        ),
    ] = False,
) -> None:
    """Migrate the database, then serve the chat API (and the web page) over HTTP."""
    from chatledger.api.auth import Authenticator
    from chatledger.api.server import run_server

    overrides = {"DATABASE_URL": database_url, "AGENT": agent, "APP": app_factory}
    if dev:
        # Dev tokens are signed with the server's own secret: with a configured one they
        # would be accepted by every production replica that shares it.
        configured = [name for name in _AUTH_SETTINGS if os.environ.get(name)]
        if configured:
            typer.echo(
                f"error: --dev makes up its own JWT secret; unset {' and '.join(configured)}"
                " or serve without --dev",
                err=True,
            )
            raise typer.Exit(1)
        overrides["JWT_SECRET"] = secrets.token_urlsafe(32)
    if app_factory is not None and os.getcwd() not in sys.path:
        # As uvicorn finds its app: a module in the directory the server was started from.
        sys.path.insert(0, os.getcwd())
    # Workers are separate processes: settings reach them through the environment.
    os.environ.update({f"CHATLEDGER_{k}": v for k, v in overrides.items() if v is not None})
    settings = Settings()
    try:
        Authenticator.from_settings(settings)
        # Read once here to refuse bad settings with one line, not a start-up traceback.
        asyncio.run(_check_setup(settings))
    except ChatLedgerError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    _run(_migrate(settings), database_url=settings.database_url)
    url = f"http://{host}:{port}/"
    if dev:
        typer.echo(
            "WARNING: dev sign-in is on: anyone who can reach this server can sign in as any"
            " user. Never expose it; serve with CHATLEDGER_JWT_SECRET instead.",
            err=True,
        )
    typer.echo(f"chatledger is serving {url}" + (" (dev sign-in enabled)" if dev else ""))
    factory = "create_dev_app_from_environment" if dev else "create_app_from_environment"
    try:
        run_server(
            f"chatledger.api.app:{factory}",
            host=host,
            port=port,
            workers=workers,
            header_timeout=settings.request_header_timeout,
            # Connections, idle ones included, beyond the requests the app itself admits.
            max_connections=2 * settings.max_concurrent_requests,
        )
    except OSError as error:
        typer.echo(f"error: cannot listen on {host}:{port}: {error.strerror}", err=True)
        raise typer.Exit(1) from None


async def _check_setup(settings: Settings) -> None:
    from chatledger.compose import build_agent, configured_setup

    setup = configured_setup(settings)
    agent = setup.agent or build_agent(settings)
    close = getattr(agent, "aclose", None)
    if close is not None:
        await close()
    if settings.mcp_servers is not None:
        from chatledger.tools.mcp_servers import load_mcp_servers

        load_mcp_servers(settings.mcp_servers)


async def _purge(settings: Settings) -> None:
    from chatledger.compose import open_store, purge

    store = open_store(settings)
    try:
        conversations, keys = await purge(store, settings)
    finally:
        await store.close()
    typer.echo(f"deleted {conversations} conversations and {keys} idempotency keys")


@app.command("purge")
def purge_command(database_url: DatabaseUrl = None) -> None:
    """Delete what is due, once (every server does it hourly; this is for cron): temporary
    conversations past their day, conversations idle for CHATLEDGER_RETENTION_DAYS, and
    idempotency keys older than a day."""
    settings = _settings(database_url)
    _run(_purge(settings), database_url=settings.database_url)


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="The user id (the token's subject).")],
    ttl: Annotated[int, typer.Option(help="Seconds the token is valid.", min=1)] = 3600,
) -> None:
    """Print a signed token for USER (needs CHATLEDGER_JWT_SECRET)."""
    from chatledger.api.auth import Authenticator

    settings = Settings()
    try:
        authenticator = Authenticator.from_settings(settings)
        typer.echo(authenticator.issue(user, ttl=timedelta(seconds=ttl))[0])
    except ChatLedgerError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None


ServerUrl = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Use a running chatledger server at this URL (token: CHATLEDGER_TOKEN) instead"
        " of the local database.",
        show_default=False,
    ),
]


@contextlib.asynccontextmanager
async def _chat_backend(
    settings: Settings, user_id: str, server: str | None
) -> AsyncIterator[ChatBackend]:
    """The local database and agent, or the server at `server`."""
    if server is None:
        from chatledger.compose import compose

        async with compose(settings) as parts:
            await parts.store.migrate()
            yield LocalChat(parts.service, parts.store, user_id)
        return
    import httpx

    # trust_env=False: a proxy from the environment is not asked to reach a chat server.
    async with httpx.AsyncClient(base_url=server, timeout=30, trust_env=False) as client:
        token = os.environ.get("CHATLEDGER_TOKEN") or await _dev_token(client, user_id)
        client.headers["Authorization"] = f"Bearer {token}"
        remote = RemoteChat(client, user_id)
        # A token the server refuses is a one-line error now, not at the first message.
        await remote.conversations(limit=1)
        yield remote


async def _dev_token(client: httpx.AsyncClient, user_id: str) -> str:
    """A token from a `serve --dev` server; any other server wants CHATLEDGER_TOKEN."""
    import httpx

    try:
        response = await client.post("/auth/dev-token", json={"user_id": user_id})
    except httpx.HTTPError as error:
        raise ChatLedgerError(f"cannot reach the server at {client.base_url}: {error}") from None
    if response.status_code != 200:
        raise ChatLedgerError(
            "set CHATLEDGER_TOKEN to a token for this user (`chatledger token USER` prints one)"
        )
    try:
        token = response.json()["token"]
    except (ValueError, KeyError, TypeError):
        raise not_chatledger(client, "no dev token") from None
    if not isinstance(token, str):
        raise not_chatledger(client, "no dev token")
    return token


def _resume_command(user_id: str, server: str | None) -> Callable[[str], str]:
    where = "" if server is None else f" --server {shlex.quote(server)}"
    return lambda conversation_id: (
        f"chatledger chat --user {shlex.quote(user_id)}{where}"
        f" --conversation {shlex.quote(conversation_id)}"
    )


async def _chat(
    settings: Settings, user_id: str, conversation_id: str | None, server: str | None
) -> None:
    screen = Screen.for_stdout()
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    async with _chat_backend(settings, user_id, server) as backend:
        reader = (
            PromptReader(colour=screen.colour) if interactive else PlainReader(sys.stdin.fileno())
        )
        failures = await converse(
            backend, reader, screen,
            conversation_id=conversation_id,
            interactive=interactive,
            resume=_resume_command(user_id, server),
        )  # fmt: skip
    if failures and not interactive:
        # A script that pipes messages in learns that some were not answered.
        raise typer.Exit(1)


@app.command()
def chat(
    user: Annotated[str, typer.Option("--user", help="Who you are.", show_default=False)],
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Continue this conversation.")
    ] = None,
    server: ServerUrl = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Chat with the task agent in the terminal, on the local database (no server) or with
    --server. Ctrl-C stops a reply (what it said so far is kept); Ctrl-D or /exit leaves."""
    _check_server_client(server)
    settings = _settings(database_url)
    try:
        _run(_chat(settings, user, conversation, server), database_url=settings.database_url)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _conversations(settings: Settings, user_id: str, server: str | None, limit: int) -> None:
    async with _chat_backend(settings, user_id, server) as backend:
        show_conversations(Screen.for_stdout(), await backend.conversations(limit=limit))


@app.command()
def conversations(
    user: Annotated[str, typer.Option("--user", help="Whose.", show_default=False)],
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    server: ServerUrl = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List USER's conversations, most recently updated first: id, last update, title."""
    _check_server_client(server)
    settings = _settings(database_url)
    _run(_conversations(settings, user, server, limit), database_url=settings.database_url)


def _check_server_client(server: str | None) -> None:
    if server is not None and importlib.util.find_spec("httpx") is None:
        # httpx comes with the server's dependencies: say how to get it, not a traceback.
        typer.echo("error: --server needs httpx: pip install 'chatledger[server]'", err=True)
        raise typer.Exit(1)


async def _serve_mcp(settings: Settings, user_id: str) -> None:
    from chatledger.compose import open_store
    from chatledger.tools.mcp import create_mcp_server, serve_stdio

    store = open_store(settings)
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
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            help="Logs go to stderr, which MCP hosts show their users: warning by default.",
        ),
    ] = "warning",
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
    logging.basicConfig(stream=sys.stderr, level=log_level.upper())
    _run(_serve_mcp(settings, user), database_url=settings.database_url)


async def _export(settings: Settings, user_id: str, out: Path | None) -> None:
    from chatledger.compose import open_store

    store = open_store(settings)
    target = sys.stdout.buffer if out is None else await asyncio.to_thread(out.open, "wb")
    try:
        async for lines in store.export(user_id):
            await asyncio.to_thread(target.write, lines.encode())
        await asyncio.to_thread(target.flush)
    finally:
        if out is not None:
            await asyncio.to_thread(target.close)
        await store.close()


@app.command("export")
def export_command(
    user: Annotated[str, typer.Argument(help="Whose data.", show_default=False)],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of to stdout.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export USER's conversations (with branches, head and summaries), messages and tasks
    as JSON Lines, the format POST /api/{user_id}/import and `chatledger import` read.
    Turns, stream events, idempotency keys and rate limits are not exported."""
    settings = _settings(database_url)
    _run(_export(settings, user, out), database_url=settings.database_url)


async def _import(settings: Settings, user_id: str, path: Path, format: str) -> None:
    from chatledger.compose import open_store

    store = open_store(settings)
    try:
        await store.migrate()
        if format == "chatgpt":
            report = await store.import_chatgpt(user_id, await asyncio.to_thread(path.read_bytes))
        else:
            file = await asyncio.to_thread(path.open, "rb")
            try:

                async def chunks() -> AsyncIterator[bytes]:
                    while chunk := await asyncio.to_thread(file.read, 1024 * 1024):
                        yield chunk

                report = await store.import_lines(user_id, chunks())
            finally:
                await asyncio.to_thread(file.close)
    finally:
        await store.close()
    summary = report.to_dict()
    typer.echo(
        f"imported {summary['conversations_imported']} conversations"
        f" ({summary['conversations_present']} there already,"
        f" {summary['conversations_failed']} failed) and {summary['tasks_imported']} tasks"
        f" ({summary['tasks_present']} there already)"
    )
    for failure in report.failures:
        typer.echo(f"error: line {failure.line}: {failure.message}", err=True)
    if not report.complete and not report.failures:
        typer.echo("error: the file ends before its end line: it was cut short", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("import")
def import_command(
    user: Annotated[str, typer.Argument(help="Into whose account.", show_default=False)],
    file: Annotated[
        Path, typer.Argument(help="The file.", exists=True, dir_okay=False, show_default=False)
    ],
    format: Annotated[
        Literal["chatledger", "chatgpt"],
        typer.Option("--format", help="chatledger (an export) or chatgpt (conversations.json)."),
    ] = "chatledger",
    database_url: DatabaseUrl = None,
) -> None:
    """Import FILE into USER's account (migrates first): each conversation whole or not at
    all, with new ids; importing the same file again adds nothing. Exits with 1 and the
    lines at fault when anything could not be imported; the rest is imported."""
    settings = _settings(database_url)
    _run(_import(settings, user, file, format), database_url=settings.database_url)


def main() -> None:
    app()
