"""Turns on the chat page beyond sending: editing a message, regenerating a reply, moving
between their versions, and a reply that is still being written when the page is reloaded
or open in a second tab. Debian's Chromium against real `chatledger serve --dev` processes.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import OpenPage
from tests.browser.harness import PHONE, begin_turn, dev_token, send, sign_in, stored_thread
from tests.process.servers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def conversation(server: ServerProcess, user_id: str) -> dict[str, Any]:
    """The user's latest conversation as the server has it."""
    headers = {"Authorization": f"Bearer {await dev_token(server, user_id)}"}
    async with server.client(headers=headers) as client:
        listed = await client.get(f"/api/{user_id}/conversations")
        listed.raise_for_status()
        detail = await client.get(f"/api/{user_id}/conversations/{listed.json()['items'][0]['id']}")
        detail.raise_for_status()
        found: dict[str, Any] = detail.json()
        return found


async def idle(page: Page) -> None:
    """Wait until no turn is shown running."""
    await expect(page.get_by_role("button", name="Send")).to_be_visible()


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "phone"])
async def test_an_edit_is_a_new_version_and_the_arrows_move_between_versions(
    open_page: OpenPage, server: ServerProcess, viewport: Any
) -> None:
    user = f"editor-{'phone' if viewport else 'desktop'}"
    page = await open_page(**({"viewport": viewport} if viewport else {}))
    await sign_in(page, server.base_url, user)
    await send(page, "add buy milk")
    await page.locator(".message-actions.user").get_by_role("button", name="Edit").click()
    field = page.get_by_label("Edit message")
    await expect(field).to_have_value("add buy milk")
    await field.fill("add buy bread")
    await field.press("Enter")
    await idle(page)

    await expect(page.locator(".message.user")).to_have_text(["add buy bread"])
    await expect(page.locator(".message.assistant")).to_have_text(['Added task 2: "buy bread".'])
    versions = page.locator(".message-actions.user .version-count")
    await expect(versions).to_have_text(["2/2"])
    stored = await stored_thread(server, user)
    assert next((m["role"], m["content"]) for m in stored) == ("user", "add buy bread")
    assert (stored[0]["sibling_count"], stored[0]["sibling_index"]) == (2, 1)

    await page.get_by_role("button", name="Previous version").click()
    await expect(page.locator(".message.user")).to_have_text(["add buy milk"])
    await expect(versions).to_have_text(["1/2"])
    await expect(page.get_by_role("button", name="Previous version")).to_be_disabled()
    # The head moved for every reader, not only for this page.
    assert next(m["content"] for m in await stored_thread(server, user)) == "add buy milk"
    await page.reload()
    await expect(page.locator(".message.user")).to_have_text(["add buy milk"])

    await page.get_by_role("button", name="Next version").click()
    await expect(page.locator(".message.user")).to_have_text(["add buy bread"])
    await expect(versions).to_have_text(["2/2"])


async def test_cancelling_an_edit_changes_nothing(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "hesitant")
    await send(page, "add water the plants")
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit message").fill("add something else")
    await page.get_by_label("Edit message").press("Escape")
    await expect(page.locator(".message.user")).to_have_text(["add water the plants"])
    assert next(m["content"] for m in await stored_thread(server, "hesitant")) == (
        "add water the plants"
    )
    assert (await stored_thread(server, "hesitant"))[0]["sibling_count"] == 1


async def test_regenerate_writes_a_new_reply_and_keeps_the_old_one_as_a_version(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "regenerator")
    await send(page, "add call mom")
    await expect(page.locator(".message.assistant")).to_have_text(['Added task 1: "call mom".'])
    await page.get_by_role("button", name="Regenerate").click()
    await idle(page)
    # The rules agent runs the tool again: the new reply is a second task.
    await expect(page.locator(".message.assistant")).to_have_text(['Added task 2: "call mom".'])
    versions = page.locator(".message-actions.assistant .version-count")
    await expect(versions).to_have_text(["2/2"])
    await expect(page.locator(".message.user")).to_have_count(1)

    await page.get_by_role("button", name="Previous version").click()
    await expect(page.locator(".message.assistant")).to_have_text(['Added task 1: "call mom".'])
    await expect(versions).to_have_text(["1/2"])
    stored = await stored_thread(server, "regenerator")
    assert stored[-1]["content"] == 'Added task 1: "call mom".'
    assert [m["content"] for m in stored if m["role"] == "user"] == ["add call mom"]


async def test_a_reload_during_a_reply_shows_it_still_coming_and_stop_still_works(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, slow_server.base_url, "reloader")
    await begin_turn(page, "tell me a long story")
    reply = page.locator(".message.assistant")
    await expect(reply).to_contain_text("Part 2 of")
    await page.reload()

    # The partial reply is back, still growing, with Stop.
    await expect(page.locator(".message.user")).to_have_text(["tell me a long story"])
    await expect(reply).to_contain_text("Part 2 of")
    await expect(reply).to_have_count(1)
    await expect(reply).to_contain_text("Part 4 of")
    stop = page.get_by_role("button", name="Stop")
    await expect(stop).to_be_enabled()
    await stop.click()
    await expect(reply.locator(".mark")).to_have_text("stopped")
    await idle(page)
    assert (await conversation(slow_server, "reloader"))["running"] is False

    # The conversation is free: the next message is taken at once, not refused as busy.
    await begin_turn(page, "and another")
    await expect(page.locator(".message.user")).to_have_count(2)
    await expect(page.get_by_role("button", name="Stop")).to_be_visible()
    await expect(reply.nth(1)).to_contain_text("Part 1 of")
    await page.get_by_role("button", name="Stop").click()
    await idle(page)
    stored = await stored_thread(slow_server, "reloader")
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [m["metadata"].get("status") for m in stored[1::2]] == ["stopped", "stopped"]


async def test_a_second_tab_on_the_conversation_shows_the_reply_as_it_is_written(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    first = await open_page()
    await sign_in(first, slow_server.base_url, "twotabs")
    await begin_turn(first, "tell me a long story")
    await expect(first.get_by_role("button", name="Stop")).to_be_enabled()
    await first.get_by_role("button", name="Stop").click()
    await idle(first)

    # A second tab of the same browser, signed in as the same user, on that conversation.
    second = await first.context.new_page()
    await sign_in(second, slow_server.base_url, "twotabs")
    await second.locator(".conversation").first.click()
    await expect(second.locator(".message.assistant")).to_have_count(1)
    await idle(second)

    await begin_turn(first, "another one")
    latest = second.locator(".message.assistant").nth(1)
    await expect(latest).to_contain_text("Part 2 of")
    await expect(second.locator(".message.user").nth(1)).to_have_text("another one")
    # Either tab stops it; both end with the same stored, stopped reply.
    await second.get_by_role("button", name="Stop").click()
    for page in (first, second):
        await expect(page.locator(".message.assistant").nth(1).locator(".mark")).to_have_text(
            "stopped"
        )
        await idle(page)
    texts = [
        await page.locator(".message.assistant .text").nth(1).text_content()
        for page in (first, second)
    ]
    stored = await stored_thread(slow_server, "twotabs")
    assert texts == [stored[-1]["content"]] * 2
