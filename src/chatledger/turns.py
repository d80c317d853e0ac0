"""`Turn`: one running chat turn — what it has said, what it has recorded, its stream.

A turn is started by `ChatService` (its user message stored, the conversation's lease
taken) and then owns its record-keeping until it ends:

- what the agent says is held (`hear`) until it is stored with the next tool call or as
  the reply; streamed text goes to the turn's event log, in batches;
- each tool call runs and is recorded under the turn's tool-call limit (`run_tool`): a
  call to chatledger's own database in one transaction with its effect and the events
  that report it; any other call before it runs, and its result when it returns, so a
  process that dies in between leaves a call that is closed as `interrupted`;
- `keep_alive` renews the lease while the turn runs and notices a stop request;
- `end` stores the last message and the tokens the agent reported using (summed), frees
  the lease, completes the idempotency key and ends the stream, retrying a while if the
  database is away.

The stream is written to the database before it is handed to the live listener, so a
client that attaches from another replica, or reconnects, gets exactly the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

from chatledger.agents.base import AgentEvent, AssistantMessage, TextDelta, TokenUsage
from chatledger.domain import (
    INTERRUPTED_TOOL_RESULT,
    ChatMessage,
    Message,
    StreamEvent,
    ToolCall,
    TurnResult,
    model_message,
    model_tool_call,
    storable_text,
)
from chatledger.errors import ConflictError, UnavailableError
from chatledger.storage import Ending, Lease, Store, utcnow
from chatledger.tools import AnyToolset, StoreToolset, Toolset

__all__ = ["Turn"]

# How long streamed text may wait before it is stored and sent, as one `delta` event.
STREAM_BATCH_SECONDS: Final = 0.05
# Waits between attempts to write a turn's end while the database is away; bounded so
# that the lease (which the same outage keeps from being renewed) has not run out first.
_END_RETRY_DELAYS: Final = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)

ToolRun = Callable[[Store], Awaitable[dict[str, Any]]]

log = logging.getLogger("chatledger.turns")

# The longest tool result recorded, as JSON text: room for a full task listing (100 tasks
# at their longest, every character escaped), within what the store takes for a message.
# A longer result is recorded as an error instead, which the model can explain.
MAX_TOOL_RESULT_CHARS: Final = 250_000


class Turn:
    """A turn from the moment its user message is stored until it has ended.

    Args:
        store: where the turn is recorded.
        user_id: the verified user the turn acts for.
        user_message: the stored user message the turn answers.
        first_event: the stream's first event, already stored with the user message.
        lease_ttl: how long the lease holds unless renewed.
        idempotency_key: the key the turn was started under, if any.
        max_tool_calls: tool calls allowed; later ones get an error result.
        tool_timeout: seconds a tool outside chatledger's database may take; past them
            the call's result is a `tool_timeout` error.
        emit: the live listener, handed each event once it is stored.
    """

    def __init__(
        self,
        store: Store,
        *,
        user_id: str,
        user_message: Message,
        first_event: StreamEvent,
        turn_id: str,
        lease_ttl: timedelta,
        idempotency_key: str | None,
        max_tool_calls: int,
        tool_timeout: float,
        emit: Callable[[StreamEvent], None],
    ) -> None:
        self.store = store
        self.user_id = user_id
        self.conversation_id = user_message.conversation_id
        self.id = turn_id
        self.idempotency_key = idempotency_key
        self.stored: list[Message] = [user_message]
        self.tool_calls = 0
        # Complete assistant messages since the last tool call, and the one being streamed.
        self._said: list[str] = []
        self._partial = ""
        # What the agent reported of its tokens so far; None while it has reported nothing.
        self.usage: TokenUsage | None = None
        self.stopped = False  # a stop request cancelled the agent
        self.lease_lost = False  # someone closed the turn after its lease ran out
        self.agent_done = False  # from then on neither can cancel the agent any more
        self._lease_ttl = lease_ttl
        self._max_tool_calls = max_tool_calls
        self._tool_timeout = tool_timeout
        # A call recorded whose result is not yet: what `end` closes as interrupted.
        self._open_call: ToolCall | None = None
        self._emit = emit
        self._next_event = 2
        self._deltas: list[str] = []
        # One write of the stream at a time, so events are stored in the order of their
        # numbers: a reader that has seen n never misses n - 1.
        self._writing = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        emit(first_event)

    def lease(self) -> Lease:
        """The turn's lease as a write renews it."""
        return Lease(self.id, utcnow() + self._lease_ttl)

    def hear(self, event: AgentEvent) -> None:
        """Take in what the agent says (streamed text, or a complete message) and the
        tokens it reports. Characters no database stores become U+FFFD here, before the
        text reaches the stream, its stored events or a message."""
        if isinstance(event, TokenUsage):
            self.usage = event if self.usage is None else self.usage + event
        elif isinstance(event, TextDelta):
            text = storable_text(event.text)
            self._partial += text
            self._deltas.append(text)
            if self._flusher is None:
                self._flusher = asyncio.create_task(self._flush_soon())
        elif isinstance(event, AssistantMessage):
            self._said.append(storable_text(event.content))
            self._partial = ""

    def reply(self) -> str:
        """What the agent said since its last tool call, complete messages only."""
        return "\n\n".join(self._said)

    def unfinished_text(self) -> str:
        """Everything said since the last tool call, the message in progress included."""
        return "\n\n".join([*self._said, *([self._partial] if self._partial else [])])

    def said(
        self,
        text: str,
        *,
        tool_calls: Sequence[ToolCall] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> ChatMessage:
        """An assistant message of the agent's `text`, as a message can hold it
        (`domain.model_message`)."""
        return model_message(
            text,
            max_chars=self.store.max_message_chars,
            tool_calls=tool_calls,
            metadata=metadata,
        )

    async def run_tool(self, call: ToolCall, toolset: AnyToolset | None) -> dict[str, Any]:
        """Run one tool call of the agent's and record it; returns the result.

        Its arguments are parsed here, once. A call past the tool-call limit, to a tool no
        toolset has, or with arguments that are not a JSON object does not run: its result
        says why, and it is recorded like any other.
        """
        call = model_tool_call(call)
        arguments = call.parsed_arguments()
        refusal = self._refusal(call, toolset, arguments)
        if refusal is not None:
            answer = refusal
            return await self._run_here(call, arguments, lambda _: _given(answer), None)
        assert toolset is not None  # a call to no toolset was refused above
        user_id = self.user_id
        if isinstance(toolset, StoreToolset):
            return await self._run_here(
                call,
                arguments,
                lambda tx: toolset.call_in(tx, user_id, call.name, arguments),
                toolset.name,
            )
        return await self._run_elsewhere(call, toolset, arguments)

    def _refusal(
        self, call: ToolCall, toolset: AnyToolset | None, arguments: Any
    ) -> dict[str, Any] | None:
        if self.tool_calls >= self._max_tool_calls:
            return {
                "error": f"no more than {self._max_tool_calls} tool calls in one turn",
                "code": "tool_limit",
            }
        if toolset is None:
            return {"error": f"there is no tool called {call.name!r}", "code": "unknown_tool"}
        if not isinstance(arguments, dict):
            return {"error": "arguments must be a JSON object", "code": "invalid_arguments"}
        return None

    async def _run_here(
        self, call: ToolCall, arguments: Any, run: ToolRun, toolset_name: str | None
    ) -> dict[str, Any]:
        """Run a tool whose effect is in our database, and record it, all in one
        transaction: the effect, the assistant message carrying the call (with what was
        said before it), the tool message carrying the result, and their events.

        `run` gets the transaction's store.
        """
        async with self._writing, self.store.transaction() as tx:
            result, message = _recorded(call, await run(tx), toolset_name)
            written = await self._write(
                tx,
                [self.said(self.unfinished_text(), tool_calls=[call]), message],
                [_call_event(call, arguments), _result_event(call, result)],
            )
        self._written(written)
        self.tool_calls += 1
        self._said, self._partial = [], ""
        return result

    async def _run_elsewhere(
        self, call: ToolCall, toolset: Toolset, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Run a tool whose effect is outside our database: the call is recorded before
        it runs and the result when it returns. Whatever the tool does wrong (raises,
        hangs past `tool_timeout`) becomes its error result, for the model to explain."""
        # Each record is one unit of work by itself: no transaction around it.
        async with self._writing:
            written = await self._write(
                self.store,
                [self.said(self.unfinished_text(), tool_calls=[call])],
                [_call_event(call, arguments)],
            )
        self._written(written)
        self.tool_calls += 1
        self._open_call = call
        self._said, self._partial = [], ""
        try:
            async with asyncio.timeout(self._tool_timeout):
                result = await toolset.call(self.user_id, call.name, arguments)
        except TimeoutError:
            result = {
                "error": f"the tool did not answer within {self._tool_timeout:g} seconds",
                "code": "tool_timeout",
            }
        except Exception as error:
            log.warning(
                "a tool failed",
                extra={
                    "tool": call.name,
                    "toolset": toolset.name,
                    "error_type": type(error).__name__,
                },
            )
            result = {"error": "the tool failed", "code": "tool_failed"}
        result, message = _recorded(call, result, toolset.name)
        async with self._writing:
            written = await self._write(self.store, [message], [_result_event(call, result)])
        self._written(written)
        self._open_call = None
        return result

    async def _write(
        self,
        tx: Store,
        messages: Sequence[ChatMessage],
        named: Sequence[tuple[str, Any]],
    ) -> tuple[list[Message], list[StreamEvent], int]:
        """Append `messages` under the turn's lease, and the stream events `named` after
        the text streamed since the last write, in `tx` (the store, or a transaction of
        it). Hand the outcome to `_written` once `tx` has committed: events reach the
        listener only once they are stored."""
        sent, consumed = self._pending(named)
        stored, events = await tx.turns.record(
            self.user_id,
            self.conversation_id,
            self.id,
            messages,
            sent,
            lease_expires_at=self.lease().expires_at,
            first_seq=self._next_event,
        )
        return stored, events, consumed

    def _written(self, written: tuple[list[Message], list[StreamEvent], int]) -> None:
        stored, events, consumed = written
        self.stored.extend(stored)
        self._committed(events, consumed)

    async def end(self, closing: ChatMessage, ending: Ending) -> TurnResult:
        """Store the turn's last message and end it (lease, key, stream), retrying while
        the database is away.

        Raises:
            UnavailableError: the database stayed away; the turn is left for whoever
                finds its lease expired, who will close it as interrupted.
            ConflictError: `lease_lost`, the turn was closed by someone else already.
        """
        async with self._writing:
            self._stop_flushing()
            # A tool still running when the turn ends (stopped, timed out) gets its result.
            closing_messages = [closing]
            named: list[tuple[str, Any]] = []
            if (call := self._open_call) is not None:
                interrupted, message = _recorded(call, INTERRUPTED_TOOL_RESULT, None)
                closing_messages.insert(0, message)
                named.append(_result_event(call, interrupted))
            sent, consumed = self._pending(named)
            for delay in (*_END_RETRY_DELAYS, None):
                try:
                    result, stored, events = await self.store.turns.finish(
                        self.user_id,
                        self.conversation_id,
                        self.id,
                        closing_messages,
                        earlier=self.stored,
                        ending=ending,
                        usage=self.usage,
                        idempotency_key=self.idempotency_key,
                        events=sent,
                        first_event_seq=self._next_event,
                    )
                    break
                except UnavailableError:
                    if delay is None:
                        raise
                    await asyncio.sleep(delay)
            self.stored.extend(stored)
            self._committed(events, consumed)
        return result

    async def keep_alive(self, agent_runner: asyncio.Task[Any], *, poll_interval: float) -> None:
        """Renew the lease while the turn runs, and stop the agent if asked to.

        The stop request may come to any replica, so it travels through the database: a
        short read every `poll_interval`, and a renewal (which reads it too) every fifth
        of the lease. A turn that finds its lease gone was closed by someone else: its
        agent is stopped, for nothing it did could be recorded any more.
        """
        renew_every = self._lease_ttl.total_seconds() / 5
        renewed = time.monotonic()
        while True:
            # Woken early when the turn has ended; never cancelled in the middle of a
            # statement, which would cost the pool its connection.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), poll_interval)
            if self._ended.is_set():
                return
            try:
                if time.monotonic() - renewed >= renew_every:
                    lease = self.lease()
                    stop = await self.store.turns.renew(
                        self.user_id, self.conversation_id, self.id, expires_at=lease.expires_at
                    )
                    renewed = time.monotonic()
                    if stop is None:
                        self.lease_lost = True
                        if not self.agent_done:
                            agent_runner.cancel()
                        return
                else:
                    stop = await self.store.stop_requested(
                        self.user_id, self.conversation_id, self.lease()
                    )
            except UnavailableError:
                continue  # cannot tell now; the turn goes on, and so does this
            if stop and not self.agent_done and not self.stopped:
                self.stopped = True
                agent_runner.cancel()

    async def abandon(self) -> None:
        """The turn was closed by someone else: the text it streamed since its last write
        is never written (it could not be recorded any more), and no write of it is left
        running after it."""
        async with self._writing:
            self._stop_flushing()

    def _stop_flushing(self) -> None:
        # Called holding `_writing`, so the batched write is asleep or waiting for the
        # lock, never in the middle of a statement (which would cost the pool its
        # connection).
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    def stop_keeping_alive(self) -> None:
        """The turn has ended (or been given up): `keep_alive` returns at its next wake."""
        self._ended.set()

    def _pending(self, named: Sequence[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], int]:
        """The events to write next: the text streamed since the last write (one `delta`),
        then `named`; and how many streamed pieces that consumes."""
        consumed = len(self._deltas)
        text = "".join(self._deltas)
        return ([("delta", {"text": text})] if text else []) + list(named), consumed

    def _committed(self, events: Sequence[StreamEvent], consumed: int) -> None:
        del self._deltas[:consumed]
        self._next_event += len(events)
        for event in events:
            self._emit(event)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(STREAM_BATCH_SECONDS)
        async with self._writing:
            self._flusher = None
            sent, consumed = self._pending([])
            if not sent:
                return
            try:
                events = await self.store.turns.add_events(
                    self.user_id, self.conversation_id, self.id, sent, first_seq=self._next_event
                )
            except UnavailableError:
                return  # the text stays pending, and goes with the next write
            except ConflictError:
                return  # closed by someone else: the next write or renewal says so
            self._committed(events, consumed)


def _recorded(
    call: ToolCall, result: dict[str, Any], toolset: str | None
) -> tuple[dict[str, Any], ChatMessage]:
    """The result as it is recorded, and the tool message carrying it, serialized once. A
    result that cannot be written as JSON, or is too large to store, is recorded as an
    error the model can explain; characters no database stores become U+FFFD."""
    try:
        content = json.dumps(result, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # not JSON, or past what it can write
        result = {"error": "the tool's result could not be written as JSON", "code": "tool_failed"}
        content = json.dumps(result)
    if (stored := storable_text(content)) != content:
        content, result = stored, json.loads(stored)
    if len(content) > MAX_TOOL_RESULT_CHARS:
        result = {
            "error": f"the tool's result is too large: {len(content):,} characters,"
            f" at most {MAX_TOOL_RESULT_CHARS:,}",
            "code": "result_too_large",
        }
        content = json.dumps(result, ensure_ascii=False)
    message = ChatMessage.tool(
        tool_call_id=call.id,
        name=call.name,
        content=content,
        # Which toolset ran the call, for whoever reads the record later.
        metadata={"toolset": toolset} if toolset else None,
    )
    return result, message


async def _given(result: dict[str, Any]) -> dict[str, Any]:
    return result


def _call_event(call: ToolCall, parsed: Any) -> tuple[str, dict[str, Any]]:
    # Arguments that are not JSON are shown as the text the model sent.
    arguments = call.arguments if parsed is None else parsed
    return ("tool_call", {"id": call.id, "name": call.name, "arguments": arguments})


def _result_event(call: ToolCall, result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("tool_result", {"id": call.id, "result": result})
