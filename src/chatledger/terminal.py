"""`chatledger chat`: a conversation in the terminal, on the local database or a server.

Two sources of turns behind one small interface (`ChatBackend`): `LocalChat` runs them
with a `ChatService` in this process, `RemoteChat` asks a running server over HTTP. Both
yield the turn's stream events as stored; `converse` reads lines, shows the events, and on
Ctrl-C during a reply stops the turn as the stop endpoint does, so that its partial reply
is kept and the conversation is free at once.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import typer

from chatledger.domain import Conversation, StreamEvent
from chatledger.errors import ChatLedgerError, NotFoundError
from chatledger.terminal_markdown import MarkdownStyler

if TYPE_CHECKING:
    import httpx

    from chatledger.service import ChatService
    from chatledger.store import SQLAlchemyStore

PROMPT: Final = "\u203a "  # a single right-pointing angle quotation mark
# Where tool arguments and error messages are cut, to keep each tool call on one line.
_VALUE_CHARS: Final = 40
_LINE_CHARS: Final = 100
# The server sends a keep-alive comment every 15 s while a turn is quiet.
_STREAM_READ_TIMEOUT: Final = 60.0
# What a terminal acts on instead of showing: C0 controls but newline and tab, DEL, C1. A
# model's text (or a tool name it makes up, or a server's error) carrying them could set the
# window title, clear the screen, or write over what was shown; they are shown as U+FFFD.
_STYLE_CODES: Final = re.compile("\x1b\\[[0-9;]*m")
_UNSHOWN: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class ChatBackend(Protocol):
    """Where turns run: this process (`LocalChat`) or a server (`RemoteChat`)."""

    async def check(self, conversation_id: str) -> None:
        """Raise `NotFoundError` unless the user has this conversation."""
        ...

    def stream(self, conversation_id: str | None, message: str) -> AsyncIterator[StreamEvent]:
        """One turn's events; a turn that fails raises `ChatLedgerError` after them."""
        ...

    async def stop(self, conversation_id: str) -> None:
        """Ask the running turn to stop; it ends with a `done` marked stopped."""
        ...

    async def conversations(self, *, limit: int) -> list[Conversation]:
        """The user's conversations, most recently updated first."""
        ...


@dataclass
class LocalChat:
    """Turns run by a `ChatService` in this process, on the local database."""

    service: ChatService
    store: SQLAlchemyStore
    user_id: str

    async def check(self, conversation_id: str) -> None:
        await self.store.get_conversation(self.user_id, conversation_id)

    def stream(self, conversation_id: str | None, message: str) -> AsyncIterator[StreamEvent]:
        return self.service.stream(self.user_id, conversation_id, message)

    async def stop(self, conversation_id: str) -> None:
        await self.service.stop(self.user_id, conversation_id)

    async def conversations(self, *, limit: int) -> list[Conversation]:
        return (await self.store.list_conversations(self.user_id, limit=limit)).items


