"""`FakeModelServer`: a fake OpenAI-compatible model server on 127.0.0.1.

    script = [ToolCalls([FunctionCall("add_task", {"title": "milk"})]), Text("Added milk.")]
    async with FakeModelServer(script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test")
        ...  # run the code under test with `client`
    assert server.requests[1].tool_outputs  # what the model was sent back

It plays the model: a real HTTP server that speaks the wire protocol of OpenAI's Chat
Completions and Responses APIs, so the code under test runs its real clients (the OpenAI
SDK, the Agents SDK) unpatched. It needs the `server` extra (starlette, uvicorn), imported
only when a server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Self

from chatledger.domain import ToolCall

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "ErrorResponse",
    "FakeModelServer",
    "FunctionCall",
    "ModelReply",
    "ModelRequest",
    "ModelScript",
    "ReportedUsage",
    "Stall",
    "Text",
    "ToolCalls",
]


@dataclass(frozen=True, slots=True)
class ReportedUsage:
    """Token counts a reply reports as its usage, exactly."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Text:
    """The model answers with assistant text, streamed in `chunks` pieces.

    With `pause_after`, a streamed answer sends that many pieces, then holds the rest until
    `FakeModelServer.release()`: a model caught in the middle of its reply.

    `usage` is what the reply reports: `True` for rough counts (about four characters a
    token), `False` for none (as some compatible servers do), or `ReportedUsage`. A
    streamed Chat Completions reply reports it only when the request asks, with
    `stream_options.include_usage`, as the real API does.
    """

    text: str
    chunks: int = 3
    pause_after: int | None = None
    usage: ReportedUsage | bool = True


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One tool call in a model's reply.

    `arguments` goes on the wire as JSON text; a string is sent exactly as given, broken
    JSON included. `id` defaults to a fresh `call_<n>`, unique within the server.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """The model calls tools, in parallel when there are several, after saying `text`;
    `usage` as for `Text`."""

    calls: Sequence[FunctionCall]
    text: str = ""
    usage: ReportedUsage | bool = True


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """The API fails with HTTP `status` and an OpenAI-style error body."""

    status: int = 500
    message: str = "The server had an error while processing your request."
    type: str = "server_error"
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Stall:
    """The API holds the request without a word until `FakeModelServer.release()` is called
    or the server stops; then it answers `then`."""

    then: Text | ToolCalls | ErrorResponse = ErrorResponse(503, "The model did not answer.")


ModelReply = Text | ToolCalls | ErrorResponse | Stall


class _Item(NamedTuple):
    """One entry of a request's conversation, read the same way from both APIs."""

    kind: Literal["message", "call", "output"]
    role: str
    text: str  # a message's text, a call's arguments, or a tool's output
    call_id: str = ""
    name: str = ""
    position: int = 0  # index in messages/input: the calls of one chat message share it


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _chat_items(body: Mapping[str, Any]) -> list[_Item]:
    items = []
    for position, message in enumerate(body.get("messages") or []):
        role = str(message.get("role", ""))
        text = _text(message.get("content"))
        if role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            items.append(_Item("output", role, text, call_id, position=position))
            continue
        calls = message.get("tool_calls") or []
        if text or not calls:
            items.append(_Item("message", role, text, position=position))
        for call in calls:
            function = call.get("function") or {}
            items.append(
                _Item(
                    "call",
                    role,
                    str(function.get("arguments", "")),
                    str(call.get("id", "")),
                    str(function.get("name", "")),
                    position,
                )
            )
    return items


def _responses_items(body: Mapping[str, Any]) -> list[_Item]:
    items = []
    if instructions := _text(body.get("instructions")):
        items.append(_Item("message", "system", instructions, position=-1))
    given = body.get("input") or []
    if isinstance(given, str):
        given = [{"role": "user", "content": given}]
    for position, item in enumerate(given):
        kind = item.get("type", "message")
        call_id = str(item.get("call_id", ""))
        if kind == "message":
            role = str(item.get("role", ""))
            items.append(_Item("message", role, _text(item.get("content")), position=position))
        elif kind == "function_call":
            arguments, name = str(item.get("arguments", "")), str(item.get("name", ""))
            items.append(_Item("call", "assistant", arguments, call_id, name, position))
        elif kind == "function_call_output":
            items.append(_Item("output", "tool", _text(item.get("output")), call_id, "", position))
    return items


def _chat_orphan(items: list[_Item]) -> str | None:
    # Chat Completions wants the results right after the message that made the calls.
    waiting: dict[str, None] = {}  # an ordered set of call ids
    position = -1
    for item in items:
        if item.kind == "output":
            if item.call_id not in waiting:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a"
                    " preceeding message with 'tool_calls'."
                )
            del waiting[item.call_id]
        elif waiting and not (item.kind == "call" and item.position == position):
            break
        elif item.kind == "call":
            waiting[item.call_id] = None
            position = item.position
    if waiting:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages"
            " responding to each 'tool_call_id'. The following tool_call_ids did not have"
            f" response messages: {', '.join(waiting)}"
        )
    return None


