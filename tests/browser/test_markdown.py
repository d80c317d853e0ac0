"""A reply's markdown in the page (markdown.js), and the copy buttons (copy.js)."""

from __future__ import annotations

import asyncio
import json
from typing import Final

import pytest
from playwright.async_api import Page, Route, ViewportSize, expect

from tests.browser.conftest import OpenPage
from tests.browser.harness import DESKTOP, PHONE, dev_token, show_reply, sign_in
from tests.process.servers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CODE: Final = 'def greet(name):\n    return f"<b>Hello, {name}</b>"  # ' + "x" * 200
REPLY: Final = f"""# Plan

Some *emphasis*, some **strong** and `inline <code>`.
A second line, and <b>raw HTML</b>.

- apples
- pears
  - green
  - red
- plums

3. third
4. fourth

> quoted **wisdom**

---

```python
{CODE}
```

| Name | Qty | {"Note" * 40} |
|:-----|----:|:----:|
| tea  | 2   | [shop](https://example.com/tea?a=1&b=2) |
| milk | 10  | <i>none</i> |

See [the docs](https://example.com/docs "The docs") or <https://example.com/auto>,
mail <mailto:ada@example.com>, or [this](javascript:alert(1)).
"""
OVERFLOW: Final = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1440x900", "390x844"])
async def test_a_reply_in_markdown_shows_as_elements_that_fit_the_screen(
    open_page: OpenPage, server: ServerProcess, viewport: ViewportSize
) -> None:
    page = await open_page(viewport=viewport)
    await show_reply(page, server, f"reader-{viewport['width']}", REPLY, asked="**plain** <i>x</i>")
    reply = page.locator(".message.assistant .markdown")

    await expect(reply.locator("h3")).to_have_text("Plan")
    await expect(reply.locator(":scope > p em")).to_have_text("emphasis")
    await expect(reply.locator(":scope > p strong")).to_have_text("strong")
    await expect(reply.locator(":scope > p > code")).to_have_text("inline <code>")
    first = reply.locator("p").first
    assert await first.locator("br").count() == 1
    await expect(first).to_contain_text("A second line, and <b>raw HTML</b>.")

    await expect(reply.locator("ul").first.locator(":scope > li")).to_have_count(3)
    await expect(reply.locator("ul ul > li")).to_have_text(["green", "red"])
    await expect(reply.locator("ol")).to_have_attribute("start", "3")
    await expect(reply.locator("ol > li")).to_have_text(["third", "fourth"])
    await expect(reply.locator("blockquote strong")).to_have_text("wisdom")
    await expect(reply.locator("hr")).to_have_count(1)

    block = reply.locator(".code-block")
    await expect(block.locator(".code-language")).to_have_text("python")
    await expect(block.locator("pre > code.language-python")).to_have_text(CODE)

    await expect(reply.locator("table thead th")).to_have_text(["Name", "Qty", "Note" * 40])
    await expect(reply.locator("table tbody tr")).to_have_count(2)
    await expect(reply.locator("table tbody td").nth(1)).to_have_class("align-right")
    await expect(reply.locator("table tbody td").nth(5)).to_have_text("<i>none</i>")

    links = reply.locator("a[target=_blank][rel~=noopener][rel~=noreferrer]")
    assert await reply.locator("a").count() == await links.count() == 4
    await expect(links).to_have_text(
        ["shop", "the docs", "https://example.com/auto", "mailto:ada@example.com"]
    )
    await expect(links.first).to_have_attribute("href", "https://example.com/tea?a=1&b=2")
    await expect(reply.locator("a", has_text="the docs")).to_have_attribute("title", "The docs")
    await expect(reply).to_contain_text("[this](javascript:alert(1))")
    for tag in ["b", "i", "img", "script"]:
        assert await page.locator(f"#thread {tag}").count() == 0, tag

    user = page.locator(".message.user .text")
    await expect(user).to_have_text("**plain** <i>x</i>")
    assert await user.locator("*").count() == 0

    # Wide code and tables scroll in their own box; the page never scrolls sideways.
    assert await page.evaluate(OVERFLOW) == 0
    thread = page.locator("#thread")
    assert await thread.evaluate("t => t.scrollWidth - t.clientWidth") == 0
    for box in [block.locator("pre"), reply.locator(".table-scroll")]:
        assert await box.evaluate("b => b.scrollWidth > b.clientWidth"), box


async def clipboard(page: Page) -> str:
    text: str = await page.evaluate("navigator.clipboard.readText()")
    return text


async def test_copy_buttons_copy_the_message_as_written_and_the_code_of_a_block(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=server.base_url
    )
    await show_reply(page, server, "copier", REPLY, asked="copy *this*")

    reply = page.locator(".message.assistant")
    button = reply.get_by_role("button", name="Copy text")
    await button.click()
    await expect(button).to_have_attribute("data-state", "copied")
    assert await clipboard(page) == REPLY

    code = reply.locator(".code-block").get_by_role("button", name="Copy code")
    await code.click()
    assert await clipboard(page) == CODE

    await page.locator(".message.user").get_by_role("button", name="Copy text").click()
    assert await clipboard(page) == "copy *this*"
    # The buttons' labels are no part of the text a reader selects.
    await expect(page.locator(".message.user")).to_have_text("copy *this*")


async def test_copy_without_the_clipboard_api_falls_back_without_an_error(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=server.base_url
    )
    read = "navigator.clipboard.readText.bind(navigator.clipboard)"
    # As on a page served over plain http at a LAN address: no navigator.clipboard.
    await page.add_init_script(
        f"window.__readClipboard = {read};"
        "Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined });"
    )
    await show_reply(page, server, "insecure", "Some **text** to keep.")
    button = page.locator(".message.assistant").get_by_role("button", name="Copy text")
    await button.click()
    await expect(button).to_have_attribute("data-state", "copied")
    assert await page.evaluate("window.__readClipboard()") == "Some **text** to keep."


async def test_a_reply_streaming_in_shows_its_markdown_even_cut_off_in_a_code_block(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "streamer")
    headers = {"Authorization": f"Bearer {await dev_token(server, 'streamer')}"}
    async with server.client(headers=headers) as client:
        created = await client.post("/api/streamer/conversations", json={})
        created.raise_for_status()
    conversation_id = created.json()["id"]
    deltas = ["Steps:\n\n- one\n- tw", "o\n\n``", "`sh\necho one\n", "echo t", "wo\n"]
    events = [("conversation", {"conversation_id": conversation_id})]
    events += [("delta", {"text": text}) for text in deltas]
    events.append(("done", {"stopped": False}))
    body = "".join(f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events)

    async def stream(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    # The stream is this test's (the fence never closes); after it the page would show the
    # stored thread, which is held back so what shows is what streamed in.
    stored = asyncio.Event()

    async def hold(route: Route) -> None:
        await stored.wait()
        await route.continue_()

    await page.route("**/chat/stream", stream)
    await page.route("**/messages?*", hold)
    await page.get_by_label("Message", exact=True).fill("how?")
    await page.get_by_label("Message", exact=True).press("Enter")

    reply = page.locator(".message.assistant .markdown")
    await expect(reply.locator("li")).to_have_text(["one", "two"])
    await expect(reply.locator(".code-language")).to_have_text("sh")
    await expect(reply.locator("pre > code")).to_have_text("echo one\necho two")
    await expect(page.locator(".message.assistant")).not_to_have_class("streaming")
    stored.set()
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
