"""The `chatledger` command run as a user runs it: a process, its output, its exit status."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import asyncpg
import jwt
import pytest
from sqlalchemy.engine import make_url

from chatledger.domain import TaskFilter
from chatledger.store import SQLAlchemyStore
from chatledger.testing import (
    FakeModelServer,
    FunctionCall,
    ModelReply,
    ModelRequest,
    Text,
    ToolCalls,
)
from tests.conftest import TABLES, _create_database, _drop_database
from tests.process.conftest import StartServer
from tests.process.servers import SECRET, child_env, free_port

pytestmark = pytest.mark.slow

# Starting Python and importing the store takes about a second; a hung command must not
# hang the test run.
COMMAND_WITHIN = 60.0
# What a terminal would act on rather than show: C0 (but newline and tab) and C1 controls, DEL.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Finished:
    status: int
    stdout: str
    stderr: str


async def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> Finished:
    """`chatledger *args` with `stdin` fed to it, to completion."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatledger",
        *args,
        cwd=cwd,
        env=env if env is not None else child_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_WITHIN):
            stdout, stderr = await process.communicate(stdin.encode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


def assert_one_line_error(finished: Finished) -> None:
    assert finished.status == 1, finished
    [line] = finished.stderr.splitlines()
    assert line.startswith("error: "), line
    assert "Traceback" not in finished.stderr


@pytest.fixture
async def fresh_postgres_url(postgres_url: str) -> AsyncIterator[str]:
    """An empty PostgreSQL database, with no schema yet."""
    name = f"chatledger_cli_{uuid.uuid4().hex[:8]}"
    await _create_database(name)
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    await _drop_database(name)


async def test_migrate_creates_the_schema_of_a_new_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    for _ in range(2):  # and a second time finds nothing to do
        finished = await run("migrate", "--database-url", url, cwd=tmp_path)
        assert (finished.status, finished.stdout) == (0, "database is up to date\n"), finished

    store = SQLAlchemyStore.from_url(url)
    try:
        conversation = await store.create_conversation("alice")
        assert (await store.get_conversation("alice", conversation.id)).id == conversation.id
    finally:
        await store.close()


async def test_migrate_creates_the_schema_of_an_empty_postgresql_database(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    for _ in range(2):
        finished = await run("migrate", "--database-url", fresh_postgres_url, cwd=tmp_path)
        assert (finished.status, finished.stdout) == (0, "database is up to date\n"), finished

    dsn = make_url(fresh_postgres_url).render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await connection.close()
    assert {row["table_name"] for row in tables} >= {*TABLES, "alembic_version"}


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(lambda tmp: f"postgresql://postgres@127.0.0.1:{free_port()}/x", id="pg"),
        pytest.param(lambda tmp: f"sqlite:///{tmp / 'no' / 'such' / 'dir.db'}", id="sqlite"),
    ],
)
async def test_migrate_an_unreachable_database_is_a_one_line_error(url, tmp_path: Path) -> None:
    finished = await run("migrate", "--database-url", url(tmp_path), cwd=tmp_path)
    assert_one_line_error(finished)
    assert finished.stdout == ""


async def test_token_is_accepted_by_a_server_for_that_user_only(
    tmp_path: Path, serve: StartServer, sqlite_url: str
) -> None:
    finished = await run(
        "token", "alice", "--ttl", "60", cwd=tmp_path, env=child_env(JWT_SECRET=SECRET)
    )
    assert finished.status == 0, finished
    [token] = finished.stdout.splitlines()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 60

    server = await serve(sqlite_url)
    async with server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert (await client.get("/api/alice/conversations")).status_code == 200
        assert (await client.get("/api/bob/conversations")).status_code == 403


async def test_token_without_a_secret_is_a_one_line_error(tmp_path: Path) -> None:
    finished = await run("token", "alice", "--ttl", "60", cwd=tmp_path, env=child_env())
    assert_one_line_error(finished)
    assert "CHATLEDGER_JWT_SECRET" in finished.stderr
    assert finished.stdout == ""


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        pytest.param({}, lambda tmp: f"sqlite:///{tmp / 'a.db'}", id="no-secret"),
        pytest.param(
            {"JWT_SECRET": SECRET},
            lambda tmp: f"postgresql://postgres@127.0.0.1:{free_port()}/x",
            id="unreachable-database",
        ),
    ],
)
async def test_serve_refuses_to_start_with_a_one_line_error(
    settings: dict[str, str], url, tmp_path: Path
) -> None:
    finished = await run(
        "serve",
        "--port",
        str(free_port()),
        "--database-url",
        url(tmp_path),
        cwd=tmp_path,
        env=child_env(**settings),
    )
    assert_one_line_error(finished)
    assert "serving" not in finished.stdout


