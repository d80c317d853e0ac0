"""`ChatService`: the stateless chat turn, orchestrated: claim, start, converse, finish.

A turn (DESIGN.md, "The stateless turn"), read top to bottom in `_run`:

1. **begin**, in one transaction: claim the idempotency key (or answer from it: a finished
   turn is replayed; a running one is 409; a dead one is closed as interrupted and its
   record is the answer), create the conversation if none was named, store the user
   message, take the conversation's lease and record the turn. Durable before the agent
   runs; a second turn on a busy conversation is refused here, having stored nothing.
2. **converse**: build the agent's input from the newest history (`context`) and run the
   agent with no transaction open, its `Turn` renewing the lease meanwhile. Each tool call
   goes through the turn's toolbox (`toolbox`) to its toolset, and the `Turn` records it
   (`turns`).
3. **end**, in one transaction: the reply (or, for a turn that failed, its partial text,
   marked), the lease freed, the turn's status and the tokens its agent reported using
   (a failed or stopped turn: those reported before it ended), the idempotent response,
   the stream's end.

Nothing about the conversation stays in memory between turns, and every turn ends in the
record — by itself, or, if its process dies, closed as `interrupted` by whoever next finds
its lease expired. A running turn's stream is followed, and a finished one's told again,
by `streams`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import nullcontext
from datetime import timedelta
from typing import Any, Final

from chatledger import context
from chatledger.agents.base import Agent, AssistantMessage, TextDelta, TokenUsage
from chatledger.domain import (
    Branch,
    ChatMessage,
    Message,
    StreamEvent,
    Summary,
    ToolCallRecord,
    TurnResult,
    TurnStatus,
    check_written_text,
)
from chatledger.errors import (
    AgentError,
    AgentTimeoutError,
    ChatLedgerError,
    ConflictError,
    ModelError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    kind_of,
)
from chatledger.storage import (
    Ending,
    IdempotencyRecord,
    RunningTurn,
    Store,
    new_id,
    utcnow,
)
from chatledger.streams import attach, told
from chatledger.tokens import MESSAGE_OVERHEAD_TOKENS
from chatledger.toolbox import TurnToolbox, check_tool_names
from chatledger.tools import AnyToolset, TaskToolset
from chatledger.turns import Turn

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ChatService",
    "ToolCallRecord",
    "TurnResult",
    "title_of",
]

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a task-manager assistant. You help the user keep a to-do list with the tools "
    "add_task, list_tasks, complete_task, delete_task and update_task. Refer to tasks by "
    "their number. Confirm what you changed in one short sentence; when a request is "
    "ambiguous, ask which task the user means instead of guessing."
)

_TITLE_CHARS: Final = 60
# Messages folded into a summary per call to the agent's summarize, and at most this many
# calls per fold, however long the backlog (see `_fold_summary`).
_FOLD_CHUNK: Final = 200
_FOLD_CALLS: Final = 4

log = logging.getLogger("chatledger.service")


def _request_hash(conversation_id: str | None, message: str | None, branch: Branch | None) -> str:
    # A turn on the head hashes as before branches existed: its stored keys stay valid.
    fields: list[Any] = [conversation_id, message]
    if branch is not None:
        fields.append(["edit" if branch.edit else "regenerate", branch.seq])
    body = json.dumps(fields, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def title_of(message: str) -> str:
    """A conversation's title from its first message: its first line, shortened."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1].rstrip() + "…"


def error_event(error: BaseException, conversation_id: str) -> dict[str, Any]:
    """The `error` event that ends the stream of a turn that failed once started."""
    if isinstance(error, ChatLedgerError):
        return {
            "error": kind_of(error),
            "message": error.message,
            "code": error.code,
            "conversation_id": conversation_id,
        }
    code = "cancelled" if isinstance(error, asyncio.CancelledError) else "internal"
    message = "the turn was cancelled" if code == "cancelled" else "internal server error"
    return {
        "error": "internal",
        "message": message,
        "code": code,
        "conversation_id": conversation_id,
    }


