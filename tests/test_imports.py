"""The core imports without the heavy dependencies (STYLE: "Which way imports go")."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


def _import_with_blocker(statement: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + statement],
        capture_output=True,
        text=True,
        check=False,
    )


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


def test_minting_a_token_imports_neither_the_server_nor_an_sdk() -> None:
    # `chatledger token` imports `chatledger.api.auth`; the package must not bring the
    # whole server with it (seconds of imports in every CLI process).
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, chatledger.api.auth, chatledger.cli\n"
            "print(sorted({'chatledger.api.app', 'agents', 'chatkit', 'mcp', 'fastapi'}"
            " & sys.modules.keys()))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
