"""`chatledger chat` in a terminal: a real process on a pseudo-terminal, typed at with
pexpect as a person types, keys and Ctrl-C included."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest

from chatledger.domain import Message, Role
from chatledger.store import SQLAlchemyStore
from chatledger.terminal import PROMPT
from chatledger.testing import FakeModelServer, ModelReply, ModelRequest, Text
from tests.process.conftest import StartServer
from tests.process.servers import auth, child_env, token_for
from tests.process.test_crashes import model_env

pytestmark = pytest.mark.slow

# Every wait for the terminal is bounded: a chat that hangs fails the test, not the run.
WITHIN = 30.0
LEFT = "\x1b[D"
UP = "\x1b[A"
CTRL_C = "\x03"
CTRL_D = "\x04"
CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# The fake model sends the first half of this reply, then holds the rest back.
WHOLE_REPLY = "Let me think about that for a long while"
FIRST_PIECE = WHOLE_REPLY[:18]


class Terminal:
    """A `chatledger` process on a pseudo-terminal; waits run in a thread, so the test's
    event loop (and the servers it watches) keeps going meanwhile."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        # prompt_toolkit asks a real terminal where its cursor is; nothing here answers.
        env = {**env, "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "chatledger", *args],
            cwd=str(cwd),
            env=env,
            encoding="utf-8",
            timeout=WITHIN,
            dimensions=(40, 200),
        )
        self.child.logfile_read = self._transcript = io.StringIO()

    async def expect(self, pattern: str) -> None:
        """Wait until the process writes `pattern` (plain text, escape codes skipped)."""
        await asyncio.to_thread(self.child.expect_exact, pattern, timeout=WITHIN)

    async def type(self, *keys: str) -> None:
        for key in keys:
            await asyncio.to_thread(self.child.send, key)

    async def exit_status(self) -> int:
        await asyncio.to_thread(self.child.expect, pexpect.EOF, timeout=WITHIN)
        self.child.close()
        assert self.child.exitstatus is not None, self.child.signalstatus
        return self.child.exitstatus

    def output_so_far(self) -> str:
        """Everything written so far, without the terminal's control sequences."""
        return CONTROL.sub("", self._transcript.getvalue()).replace("\r", "")

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
async def terminal(tmp_path: Path) -> AsyncIterator[Callable[..., Terminal]]:
    """`terminal(*args, env=...)`: `chatledger *args` on a pseudo-terminal, killed at the
    end of the test if still running."""
    started: list[Terminal] = []

    def start(*args: str, env: dict[str, str]) -> Terminal:
        started.append(Terminal(list(args), cwd=tmp_path, env=env))
        return started[-1]

    yield start
    for each in started:
        each.kill()


async def stored_messages(database_url: str, user_id: str) -> list[Message]:
    store = SQLAlchemyStore.from_url(database_url)
    try:
        [conversation] = (await store.list_conversations(user_id)).items
        return await store.history(user_id, conversation.id, limit=100)
    finally:
        await store.close()


def user_texts(messages: list[Message]) -> list[str]:
    return [m.content or "" for m in messages if m.role is Role.USER]


def slow_model(request: ModelRequest) -> ModelReply:
    """A reply caught halfway for the first message; short answers for the others."""
    if request.messages[-1] == ("user", "think hard"):
        return Text(WHOLE_REPLY, chunks=2, pause_after=1)
    return Text("Hi there.")


def partial_reply(output: str) -> str:
    """The part of `WHOLE_REPLY` the terminal showed before it said it stopped."""
    # The terminal echoes the Ctrl-C itself as ^C.
    [shown] = [
        line.removesuffix("^C") for line in output.splitlines() if line.startswith(FIRST_PIECE)
    ]
    assert WHOLE_REPLY.startswith(shown) and shown != WHOLE_REPLY, shown
    return shown


async def test_arrow_keys_edit_the_line_and_up_recalls_it(
    terminal: Callable[..., Terminal], sqlite_url: str
) -> None:
    chat = terminal("chat", "--user", "alice", "--database-url", sqlite_url,
                    env=child_env(AGENT="rules"))  # fmt: skip
    await chat.expect(PROMPT)
    # "add buy mlk", two steps left, an "i": "add buy milk".
    await chat.type("add buy mlk", LEFT, LEFT, "i", "\r")
    await chat.expect('add_task(title="buy milk")')
    await chat.expect(PROMPT)
    await chat.type(UP, "\r")  # the same message again, recalled
    await chat.expect("Added task 2")
    await chat.expect(PROMPT)
    await chat.type(CTRL_D)
    assert await chat.exit_status() == 0

    messages = await stored_messages(sqlite_url, "alice")
    assert user_texts(messages) == ["add buy milk", "add buy milk"]


async def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_says_how_to_resume(
    terminal: Callable[..., Terminal], sqlite_url: str
) -> None:
    chat = terminal("chat", "--user", "alice", "--database-url", sqlite_url,
                    env=child_env(AGENT="rules"))  # fmt: skip
    await chat.expect(PROMPT)
    await chat.type("delete everything", CTRL_C)
    await chat.expect(PROMPT)
    await chat.type("add tea", "\r")
    await chat.expect("Added task 1")
    await chat.expect(PROMPT)
    await chat.type("\r")  # an empty line does nothing: the chat goes on
    await chat.expect(PROMPT)
    await chat.type("show my tasks", "\r")
    await chat.expect("• #1 tea")  # the reply's markdown list, styled on a terminal
    await chat.expect(PROMPT)
    await chat.type(CTRL_D)
    await chat.expect("resume: chatledger chat --user alice --conversation ")
    assert await chat.exit_status() == 0

    messages = await stored_messages(sqlite_url, "alice")
    assert user_texts(messages) == ["add tea", "show my tasks"]
    conversation_id = messages[0].conversation_id
    assert conversation_id in chat.output_so_far()