FACTORIES = """
from chatledger.compose import AgentSetup

def explodes(settings):
    raise RuntimeError("the factory's own bug")

def wrong_type(settings):
    return "not a setup"
"""


@pytest.mark.parametrize(
    ("app", "says"),
    [
        ("no_such_module:setup", "cannot import 'no_such_module'"),
        ("factories", "package.module:factory"),
        ("factories:missing", "has no function 'missing'"),
        ("factories:explodes", "RuntimeError: the factory's own bug"),
        ("factories:wrong_type", "returned str, not a chatledger AgentSetup"),
    ],
)
async def test_serve_app_refuses_a_bad_factory_in_one_line(
    app: str, says: str, tmp_path: Path
) -> None:
    (tmp_path / "factories.py").write_text(FACTORIES)
    finished = await run(
        "serve",
        "--port",
        str(free_port()),
        "--app",
        app,
        "--database-url",
        f"sqlite:///{tmp_path / 'a.db'}",
        cwd=tmp_path,
        env=child_env(JWT_SECRET=SECRET),
    )
    assert_one_line_error(finished)
    assert says in finished.stderr


async def test_serve_refuses_an_mcp_servers_file_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "mcp.json").write_text("{not json")
    finished = await run(
        "serve",
        "--port",
        str(free_port()),
        "--database-url",
        f"sqlite:///{tmp_path / 'a.db'}",
        cwd=tmp_path,
        env=child_env(JWT_SECRET=SECRET, MCP_SERVERS=str(tmp_path / "mcp.json")),
    )
    assert_one_line_error(finished)
    assert "mcp.json" in finished.stderr


@pytest.mark.parametrize(
    "configured",
    [
        {"CHATLEDGER_JWT_SECRET": SECRET},
        {"BETTER_AUTH_SECRET": SECRET},
        {"CHATLEDGER_JWKS_URL": "https://issuer.example/jwks.json"},
    ],
    ids=["jwt-secret", "better-auth-secret", "jwks"],
)
async def test_dev_sign_in_refuses_to_start_beside_a_configured_secret(
    configured: dict[str, str], tmp_path: Path
) -> None:
    # With the production secret, `/auth/dev-token` would mint tokens every production
    # replica accepts, for any user.
    env = {**child_env(), **configured}
    finished = await run(
        "serve", "--dev", "--port", str(free_port()), "--database-url",
        f"sqlite:///{tmp_path / 'a.db'}", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert_one_line_error(finished)
    assert next(iter(configured)) in finished.stderr
    assert "serving" not in finished.stdout


async def test_no_setting_turns_dev_sign_in_on_without_dev(
    tmp_path: Path, serve: StartServer, sqlite_url: str
) -> None:
    env = child_env(JWT_SECRET=SECRET, DEV_LOGIN="true")
    server = await serve(sqlite_url, env=env)
    async with server.client() as client:
        refused = await client.post("/auth/dev-token", json={"user_id": "bob"})
        page = await client.get("/")
    assert refused.status_code == 404
    assert 'name="chatledger-dev-login" content="false"' in page.text
    assert "dev sign-in" not in server.output().lower()


async def test_dev_sign_in_says_so_loudly_and_its_tokens_are_its_own(
    tmp_path: Path, serve: StartServer, sqlite_url: str
) -> None:
    dev = await serve(sqlite_url, env=child_env(), dev=True)
    async with dev.client() as client:
        issued = await client.post("/auth/dev-token", json={"user_id": "bob"})
    assert issued.status_code == 200
    assert "WARNING: dev sign-in is on" in "".join(dev.stderr)
    # A production server (its own secret, same database) refuses the dev token.
    production = await serve(sqlite_url, env=child_env(JWT_SECRET=SECRET))
    headers = {"Authorization": f"Bearer {issued.json()['token']}"}
    async with production.client(headers=headers) as client:
        assert (await client.get("/api/bob/conversations")).status_code == 401


async def test_mcp_from_a_directory_it_cannot_write_names_the_database_it_tried(
    tmp_path: Path,
) -> None:
    # The default database is ./chatledger.db; /proc takes no new files, even from root.
    finished = await run("mcp", "--user", "alice", cwd=Path("/proc"), env=child_env())
    assert_one_line_error(finished)
    assert "/proc/chatledger.db" in finished.stderr
    assert "unable to open database file" in finished.stderr
    assert finished.stdout == ""


async def test_mcp_keeps_its_logs_off_the_hosts_stderr_unless_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'quiet.db'}"
    quiet = await run("mcp", "--user", "alice", "--database-url", url, cwd=tmp_path)
    assert (quiet.status, quiet.stderr) == (0, "")
    told = await run(
        "mcp", "--user", "alice", "--database-url", f"sqlite:///{tmp_path / 'told.db'}",
        "--log-level", "info", cwd=tmp_path,
    )  # fmt: skip
    assert told.status == 0 and "alembic" in told.stderr


