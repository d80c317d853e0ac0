"""The composition root: `Settings` in; a store, an agent, toolsets and a `ChatService` out.

Every entry point is wired here and nowhere else: the HTTP server (`create_app`), the
terminal chat (`chatledger chat`), the MCP server (`chatledger mcp`) and `chatledger
purge`. So a setting that configures the turn reaches every one of them, and a newcomer
reads the wiring once. (The benchmarks build their `ChatService` by hand, on purpose: each
measures one configuration it states.)

What a team brings of its own comes as an `AgentSetup`: an agent, its toolsets, its system
prompt, and whether it wants the built-in task tools. `chatledger serve --app
package.module:factory` loads one from a factory that takes the `Settings`; `create_app`
takes the same parts as arguments. The MCP servers named by `CHATLEDGER_MCP_SERVERS` are
added to whatever toolsets there are.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from chatledger.agents import Agent
from chatledger.errors import ConfigurationError
from chatledger.service import DEFAULT_SYSTEM_PROMPT, ChatService
from chatledger.settings import Settings
from chatledger.store import SQLAlchemyStore
from chatledger.tools import AnyToolset, ManagedToolset, TaskToolset

__all__ = [
    "IDEMPOTENCY_TTL",
    "AgentSetup",
    "Composition",
    "build_agent",
    "build_service",
    "compose",
    "configured_setup",
    "load_setup",
    "open_store",
    "purge",
]

IDEMPOTENCY_TTL: Final = timedelta(hours=24)


@dataclass(frozen=True)
class AgentSetup:
    """What runs a conversation's turns: the agent, its tools, its instructions.

    Args:
        agent: answers turns; None for the configured built-in one (`build_agent`).
        toolsets: tools the agent may call, besides the task tools and MCP servers.
        task_tools: offer the built-in task tools too.
        system_prompt: the first message of every agent input; None for none (an agent
            with instructions of its own, such as an Agents SDK agent you built).
    """

    agent: Agent | None = None
    toolsets: Sequence[AnyToolset] = ()
    task_tools: bool = True
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT


@dataclass(frozen=True)
class Composition:
    """Everything a turn needs, built from settings and opened: see `compose`."""

    store: SQLAlchemyStore
    agent: Agent
    toolsets: Sequence[AnyToolset]
    service: ChatService


def build_service(
    store: SQLAlchemyStore,
    agent: Agent,
    toolsets: Sequence[AnyToolset],
    settings: Settings,
    *,
    system_prompt: str | None,
) -> ChatService:
    """The `ChatService` with every setting that shapes a turn."""
    return ChatService(
        store,
        agent,
        toolsets=toolsets,
        system_prompt=system_prompt,
        context_tokens=settings.context_tokens,
        agent_timeout=settings.agent_timeout,
        stop_poll_interval=settings.stop_poll_interval,
        max_tool_calls=settings.max_tool_calls_per_turn,
        tool_timeout=settings.tool_timeout,
        max_message_chars=settings.max_message_chars,
        idempotency_ttl=IDEMPOTENCY_TTL,
        lease_ttl=settings.lease_seconds,
        turn_limit=_turn_limit(settings),
    )


def build_agent(settings: Settings) -> Agent:
    """The configured built-in agent: the OpenAI Agents SDK when asked for, or when an
    OpenAI key is set and nothing else was asked for; otherwise the offline rules agent.

    Raises:
        ConfigurationError: the openai agent without an API key.
    """
    kind = settings.agent or ("openai" if settings.openai_api_key else "rules")
    if kind == "openai":
        from chatledger.agents.openai import OpenAIAgent

        if settings.openai_api_key is None:
            raise ConfigurationError(
                "the openai agent needs OPENAI_API_KEY (any value, for a local server "
                "that takes none)"
            )
        return OpenAIAgent(
            model=settings.model,
            api=settings.openai_api,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value(),
        )
    from chatledger.agents.rules import RulesAgent

    return RulesAgent()


def load_setup(reference: str, settings: Settings) -> AgentSetup:
    """Call the factory `package.module:function` with `settings`; returns its setup.

    Raises:
        ConfigurationError: the module or function cannot be found, the factory raised, or
            it did not return an `AgentSetup`.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app wants package.module:factory, not {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"cannot import {module_name!r} for --app: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigurationError(f"{module_name!r} has no function {attribute!r} for --app")
    try:
        setup = factory(settings)
    except ConfigurationError:
        raise
    except Exception as error:
        # The factory is the user's code: its failure is a start-up error in one line, with
        # what it raised, not a traceback through chatledger.
        raise ConfigurationError(f"{reference} failed: {type(error).__name__}: {error}") from error
    if not isinstance(setup, AgentSetup):
        raise ConfigurationError(
            f"{reference} returned {type(setup).__name__}, not a chatledger AgentSetup"
        )
    return setup


def configured_setup(settings: Settings) -> AgentSetup:
    """The setup `settings` names: `--app`'s factory's, or the built-in agent's."""
    return AgentSetup() if settings.app is None else load_setup(settings.app, settings)


def open_store(settings: Settings, *, cursor_key: bytes | None = None) -> SQLAlchemyStore:
    """The store for `settings.database_url` (not migrated: `compose` does not migrate)."""
    return SQLAlchemyStore.from_url(settings.database_url, cursor_key=cursor_key)


@contextlib.asynccontextmanager
async def compose(
    settings: Settings,
    *,
    setup: AgentSetup | None = None,
    store: SQLAlchemyStore | None = None,
    cursor_key: bytes | None = None,
) -> AsyncIterator[Composition]:
    """Open what `settings` (and `setup`) describe; close it all on the way out.

    The store is opened unless one is given, the agent built unless the setup brings one,
    the task tools, the setup's toolsets and the configured MCP servers gathered, those
    that hold resources started, and a `ChatService` made with every setting that shapes a
    turn. On exit, turns still running are drained (those past the agent timeout end as
    interrupted), then toolsets, the agent and the store are closed, each only if it was
    opened here; an `--app` factory hands its agent over, so that is closed here too.

    Raises:
        ConfigurationError: a setting or the MCP servers file is wrong, or two toolsets
            offer the same tool name.
    """
    # A setup loaded here (from `--app`) is handed over with its agent: ours to close. One
    # passed in belongs to the caller, but for the toolsets we start.
    loaded = setup is None
    if setup is None:
        setup = configured_setup(settings)
    async with contextlib.AsyncExitStack() as stack:
        if store is None:
            store = open_store(settings, cursor_key=cursor_key)
            stack.push_async_callback(store.close)
        agent = setup.agent or build_agent(settings)
        close_agent = getattr(agent, "aclose", None)
        if close_agent is not None and (loaded or setup.agent is None):
            stack.push_async_callback(close_agent)
        toolsets: list[AnyToolset] = [TaskToolset()] if setup.task_tools else []
        toolsets += setup.toolsets
        if settings.mcp_servers is not None:
            from chatledger.tools.mcp_servers import MCPServersToolset, load_mcp_servers

            servers = load_mcp_servers(settings.mcp_servers)
            toolsets.append(MCPServersToolset(servers, tool_timeout=settings.tool_timeout))
        for toolset in toolsets:
            if isinstance(toolset, ManagedToolset):
                await toolset.start()
                stack.push_async_callback(toolset.aclose)
        service = build_service(store, agent, toolsets, settings, system_prompt=setup.system_prompt)
        stack.push_async_callback(service.drain, settings.agent_timeout)
        yield Composition(store, agent, toolsets, service)


def _turn_limit(settings: Settings) -> tuple[int, timedelta] | None:
    if settings.rate_limit_turns is None:
        return None
    return settings.rate_limit_turns, timedelta(seconds=settings.rate_limit_seconds)


async def purge(store: SQLAlchemyStore, settings: Settings) -> tuple[int, int]:
    """Delete what is due: conversations past their retention or their expiry, and
    idempotency keys past the time they are replayed for. Returns how many of each."""
    idle_for = None if settings.retention_days is None else timedelta(days=settings.retention_days)
    conversations = await store.purge_conversations(idle_for=idle_for)
    keys = await store.idempotency.purge(older_than=IDEMPOTENCY_TTL)
    return conversations, keys
