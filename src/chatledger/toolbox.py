"""The toolbox a turn's agent calls: every toolset's tools, each call run and recorded by
the turn with the toolset that declared the tool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatledger.domain import ToolCall
from chatledger.errors import ConfigurationError
from chatledger.tools import AnyToolset, ToolSpec
from chatledger.turns import Turn

__all__ = ["TurnToolbox", "check_tool_names", "tool_owners"]


class TurnToolbox:
    """Every toolset's tools, for one turn: each call goes through the turn, which runs it
    with the toolset that declared the tool and records it."""

    def __init__(self, turn: Turn, toolsets: Sequence[AnyToolset]) -> None:
        self._turn = turn
        # Read once per turn: a toolset's tools may change between turns, not within one.
        self._owners = tool_owners(toolsets)
        self.specs: Sequence[ToolSpec] = tuple(
            spec
            for toolset in toolsets
            for spec in toolset.specs
            if self._owners[spec.name] is toolset
        )

    async def call(self, call: ToolCall) -> dict[str, Any]:
        return await self._turn.run_tool(call, self._owners.get(call.name))


def tool_owners(toolsets: Sequence[AnyToolset]) -> dict[str, AnyToolset]:
    """Which toolset runs each tool name. A name offered twice goes to the first toolset
    listing it (`ChatService` refuses such a clash when it is built)."""
    owners: dict[str, AnyToolset] = {}
    for toolset in toolsets:
        for spec in toolset.specs:
            owners.setdefault(spec.name, toolset)
    return owners


def check_tool_names(toolsets: Sequence[AnyToolset]) -> None:
    seen: dict[str, str] = {}
    for toolset in toolsets:
        for spec in toolset.specs:
            if spec.name in seen:
                raise ConfigurationError(
                    f"the tool {spec.name!r} is offered by both the {seen[spec.name]!r} and"
                    f" the {toolset.name!r} toolsets: rename one, or leave one toolset out"
                )
            seen[spec.name] = toolset.name