async def test_chat_holds_a_conversation_offline_and_continues_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    env = child_env(AGENT="rules")
    first = await run(
        "chat",
        "--user",
        "alice",
        "--database-url",
        url,
        cwd=tmp_path,
        env=env,
        # An empty line is no message: the chat goes on to the end of the input.
        stdin="add buy milk\n\nmark it done\nshow my tasks\ncomplete task 9\n",
    )
    assert first.status == 0, first
    # Piped, the output is plain text: not one escape code.
    assert "\x1b" not in first.stdout and "\x1b" not in first.stderr
    lines = first.stdout.splitlines()
    assert lines[:-1] == [
        '  ▸ add_task(title="buy milk") ok',
        'Added task 1: "buy milk".',
        "  ▸ complete_task(task_id=1) ok",
        'Marked task 1 "buy milk" as done.',
        '  ▸ list_tasks(status="all") ok',
        "You have 1 task:",
        "- #1 buy milk (done)",
        "  ▸ complete_task(task_id=9) error: no such task",
        'I couldn\'t find task 9. Say "show my tasks" to see their numbers.',
    ]
    label, command = lines[-1].split(": ")
    assert label == "resume"
    assert command.startswith("chatledger chat --user alice --conversation ")
    conversation_id = command.split()[-1]

    store = SQLAlchemyStore.from_url(url)
    try:
        [task] = await store.tasks.list("alice", status=TaskFilter.COMPLETED)
        assert task.title == "buy milk"

        again = await run(
            "chat",
            "--user",
            "alice",
            "--conversation",
            conversation_id,
            "--database-url",
            url,
            cwd=tmp_path,
            env=env,
            stdin="what did I add earlier?\n/exit\nnot sent\n",
        )
        assert again.status == 0, again
        # Only the stored history of the first run can tell the agent this.
        assert '- #1 "buy milk", done since' in again.stdout
        assert again.stdout.splitlines()[-1] == f"resume: {command}"

        messages = await store.history("alice", conversation_id, limit=100)
        assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
        assert [m.content for m in messages if m.role.value == "user"] == [
            "add buy milk",
            "mark it done",
            "show my tasks",
            "complete task 9",
            "what did I add earlier?",
        ]
        listed = await run("conversations", "--user", "alice", "--database-url", url,
                           cwd=tmp_path, env=env)  # fmt: skip
        assert listed.status == 0, listed
        [line] = listed.stdout.splitlines()
        assert line.split()[0] == conversation_id and line.endswith("  add buy milk")
    finally:
        await store.close()


