"""`OpenAIAgent`: the agent protocol on the OpenAI Agents SDK, for any OpenAI-compatible API.

The SDK's `Runner` drives the loop (ask the model, run the tools it calls, ask again); this
module only translates. Our `ChatMessage`s become SDK input items, each `ToolSpec` becomes a
`FunctionTool` that calls the run's `Toolbox`, and the SDK's stream events become ours.

Each model request's usage is reported as it completes (`TokenUsage`): the numbers the
model reports, or, from a server that reports none, our estimate of what the request sent
and received, marked `estimated`. A tool loop's requests are reported one by one; the turn
adds them up.

The toolbox travels in the run's context, not in a closure: the user is bound inside it, and
one `OpenAIAgent` serves every user. A tool's arguments go to the toolbox as the model wrote
them; the toolbox, not the model, knows whose tasks these are, and refuses arguments its
schema does not have (such as a `user_id` the model made up).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import openai
from agents import (
    Agent as SDKAgent,
    AgentsException,
    FunctionTool,
    FunctionToolResult,
    ItemHelpers,
    MessageOutputItem,
    Model,
    ModelBehaviorError,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RawResponsesStreamEvent,
    RunConfig,
    RunContextWrapper,
    RunErrorHandlerInput,
    RunErrorHandlerResult,
    RunItemStreamEvent,
    Runner,
    RunResultStreaming,
    StreamEvent,
    ToolCallOutputItem,
    ToolExecutionConfig,
    ToolsToFinalOutputResult,
    TResponseInputItem,
)
from agents.tool_context import ToolContext
from openai import AsyncOpenAI
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)

from chatledger.agents.base import (
    AgentEvent,
    AssistantMessage,
    TextDelta,
    TokenUsage,
    Toolbox,
    ToolCallFinished,
    ToolCallStarted,
)
from chatledger.domain import ChatMessage, Role, ToolCall
from chatledger.errors import ChatLedgerError, ConfigurationError, ModelError
from chatledger.integrations.items import native_items
from chatledger.tokens import TokenCounter, approximate_tokens
from chatledger.tools import ToolSpec
from chatledger.usage import MAX_REPORTED_TOKENS, estimate_usage

__all__ = ["OpenAIAgent", "to_input_items"]

SUMMARY_INSTRUCTIONS = """\
You keep the running summary of a conversation between a user and their task manager \
assistant. Write a concise summary, in plain sentences, that replaces the conversation \
for the assistant. Keep every task that was added, completed, updated or deleted (with its \
number and title), what the user asked for, and every question or request still open. \
Drop greetings and small talk. Answer with the summary only."""


def _stop_message(reason: str) -> str:
    return f"I stopped here: {reason}. Tell me if you want me to go on."


def to_input_items(messages: Sequence[ChatMessage]) -> list[TResponseInputItem]:
    """Convert chatledger messages to Agents SDK input items, one to one and in order.

    An assistant message's tool calls become `function_call` items after its text, and a
    tool message a `function_call_output`, so each call keeps its result and the model API
    sees the history exactly as it happened. Metadata stays behind: it is not for the model.
    """
    return [cast("TResponseInputItem", item) for m in messages for item in native_items(m)]


@dataclass
class _Run:
    """The state of one run, handed to the SDK as its context and read back by our tools."""

    toolbox: Toolbox
    # Why the run ended early: the toolbox's tool-call limit, or too many model requests.
    stopped: str | None = None
    finished: dict[str, ToolCallFinished] = field(default_factory=dict)
    # For estimating a request whose usage the model does not report: what the next
    # request will send (the history, then each output and tool result as the loop goes
    # on), the tokens of the instructions and tool definitions it sends too, the model
    # asked, and how to count.
    sent: list[ChatMessage] = field(default_factory=list)
    preamble_tokens: int = 0
    model: str | None = None
    counter: TokenCounter = approximate_tokens


def _function_tool(spec: ToolSpec) -> FunctionTool:
    async def invoke(context: ToolContext[_Run], arguments: str) -> str:
        run = context.context
        call = ToolCall(context.tool_call_id, spec.name, arguments)
        result = await run.toolbox.call(call)
        run.finished[call.id] = ToolCallFinished(call, result)
        if result.get("code") == "tool_limit" and run.stopped is None:
            # The toolbox owns the limit; a call it refused ends the run.
            run.stopped = str(result.get("error") or "too many tool calls")
        return json.dumps(result, ensure_ascii=False)

    # Not strict: strict mode would make every property required (optional ones nullable),
    # and for update_task a null description means "clear it", not "leave it alone". The
    # toolbox validates arguments itself.
    return FunctionTool(
        name=spec.name,
        description=spec.description,
        # A copy: the SDK owns its schema, and the spec's is shared by every run.
        params_json_schema=copy.deepcopy(dict(spec.parameters)),
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


def _stop_if_refused(
    context: RunContextWrapper[_Run], results: list[FunctionToolResult]
) -> ToolsToFinalOutputResult:
    run = context.context
    if run.stopped is not None:
        return ToolsToFinalOutputResult(is_final_output=True, final_output="")
    return ToolsToFinalOutputResult(is_final_output=False)


def _stop_at_max_turns(data: RunErrorHandlerInput[_Run]) -> RunErrorHandlerResult:
    # Reached only by a model that keeps calling tools the toolbox does not have, which the
    # tool call limit cannot see: the SDK answers those itself.
    data.context.context.stopped = "this request needed too many steps"
    return RunErrorHandlerResult(final_output="", include_in_history=False)


def _message_text(item: MessageOutputItem) -> str:
    text = ItemHelpers.text_message_output(item)
    refusals = [
        part.refusal for part in item.raw_item.content if isinstance(part, ResponseOutputRefusal)
    ]
    return text or "\n".join(refusals)


def _reported(usage: ResponseUsage | None, model: str | None) -> TokenUsage | None:
    """The usage a response reports, if it reports one that can be true. All zeros is
    what some servers send for "not counted": no request takes in nothing."""
    if usage is None:
        return None
    counts = (usage.input_tokens, usage.output_tokens)
    if not all(isinstance(n, int) and 0 <= n <= MAX_REPORTED_TOKENS for n in counts):
        return None
    if counts == (0, 0):
        return None
    return TokenUsage(*counts, model=model)


def _as_message(item: ResponseOutputItem) -> ChatMessage | None:
    """An output item as the message it becomes in the next request's input."""
    if isinstance(item, ResponseOutputMessage):
        parts = [
            part.text if isinstance(part, ResponseOutputText) else part.refusal
            for part in item.content
        ]
        return ChatMessage.assistant("".join(parts))
    if isinstance(item, ResponseFunctionToolCall):
        return ChatMessage.assistant(tool_calls=[ToolCall(item.call_id, item.name, item.arguments)])
    return None  # reasoning and hosted tools' items: not counted