class ChatService:
    """Runs chat turns for any user on any conversation, holding no state between them.

    Args:
        store: where conversations, tasks and idempotency records live.
        agent: answers turns (`RulesAgent`, `OpenAIAgent`, or your own).
        toolsets: the tools the agent may call; by default the task tools on `store`.
            A tool name offered by two toolsets is refused (`ConfigurationError`).
        system_prompt: the first message of every agent input; None for none (an agent
            that brings its own instructions).
        context_tokens: the token budget of an agent's input: the system prompt, the
            conversation's summary and the newest messages that fit.
        summarize: fold messages that no longer fit into the conversation's rolling
            summary after each turn (off the turn's path; a failure is only logged).
        agent_timeout: seconds a turn's agent may run before `AgentTimeoutError`.
        max_tool_calls: tool calls allowed per turn; later calls get an error result.
        tool_timeout: seconds a tool outside chatledger's database may take (a Python
            function, an MCP server); past them its result is an error.
        max_message_chars: longest user message accepted (`TooLargeError` beyond).
        idempotency_ttl: how long a finished turn is replayed for its key.
        stop_poll_interval: seconds between a running turn's checks for a stop request.
        lease_ttl: seconds a turn's lease holds unless renewed (it is renewed five times
            within it): how long a turn whose process died can hold its conversation.
        turn_limit: (turns, per window) a user may start, across every replica; None for
            no limit. A replayed turn does not count; a refused one is `RateLimitedError`.
    """

    def __init__(
        self,
        store: Store,
        agent: Agent,
        *,
        toolsets: Sequence[AnyToolset] | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        context_tokens: int = 8000,
        summarize: bool = True,
        agent_timeout: float = 60.0,
        max_tool_calls: int = 10,
        tool_timeout: float = 30.0,
        max_message_chars: int = 32_000,
        idempotency_ttl: timedelta = timedelta(hours=24),
        stop_poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
        turn_limit: tuple[int, timedelta] | None = None,
    ) -> None:
        self._store = store
        self._agent = agent
        self._toolsets = [TaskToolset()] if toolsets is None else list(toolsets)
        check_tool_names(self._toolsets)
        self._tool_timeout = tool_timeout
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
        self._lease_ttl = timedelta(seconds=lease_ttl)
        self._turn_limit = turn_limit
        self._running: set[asyncio.Task[None]] = set()

    async def turn(
        self,
        user_id: str,
        conversation_id: str | None,
        message: str | None,
        *,
        idempotency_key: str | None = None,
        branch: Branch | None = None,
    ) -> TurnResult:
        """Run one turn to the end; see `stream` for the errors."""
        async for event in self.stream(
            user_id, conversation_id, message, idempotency_key=idempotency_key, branch=branch
        ):
            if event.name == "done":
                return TurnResult.from_dict(event.data, replayed=bool(event.data.get("replayed")))
        raise AssertionError("a turn's stream ended without `done` or an error")

    async def stream(
        self,
        user_id: str,
        conversation_id: str | None,
        message: str | None,
        *,
        idempotency_key: str | None = None,
        branch: Branch | None = None,
        message_metadata: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Run one turn, yielding its stream's events as they are stored.

        The turn continues from the conversation's head, or from `branch`: a new version
        of a user message (`message` is the new text), or a new reply to one (no
        `message`); the earlier versions stay. `message_metadata` is stored with the user
        message (an integration's own record of it: a ChatKit item).

        The first event is `conversation` {conversation_id, turn_id, user_message_id}; then
        `delta` {text}, `tool_call` {id, name, arguments} and `tool_result` {id, result} as
        they happen; the last is `done` (the result, as `TurnResult.to_record`) or, for a
        turn that failed once started, `error` {error, message, code, conversation_id},
        after which the error is raised. A replayed turn is told as the events of its
        stored result, its `done` marked `replayed`.

        The turn runs in a task of its own: a consumer that stops listening (a client that
        disconnects) does not stop it, and everything it does is stored.

        Raises:
            ValidationError: the message is empty or not storable text; `branch.seq` is
                not a user message (`not_a_user_message`).
            TooLargeError: the message is longer than `max_message_chars`.
            NotFoundError: the conversation (or message `branch.seq`) does not exist or
                is another user's.
            RateLimitedError: the user started too many turns lately (`turn_limit`).
            ConflictError: `conversation_busy` (a turn is running in the conversation),
                `idempotency_mismatch` (the key was used for a different request) or
                `idempotency_in_flight` (the key's turn is still running); with
                `retry_after`.
            AgentTimeoutError, ModelError: the agent failed; carries the conversation id.
            UnavailableError: the database cannot be reached.
        """
        if branch is not None and conversation_id is None:
            raise ValidationError("a branch is of a conversation", field="conversation_id")
        if message is not None:
            check_written_text("message", message, max_chars=self._max_message_chars)
            if not message.strip():
                raise ValidationError("message must not be empty", field="message")
        elif branch is None or branch.edit:
            raise ValidationError("message is required", field="message")
        events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        user_message = (
            None if message is None else ChatMessage.user(message, metadata=message_metadata)
        )
        task = asyncio.create_task(
            self._run(
                user_id, conversation_id, user_message, branch, idempotency_key, events.put_nowait
            )
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(_outcome_is_recorded)
        task.add_done_callback(lambda _: events.put_nowait(None))
        while (event := await events.get()) is not None:
            yield event
        await task

    async def attach(
        self, user_id: str, conversation_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[StreamEvent] | None:
        """The stream of the turn running in a conversation, from any replica.

        From its first event, or after `last_event_id` (an event id this stream or
        `stream` gave: a reconnecting client's `Last-Event-ID`); it ends with the turn.

        Returns:
            The events, or None if no turn is running.

        Raises:
            NotFoundError: no such conversation for this user.
        """
        return await attach(
            self._store, user_id, conversation_id, last_event_id, lease_ttl=self._lease_ttl
        )

    async def drain(self, patience: float | None = None) -> None:
        """Wait until every turn (and summary) this service started has finished; after
        `patience` seconds, cancel what is left (those turns end as interrupted)."""
        try:
            async with asyncio.timeout(patience):
                while self._running:
                    await asyncio.wait(list(self._running))
        except TimeoutError:
            for task in list(self._running):
                task.cancel()
            while self._running:
                await asyncio.wait(list(self._running))

    async def stop(self, user_id: str, conversation_id: str) -> bool:
        """Ask the turn running in a conversation to stop (on whichever replica it runs).

        It stops within `stop_poll_interval` seconds and ends as a completed turn marked
        `stopped`, keeping its partial reply and every tool step it recorded.

        Returns:
            True if a turn was running, False if none was (a turn whose process died is
            not running: it is closed as interrupted here).

        Raises:
            NotFoundError: no such conversation for this user.
        """
        return await self._store.request_stop(user_id, conversation_id)

    async def context_tokens(self, user_id: str, conversation_id: str) -> tuple[int, int | None]:
        """What the next turn would send: its input's tokens (before the new message),
        and the seq up to which the summary stands in for messages (None: no summary).

        Raises:
            NotFoundError: no such conversation for this user.
        """
        summary, history = await self._load(user_id, conversation_id)
        return self._build(summary, history).tokens, None if summary is None else summary.upto_seq

    # -- the turn ---------------------------------------------------------------------

    async def _run(
        self,
        user_id: str,
        conversation_id: str | None,
        message: ChatMessage | None,
        branch: Branch | None,
        idempotency_key: str | None,
        emit: Callable[[StreamEvent], None],
    ) -> None:
        begun = await self._begin(user_id, conversation_id, message, branch, idempotency_key, emit)
        if isinstance(begun, TurnResult):
            for event in told(begun):
                emit(event)
            return
        turn = begun
        runner = asyncio.current_task()
        assert runner is not None
        # The lease is kept alive until the turn's end is written, retries included.
        self._in_background(turn.keep_alive(runner, poll_interval=self._stop_poll_interval))
        try:
            summary, history = await self._answer_turn(turn, runner)
        finally:
            turn.stop_keeping_alive()
        if self._summarize:
            self._in_background(
                self._fold_summary(
                    user_id, turn.conversation_id, summary, [*history, *turn.stored[1:]]
                )
            )

    async def _answer_turn(
        self, turn: Turn, runner: asyncio.Task[Any]
    ) -> tuple[Summary | None, list[Message]]:
        """Converse, then end the turn as it went; returns the context it was built on."""
        summary: Summary | None = None
        history: list[Message] = []
        try:
            summary, history = await self._load(turn.user_id, turn.conversation_id)
            await self._converse(turn, self._build(summary, history).messages)
        except asyncio.CancelledError as error:
            if not (turn.stopped or turn.lease_lost):
                await asyncio.shield(self._close(turn, error))
                raise
            runner.uncancel()  # our own keep_alive's doing, not the caller's
            if turn.lease_lost:
                await turn.abandon()
                raise _lost() from None
        except ConflictError as error:
            if error.code != "lease_lost":
                await asyncio.shield(self._close(turn, error))
                raise
            await turn.abandon()  # closed by someone else: nothing more to write
            raise _lost() from error
        except BaseException as error:
            await asyncio.shield(self._close(turn, error))
            raise
        if turn.stopped:
            reply = turn.said(turn.unfinished_text(), metadata={"status": "stopped"})
            ending = Ending(TurnStatus.STOPPED)
        else:
            reply = turn.said(turn.reply())
            ending = Ending(TurnStatus.COMPLETED)
        try:
            await turn.end(reply, ending)
        except ConflictError as error:
            raise _lost() from error
        return summary, history

    async def _begin(
        self,
        user_id: str,
        conversation_id: str | None,
        message: ChatMessage | None,
        branch: Branch | None,
        key: str | None,
        emit: Callable[[StreamEvent], None],
    ) -> Turn | TurnResult:
        """Start the turn, or find the answer its idempotency key already has."""
        text = None if message is None else message.content
        request_hash = _request_hash(conversation_id, text, branch)
        turn_id = new_id()
        # A transaction only where the start is more than `turns.start`, which is one
        # unit by itself (on PostgreSQL one statement, without BEGIN or COMMIT).
        alone = key is None and self._turn_limit is None and conversation_id is not None
        unit = nullcontext(self._store) if alone else self._store.transaction()
        async with unit as tx:
            if key is not None:
                record = await tx.idempotency.claim(
                    user_id, key, request_hash=request_hash, expire_after=self._idempotency_ttl
                )
                if record is not None:
                    return await self._answer(tx, user_id, record, request_hash)
            if self._turn_limit is not None:
                turns, window = self._turn_limit
                await tx.rate_limits.take(user_id, limit=turns, window=window)
            if conversation_id is None:
                assert message is not None  # checked in `stream`
                conversation_id = (
                    await tx.create_conversation(user_id, title=title_of(message.content))
                ).id
            user_message, first_event = await tx.turns.start(
                user_id,
                conversation_id,
                message,
                turn_id=turn_id,
                lease_expires_at=utcnow() + self._lease_ttl,
                idempotency_key=key,
                branch=branch,
            )
        return Turn(
            self._store,
            user_id=user_id,
            user_message=user_message,
            first_event=first_event,
            turn_id=turn_id,
            lease_ttl=self._lease_ttl,
            idempotency_key=key,
            max_tool_calls=self._max_tool_calls,
            tool_timeout=self._tool_timeout,
            emit=emit,
        )

    async def _answer(
        self, tx: Store, user_id: str, record: IdempotencyRecord, request_hash: str
    ) -> TurnResult:
        """The answer an idempotency key already has for a retry of its request."""
        if record.request_hash != request_hash:
            raise ConflictError(
                "this idempotency key was used for a different request",
                code="idempotency_mismatch",
            )
        if record.status_code is None:
            outcome: TurnResult | RunningTurn | None = None
            if record.conversation_id is not None and record.turn_id is not None:
                outcome = await tx.turns.resolve(user_id, record.conversation_id, record.turn_id)
            if isinstance(outcome, TurnResult):
                return TurnResult.from_dict(outcome.to_record(), replayed=True)
            if outcome is None:
                # Its turn is gone without an answer: the conversation was deleted.
                raise NotFoundError("conversation not found")
            raise ConflictError(
                "a request with this idempotency key is still running",
                code="idempotency_in_flight",
                retry_after=outcome.retry_after(utcnow()),
            )
        if record.status_code != 200:
            raise _failure_from_record(record.response)
        return TurnResult.from_dict(record.response, replayed=True)

    async def _converse(self, turn: Turn, messages: Sequence[ChatMessage]) -> None:
        deadline = asyncio.timeout(self._agent_timeout)
        try:
            async with deadline:
                async for event in self._agent.run(messages, TurnToolbox(turn, self._toolsets)):
                    if isinstance(event, TextDelta | AssistantMessage | TokenUsage):
                        turn.hear(event)
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

    async def _close(self, turn: Turn, error: BaseException) -> None:
        """End a turn that failed: its partial reply, marked, and the stream's `error`.

        An agent failure is `failed`, and its key replays the failure (502/504); anything
        else — the database away, cancellation, a bug — is `interrupted`, and its key
        answers with what the turn did, as for a turn whose process died.
        """
        event = error_event(error, turn.conversation_id)
        if isinstance(error, AgentError):
            ending = Ending(
                TurnStatus.FAILED,
                error=event,
                error_status=504 if isinstance(error, AgentTimeoutError) else 502,
            )
        else:
            ending = Ending(TurnStatus.INTERRUPTED, error=event)
        closing = turn.said(
            turn.unfinished_text(), metadata={"status": ending.status.value, "code": event["code"]}
        )
        try:
            await turn.end(closing, ending)
        except ChatLedgerError as failure:
            # Left for whoever finds the lease expired; the caller learns of the first
            # error, not of this one.
            log.warning(
                "a failed turn could not be closed",
                extra={
                    "conversation_id": turn.conversation_id,
                    "error_type": type(failure).__name__,
                },
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

    async def _fold_summary(
        self,
        user_id: str,
        conversation_id: str,
        summary: Summary | None,
        history: list[Message],
    ) -> None:
        """Fold the messages that fell out of the window into the conversation's summary.

        `summary` and `history` are what the turn loaded, with what it appended: the next
        turn's view, known without reading it again. `context.plan_fold` says whether and
        how much to fold; here each chunk is summarized and saved, as a summary of this
        branch. Incremental: only messages after the summary's `upto_seq` are folded; the
        raw messages are never changed. It runs after the reply is stored, so it adds no
        latency to a turn, and a failure only leaves the summary as it was.
        """
        try:
            plan = context.plan_fold(
                history,
                covered=None if summary is None else summary.upto_seq,
                summary=None if summary is None else summary.content,
                system_prompt=self._system_prompt,
                budget_tokens=self._context_tokens,
                chunk=_FOLD_CHUNK,
                max_chunks=_FOLD_CALLS,
            )
            if plan is None:
                return
            content = None if summary is None else summary.content
            if plan.unloaded or plan.skipped:
                count = "" if plan.unloaded else f"{plan.skipped} "
                note = f"({count}earlier messages are not summarized.)"
                content = f"{content}\n\n{note}" if content else note
            for messages in plan.chunks:
                async with asyncio.timeout(self._agent_timeout):
                    content = await self._agent.summarize(messages, content)
                saved = await self._store.summaries.save(
                    user_id, conversation_id, content=content, upto_seq=messages[-1].seq
                )
                if not saved:
                    return  # another replica folded first; its summary stands
        except Exception as error:
            log.warning(
                "summary not updated",
                extra={"conversation_id": conversation_id, "error_type": type(error).__name__},
            )

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)


def _lost() -> UnavailableError:
    return UnavailableError(
        "the turn was interrupted: its server could not reach the database for too long",
        code="turn_interrupted",
    )


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
