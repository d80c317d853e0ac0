"""The core imports without the heavy dependencies (STYLE: "Which way imports go")."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

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


def _python(code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter with `arguments`, its output captured."""
    command = [sys.executable, "-c", code, *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=False)


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
    heavy = {"chatledger.api.app", "agents", "chatkit", "mcp", "fastapi", "asyncpg"}
    assert _imported("import chatledger.api.auth, chatledger.cli", heavy) == []


def test_the_server_imports_chatkit_and_the_agents_sdk_only_when_asked() -> None:
    # Serving `/chatkit` needs the ChatKit SDK, which imports the Agents SDK and openai:
    # imported on the first ChatKit request, not by every `chatledger serve`.
    sdks = {"agents", "chatkit", "openai"}
    assert _imported("import chatledger.api.app", sdks) == []
    assert _imported("import chatledger.api.chatkit_requests", sdks) == sorted(sdks)


def test_the_server_imports_the_mcp_sdk_on_its_first_mcp_request() -> None:
    # A third of `chatledger serve`'s start was importing the MCP SDK for /mcp, which
    # many deployments never use (tests/api/test_mcp_http.py serves it).
    assert _imported("import chatledger.api.app", {"mcp"}) == []


FIRST_CHATKIT_REQUEST = """
import asyncio, sys, threading
from datetime import timedelta

import httpx

from chatledger.api import create_app
from chatledger.api.auth import Authenticator
from chatledger.settings import Settings
from chatledger.store import SQLAlchemyStore

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "chatkit":
            print("main thread" if threading.current_thread() is threading.main_thread()
                  else "worker thread")
        return None

async def main(url):
    store = SQLAlchemyStore.from_url(url)
    await store.migrate()
    await store.close()
    secret = "a-secret-that-is-long-enough-for-hs256-tokens"
    app = create_app(Settings(database_url=url, jwt_secret=secret))
    authenticator = Authenticator(secret=secret, algorithms=["HS256"])
    token = authenticator.issue("alice", ttl=timedelta(minutes=5))[0]
    sys.meta_path.insert(0, Watch())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            answer = await client.post(
                "/chatkit", json={"type": "threads.list", "params": {}},
                headers={"Authorization": f"Bearer {token}"},
            )
    print(answer.status_code)

asyncio.run(main(sys.argv[1]))
"""


def test_the_first_chatkit_request_imports_the_sdk_off_the_event_loop(tmp_path: Path) -> None:
    # The SDKs take seconds to import: done on the event loop, the first ChatKit request
    # would stall every other request and stream of the process meanwhile.
    result = _python(FIRST_CHATKIT_REQUEST, f"sqlite:///{tmp_path / 'c.db'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["worker", "thread", "200"]