def _responses_orphan(items: list[_Item]) -> str | None:
    # The Responses API only wants each output after its call, and no call left unanswered.
    waiting: dict[str, None] = {}
    for item in items:
        if item.kind == "call":
            waiting[item.call_id] = None
        elif item.kind == "output":
            if item.call_id not in waiting:
                return f"No tool call found for function call output with call_id {item.call_id}."
            del waiting[item.call_id]
    if waiting:
        return f"No tool output found for function call {next(iter(waiting))}."
    return None


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """A request the fake server received, with views that read alike on both APIs.

    Attributes:
        api: `"chat_completions"` or `"responses"`.
        body: the JSON body, exactly as sent.
    """

    api: Literal["chat_completions", "responses"]
    body: dict[str, Any]

    def _items(self) -> list[_Item]:
        if self.api == "chat_completions":
            return _chat_items(self.body)
        return _responses_items(self.body)

    @property
    def stream(self) -> bool:
        """Whether the client asked for server-sent events."""
        return self.body.get("stream") is True

    @property
    def messages(self) -> list[tuple[str, str]]:
        """`(role, text)` of each message, in order; a Responses request's `instructions`
        come first, as a system message."""
        return [(item.role, item.text) for item in self._items() if item.kind == "message"]

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls in the conversation sent, in order."""
        return [
            ToolCall(item.call_id, item.name, item.text)
            for item in self._items()
            if item.kind == "call"
        ]

    @property
    def tool_outputs(self) -> dict[str, str]:
        """The tool results in the conversation sent, by call id."""
        return {item.call_id: item.text for item in self._items() if item.kind == "output"}

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools offered to the model."""
        tools = self.body.get("tools") or []
        if self.api == "chat_completions":
            return [str(tool.get("function", {}).get("name")) for tool in tools]
        return [str(tool.get("name")) for tool in tools]

    def orphan(self) -> str | None:
        """Why the real API would refuse this conversation's tool pairing, or None if it
        would not: a tool call with no result after it, or a result with no call before."""
        if self.api == "chat_completions":
            return _chat_orphan(self._items())
        return _responses_orphan(self._items())


ModelScript = Sequence[ModelReply] | Callable[[ModelRequest], ModelReply]


def _pieces(text: str, count: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, count)))
    return [text[start : start + size] for start in range(0, len(text), size)]


def _error(status: int, message: str, kind: str, code: str | None = None) -> Response:
    from starlette.responses import JSONResponse

    error = {"message": message, "type": kind, "param": None, "code": code}
    return JSONResponse({"error": error}, status_code=status)


# Stands between two frames of a stream where a `Text.pause_after` holds it; no frame of
# server-sent events (nor any piece of text, which are never empty) is this string.
_PAUSE: Final = "\x00pause\x00"


