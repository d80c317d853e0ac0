"""`ChatService`: the stateless chat turn — the one place that composes store, context and agent.

A turn (DESIGN.md, "The stateless turn"):

1. replay a finished turn stored under the idempotency key, if any;
2. append the user message and take the conversation's lease, in one transaction — durable
   before the agent runs; a second turn on a busy conversation is refused here;
3. build the agent's input from the newest history;
4. run the agent with no transaction open. Each tool call runs and is recorded (assistant
   call + tool result) in one transaction with the tool's effect, as it completes;
5. append the reply, give up the lease and store the idempotent response, in one
   transaction.

Nothing about the conversation stays in memory between turns. A turn that fails is closed
with an assistant message marked with the failure, so the history always reads as it
happened and every tool call has its result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from chatledger import context
from chatledger.agents.base import (
    Agent,
    AssistantMessage,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from chatledger.domain import ChatMessage, Message, Role, Summary, ToolCall, check_text
from chatledger.errors import (
    AgentError,
    AgentTimeoutError,
    ConflictError,
    ModelError,
    UnavailableError,
    ValidationError,
)
from chatledger.store import Lease, SQLAlchemyStore
from chatledger.tokens import MESSAGE_OVERHEAD_TOKENS
from chatledger.tools import TaskTools, ToolSpec

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ChatService",
    "ToolCallRecord",
    "TurnCompleted",
    "TurnEvent",
    "TurnResult",
    "TurnStarted",
]

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a task-manager assistant. You help the user keep a to-do list with the tools "
    "add_task, list_tasks, complete_task, delete_task and update_task. Refer to tasks by "
    "their number. Confirm what you changed in one short sentence; when a request is "
    "ambiguous, ask which task the user means instead of guessing."
)

# A turn's lease outlives its agent timeout by this much: a turn still writing its last
# messages is never mistaken for a crashed one.
_LEASE_GRACE: Final = timedelta(seconds=30)
_TITLE_CHARS: Final = 60
# Messages folded into a summary per call to the agent's summarize, and at most this many
# calls per fold, however long the backlog (see `_fold_summary`).
_FOLD_CHUNK: Final = 200
_FOLD_CALLS: Final = 4

log = logging.getLogger("chatledger.service")


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A tool call of a turn and its result. `arguments` is parsed JSON when it parses."""

    id: str
    name: str
    arguments: Any
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "result": self.result,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnResult:
    """What a turn answered: the seeds' `{conversation_id, response, tool_calls}`."""

    conversation_id: str
    response: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    replayed: bool = False
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "response": self.response,
            "tool_calls": [call.to_dict() for call in self.tool_calls],
        }
        if self.stopped:
            body["stopped"] = True
        return body

    def to_record(self) -> dict[str, Any]:
        """Everything about the result, for storing it (`from_dict` reads it back)."""
        return {**self.to_dict(), "message_ids": self.message_ids, "stopped": self.stopped}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, replayed: bool = False) -> TurnResult:
        return cls(
            conversation_id=data["conversation_id"],
            response=data["response"],
            tool_calls=[ToolCallRecord(**call) for call in data["tool_calls"]],
            message_ids=data.get("message_ids", []),
            replayed=replayed,
            stopped=data.get("stopped", False),
        )


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """The user message is stored; the agent is about to run."""

    conversation_id: str
    user_message_id: str


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    result: TurnResult


TurnEvent = (
    TurnStarted | TextDelta | ToolCallStarted | ToolCallFinished | AssistantMessage | TurnCompleted
)


