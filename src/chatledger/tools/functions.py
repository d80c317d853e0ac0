"""Python functions as tools: `@tool` turns a typed async function into one, and
`FunctionToolset` serves a few of them to the agent.

The JSON Schema the model sees comes from the function's signature, through Pydantic, and
its description from the docstring's first paragraph; a parameter documents itself with
`Annotated[int, Field(description=...)]`. Arguments are validated before the function
runs: a model that leaves one out, sends a string for a number or makes one up gets an
`invalid_arguments` result it can correct, and the function never sees bad input.

A parameter named `user_id` is not the model's to fill: the chat service passes the user
of the verified request, and a `user_id` the model sends is dropped. What the function
returns is the result, as JSON (a dict as it is, anything else as `{"result": ...}`);
what it raises becomes a `tool_failed` result, logged, for the model to explain.

    @tool
    async def convert(value: float, unit: Literal["km", "mi"]) -> dict[str, float]:
        '''Convert a distance between kilometres and miles.'''
        ...

    ChatService(store, agent, toolsets=[TaskToolset(store), FunctionToolset("units", [convert])])
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import to_jsonable_python

from chatledger.tools.base import ToolSpec

__all__ = ["FunctionToolset", "PythonTool", "tool"]

log = logging.getLogger("chatledger.tools")

# The parameter the service fills with the turn's user.
USER_PARAMETER = "user_id"

AsyncFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PythonTool:
    """An async function with the spec a model sees and the model that checks arguments."""

    spec: ToolSpec
    function: AsyncFunction
    arguments: type[BaseModel]
    takes_user: bool

    async def __call__(self, user_id: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validate `arguments`, run the function for `user_id`; returns its result as JSON,
        or an `{"error", "code"}` object."""
        given = {key: value for key, value in arguments.items() if key != USER_PARAMETER}
        try:
            checked = self.arguments.model_validate(given)
        except ValidationError as error:
            return {"error": _describe(error), "code": "invalid_arguments"}
        values = {name: getattr(checked, name) for name in type(checked).model_fields}
        if self.takes_user:
            values[USER_PARAMETER] = user_id
        try:
            value = await self.function(**values)
            result = to_jsonable_python(value)
        except Exception as error:  # the function's own failure, or a result not JSON
            log.warning(
                "a tool failed",
                extra={"tool": self.spec.name, "error_type": type(error).__name__},
            )
            return {"error": "the tool failed", "code": "tool_failed"}
        return result if isinstance(result, dict) else {"result": result}


@overload
def tool(function: AsyncFunction, /) -> PythonTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    destructive: bool = True,
    idempotent: bool = False,
    open_world: bool = True,
) -> Callable[[AsyncFunction], PythonTool]: ...


def tool(
    function: AsyncFunction | None = None,
    /,
    *,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    destructive: bool = True,
    idempotent: bool = False,
    open_world: bool = True,
) -> PythonTool | Callable[[AsyncFunction], PythonTool]:
    """Make a typed async function a tool: `@tool`, or `@tool(name=..., read_only=True)`.

    The hints say what calling it does (see `ToolSpec`); they default to the most careful
    reading, a tool that may change or remove anything anywhere.

    Raises:
        TypeError: the function is not async, or a parameter has no type annotation or
            is not one a keyword can pass.
    """

    def make(function: AsyncFunction) -> PythonTool:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"{function.__qualname__} must be an async function to be a tool")
        hints = get_type_hints(function, include_extras=True)
        fields: dict[str, Any] = {}
        takes_user = False
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"{function.__qualname__}: *args and **kwargs cannot be tools")
            if parameter.kind is parameter.POSITIONAL_ONLY:
                raise TypeError(f"{function.__qualname__}: {parameter.name} is positional-only")
            if parameter.name == USER_PARAMETER:
                takes_user = True
                continue
            if parameter.name not in hints:
                raise TypeError(f"{function.__qualname__}: {parameter.name} has no type")
            default = ... if parameter.default is parameter.empty else parameter.default
            fields[parameter.name] = (hints[parameter.name], default)
        tool_name = name or function.__name__
        arguments = create_model(
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        schema = arguments.model_json_schema()
        schema.pop("title", None)
        spec = ToolSpec(
            name=tool_name,
            description=description or _first_paragraph(function.__doc__) or tool_name,
            parameters=schema,
            title=title,
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent,
            open_world=open_world,
        )
        return PythonTool(spec, function, arguments, takes_user)

    return make if function is None else make(function)


class FunctionToolset:
    """Python tools as a `Toolset` named `name`.

    Raises:
        ValueError: two tools share a name.
    """

    def __init__(self, name: str, tools: Sequence[PythonTool]) -> None:
        self.name = name
        self._tools = {one.spec.name: one for one in tools}
        if len(self._tools) != len(tools):
            raise ValueError(f"two tools of the {name!r} toolset share a name")
        self.specs = tuple(one.spec for one in tools)

    async def call(self, user_id: str, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        found = self._tools.get(name)
        if found is None:
            return {"error": f"there is no tool called {name!r}", "code": "unknown_tool"}
        return await found(user_id, arguments)


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split()) if doc else ""


def _describe(error: ValidationError) -> str:
    # What the model needs to correct its call, without Pydantic's URLs and input echo.
    problems = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems)
