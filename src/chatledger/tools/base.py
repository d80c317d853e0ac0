"""The toolset protocol: the tools an agent may call, acting for the turn's user.

A `Toolset` is a family of tools with one owner: the built-in task tools, a team's own
Python functions, the tools of an external MCP server. The chat service gathers the specs
of every toolset into the agent's toolbox and sends each call to the toolset that
declared the tool, with the user id of the verified request, never one a model wrote.

A call returns a JSON object: the result, or `{"error", "code"}` for a failure the model
should see and explain (bad arguments, a server that is down, a timeout). Only failures of
chatledger's own infrastructure (the database) raise.

How a call is recorded depends on where its effect lives. A `StoreToolset` changes
chatledger's own database, so its call runs inside the transaction that records the call
and its result: both or neither. Any other toolset's effect is elsewhere, so the call is
recorded before it runs and its result when it returns; a process that dies in between
leaves a call that is closed with an `interrupted` result, never an orphan.

A toolset that holds resources (processes, connections) also implements `start` and
`aclose` (`ManagedToolset`); whoever builds it starts it before the first turn and closes
it after the last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from chatledger.tools.tasks import TaskRepository

__all__ = ["AnyToolset", "ManagedToolset", "StoreToolset", "ToolSpec", "ToolStore", "Toolset"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model sees it: a name, what it does, and a JSON Schema for its arguments;
    and, for people and MCP clients, a title and what calling it does to the world.

    `read_only`: changes nothing. `destructive`: may overwrite or remove what exists (not
    only add). `idempotent`: calling it again with the same arguments changes nothing
    more. `open_world`: reaches beyond the user's own data (the web, other systems).
    """

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    title: str | None = None
    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = True


@runtime_checkable
class Toolset(Protocol):
    """Tools an agent may call. `name` says which toolset ran a call in its record."""

    @property
    def name(self) -> str: ...

    @property
    def specs(self) -> Sequence[ToolSpec]:
        """The tools, as the next turn's agent will see them (they may change between
        turns, say when an MCP server announces new tools)."""
        ...

    async def call(self, user_id: str, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run tool `name` for `user_id` with `arguments` (already parsed from the model's
        JSON); returns its result or an `{"error", "code"}` object."""
        ...


class ToolStore(Protocol):
    """What a `StoreToolset` gets: the store of the transaction that records its call."""

    @property
    def tasks(self) -> TaskRepository: ...


@runtime_checkable
class StoreToolset(Protocol):
    """A toolset whose effects are in chatledger's own database: it has no `call` of its
    own, for it only ever runs inside the transaction that records the call."""

    @property
    def name(self) -> str: ...

    @property
    def specs(self) -> Sequence[ToolSpec]: ...

    async def call_in(
        self, store: ToolStore, user_id: str, name: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Run tool `name` for `user_id` on `store`, the store of the transaction that
        records the call; returns its result or an `{"error", "code"}` object."""
        ...


@runtime_checkable
class ManagedToolset(Toolset, Protocol):
    """A toolset with resources to start before the first turn and close after the last."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


AnyToolset = Toolset | StoreToolset