def _request_hash(conversation_id: str | None, message: str) -> str:
    body = json.dumps([conversation_id, message], ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def _title(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1].rstrip() + "…"


class _Turn:
    """The state of one running turn, shared by the service and its recording toolbox."""

    def __init__(
        self,
        store: SQLAlchemyStore,
        user_id: str,
        conversation_id: str,
        lease: Lease,
        max_tool_calls: int,
    ) -> None:
        self.store = store
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.lease = lease
        self.max_tool_calls = max_tool_calls
        self.tool_calls: list[ToolCallRecord] = []
        self.stored: list[Message] = []
        # What the turn's agent input was built from: the summary and the messages after it.
        self.summary: Summary | None = None
        self.history: list[Message] = []
        # A complete assistant message not stored yet: it becomes the reply, or the text
        # of the next tool call's message.
        self.pending_text = ""
        # Text streamed since the last complete message (kept if the turn fails).
        self.partial_text = ""
        # Set by the stop watcher when someone asked this turn to stop.
        self.stopped = False
        # Set as soon as the agent is done: from then on a stop request is too late.
        self.agent_done = False

    def unfinished_text(self) -> str:
        """What the agent said that is not stored yet: the held message and any partial one."""
        return "\n\n".join(part for part in (self.pending_text, self.partial_text) if part)

    async def append(self, tx: SQLAlchemyStore, messages: list[ChatMessage], **kw: Any) -> None:
        stored = await tx.append(
            self.user_id, self.conversation_id, messages, lease=self.lease, **kw
        )
        self.stored.extend(stored)


class _RecordingToolbox:
    """Runs the task tools for a turn and records each call with its result.

    The tool's effect and both messages commit in one transaction, so the record can never
    claim a change that did not happen, nor miss one that did.
    """

    specs: Sequence[ToolSpec] = TaskTools.specs

    def __init__(self, turn: _Turn) -> None:
        self._turn = turn

    async def call(self, call: ToolCall) -> dict[str, Any]:
        turn = self._turn
        async with turn.store.transaction() as tx:
            if len(turn.tool_calls) >= turn.max_tool_calls:
                result = {
                    "error": f"no more than {turn.max_tool_calls} tool calls in one turn",
                    "code": "tool_limit",
                }
            else:
                result = await TaskTools(tx.tasks, turn.user_id).call(call.name, call.arguments)
            await turn.append(
                tx,
                [
                    ChatMessage.assistant(turn.pending_text, tool_calls=[call]),
                    ChatMessage.tool(
                        tool_call_id=call.id,
                        name=call.name,
                        content=json.dumps(result, ensure_ascii=False),
                    ),
                ],
            )
        turn.pending_text = ""
        parsed = call.parsed_arguments()
        turn.tool_calls.append(
            ToolCallRecord(call.id, call.name, call.arguments if parsed is None else parsed, result)
        )
        return result


class ChatService:
    """Runs chat turns for any user on any conversation, holding no state between them.

    Args:
        store: where conversations, tasks and idempotency records live.
        agent: answers turns (`RulesAgent`, `OpenAIAgent`, or your own).
        system_prompt: the first message of every agent input.
        context_tokens: the token budget of an agent's input: the system prompt, the
            conversation's summary and the newest messages that fit.
        summarize: fold messages that no longer fit into the conversation's rolling
            summary after each turn (off the turn's path; a failure is only logged).
        agent_timeout: seconds a turn's agent may run before `AgentTimeoutError`.
        max_tool_calls: tool calls allowed per turn; later calls get an error result.
        max_message_chars: longest user message accepted (`TooLargeError` beyond).
        idempotency_ttl: how long a finished turn is replayed for its key.
        stop_poll_interval: seconds between a running turn's checks for a stop request.
    """

    def __init__(
        self,
        store: SQLAlchemyStore,
        agent: Agent,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        context_tokens: int = 8000,
        summarize: bool = True,
        agent_timeout: float = 60.0,
        max_tool_calls: int = 10,
        max_message_chars: int = 32_000,
        idempotency_ttl: timedelta = timedelta(hours=24),
        stop_poll_interval: float = 0.5,
    ) -> None:
        self._store = store
        self._agent = agent
        self._system_prompt = system_prompt
        self._context_tokens = context_tokens
        self._summarize = summarize
        # No more messages than could fit the budget at their smallest are ever read.
        self._window_rows = max(1, context_tokens // MESSAGE_OVERHEAD_TOKENS)
        self._agent_timeout = agent_timeout
        self._max_tool_calls = max_tool_calls
        self._max_message_chars = max_message_chars
        self._idempotency_ttl = idempotency_ttl
        self._stop_poll_interval = stop_poll_interval
        self._running: set[asyncio.Task[None]] = set()

    async def turn(
        self,
        user_id: str,
        conversation_id: str | None,
        message: str,
        *,
        idempotency_key: str | None = None,
    ) -> TurnResult:
        """Run one turn to the end; see `stream` for the events and errors."""
        async for event in self.stream(
            user_id, conversation_id, message, idempotency_key=idempotency_key
        ):
            if isinstance(event, TurnCompleted):
                return event.result
        raise AssertionError("a turn's stream ended without TurnCompleted")

    async def stream(
        self,
        user_id: str,
        conversation_id: str | None,
        message: str,
        *,
        idempotency_key: str | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """Run one turn, yielding its events as they happen; the last is `TurnCompleted`.

        The turn runs in a task of its own: a consumer that stops listening (a client that
        disconnects) does not stop it, and everything it does is stored.

        Raises:
            ValidationError: the message is empty or not storable text.
            TooLargeError: the message is longer than `max_message_chars`.
            NotFoundError: the conversation does not exist or is another user's.
            ConflictError: `conversation_busy` (a turn is running in the conversation),
                `idempotency_mismatch` (the key was used for a different request) or
                `idempotency_in_flight` (the key's first request is still running).
            AgentTimeoutError, ModelError: the agent failed; carries the conversation id.
            UnavailableError: the database cannot be reached.
        """
        check_text("message", message, max_chars=self._max_message_chars)
        if not message.strip():
            raise ValidationError("message must not be empty", field="message")
        events: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
        task = asyncio.create_task(
            self._run(user_id, conversation_id, message, idempotency_key, events.put_nowait)
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(_outcome_is_recorded)
        task.add_done_callback(lambda _: events.put_nowait(None))
        while (event := await events.get()) is not None:
            yield event
        await task

    async def drain(self) -> None:
        """Wait until every turn (and summary) this service started has finished."""
        while self._running:
            await asyncio.wait(list(self._running))

    async def _run(
        self,
        user_id: str,
        conversation_id: str | None,
        message: str,
        idempotency_key: str | None,
        emit: Callable[[TurnEvent], None],
    ) -> None:
        if idempotency_key is not None:
            replay = await self._claim(user_id, idempotency_key, conversation_id, message)
            if replay is not None:
                emit(TurnCompleted(replay))
                return
        try:
            turn = await self._start(user_id, conversation_id, message, emit)
        except BaseException:
            if idempotency_key is not None:
                await asyncio.shield(self._store.idempotency.release(user_id, idempotency_key))
            raise
        try:
            await self._converse(turn, emit)
        except asyncio.CancelledError as error:
            if not turn.stopped:
                await asyncio.shield(self._close_failed(turn, error, idempotency_key))
                raise
            # Cancelled by our own stop watcher: the turn ends here, as stopped.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except BaseException as error:
            await asyncio.shield(self._close_failed(turn, error, idempotency_key))
            raise
        reply = turn.pending_text
        metadata: dict[str, Any] = {}
        if turn.stopped:
            reply = turn.unfinished_text()
            metadata = {"status": "stopped"}
        async with self._store.transaction() as tx:
            await turn.append(
                tx, [ChatMessage.assistant(reply, metadata=metadata)], release_lease=True
            )
            result = TurnResult(
                conversation_id=turn.conversation_id,
                response=reply,
                tool_calls=turn.tool_calls,
                message_ids=[m.id for m in turn.stored],
                stopped=turn.stopped,
            )
            if idempotency_key is not None:
                await tx.idempotency.complete(
                    user_id,
                    idempotency_key,
                    conversation_id=turn.conversation_id,
                    status_code=200,
                    response=result.to_record(),
                )
        emit(TurnCompleted(result))
        if self._summarize:
            self._in_background(
                self._fold_summary(
                    user_id, turn.conversation_id, turn.summary, turn.history + turn.stored
                )
            )

    def _build(
        self, summary: Summary | None, history: Sequence[Message], *, budget: int | None = None
    ) -> context.ContextWindow:
        return context.build(
            history,
            system_prompt=self._system_prompt,
            budget_tokens=self._context_tokens if budget is None else budget,
            summary=None if summary is None else summary.content,
        )

    async def _load(
        self, user_id: str, conversation_id: str
    ) -> tuple[Summary | None, list[Message]]:
        return await self._store.load_context(user_id, conversation_id, limit=self._window_rows)

    async def context_tokens(self, user_id: str, conversation_id: str) -> tuple[int, int | None]:
        """What the next turn would send: its input's tokens (before the new message),
        and the seq up to which the summary stands in for messages (None: no summary).

        Raises:
            NotFoundError: no such conversation for this user.
        """
        summary, history = await self._load(user_id, conversation_id)
        return self._build(summary, history).tokens, None if summary is None else summary.upto_seq

    async def _fold_summary(
        self,
        user_id: str,
        conversation_id: str,
        summary: Summary | None,
        history: list[Message],
    ) -> None:
        """Fold the messages that fell out of the window into the conversation's summary.

        `summary` and `history` are what the turn loaded, with what it appended: the next
        turn's view, known without reading it again. Only when the window no longer holds
        every message after the summary are messages folded, and then down to 3/4 of the
        budget, so that the next few turns need no fold (each is a model call for a model
        agent). Incremental: only messages after the summary's `upto_seq` are folded, a
        chunk at a time, at most `_FOLD_CALLS` chunks; the raw messages are never changed.
        It runs after the reply is stored, so it adds no latency to a turn, and a failure
        only leaves the summary as it was.
        """
        try:
            covered = 0 if summary is None else summary.upto_seq
            if not self._build(summary, history).dropped:
                return  # the whole history after the summary still fits
            roomy = self._build(summary, history, budget=self._context_tokens * 3 // 4)
            # Never into the latest turn: its raw messages are what the next turn follows.
            latest_user = max((m.seq for m in history if m.role is Role.USER), default=None)
            target = roomy.dropped[-1].seq
            if latest_user is not None:
                target = min(target, latest_user - 1)
            content = None if summary is None else summary.content
            replaces = None if summary is None else summary.upto_seq
            # A backlog longer than one fold can take (a history that never had a summary)
            # is skipped up to its most recent part, and the summary says so: the raw
            # messages stay, and the model gets the context nearest the window at once.
            skipped = target - covered - _FOLD_CHUNK * _FOLD_CALLS
            if skipped > 0:
                note = f"({skipped} earlier messages are not summarized.)"
                content = f"{content}\n\n{note}" if content else note
                covered += skipped
            known = {message.seq: message for message in history}
            while covered < target:
                end = min(target, covered + _FOLD_CHUNK)
                chunk = [known[seq] for seq in range(covered + 1, end + 1) if seq in known]
                if len(chunk) != end - covered:  # not all in memory: read them
                    chunk = await self._store.history(
                        user_id,
                        conversation_id,
                        after_seq=covered,
                        before_seq=end + 1,
                        limit=_FOLD_CHUNK,
                    )
                async with asyncio.timeout(self._agent_timeout):
                    content = await self._agent.summarize(chunk, content)
                saved = await self._store.summaries.save(
                    user_id,
                    conversation_id,
                    content=content,
                    upto_seq=chunk[-1].seq,
                    replaces=replaces,
                )
                if not saved:
                    return  # another replica folded first; its summary stands
                covered = replaces = chunk[-1].seq
        except Exception as error:
            log.warning(
                "summary not updated",
                extra={"conversation_id": conversation_id, "error_type": type(error).__name__},
            )

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _claim(
        self, user_id: str, key: str, conversation_id: str | None, message: str
    ) -> TurnResult | None:
        request_hash = _request_hash(conversation_id, message)
        record = await self._store.idempotency.claim(
            user_id,
            key,
            request_hash=request_hash,
            stale_after=timedelta(seconds=self._agent_timeout) + _LEASE_GRACE,
            expire_after=self._idempotency_ttl,
        )
        if record is None:
            return None
        if record.request_hash != request_hash:
            raise ConflictError(
                "this idempotency key was used for a different request",
                code="idempotency_mismatch",
            )
        if record.status_code is None:
            raise ConflictError(
                "a request with this idempotency key is still running",
                code="idempotency_in_flight",
            )
        if record.status_code != 200:
            raise _failure_from_record(record.response)
        return TurnResult.from_dict(record.response, replayed=True)

    async def _start(
        self,
        user_id: str,
        conversation_id: str | None,
        message: str,
        emit: Callable[[TurnEvent], None],
    ) -> _Turn:
        lease = Lease.new(timedelta(seconds=self._agent_timeout) + _LEASE_GRACE)
        async with self._store.transaction() as tx:
            if conversation_id is None:
                conversation_id = (await tx.create_conversation(user_id, title=_title(message))).id
            turn = _Turn(self._store, user_id, conversation_id, lease, self._max_tool_calls)
            await turn.append(tx, [ChatMessage.user(message)])
        emit(TurnStarted(conversation_id, turn.stored[0].id))
        return turn

    async def _converse(self, turn: _Turn, emit: Callable[[TurnEvent], None]) -> None:
        turn.summary, turn.history = await self._load(turn.user_id, turn.conversation_id)
        messages = self._build(turn.summary, turn.history).messages
        toolbox = _RecordingToolbox(turn)
        deadline = asyncio.timeout(self._agent_timeout)
        runner = asyncio.current_task()
        assert runner is not None
        watcher = asyncio.create_task(self._watch_for_stop(turn, runner))
        try:
            async with deadline:
                async for event in self._agent.run(messages, toolbox):
                    if isinstance(event, TextDelta):
                        turn.partial_text += event.text
                    elif isinstance(event, AssistantMessage):
                        await self._hold_reply(turn, event.content)
                    emit(event)
            turn.agent_done = True
        except TimeoutError:
            if not deadline.expired():
                raise
            raise AgentTimeoutError(
                f"the agent did not answer within {self._agent_timeout:g} seconds",
                conversation_id=turn.conversation_id,
            ) from None
        except AgentError as error:
            error.conversation_id = turn.conversation_id
            raise
        finally:
            turn.agent_done = True
            watcher.cancel()

    async def _watch_for_stop(self, turn: _Turn, runner: asyncio.Task[Any]) -> None:
        # The stop request may come to any replica, so it travels through the database:
        # a short indexed read every interval, for as long as the agent runs.
        while True:
            await asyncio.sleep(self._stop_poll_interval)
            try:
                asked = await self._store.stop_requested(
                    turn.user_id, turn.conversation_id, turn.lease
                )
            except UnavailableError:
                continue  # cannot tell now; the turn goes on
            if asked and not turn.agent_done:
                turn.stopped = True
                runner.cancel()
                return

    async def stop(self, user_id: str, conversation_id: str) -> bool:
        """Ask the turn running in a conversation to stop (on whichever replica it runs).

        It stops within `stop_poll_interval` seconds and ends as a completed turn marked
        `stopped`, keeping its partial reply and every tool step it recorded.

        Returns:
            True if a turn was running, False if none was.

        Raises:
            NotFoundError: no such conversation for this user.
        """
        return await self._store.request_stop(user_id, conversation_id)

    async def _hold_reply(self, turn: _Turn, content: str) -> None:
        # Two complete messages in a row: the first is not the reply, so store it now.
        if turn.pending_text:
            async with self._store.transaction() as tx:
                await turn.append(tx, [ChatMessage.assistant(turn.pending_text)])
        turn.pending_text = content
        turn.partial_text = ""

    async def _close_failed(
        self, turn: _Turn, error: BaseException, idempotency_key: str | None
    ) -> None:
        """End a failed turn in the record: its partial reply, marked, and the lease freed."""
        status = "cancelled" if isinstance(error, asyncio.CancelledError) else "failed"
        code = error.code if isinstance(error, AgentError) else type(error).__name__
        async with self._store.transaction() as tx:
            await turn.append(
                tx,
                [
                    ChatMessage.assistant(
                        turn.unfinished_text(), metadata={"status": status, "code": code}
                    )
                ],
                release_lease=True,
            )
            if idempotency_key is None:
                return
            if isinstance(error, AgentError):
                await tx.idempotency.complete(
                    turn.user_id,
                    idempotency_key,
                    conversation_id=turn.conversation_id,
                    status_code=504 if isinstance(error, AgentTimeoutError) else 502,
                    response={
                        "code": error.code,
                        "message": error.message,
                        "conversation_id": turn.conversation_id,
                    },
                )
            else:
                await tx.idempotency.release(turn.user_id, idempotency_key)


_AGENT_ERRORS: Final = {kind.code: kind for kind in (AgentTimeoutError, ModelError)}


def _failure_from_record(response: dict[str, Any]) -> AgentError:
    kind = _AGENT_ERRORS.get(response["code"], AgentError)
    return kind(
        response["message"], conversation_id=response["conversation_id"], code=response["code"]
    )


def _outcome_is_recorded(task: asyncio.Task[None]) -> None:
    # A turn whose consumer went away still ends in the database, failure included;
    # retrieving the exception here keeps asyncio from reporting it as lost.
    if not task.cancelled():
        task.exception()
