"""The page around the messages, in Debian's Chromium against real `chatledger serve --dev`
processes: the theme."""

from __future__ import annotations

import pytest
from playwright.async_api import ViewportSize, expect

from tests.browser.conftest import OpenPage
from tests.browser.harness import sign_in
from tests.process.servers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WIDE = ViewportSize(width=1440, height=900)


async def test_the_theme_toggle_sets_data_theme_and_is_remembered(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=WIDE)
    await sign_in(page, server.base_url, "painter")
    html = page.locator("html")
    background = "getComputedStyle(document.body).backgroundColor"
    await expect(html).to_have_attribute("data-theme", "system")
    toggle = page.get_by_role("button", name="Theme: system")
    await toggle.click()
    await expect(html).to_have_attribute("data-theme", "light")
    assert await page.evaluate(background) == "rgb(245, 246, 248)"
    await page.get_by_role("button", name="Theme: light").click()
    await expect(html).to_have_attribute("data-theme", "dark")
    assert await page.evaluate(background) == "rgb(21, 24, 29)"
    await page.reload()
    await expect(html).to_have_attribute("data-theme", "dark")
    await expect(page.get_by_role("button", name="Theme: dark")).to_be_visible()
    assert await page.evaluate(background) == "rgb(21, 24, 29)"

    # On a dark system: a chosen light theme stays light, and "system" follows it.
    await page.emulate_media(color_scheme="dark")
    await page.get_by_role("button", name="Theme: dark").click()
    await expect(html).to_have_attribute("data-theme", "system")
    assert await page.evaluate(background) == "rgb(21, 24, 29)"
    await page.get_by_role("button", name="Theme: system").click()
    await expect(html).to_have_attribute("data-theme", "light")
    assert await page.evaluate(background) == "rgb(245, 246, 248)"

    # The choice is on <html> before any module runs: a dark page never flashes light.
    await page.route("**/static/app.js", lambda route: route.abort())
    await page.reload()
    await expect(html).to_have_attribute("data-theme", "light")
