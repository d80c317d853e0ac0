"""The screenshots in docs/: the main screen after a few turns, on a desktop in light and
dark colours, and on a phone.

    .venv/bin/python -m tests.browser.screenshot [DIRECTORY]

It starts its own `chatledger serve --dev --agent rules` on a temporary SQLite file and
drives Debian's Chromium. The browser tests run `capture` too, so this keeps working.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Final, Literal

from playwright.async_api import Browser, ViewportSize, expect

from tests.browser.harness import DESKTOP, PHONE, chromium, send, serve_rules, sign_in

DOCS: Final = Path(__file__).parents[2] / "docs"
# File name, viewport, colour scheme.
SHOTS: Final[tuple[tuple[str, ViewportSize, Literal["light", "dark"]], ...]] = (
    ("screenshot.png", DESKTOP, "light"),
    ("screenshot-dark.png", DESKTOP, "dark"),
    ("screenshot-mobile.png", PHONE, "light"),
)
TURNS: Final = (
    "add buy milk: 2 litres, organic",
    "remind me to call mom",
    "add book the dentist",
    "mark buy milk as done",
    "what's pending?",
)


async def capture(
    browser: Browser,
    base_url: str,
    path: Path,
    *,
    viewport: ViewportSize,
    colours: Literal["light", "dark"],
    user_id: str,
) -> None:
    """Sign in as `user_id`, chat `TURNS` in a second conversation, open one tool badge, and
    save the page to `path`."""
    context = await browser.new_context(viewport=viewport, color_scheme=colours)
    try:
        page = await context.new_page()
        await sign_in(page, base_url, user_id)
        await send(page, "add renew the passport")
        new = page.get_by_role("button", name="New conversation")
        if not await new.is_visible():  # on a phone the list is a panel, opened first
            await page.get_by_role("button", name="Chats").click()
        await new.click()
        for text in TURNS:
            await send(page, text)
        badge = page.locator("details.tool", has_text="complete_task")
        await badge.locator("summary").click()
        await expect(badge.locator(".tool-result")).to_contain_text("completed")
        await page.locator("#thread").evaluate(
            "thread => { thread.scrollTop = thread.scrollHeight }"
        )
        await page.screenshot(path=path)
    finally:
        await context.close()


async def capture_all(browser: Browser, base_url: str, directory: Path) -> list[Path]:
    """Every screenshot of `SHOTS`, each by a user of its own, into `directory`."""
    paths = []
    for number, (name, viewport, colours) in enumerate(SHOTS):
        path = directory / name
        await capture(
            browser, base_url, path, viewport=viewport, colours=colours, user_id=f"ada{number}"
        )
        paths.append(path)
    return paths


async def main(directory: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        server = await serve_rules(Path(scratch))
        try:
            async with chromium() as browser:
                for path in await capture_all(browser, server.base_url, directory):
                    print(f"wrote {path}")
        finally:
            await server.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS))
