"""The core imports without the heavy dependencies (STYLE: "Which way imports go")."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Each test starts a fresh interpreter that imports much of the package.
pytestmark = pytest.mark.slow

BLOCKER = textwrap.dedent(
    """
    import sys

    class Blocker:
        blocked = {"fastapi", "starlette", "sqlalchemy", "mcp", "agents", "openai", "asyncpg",
                   "aiosqlite", "uvicorn", "httpx", "jwt", "structlog"}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter, its output captured."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def _import_with_blocker(statement: str) -> subprocess.CompletedProcess[str]:
    return _python(BLOCKER + statement)


def test_the_core_needs_no_database_driver_web_framework_or_sdk() -> None:
    result = _import_with_blocker(
        "import chatledger, chatledger.domain, chatledger.errors, chatledger.tokens, "
        "chatledger.agents, chatledger.tools, chatledger.context, chatledger.storage, "
        "chatledger.turns, chatledger.toolbox, chatledger.streams, chatledger.service, "
        "chatledger.integrations.items, chatledger.integrations.agents\n"
        "print(chatledger.ChatMessage.user('hi').content)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hi"


def test_the_blocker_really_blocks() -> None:
    result = _import_with_blocker("import chatledger.store")
    assert result.returncode != 0
    assert "blocked in this test" in result.stderr


def _imported(statement: str, modules: set[str]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after `statement`."""
    report = f"import json, sys\nprint(json.dumps(sorted({modules!r} & sys.modules.keys())))"
    result = _python(f"{statement}\n{report}")
    assert result.returncode == 0, result.stderr
    imported: list[str] = json.loads(result.stdout)
    return imported


def test_minting_a_token_imports_neither_the_server_nor_an_sdk() -> None:
    # `chatledger token` imports `chatledger.api.auth`; the package must not bring the
    # whole server with it (seconds of imports in every CLI process).
    heavy = {"chatledger.api.app", "agents", "chatkit", "mcp", "fastapi"}
    assert _imported("import chatledger.api.auth, chatledger.cli", heavy) == []


def test_the_server_imports_chatkit_and_the_agents_sdk_only_when_asked() -> None:
    # Serving `/chatkit` needs the ChatKit SDK, which imports the Agents SDK and openai:
    # imported on the first ChatKit request, not by every `chatledger serve`.
    sdks = {"agents", "chatkit", "openai"}
    assert _imported("import chatledger.api.app", sdks) == []
    assert _imported("import chatledger.api.chatkit_requests", sdks) == sorted(sdks)