def _event_stream(frames: list[str], *, pause: asyncio.Event, sent: Callable[[], None]) -> Response:
    from starlette.responses import StreamingResponse

    async def send() -> AsyncIterator[str]:
        for frame in frames:
            if frame == _PAUSE:
                await pause.wait()
            else:
                yield frame
        sent()

    return StreamingResponse(
        send(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


class FakeModelServer:
    """A fake OpenAI-compatible model API on 127.0.0.1, for tests of code that calls a model.

    It serves `POST /v1/chat/completions` and `POST /v1/responses`, streamed (server-sent
    events, framed as the real API frames them) or not, from a thread of its own, so the code
    under test speaks real HTTP to it with unpatched clients. Each request gets the next
    reply of the script, or, when the script is a function, the reply it returns for that
    request. Like the real API, the server refuses with HTTP 400 and an OpenAI-style error
    body a request whose conversation has an orphaned tool call (no result after it) or an
    orphaned tool result (no call before it); such a request uses up no reply.

        async with FakeModelServer([Text("Hello!")]) as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="test")

    A reply is one of:

    - `Text(text, chunks=3, pause_after=None)`: assistant text, streamed in `chunks` pieces
      (holding after `pause_after` of them until `release()`);
    - `ToolCalls([FunctionCall(name, arguments, id=None), ...], text="")`: tool calls, in
      parallel when there are several;
    - `ErrorResponse(status, message)`: an HTTP error with an OpenAI-style body;
    - `Stall(then=...)`: no answer until `release()` or the end of the `async with`.

    `Text` and `ToolCalls` report rough token counts as their usage unless their `usage`
    says otherwise: `ReportedUsage(input_tokens, output_tokens)`, or `False` for none.

    Each recorded `ModelRequest` has the JSON body as sent, and views that read alike on both
    APIs: `messages`, `tool_calls`, `tool_outputs`, `tool_names` and `orphan()`.

    Args:
        script: the replies in order, or a function from a request to its reply (it runs in
            the server's thread). A request after the last reply gets a 500 that says so.

    Attributes:
        requests: every request received, in order, refused ones included.
        replies_sent: how many replies have been sent to their last byte.
    """

    def __init__(self, script: ModelScript) -> None:
        self.requests: list[ModelRequest] = []
        self.replies_sent = 0
        self._script = script
        self._replies = iter(()) if callable(script) else iter(script)
        self._ids = itertools.count(1)
        self._port = 0
        self._started = threading.Event()
        self._released = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The API's root, `http://127.0.0.1:<port>/v1`: the OpenAI client's `base_url`."""
        return f"http://127.0.0.1:{self._port}/v1"

    def release(self) -> None:
        """Let stalled requests answer; from now on a stall answers at once.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("the FakeModelServer is not running")
        # The event belongs to the server's loop, in another thread.
        self._loop.call_soon_threadsafe(self._released.set)

    async def __aenter__(self) -> Self:
        import uvicorn

        # Binding here, not in uvicorn, gives the port before the thread starts, and the
        # listening socket queues connections until the server accepts them.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            loop="asyncio",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, sock), name="FakeModelServer", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(self._started.wait)
        if self._loop is None:
            raise RuntimeError("the FakeModelServer failed to start")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is None or self._thread is None:
            return
        # A request still stalled would hold up the server's graceful shutdown.
        self.release()
        self._server.should_exit = True
        await asyncio.to_thread(self._thread.join)

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        finally:
            # Wakes __aenter__ even when the server died before it started.
            self._started.set()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._started.set()
        yield

    def _app(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    async def _chat_completions(self, request: Request) -> Response:
        return await self._answer("chat_completions", request)

    async def _responses(self, request: Request) -> Response:
        return await self._answer("responses", request)

    async def _answer(
        self, api: Literal["chat_completions", "responses"], request: Request
    ) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(
                400, "The body of your request is not a JSON object.", "invalid_request_error"
            )
        received = ModelRequest(api, body)
        self.requests.append(received)
        if (orphan := received.orphan()) is not None:
            return _error(400, orphan, "invalid_request_error")
        reply = self._next_reply(received)
        if isinstance(reply, Stall):
            await self._released.wait()
            reply = reply.then
        if isinstance(reply, ErrorResponse):
            return _error(reply.status, reply.message, reply.type, reply.code)
        chunks = reply.chunks if isinstance(reply, Text) else 1
        pause_after = reply.pause_after if isinstance(reply, Text) else None
        calls = [] if isinstance(reply, Text) else [self._tool_call(call) for call in reply.calls]
        build = _chat_completion if api == "chat_completions" else _response
        answer = _Answer(reply.text, chunks, calls, pause_after, reply.usage)
        frames = build(received, answer, self._ids)
        if not isinstance(frames, list):
            self.replies_sent += 1
            return frames
        return _event_stream(frames, pause=self._released, sent=self._count_sent)

    def _count_sent(self) -> None:
        self.replies_sent += 1

    def _next_reply(self, request: ModelRequest) -> ModelReply:
        if callable(self._script):
            return self._script(request)
        reply = next(self._replies, None)
        if reply is None:
            return ErrorResponse(
                500, f"FakeModelServer: the script has no reply for request {len(self.requests)}."
            )
        return reply

    def _tool_call(self, call: FunctionCall) -> ToolCall:
        arguments = call.arguments
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        return ToolCall(call.id or f"call_{next(self._ids)}", call.name, arguments)


class _Answer(NamedTuple):
    """A reply ready to send: its text, and its tool calls with their ids."""

    text: str
    chunks: int
    calls: list[ToolCall]
    pause_after: int | None = None
    usage: ReportedUsage | bool = True

    def pieces(self) -> list[str]:
        """The text's pieces, with `_PAUSE` after the first `pause_after` of them."""
        pieces = _pieces(self.text, self.chunks)
        if self.pause_after is not None:
            pieces.insert(self.pause_after, _PAUSE)
        return pieces


def _chat_completion(
    request: ModelRequest, answer: _Answer, ids: Iterator[int]
) -> Response | list[str]:
    """A Chat Completions reply: a `chat.completion`, or the frames of its chunks as
    server-sent events, ending with `data: [DONE]`."""
    from starlette.responses import JSONResponse

    head = {
        "id": f"chatcmpl-{next(ids)}",
        "created": int(time.time()),
        "model": request.body.get("model", ""),
        "system_fingerprint": None,
    }
    counts = _usage(request, answer)
    usage = None
    if counts is not None:
        sent, said = counts
        usage = {"prompt_tokens": sent, "completion_tokens": said, "total_tokens": sent + said}
    finish_reason = "tool_calls" if answer.calls else "stop"
    if not request.stream:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text or None,
            "refusal": None,
            "annotations": [],
        }
        if answer.calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in answer.calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return JSONResponse(
            {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        )

    chunks: list[dict[str, Any]] = []

    def emit(delta: dict[str, Any], finish_reason: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunks.append({**head, "object": "chat.completion.chunk", "choices": [choice]})

    emit({"role": "assistant", "content": "" if answer.text else None, "refusal": None})
    held = len(chunks)
    for piece in answer.pieces():
        if piece == _PAUSE:
            held = len(chunks)
        else:
            emit({"content": piece})
    for index, call in enumerate(answer.calls):
        # A call's first chunk has its id and name; its arguments follow in pieces.
        function = {"name": call.name, "arguments": ""}
        emit(
            {
                "tool_calls": [
                    {"index": index, "id": call.id, "type": "function", "function": function}
                ]
            }
        )
        for piece in _pieces(call.arguments, 2):
            emit({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    emit({}, finish_reason)
    if usage is not None and (request.body.get("stream_options") or {}).get("include_usage"):
        # Then every chunk says "usage": null, and one more, with no choices, has it.
        chunks = [{**chunk, "usage": None} for chunk in chunks]
        chunks.append({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    frames = [*(f"data: {json.dumps(c)}\n\n" for c in chunks), "data: [DONE]\n\n"]
    if answer.pause_after is not None:
        frames.insert(held, _PAUSE)
    return frames


def _response(request: ModelRequest, answer: _Answer, ids: Iterator[int]) -> Response | list[str]:
    """A Responses API reply: a `response`, or the frames of its typed events as
    server-sent events."""
    from starlette.responses import JSONResponse

    counts = _usage(request, answer)
    usage = None
    if counts is not None:
        sent, said = counts
        usage = {
            "input_tokens": sent,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": said,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": sent + said,
        }
    text = {"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}
    output: list[dict[str, Any]] = []
    if answer.text:
        output.append(
            {
                "type": "message",
                "id": f"msg_{next(ids)}",
                "status": "completed",
                "role": "assistant",
                "content": [text],
            }
        )
    output += [
        {
            "type": "function_call",
            "id": f"fc_{next(ids)}",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        }
        for call in answer.calls
    ]
    head = {
        "id": f"resp_{next(ids)}",
        "object": "response",
        "created_at": int(time.time()),
        "model": request.body.get("model", ""),
        "instructions": request.body.get("instructions"),
        "tools": request.body.get("tools", []),
        "tool_choice": request.body.get("tool_choice", "auto"),
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}},
        "metadata": {},
        "error": None,
        "incomplete_details": None,
    }
    completed = {**head, "status": "completed", "output": output, "usage": usage}
    if not request.stream:
        return JSONResponse(completed)

    frames: list[str] = []

    def emit(kind: str, **data: Any) -> None:
        event = {"type": kind, "sequence_number": sum(f != _PAUSE for f in frames), **data}
        frames.append(f"event: {kind}\ndata: {json.dumps(event)}\n\n")

    in_progress = {**head, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=in_progress)
    emit("response.in_progress", response=in_progress)
    for index, item in enumerate(output):
        at: dict[str, Any] = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            started = {**item, "status": "in_progress", "content": []}
            emit("response.output_item.added", output_index=index, item=started)
            emit("response.content_part.added", **at, content_index=0, part={**text, "text": ""})
            for piece in answer.pieces():
                if piece == _PAUSE:
                    frames.append(_PAUSE)
                    continue
                emit("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=[])
            emit("response.output_text.done", **at, content_index=0, text=answer.text, logprobs=[])
            emit("response.content_part.done", **at, content_index=0, part=text)
        else:
            started = {**item, "status": "in_progress", "arguments": ""}
            emit("response.output_item.added", output_index=index, item=started)
            for piece in _pieces(item["arguments"], 2):
                emit("response.function_call_arguments.delta", **at, delta=piece)
            arguments = item["arguments"]
            emit(
                "response.function_call_arguments.done",
                **at,
                name=item["name"],
                arguments=arguments,
            )
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=completed)
    return frames


def _usage(request: ModelRequest, answer: _Answer) -> tuple[int, int] | None:
    """The usage the answer reports: as given, none, or rough token counts (four
    characters a token), so usage looks like the real thing."""
    if isinstance(answer.usage, ReportedUsage):
        return answer.usage.input_tokens, answer.usage.output_tokens
    if not answer.usage:
        return None
    said = len(answer.text) + sum(len(call.name) + len(call.arguments) for call in answer.calls)
    return len(json.dumps(request.body)) // 4, said // 4 + 1
