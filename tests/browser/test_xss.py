"""Hostile model replies (xss_corpus.py) shown by the page: nothing in them may run.

Each reply is stored as the assistant's message through the `/v1` Conversations API, which
takes items of any role, and the page is opened on that conversation. The page must then
show the reply without running a script, opening a dialog or logging an error, and what the
reply became may hold no element that loads or runs anything, no `on*` attribute and no
link but to http(s) or mailto.

Scores. The page before the markdown renderer, which showed replies as plain text: CORPUS
51/51, FOUND_LATER 4/4. The renderer's first draft: CORPUS 51/51, FOUND_LATER 2/4 (a
60,000-deep emphasis bomb and 80,000 line breaks overflowed the stack). The renderer as
committed: CORPUS 51/51, FOUND_LATER 4/4.
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Dialog

from tests.browser.conftest import OpenPage
from tests.browser.harness import show_reply
from tests.browser.xss_corpus import CORPUS, FOUND_LATER
from tests.process.servers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

FORBIDDEN = "script, iframe, frame, img, svg, math, object, embed, style, link, meta, base, form"
# What the page made of the replies: everything in the thread that breaks the rules.
BROKEN_RULES = """(thread) => {
    const found = [];
    for (const element of thread.querySelectorAll("*")) {
        for (const { name } of element.attributes) {
            if (/^on/i.test(name) || name === "style" || name === "srcdoc")
                found.push(`${element.tagName} ${name}`);
        }
        if (element.matches(FORBIDDEN)) found.push(element.tagName);
        // Written out in full: a relative address would take the page's own scheme.
        const href = element.getAttribute("href");
        const written = /^(https?:[/][/]|mailto:)/i.test(href ?? "");
        const scheme = ["http:", "https:", "mailto:"].includes(element.protocol);
        if (element.tagName === "A" && !(written && scheme)) found.push(`A href=${href}`);
    }
    return found;
}""".replace("FORBIDDEN", json.dumps(FORBIDDEN))


async def check_harmless(open_page: OpenPage, server: ServerProcess, name: str, reply: str) -> None:
    page = await open_page()
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    await show_reply(page, server, f"xss-{name}", reply)
    # Handlers that wait for the pointer, and links, are given their chance.
    await page.locator(".message.assistant").hover()
    assert await page.evaluate("() => window.__pwned") is None
    assert dialogs == []
    assert await page.locator("#thread").evaluate(BROKEN_RULES) == []
    assert await page.evaluate("document.body.querySelectorAll('img, iframe, script').length") == 0


@pytest.mark.parametrize(("name", "reply"), CORPUS.items(), ids=CORPUS.keys())
async def test_a_hostile_reply_is_harmless(
    open_page: OpenPage, server: ServerProcess, name: str, reply: str
) -> None:
    await check_harmless(open_page, server, name, reply)


@pytest.mark.parametrize(("name", "reply"), FOUND_LATER.items(), ids=FOUND_LATER.keys())
async def test_a_hostile_reply_found_later_is_harmless(
    open_page: OpenPage, server: ServerProcess, name: str, reply: str
) -> None:
    await check_harmless(open_page, server, name, reply)
