"""The MCP servers file: the one MCP hosts (Claude Desktop, Cursor, VS Code) keep, so users
list the servers they already run.

    {"mcpServers": {"files":  {"command": "npx", "args": ["-y", "..."], "env": {...}},
                    "issues": {"url": "https://.../mcp", "headers": {...}}}}

`MCPServersToolset` (`chatledger.tools.mcp_servers`) connects to what this reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias
from urllib.parse import urlsplit

from chatledger.errors import ConfigurationError

__all__ = ["HTTPServerConfig", "MCPServerConfig", "StdioServerConfig", "load_mcp_servers"]


@dataclass(frozen=True, slots=True)
class StdioServerConfig:
    """A server chatledger starts: `command` with `args`, and `env` over a minimal
    inherited environment (PATH, HOME, USER, ...), so chatledger's own secrets stay out.
    Its stderr (its log) goes to chatledger's stderr; its stdout carries only MCP."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HTTPServerConfig:
    """A server that is already running, at a streamable HTTP `url`; `headers` go with
    every request (an API key, say)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


MCPServerConfig: TypeAlias = StdioServerConfig | HTTPServerConfig

# What hosts write in "type"; only stdio and streamable HTTP are spoken here.
_TRANSPORTS: Final = {
    "stdio": "command",
    "http": "url",
    "streamable-http": "url",
    "streamableHttp": "url",
}


def load_mcp_servers(path: str | Path) -> dict[str, MCPServerConfig]:
    """Read an MCP hosts' server list: `{"mcpServers": {name: server}}`.

    Args:
        path: a JSON file, as Claude Desktop, Cursor or VS Code keep it. Keys other than
            `type`, `command`, `args`, `env`, `url` and `headers` (hosts add their own)
            are ignored.

    Returns:
        The servers by name, in the file's order.

    Raises:
        ConfigurationError: the file is missing, unreadable or not JSON, or a server
            entry is wrong; the message names the file and the server.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"MCP servers file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"MCP servers file {path}: cannot read it: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(
            f"MCP servers file {path}: not valid JSON: {error.msg} at line {error.lineno}"
        ) from None
    servers = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict):
        raise ConfigurationError(
            f'MCP servers file {path}: expected an object {{"mcpServers": {{name: server}}}}'
        )
    return {name: _server_config(path, name, entry) for name, entry in servers.items()}


def _server_config(path: Path, name: str, entry: object) -> MCPServerConfig:
    def invalid(problem: str) -> ConfigurationError:
        return ConfigurationError(f"MCP servers file {path}: server {name!r}: {problem}")

    if not name.strip():
        raise ConfigurationError(f"MCP servers file {path}: a server has an empty name")
    if not isinstance(entry, dict):
        raise invalid('expected an object with "command" or "url"')
    if ("command" in entry) == ("url" in entry):
        raise invalid('needs exactly one of "command" (stdio) and "url" (streamable HTTP)')
    key = "command" if "command" in entry else "url"
    kind = entry.get("type")
    if kind is not None and kind not in _TRANSPORTS:
        raise invalid(f'"type" {kind!r} is not supported: only stdio and streamable HTTP are')
    if kind is not None and _TRANSPORTS[kind] != key:
        raise invalid(f'"type" is {kind!r} but the server has "{key}"')
    if not isinstance(entry[key], str) or not entry[key].strip():
        raise invalid(f'"{key}" must be a non-empty string')
    if key == "command":
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise invalid('"args" must be a list of strings')
        return StdioServerConfig(
            entry["command"], tuple(args), _string_map(entry.get("env", {}), "env", invalid)
        )
    if urlsplit(entry["url"]).scheme not in ("http", "https"):
        raise invalid('"url" must be an http:// or https:// URL')
    return HTTPServerConfig(entry["url"], _string_map(entry.get("headers", {}), "headers", invalid))


def _string_map(
    value: object, key: str, invalid: Callable[[str], ConfigurationError]
) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise invalid(f'"{key}" must be an object of strings')
    return dict(value)
