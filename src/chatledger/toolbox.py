"""The toolbox a turn's agent calls: every toolset's tools, each call run and recorded by
the turn with the toolset that declared the tool."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Final

from chatledger.domain import ToolCall
from chatledger.errors import ConfigurationError
from chatledger.tools import AnyToolset, ToolSpec
from chatledger.turns import Turn

__all__ = ["VALID_TOOL_NAME", "TurnToolbox", "check_tool_names"]

log = logging.getLogger("chatledger.toolbox")


# What model APIs take as a function name (OpenAI's rule, the strictest of them): a tool
# named otherwise would make every request of the turn fail, so it is left out.
VALID_TOOL_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class TurnToolbox:
    """Every toolset's tools, for one turn: each call goes through the turn, which runs it
    with the toolset that declared the tool and records it.

    A name offered twice goes to the first toolset listing it (`ChatService` refuses such
    a clash when it is built; one can still appear later, when an MCP server's tools
    change). A name no model API would take is left out.
    """

    def __init__(self, turn: Turn, toolsets: Sequence[AnyToolset]) -> None:
        self._turn = turn
        self._owners: dict[str, AnyToolset] = {}
        specs: list[ToolSpec] = []
        for toolset in toolsets:
            # Read once per turn: a toolset's tools may change between turns, not within one.
            for spec in toolset.specs:
                if spec.name in self._owners or not VALID_TOOL_NAME.fullmatch(spec.name):
                    continue
                self._owners[spec.name] = toolset
                specs.append(spec)
        self.specs: Sequence[ToolSpec] = tuple(specs)

    async def call(self, call: ToolCall) -> dict[str, Any]:
        return await self._turn.run_tool(call, self._owners.get(call.name))


def check_tool_names(toolsets: Sequence[AnyToolset]) -> None:
    """Refuse a tool name two toolsets offer; warn of one no model API would take.

    Raises:
        ConfigurationError: the clash, naming both toolsets.
    """
    seen: dict[str, str] = {}
    for toolset in toolsets:
        for spec in toolset.specs:
            if spec.name in seen:
                raise ConfigurationError(
                    f"the tool {spec.name!r} is offered by both the {seen[spec.name]!r} and"
                    f" the {toolset.name!r} toolsets: rename one, or leave one toolset out"
                )
            seen[spec.name] = toolset.name
            if not VALID_TOOL_NAME.fullmatch(spec.name):
                log.warning(
                    "tool %r of the %r toolset is left out: a tool name is 1 to 64 letters,"
                    " digits, _ or -",
                    spec.name,
                    toolset.name,
                )