def _request_usage(response: ResponseCompletedEvent, run: _Run) -> TokenUsage:
    """What one model request used, as reported or estimated; and the run learns what its
    next request will send."""
    produced = [m for item in response.response.output if (m := _as_message(item)) is not None]
    model = response.response.model or run.model
    usage = _reported(response.response.usage, model)
    if usage is None:
        usage = estimate_usage(
            run.sent, produced, model=model, counter=run.counter, extra_input=run.preamble_tokens
        )
    run.sent.extend(produced)
    return usage


def _translate(event: StreamEvent, run: _Run) -> list[AgentEvent]:
    if isinstance(event, RawResponsesStreamEvent):
        if isinstance(event.data, ResponseTextDeltaEvent) and event.data.delta:
            return [TextDelta(event.data.delta)]
        if isinstance(event.data, ResponseCompletedEvent):
            return [_request_usage(event.data, run)]
    elif isinstance(event, RunItemStreamEvent):
        item = event.item
        if isinstance(item, MessageOutputItem) and (text := _message_text(item)):
            return [AssistantMessage(text)]
        if isinstance(item, ToolCallOutputItem):
            run.sent.append(
                ChatMessage.tool(tool_call_id=item.call_id or "", name="", content=str(item.output))
            )
            # Reported once the SDK hands back the output, and only for calls the toolbox
            # ran: a refused call, or one to a tool that does not exist, never reached it.
            finished = run.finished.pop(item.call_id or "", None)
            if finished is not None:
                return [ToolCallStarted(finished.call), finished]
    return []


def _model_error(error: Exception) -> ModelError:
    # The client's messages can carry the URL or the request; ours must not.
    if isinstance(error, openai.APIStatusError):
        return ModelError(f"the model service answered with HTTP status {error.status_code}")
    if isinstance(error, openai.APITimeoutError):
        return ModelError("the model service did not answer in time")
    if isinstance(error, openai.APIConnectionError):
        return ModelError("the model service could not be reached")
    return ModelError("the model service sent a reply that could not be used")