@dataclass
class RemoteChat:
    """Turns run by a chatledger server, over its HTTP API (`client` has its base URL and
    the user's token)."""

    client: httpx.AsyncClient
    user_id: str

    async def check(self, conversation_id: str) -> None:
        await self._call("GET", f"conversations/{conversation_id}")

    async def stream(self, conversation_id: str | None, message: str) -> AsyncIterator[StreamEvent]:
        import httpx

        body: dict[str, Any] = {"message": message}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        timeout = httpx.Timeout(30.0, read=_STREAM_READ_TIMEOUT)
        async with self._stream("POST", "chat/stream", json=body, timeout=timeout) as response:
            if response.status_code != 200:
                await response.aread()
                raise _refusal(response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise not_chatledger(self.client, "no event stream")
            ended = False
            try:
                async for event in _server_sent_events(response.aiter_lines()):
                    if event.name == "error":
                        message = event.data.get("message", "the turn failed")
                        raise ChatLedgerError(message, code=event.data.get("code"))
                    ended = event.name == "done"
                    yield event
            except (ValueError, AttributeError):  # an event's data not a JSON object
                raise not_chatledger(self.client, "an event that is not JSON") from None
            if not ended:
                # The turn goes on at the server, or not: either way this reply is cut off.
                raise ChatLedgerError(
                    "the connection broke before the reply was complete", code="incomplete"
                )

    async def stop(self, conversation_id: str) -> None:
        await self._call("POST", f"conversations/{conversation_id}/stop")

    async def conversations(self, *, limit: int) -> list[Conversation]:
        page = await self._call("GET", "conversations", params={"limit": limit})
        try:
            return self._listed(page)
        except (KeyError, TypeError, ValueError):
            raise not_chatledger(self.client, "not a list of conversations") from None

    @staticmethod
    def _listed(page: Any) -> list[Conversation]:
        return [
            Conversation(
                id=item["id"],
                title=item["title"],
                metadata=item["metadata"],
                message_count=item["message_count"],
                created_at=datetime.fromisoformat(item["created_at"]),
                updated_at=datetime.fromisoformat(item["updated_at"]),
            )
            for item in page["items"]
        ]

    async def _call(self, method: str, path: str, **options: Any) -> Any:
        import httpx

        try:
            response = await self.client.request(method, f"/api/{self.user_id}/{path}", **options)
        except httpx.HTTPError as error:
            raise _unreachable(self.client, error) from None
        if response.status_code >= 400:
            raise _refusal(response)
        try:
            return response.json()
        except ValueError:
            raise not_chatledger(self.client, "an answer that is not JSON") from None

    @contextlib.asynccontextmanager
    async def _stream(
        self, method: str, path: str, **options: Any
    ) -> AsyncIterator[httpx.Response]:
        import httpx

        try:
            async with self.client.stream(
                method, f"/api/{self.user_id}/{path}", **options
            ) as response:
                yield response
        except httpx.HTTPError as error:
            raise _unreachable(self.client, error) from None


def _unreachable(client: httpx.AsyncClient, error: Exception) -> ChatLedgerError:
    return ChatLedgerError(
        f"cannot reach the server at {client.base_url}: {error or type(error).__name__}",
        code="unreachable",
    )


def not_chatledger(client: httpx.AsyncClient, answer: str) -> ChatLedgerError:
    """Whatever answers at `client`'s base URL (another web app, say) is no chatledger
    server: it gave `answer`."""
    return ChatLedgerError(
        f"the server at {client.base_url} is not a chatledger server (it sent {answer})",
        code="not_chatledger",
    )


def _refusal(response: httpx.Response) -> ChatLedgerError:
    """The server's JSON error as a `ChatLedgerError` (`NotFoundError` for a 404)."""
    try:
        body = response.json()
        message, code = str(body["message"]), str(body.get("code") or body.get("error"))
    except (ValueError, KeyError, TypeError):
        message, code = f"the server answered HTTP {response.status_code}", "http_error"
    if response.status_code in (401, 403):
        message += " (set CHATLEDGER_TOKEN to a token for this user: `chatledger token USER`)"
    kind = NotFoundError if response.status_code == 404 else ChatLedgerError
    return kind(message, code=code)


async def _server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    name, event_id = "message", ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield StreamEvent(id=event_id, name=name, data=json.loads("\n".join(data)))
            name, data = "message", []
        elif line.startswith(":"):
            continue  # a keep-alive comment
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                event_id = value


# -- the screen ---------------------------------------------------------------------------


@dataclass
class Screen:
    """Where the conversation is shown: in colour on a terminal, as plain text (not one
    escape code) anywhere else."""

    out: TextIO
    colour: bool
    _at_line_start: bool = True
    # A reply's markdown, styled as it streams in (in colour only: elsewhere as written).
    _markdown: MarkdownStyler = field(default_factory=MarkdownStyler)

    @classmethod
    def for_stdout(cls) -> Screen:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        return cls(sys.stdout, colour=colour)

    def text(self, text: str) -> None:
        self._write(text)

    def reply(self, text: str) -> None:
        """The next piece of a reply, printable already."""
        self._write(self._markdown.feed(text) if self.colour else text)

    def end_reply(self) -> None:
        if self.colour:
            self._write(self._markdown.finish())
        if not self._at_line_start:
            self._write("\n")

    def tool(self, name: str, arguments: Any, result: Any) -> None:
        """One line for a tool call: its name, its arguments in brief, ok or the error."""
        self.end_reply()
        call = f"{_printable(name)}({_brief_arguments(arguments)})"
        if isinstance(result, Mapping) and "error" in result:
            outcome = self.style(f"error: {_brief(str(result['error']), _LINE_CHARS)}", "red")
        elif result is None:
            outcome = self.style("no result", "yellow")
        else:
            outcome = self.style("ok", "green")
        self._write(f"  {self.style('▸', 'cyan')} {self.style(call, dim=True)} {outcome}\n")

    def note(self, text: str) -> None:
        self.end_reply()
        self._write(self.style(_printable(text), "yellow") + "\n")

    def error(self, message: str) -> None:
        self.end_reply()
        message = _printable(message)
        colour = self.colour and sys.stderr.isatty()
        typer.echo(typer.style(f"error: {message}", fg="red") if colour else f"error: {message}",
                   err=True, color=colour)  # fmt: skip

    def style(self, text: str, fg: str | None = None, *, dim: bool = False) -> str:
        return typer.style(text, fg=fg, dim=dim or None) if self.colour else text

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            # Style codes after a newline leave the cursor where the newline put it.
            if shown := _STYLE_CODES.sub("", text):
                self._at_line_start = shown.endswith("\n")


def _printable(text: str) -> str:
    """`text` without anything a terminal would act on (a CRLF line end is a newline)."""
    return _UNSHOWN.sub("\ufffd", text.replace("\r\n", "\n"))


def _brief(text: str, limit: int) -> str:
    text = _printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief_arguments(arguments: Any) -> str:
    if not isinstance(arguments, Mapping):
        return _brief(str(arguments), _LINE_CHARS)
    shown = ", ".join(
        f"{key}={_brief(json.dumps(value, ensure_ascii=False), _VALUE_CHARS)}"
        for key, value in arguments.items()
    )
    return _brief(shown, _LINE_CHARS)


# -- reading lines --------------------------------------------------------------------------


class LineReader(Protocol):
    async def read(self) -> str | None:
        """The next line, or None when the user leaves (Ctrl-D, or the input ends)."""
        ...


class PromptReader:
    """Lines typed at a prompt, edited and recalled as in a shell (prompt_toolkit).

    History is kept in memory for the session only: messages are stored in the database
    already, and a second plain-text copy in a file would outlive their deletion.
    """

    def __init__(self, *, colour: bool) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.formatted_text import FormattedText
        from prompt_toolkit.history import InMemoryHistory

        self._session: PromptSession[str] = PromptSession(history=InMemoryHistory())
        self._prompt = FormattedText([("ansicyan bold" if colour else "", PROMPT)])

    async def read(self) -> str | None:
        while True:
            try:
                return await self._session.prompt_async(self._prompt)
            except KeyboardInterrupt:
                continue  # Ctrl-C clears the line, as in a shell
            except EOFError:
                return None


class PlainReader:
    """Lines from piped or redirected input. Read by a thread of its own from the file
    descriptor (no buffered file object): a thread still waiting when the chat ends must not
    hold up the exit, and Ctrl-C while waiting leaves at once."""

    def __init__(self, fd: int) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        thread = threading.Thread(
            target=self._pump, args=(fd, loop), name="chatledger-stdin", daemon=True
        )
        thread.start()

    async def read(self) -> str | None:
        loop = asyncio.get_running_loop()
        with _on_interrupt(lambda: self._lines.put_nowait(None)):
            line = await self._lines.get()
        if line is None:
            loop.call_soon(self._lines.put_nowait, None)  # ended for every later read too
        return line

    def _pump(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: the loop closed
            while chunk := os.read(fd, 65536):
                pending += decoder.decode(chunk)
                *lines, pending = pending.split("\n")
                for line in lines:
                    loop.call_soon_threadsafe(self._lines.put_nowait, line)
            if pending := pending + decoder.decode(b"", final=True):
                loop.call_soon_threadsafe(self._lines.put_nowait, pending)
            loop.call_soon_threadsafe(self._lines.put_nowait, None)


@contextlib.contextmanager
def _on_interrupt(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` on Ctrl-C (SIGINT) for the duration, instead of interrupting."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    loop.add_signal_handler(signal.SIGINT, callback)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)


# -- the conversation -----------------------------------------------------------------------


@dataclass
class _Reply:
    """A turn being shown, and what Ctrl-C has asked of it."""

    chat: ChatBackend
    screen: Screen
    conversation_id: str | None
    stopping: bool = False
    abandoned: bool = False
    failed: bool = False
    calls: dict[str, tuple[str, Any]] = field(default_factory=dict)
    _stop: asyncio.Task[None] | None = None

    def interrupt(self, consumer: asyncio.Task[Any]) -> None:
        if self.stopping:
            # A second Ctrl-C: stop waiting for the turn to end.
            self.abandoned = True
            consumer.cancel()
            return
        self.stopping = True
        self._start_stop()

    def _start_stop(self) -> None:
        # Before its first event the turn has no conversation to name: it stops as it names one.
        if self.stopping and self._stop is None and self.conversation_id is not None:
            self._stop = asyncio.create_task(self.chat.stop(self.conversation_id))
            self._stop.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if isinstance(error, ChatLedgerError):
            self.screen.error(f"could not stop the turn: {error.message}")

    def show(self, event: StreamEvent) -> None:
        if event.name == "conversation":
            self.conversation_id = event.data["conversation_id"]
            self._start_stop()
        elif event.name == "delta":
            self.screen.reply(_printable(event.data["text"]))
        elif event.name == "tool_call":
            self.calls[event.data["id"]] = (event.data["name"], event.data.get("arguments"))
        elif event.name == "tool_result":
            name, arguments = self.calls.pop(event.data["id"], ("tool", {}))
            self.screen.tool(name, arguments, event.data["result"])
        elif event.name == "done":
            for name, arguments in self.calls.values():
                self.screen.tool(name, arguments, None)
            self.screen.end_reply()
            if event.data.get("stopped"):
                self.screen.note("[stopped]")


async def _answer(chat: ChatBackend, screen: Screen, reply: _Reply, message: str) -> bool:
    """Show one turn; False if the user gave up waiting for it to stop. Its error, if it
    failed, is shown and kept in `reply.failed`."""
    consumer = asyncio.current_task()
    assert consumer is not None
    with _on_interrupt(lambda: reply.interrupt(consumer)):
        try:
            async for event in chat.stream(reply.conversation_id, message):
                reply.show(event)
        except ChatLedgerError as error:
            reply.failed = True
            screen.error(error.message)
        except asyncio.CancelledError:
            if not reply.abandoned:
                raise
            consumer.uncancel()
            screen.note("[left while the turn was stopping]")
            return False
    return True


async def converse(
    chat: ChatBackend,
    reader: LineReader,
    screen: Screen,
    *,
    conversation_id: str | None,
    interactive: bool,
    resume: Callable[[str], str],
) -> int:
    """The chat loop: a turn per line, until Ctrl-D, `/exit` or the end of the input.
    `resume` gives the command that continues a conversation, shown on the way out.

    Returns:
        How many turns failed (each error was shown as it happened).

    Raises:
        NotFoundError: `conversation_id` is not one of the user's conversations.
    """
    if conversation_id is not None:
        try:
            await chat.check(conversation_id)
        except NotFoundError:
            raise NotFoundError(f"no conversation {conversation_id!r} for this user") from None
    if interactive:
        screen.note("chatledger chat — type a message; /exit or Ctrl-D to leave.")
    failures = 0
    while (line := await reader.read()) is not None:
        message = line.strip()
        if not message:
            continue
        if message in ("/exit", "/quit"):
            break
        reply = _Reply(chat, screen, conversation_id)
        carry_on = await _answer(chat, screen, reply, message)
        conversation_id = reply.conversation_id
        failures += reply.failed
        if not carry_on:
            break
    if conversation_id is not None:
        screen.end_reply()
        screen.text(f"resume: {resume(conversation_id)}\n")
    return failures


def show_conversations(screen: Screen, conversations: list[Conversation]) -> None:
    """One line per conversation: its id, when it was last updated (local time), its title."""
    for conversation in conversations:
        when = conversation.updated_at.astimezone().strftime("%Y-%m-%d %H:%M")
        title = _printable(conversation.title or "") or screen.style("(untitled)", dim=True)
        screen.text(f"{conversation.id}  {when}  {title}\n")
