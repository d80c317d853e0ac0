"""Fixtures for the browser tests: Debian's Chromium and a `chatledger serve --dev --agent
rules` process, one of each per module (every test signs in as a user of its own, so they
share nothing), and pages in fresh browser contexts that must raise no error.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, ViewportSize

from tests.browser.harness import CHROMIUM, DESKTOP, chromium, serve_rules, serve_slow
from tests.process.servers import ServerProcess

OpenPage = Callable[..., Awaitable[Page]]


@pytest.fixture(scope="session")
def chromium_installed() -> None:
    """Skip without Chromium (fail with CI=true): `make test` installs it first."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing; `make chromium` installs Debian's Chromium"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason + " (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium_installed: None) -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    running = await serve_rules(tmp_path_factory.mktemp("serve"))
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """`await open_page(viewport=PHONE)`: a page in a fresh context (its own sessionStorage).

    At teardown the test fails if any page threw an uncaught error or logged one to the
    console (a Content-Security-Policy violation, say). Chromium also logs every request
    answered with an error status; those are the tests' business, not errors of the page.
    """
    errors: list[str] = []
    contexts = []

    def console(kind: str, text: str) -> None:
        if kind == "error" and not text.startswith("Failed to load resource"):
            errors.append(text)

    async def open_(viewport: ViewportSize = DESKTOP) -> Page:
        context = await browser.new_context(viewport=viewport)
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        page.on("console", lambda message: console(message.type, message.text))
        return page

    yield open_
    for context in contexts:
        await context.close()
    assert errors == []


@pytest_asyncio.fixture(loop_scope="module")
async def slow_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A server whose agent writes a long reply slowly (slow_server.py)."""
    running = await serve_slow(tmp_path)
    try:
        yield running
    finally:
        await running.stop()