class OpenAIAgent:
    """An `Agent` backed by a model behind the OpenAI Chat Completions or Responses API.

    The agent keeps no conversation state: each run gets the history and a toolbox, streams
    its events, and leaves nothing behind. Tool calls run one at a time, in the order the
    model made them, so the record keeps the model's order and a toolbox need not be safe
    for concurrent calls. The SDK runs them in a task of its own and reports a call once it
    has its output, so `ToolCallStarted` and `ToolCallFinished` arrive together, and only
    for calls that reached the toolbox.

    A failed model request is not retried by a client this agent builds (`max_retries=0`):
    the turn fails at once with `ModelError`, and the caller, who holds the agent timeout
    and the idempotency key, decides whether to try again. A client passed in keeps its own
    retry policy.

    Args:
        model: the model name, such as `gpt-4o-mini` (CHATLEDGER_MODEL).
        client: the OpenAI client to use. By default one is built from `base_url` and
            `api_key`; when those are None the client reads OPENAI_BASE_URL and
            OPENAI_API_KEY itself.
        base_url: the API root, for an OpenAI-compatible server.
        api_key: the API key.
        api: which API to speak: `"chat_completions"` (the most widely implemented) or
            `"responses"`.
        agent: your own Agents SDK agent: its instructions, model settings, handoffs and
            guardrails are kept, and each run adds the toolbox's tools to its own. Its model,
            when it names one, is asked through this agent's client and API; when it has
            none, `model` is. Without it, the agent has no instructions of its own: the
            chat service's system prompt is the one.
        max_turns: the most model requests one run may make, a backstop for a model that
            keeps calling tools that do not exist (the toolbox never sees those, so its
            tool-call limit cannot stop them). A run that reaches it, or whose toolbox
            refuses a call at its tool-call limit, ends with a message saying it stopped.
        max_retries: retries of a failed request, for a client built here.
        token_counter: counts the tokens of a text, to estimate a request whose usage the
            model does not report.

    Usage is asked for on the Chat Completions API too (`include_usage`, which the SDK
    sends by itself only to OpenAI): most compatible servers only report it when asked.
    An agent of yours whose model settings say `include_usage=False` is not asked for it,
    and its requests' usage is estimated.

    Raises:
        ValueError: both a client and `base_url` or `api_key` were given.
        openai.OpenAIError: no client was given and no API key can be found.
    """

    def __init__(
        self,
        model: str,
        *,
        client: AsyncOpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        api: Literal["chat_completions", "responses"] = "chat_completions",
        agent: SDKAgent[Any] | None = None,
        max_turns: int = 25,
        max_retries: int = 0,
        token_counter: TokenCounter = approximate_tokens,
    ) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        if client is not None and (base_url is not None or api_key is not None):
            raise ValueError("pass a client, or base_url and api_key to build one: not both")
        # A client built here is ours to close; one passed in belongs to the caller.
        self._own_client: AsyncOpenAI | None = None
        if client is None:
            try:
                client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries)
            except openai.OpenAIError:
                # No key anywhere: a setting to fix before serving, not a crash at start-up.
                raise ConfigurationError(
                    "the openai agent needs OPENAI_API_KEY (any value, for a local server "
                    "that takes none)"
                ) from None
            self._own_client = client
        self._client = client
        self._api = api
        self._model = self._model_named(model)
        self._agent: SDKAgent[Any] = agent or SDKAgent(name="chatledger")
        if isinstance(self._agent.model, str):
            self._model = self._model_named(self._agent.model)
        elif isinstance(self._agent.model, Model):
            self._model = self._agent.model
        self._max_turns = max_turns
        self._token_counter = token_counter
        # Tracing would export spans over the network; tools run one at a time (see above);
        # a made-up tool name gets an error result the model can recover from.
        self._run_config = RunConfig(
            tracing_disabled=True,
            tool_execution=ToolExecutionConfig(max_function_tool_concurrency=1),
            tool_not_found_behavior="return_error_to_model",
        )

    def _model_named(self, name: str) -> Model:
        if self._api == "responses":
            return OpenAIResponsesModel(name, self._client)
        return OpenAIChatCompletionsModel(name, self._client)

    async def aclose(self) -> None:
        """Close the HTTP client, if this agent built it. Call it when the app shuts down."""
        if self._own_client is not None:
            await self._own_client.close()

    async def run(
        self, messages: Sequence[ChatMessage], toolbox: Toolbox
    ) -> AsyncIterator[AgentEvent]:
        """Answer the last user message of `messages`, calling tools through `toolbox`.

        Raises:
            ModelError: the model endpoint failed or could not be reached.
        """
        mine = self._agent
        settings = mine.model_settings
        if settings.include_usage is None:
            settings = settings.resolve(ModelSettings(include_usage=True))
        tools = [*mine.tools, *(_function_tool(spec) for spec in toolbox.specs)]
        run = _Run(
            toolbox,
            sent=list(messages),
            preamble_tokens=_preamble_tokens(mine, tools, self._token_counter),
            model=_model_name(self._model),
            counter=self._token_counter,
        )
        agent = mine.clone(
            model=self._model,
            model_settings=settings,
            tools=tools,
            # An agent of yours that decides itself when tool use ends keeps deciding.
            tool_use_behavior=(
                _stop_if_refused
                if mine.tool_use_behavior == "run_llm_again"
                else mine.tool_use_behavior
            ),
        )
        result = Runner.run_streamed(
            agent,
            to_input_items(messages),
            context=run,
            max_turns=self._max_turns,
            run_config=self._run_config,
            error_handlers={"max_turns": _stop_at_max_turns},
        )
        try:
            # An async generator typed as an iterator: close it, or it outlives the run.
            stream = cast("AsyncGenerator[StreamEvent]", result.stream_events())
            async with contextlib.aclosing(stream) as events:
                try:
                    async for event in events:
                        for translated in _translate(event, run):
                            yield translated
                finally:
                    if not result.is_complete:
                        result.cancel()
        except (openai.APIError, ModelBehaviorError) as error:
            raise _model_error(error) from error
        except AgentsException as error:
            # The SDK wraps what a tool raised; a toolbox failure (the database is down) is
            # ours to report as it is.
            if isinstance(error.__cause__, ChatLedgerError):
                raise error.__cause__ from None
            raise
        finally:
            await _settle(result)
        if run.stopped is not None:
            message = _stop_message(run.stopped)
            yield TextDelta(message)
            yield AssistantMessage(message)

    async def summarize(self, messages: Sequence[ChatMessage], previous: str | None) -> str:
        """Fold `messages` into `previous` with the model; returns the new summary.

        The conversation goes to the model as a plain transcript, not as turns, so a slice
        that starts or ends between a tool call and its result is still a valid request.

        Raises:
            ModelError: the model endpoint failed or could not be reached.
        """
        summarizer = SDKAgent[None](
            name="chatledger-summarizer", instructions=SUMMARY_INSTRUCTIONS, model=self._model
        )
        parts = [f"Summary so far:\n{previous}"] if previous else []
        parts.append(f"Conversation to add:\n{_transcript(messages)}")
        try:
            result = await Runner.run(
                summarizer, "\n\n".join(parts), max_turns=1, run_config=self._run_config
            )
        except (openai.APIError, ModelBehaviorError) as error:
            raise _model_error(error) from error
        return str(result.final_output).strip()


