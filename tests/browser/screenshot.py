"""docs/screenshot.png: the main screen after a few turns, at desktop size.

    .venv/bin/python -m tests.browser.screenshot [PATH]

It starts its own `chatledger serve --dev --agent rules` on a temporary SQLite file and
drives Debian's Chromium. The browser tests run `capture` too, so this keeps working.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Final

from playwright.async_api import Browser, expect

from tests.browser.harness import DESKTOP, chromium, send, serve_rules, sign_in

DOCS_SCREENSHOT: Final = Path(__file__).parents[2] / "docs" / "screenshot.png"
TURNS: Final = (
    "add buy milk: 2 litres, organic",
    "remind me to call mom",
    "add book the dentist",
    "mark buy milk as done",
    "what's pending?",
)


async def capture(browser: Browser, base_url: str, path: Path, *, user_id: str = "ada") -> None:
    """Sign in as `user_id`, chat `TURNS` in a second conversation, open one tool badge, and
    save the page to `path`."""
    context = await browser.new_context(viewport=DESKTOP, color_scheme="light")
    try:
        page = await context.new_page()
        await sign_in(page, base_url, user_id)
        await send(page, "add renew the passport")
        await page.get_by_role("button", name="New conversation").click()
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


async def main(path: Path) -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = await serve_rules(Path(directory))
        try:
            async with chromium() as browser:
                await capture(browser, server.base_url, path)
        finally:
            await server.stop()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_SCREENSHOT
    asyncio.run(main(target))
    print(f"wrote {target}")