@pytest.mark.parametrize("conversation", ["no-such-id", "3f6c1c2e-8d0a-4b7e-9c55-0d4a2b7e1f90"])
async def test_chat_with_an_unknown_conversation_is_a_one_line_error(
    conversation: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    finished = await run(
        "chat", "--user", "alice", "--conversation", conversation, "--database-url", url,
        cwd=tmp_path, env=child_env(AGENT="rules"), stdin="add buy milk\n",
    )  # fmt: skip
    assert_one_line_error(finished)
    assert finished.stderr == f"error: no conversation {conversation!r} for this user\n"
    assert finished.stdout == ""


async def test_piped_chat_goes_on_past_a_refused_message_and_exits_with_1(
    tmp_path: Path,
) -> None:
    finished = await run(
        "chat", "--user", "alice", "--database-url", f"sqlite:///{tmp_path / 'chat.db'}",
        cwd=tmp_path, env=child_env(AGENT="rules", MAX_MESSAGE_CHARS="20"),
        stdin="add a task that is far too long\nadd tea\n",
    )  # fmt: skip
    assert finished.status == 1, finished
    [error] = finished.stderr.splitlines()
    assert error.startswith("error: ") and "20" in error, error
    assert 'Added task 1: "tea".' in finished.stdout


async def test_version_is_the_packages(tmp_path: Path) -> None:
    finished = await run("--version", cwd=tmp_path)
    assert (finished.status, finished.stdout) == (0, f"chatledger {version('chatledger')}\n")


async def test_chat_honours_the_context_budget_and_closes_its_agent(tmp_path: Path) -> None:
    """CHATLEDGER_CONTEXT_TOKENS reaches `chatledger chat` (it once did not): a message too
    big for the budget is cut to fit (the default budget would send all 3,000 characters)."""
    long = "remember this: " + "word " * 600

    def reply(request: ModelRequest) -> ModelReply:
        if not request.tool_names:  # the summary the budget makes the service keep
            return Text("The user asked to remember many words.")
        return Text("Hi." if request.messages[-1] == ("user", "hi") else "Noted.")

    async with FakeModelServer(reply) as model:
        env = child_env(AGENT="openai", CONTEXT_TOKENS="300")
        env.update(OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="test")
        finished = await run(
            "chat",
            "--user",
            "alice",
            "--database-url",
            f"sqlite:///{tmp_path / 'chat.db'}",
            cwd=tmp_path,
            env=env,
            stdin=f"{long}\nhi\n",
        )
    assert finished.status == 0, finished
    assert "Noted." in finished.stdout and "Hi." in finished.stdout
    turns = [request for request in model.requests if request.tool_names]
    assert [request.messages[-1][0] for request in turns] == ["user", "user"]
    assert turns[1].messages[-1] == ("user", "hi")
    for request in turns:
        assert sum(len(text) for _, text in request.messages) < len(long) / 2
    # The agent's HTTP client was closed on the way out: no warning about it.
    assert "Unclosed" not in finished.stderr and "ResourceWarning" not in finished.stderr


async def test_piped_chat_writes_no_control_character_a_model_sent(tmp_path: Path) -> None:
    """A model's text (and a tool name it makes up) can carry escape sequences: a title
    change, a screen clear, a carriage return that writes over what was shown. Piped or
    not, they are shown as text, never written to the output as they came."""
    hostile = "\x1b]0;pwned\x07Hi \x1b[2Jthere\rover \x9b31mred\x1b[0m."

    def reply(request: ModelRequest) -> ModelReply:
        if not request.tool_outputs:
            return ToolCalls([FunctionCall("\x1b[2Jwipe", {"title": "\x9b2Jtea\x1b[0m"})])
        return Text(hostile)

    async with FakeModelServer(reply) as model:
        env = child_env(AGENT="openai")
        env.update(OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="test")
        finished = await run(
            "chat", "--user", "alice", "--database-url", f"sqlite:///{tmp_path / 'chat.db'}",
            cwd=tmp_path, env=env, stdin="hello\n",
        )  # fmt: skip
    assert finished.status == 0, finished
    for stream in (finished.stdout, finished.stderr):
        assert CONTROLS.search(stream) is None, stream
    assert "Hi" in finished.stdout and "there" in finished.stdout and "red" in finished.stdout


@contextlib.asynccontextmanager
async def not_chatledger(body: bytes, content_type: str) -> AsyncIterator[str]:
    """A web server on 127.0.0.1 that answers every request 200 with `body`, as a web
    app's catch-all route does; yields its base URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.lower().splitlines()
             if line.startswith(b"content-length:")),
            0,
        )  # fmt: skip
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode()
            + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n" + body
        )  # fmt: skip
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<!doctype html><title>Another app</title>", "text/html"),
        (b'{"items": [], "token": "t"}', "application/json"),
    ],
    ids=["html", "json"],
)
@pytest.mark.parametrize("token", [None, "t"], ids=["dev-token", "token"])
async def test_chat_with_a_server_that_is_not_chatledger_is_a_one_line_error(
    body: bytes, content_type: str, token: str | None, tmp_path: Path
) -> None:
    async with not_chatledger(body, content_type) as url:
        finished = await run(
            "chat", "--user", "alice", "--server", url, cwd=tmp_path,
            env=child_env(**({"TOKEN": token} if token else {})), stdin="hello\n",
        )  # fmt: skip
    assert_one_line_error(finished)
    assert url in finished.stderr, finished.stderr