def _model_name(model: Model) -> str | None:
    # The SDK's OpenAI models keep their name as `model`; a model of yours may not.
    name = getattr(model, "model", None)
    return name if isinstance(name, str) and name else None


def _preamble_tokens(agent: SDKAgent[Any], tools: Sequence[Any], counter: TokenCounter) -> int:
    """Tokens a request sends besides the conversation: the agent's instructions (when
    they are text) and the function tools' definitions."""
    total = counter(agent.instructions) if isinstance(agent.instructions, str) else 0
    for tool in tools:
        if isinstance(tool, FunctionTool):
            definition = json.dumps(tool.params_json_schema, ensure_ascii=False)
            total += counter(tool.name) + counter(tool.description) + counter(definition)
    return total


async def _settle(result: RunResultStreaming) -> None:
    """Wait until the SDK's background run is over, so no task outlives `run`.

    When the consumer is cancelled (the caller's timeout), the SDK cancels its run task but
    does not wait for it.
    """
    task = result.run_loop_task
    if task is not None and not task.done():
        task.cancel()
        # wait(), not await: the task's own cancellation must not pass for ours.
        await asyncio.wait({task})


def _transcript(messages: Sequence[ChatMessage]) -> str:
    lines = []
    for message in messages:
        if message.role is Role.TOOL:
            lines.append(f"tool {message.name or ''} returned: {message.content}")
            continue
        if message.content:
            lines.append(f"{message.role.value}: {message.content}")
        lines.extend(f"assistant called {c.name} with {c.arguments}" for c in message.tool_calls)
    return "\n".join(lines)
