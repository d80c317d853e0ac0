"""An MCP server with one tool, physical_constant: the external MCP server of the units
example (any MCP server you already run would do). Speaks MCP on stdio."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

CONSTANTS = {
    "speed of light": (299_792_458.0, "m/s"),
    "gravitational acceleration": (9.80665, "m/s^2"),
    "avogadro": (6.02214076e23, "1/mol"),
}

server = MCPServer("constants")


@server.tool()
def physical_constant(name: str) -> dict[str, float | str]:
    """The value and unit of a physical constant, by name (for example "speed of light")."""
    key = name.strip().lower()
    if key not in CONSTANTS:
        raise ValueError(f"unknown constant {name!r}; known: {', '.join(CONSTANTS)}")
    value, unit = CONSTANTS[key]
    return {"name": key, "value": value, "unit": unit}


if __name__ == "__main__":
    server.run("stdio")