async def test_ctrl_c_during_a_reply_stops_it_keeps_the_partial_reply_and_frees_the_chat(
    terminal: Callable[..., Terminal], sqlite_url: str
) -> None:
    async with FakeModelServer(slow_model) as model:
        chat = terminal("chat", "--user", "alice", "--database-url", sqlite_url,
                        env=model_env(model, AGENT="openai"))  # fmt: skip
        await chat.expect(PROMPT)
        await chat.type("think hard", "\r")
        await chat.expect(FIRST_PIECE)
        await chat.type(CTRL_C)
        await chat.expect("[stopped]")
        await chat.expect(PROMPT)
        assert "Traceback" not in chat.output_so_far()
        # Accepted at once: the stopped turn let go of the conversation.
        await chat.type("hello", "\r")
        await chat.expect("Hi there.")
        await chat.expect(PROMPT)
        await chat.type("/exit", "\r")
        assert await chat.exit_status() == 0
        output = chat.output_so_far()
    assert "error" not in output and "Traceback" not in output, output

    messages = await stored_messages(sqlite_url, "alice")
    assert [(m.role, m.content) for m in messages] == [
        (Role.USER, "think hard"),
        (Role.ASSISTANT, partial_reply(output)),
        (Role.USER, "hello"),
        (Role.ASSISTANT, "Hi there."),
    ]
    assert messages[1].metadata == {"status": "stopped"}


async def test_server_mode_chats_stops_and_lists_over_http(
    terminal: Callable[..., Terminal], serve: StartServer, sqlite_url: str
) -> None:
    async with FakeModelServer(slow_model) as model:
        server = await serve(sqlite_url, agent="openai", env=model_env(model))
        env = child_env(TOKEN=token_for("alice"))
        chat = terminal("chat", "--user", "alice", "--server", server.base_url, env=env)
        await chat.expect(PROMPT)
        await chat.type("add buy mlk", LEFT, LEFT, "i", "\r")
        await chat.expect("Hi there.")
        await chat.expect(PROMPT)
        await chat.type("think hard", "\r")
        await chat.expect(FIRST_PIECE)
        await chat.type(CTRL_C)
        await chat.expect("[stopped]")
        await chat.expect(PROMPT)
        await chat.type("hello", "\r")
        await chat.expect("Hi there.")
        await chat.expect(PROMPT)
        await chat.type(CTRL_D)
        await chat.expect(f"--server {server.base_url} --conversation ")
        assert await chat.exit_status() == 0
        output = chat.output_so_far()
        assert "error" not in output, output

        async with server.client(headers=auth("alice")) as client:
            [conversation] = (await client.get("/api/alice/conversations")).json()["items"]
            page = await client.get(f"/api/alice/conversations/{conversation['id']}/messages")
        listed = await _run("conversations", "--user", "alice", "--server", server.base_url,
                            env=env)  # fmt: skip
        unknown = await _run("chat", "--user", "alice", "--server", server.base_url,
                             "--conversation", "no-such-id", env=env)  # fmt: skip
        refused = await _run("chat", "--user", "alice", "--server", server.base_url,
                             env=child_env(TOKEN=token_for("bob")))  # fmt: skip
    messages: list[dict[str, Any]] = page.json()["items"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "add buy milk"),
        ("assistant", "Hi there."),
        ("user", "think hard"),
        ("assistant", partial_reply(output)),
        ("user", "hello"),
        ("assistant", "Hi there."),
    ]
    assert messages[3]["metadata"] == {"status": "stopped"}
    assert listed[0] == 0 and listed[1].split()[0] == conversation["id"], listed
    assert unknown[0] == 1 and unknown[2] == "error: no conversation 'no-such-id' for this user\n"
    assert refused[0] == 1 and len(refused[2].splitlines()) == 1, refused
    assert refused[2].startswith("error: ") and "CHATLEDGER_TOKEN" in refused[2], refused


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatledger", *args, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(WITHIN):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


# Alone: the second Ctrl-C must reach the chat before the first one's stop has ended the
# turn; on a machine loaded by other tests the test's own keystrokes can come too late.
@pytest.mark.alone
async def test_ctrl_c_twice_during_a_reply_leaves_and_the_conversation_goes_on_later(
    terminal: Callable[..., Terminal], sqlite_url: str
) -> None:
    async with FakeModelServer(slow_model) as model:
        env = model_env(model, AGENT="openai")
        chat = terminal("chat", "--user", "alice", "--database-url", sqlite_url, env=env)
        await chat.expect(PROMPT)
        await chat.type("think hard", "\r")
        await chat.expect(FIRST_PIECE)
        await chat.type(CTRL_C, CTRL_C)
        await chat.expect("resume: ")
        assert await chat.exit_status() == 0
        assert "Traceback" not in chat.output_so_far()
        [conversation_id] = re.findall(r"--conversation (\S+)", chat.output_so_far())

        again = terminal("chat", "--user", "alice", "--database-url", sqlite_url,
                         "--conversation", conversation_id, env=env)  # fmt: skip
        await again.expect(PROMPT)
        await again.type("hello", "\r")
        await again.expect("Hi there.")
        await again.expect(PROMPT)
        await again.type(CTRL_D)
        assert await again.exit_status() == 0
    messages = await stored_messages(sqlite_url, "alice")
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert messages[1].metadata.get("status") in ("stopped", "failed"), messages[1]
