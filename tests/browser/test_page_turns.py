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


async def stopped_story(page: Page) -> None:
    """Begin the slow agent's long story and stop it once it runs: the conversation then
    holds one stopped reply, and takes the next turn."""
    await begin_turn(page, "tell me a long story")
    await expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    await page.get_by_role("button", name="Stop").click()
    await idle(page)


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
    await stopped_story(first)

    # A second tab of the same browser (signed in already: tabs share it), on that
    # conversation.
    second = await first.context.new_page()
    await second.goto(slow_server.base_url)
    await expect(second.locator("#user")).to_have_text("twotabs")
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


async def api_headers(server: ServerProcess, user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await dev_token(server, user_id)}"}


@pytest.mark.parametrize(
    "text", ["add \x1b[31mred\x1b[0m", "add " + "x" * 32_000], ids=["control", "too-long"]
)
async def test_an_edit_the_server_refuses_says_why_stores_nothing_and_leaves_the_page_usable(
    open_page: OpenPage, server: ServerProcess, text: str
) -> None:
    user = f"refused-edit-{len(text)}"
    page = await open_page()
    await sign_in(page, server.base_url, user)
    await send(page, "add buy milk")
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit message").fill(text)
    await page.get_by_label("Edit message").press("Enter")
    await expect(page.locator("#banner")).to_be_visible()
    await idle(page)

    stored = await stored_thread(server, user)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["add buy milk"]
    assert stored[0]["sibling_count"] == 1
    await expect(page.locator(".message.user")).to_have_text(["add buy milk"])
    # The page goes on: the next message is sent and answered.
    await send(page, "add tea")
    await expect(page.locator(".message.assistant").last).to_have_text('Added task 2: "tea".')


async def test_load_earlier_stays_on_the_shown_branch_when_the_head_moved_elsewhere(
    open_page: OpenPage, server: ServerProcess
) -> None:
    """The page shows a branch whose earlier messages are not loaded yet; meanwhile another
    tab (or client) shows another version. "Load earlier" must continue the branch shown,
    without a gap, not take the earlier messages of the branch the head is on now."""
    user = "earlier-branch"
    headers = await api_headers(server, user)
    items = [
        {"type": "message", "role": role, "content": f"{role} {n}"}
        for n in range(1, 31)
        for role in ("user", "assistant")
    ]
    async with server.client(headers=headers) as client:
        # The Conversations API takes at most 20 items a request.
        created = await client.post("/v1/conversations", json={"items": items[:20]})
        created.raise_for_status()
        conversation_id = created.json()["id"]
        for at in (20, 40):
            more = items[at : at + 20]
            added = await client.post(
                f"/v1/conversations/{conversation_id}/items", json={"items": more}
            )
            added.raise_for_status()
        conversation_id = conversation_id.removeprefix("conv_")
        base = f"/api/{user}/conversations/{conversation_id}"
        # A new version of "user 3" (seq 5): a branch of its own, seqs 61 and on.
        edited = await client.post(f"{base}/messages/5/edit", json={"message": "add tea"})
        edited.raise_for_status()
        (await client.put(f"{base}/head", json={"seq": 60})).raise_for_status()

    page = await open_page()
    await sign_in(page, server.base_url, user)
    await page.locator(".conversation").first.click()
    await expect(page.locator(".message.assistant").last).to_have_text("assistant 30")
    await expect(page.locator(".message.user").first).to_have_text("user 6")

    async with server.client(headers=headers) as client:
        (await client.put(f"{base}/head", json={"seq": 61})).raise_for_status()
    await page.get_by_role("button", name="Load earlier").click()
    await expect(page.locator(".message.user")).to_have_count(30)
    await expect(page.locator(".message.user")).to_have_text([f"user {n}" for n in range(1, 31)])


async def test_regenerate_while_another_browser_runs_a_turn_says_so_and_follows_that_turn(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    user = "busy-regenerate"
    first = await open_page()
    await sign_in(first, slow_server.base_url, user)
    await stopped_story(first)
    # Another browser (no BroadcastChannel between them), on the same conversation.
    second = await open_page()
    await sign_in(second, slow_server.base_url, user)
    await second.locator(".conversation").first.click()
    await expect(second.locator(".message.assistant")).to_have_count(1)

    await first.get_by_label("Message", exact=True).fill("another one")
    await first.get_by_label("Message", exact=True).press("Enter")
    await expect(first.locator(".message.assistant").nth(1)).to_contain_text("Part 1 of")
    await second.get_by_role("button", name="Regenerate").click()
    await expect(second.locator("#banner")).to_be_visible()
    # The refused page shows the turn that runs, and can stop it.
    await expect(second.locator(".message.assistant").last).to_contain_text("Part 2 of")
    await expect(second.get_by_role("button", name="Stop")).to_be_enabled()
    await second.get_by_role("button", name="Stop").click()
    for page in (first, second):
        await idle(page)
        await expect(page.locator(".message.user")).to_have_text(
            ["tell me a long story", "another one"]
        )
    stored = await stored_thread(slow_server, user)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert all(m["sibling_count"] == 1 for m in stored)


async def test_a_server_gone_in_the_middle_of_an_edit_leaves_the_page_usable(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, slow_server.base_url, "server-gone")
    await stopped_story(page)
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit message").fill("tell me another story")
    await page.get_by_label("Edit message").press("Enter")
    await expect(page.locator(".message.assistant").last).to_contain_text("Part 2 of")
    await slow_server.kill()

    await idle(page)
    await expect(page.locator("#banner")).to_be_visible()
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    await expect(page.get_by_label("Message", exact=True)).to_be_editable()


async def test_a_message_sent_after_showing_an_older_version_continues_that_version(
    open_page: OpenPage, server: ServerProcess
) -> None:
    user = "older-version"
    page = await open_page()
    await sign_in(page, server.base_url, user)
    await send(page, "add apples")
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit message").fill("add pears")
    await page.get_by_label("Edit message").press("Enter")
    await expect(page.locator(".message.user")).to_have_text(["add pears"])
    await idle(page)
    await page.get_by_role("button", name="Previous version").first.click()
    await expect(page.locator(".message.user")).to_have_text(["add apples"])
    await send(page, "add plums")
    await expect(page.locator(".message.user")).to_have_text(["add apples", "add plums"])
    stored = await stored_thread(server, user)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["add apples", "add plums"]
    assert stored[0]["sibling_count"] == 2


async def test_the_arrows_reach_every_one_of_eleven_versions_in_order(
    open_page: OpenPage, server: ServerProcess
) -> None:
    user = "many-versions"
    page = await open_page()
    await sign_in(page, server.base_url, user)
    await send(page, "add v0")
    base = f"/api/{user}/conversations/{(await conversation(server, user))['id']}"
    async with server.client(headers=await api_headers(server, user)) as client:
        for n in range(1, 11):
            edited = await client.post(f"{base}/messages/1/edit", json={"message": f"add v{n}"})
            edited.raise_for_status()
    await page.reload()
    shown = page.locator(".message.user")
    count = page.locator(".message-actions.user .version-count")
    await expect(shown).to_have_text(["add v10"])
    await expect(count).to_have_text(["11/11"])
    for n in range(9, -1, -1):
        await page.get_by_role("button", name="Previous version").first.click()
        await expect(shown).to_have_text([f"add v{n}"])
        await expect(count).to_have_text([f"{n + 1}/11"])
    await expect(page.get_by_role("button", name="Previous version").first).to_be_disabled()
    for n in range(1, 11):
        await page.get_by_role("button", name="Next version").first.click()
        await expect(shown).to_have_text([f"add v{n}"])
    await expect(page.get_by_role("button", name="Next version").first).to_be_disabled()


async def test_a_messages_actions_wait_while_a_reply_is_written(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    # Found by the red team: Edit stayed clickable during a reply, and its Save did nothing
    # (the page begins no turn while one runs), so the edited text was lost without a word.
    user = "edit-during-turn"
    page = await open_page()
    await sign_in(page, slow_server.base_url, user)
    await stopped_story(page)
    await page.get_by_role("button", name="Edit").click()  # open before the next turn
    await page.get_by_label("Edit message").fill("tell me a short story")

    await begin_turn(page, "and another")
    await expect(page.locator(".message.assistant").last).to_contain_text("Part 1 of")
    actions = page.locator(".message-actions button, .edit-form button[type=submit]")
    for button in await actions.all():
        await expect(button).to_be_disabled()
    await page.get_by_role("button", name="Stop").click()
    await idle(page)
    for name in ("Edit", "Regenerate"):
        await expect(page.get_by_role("button", name=name).first).to_be_enabled()
    stored = await stored_thread(slow_server, user)
    assert [m["content"] for m in stored if m["role"] == "user"] == [
        "tell me a long story",
        "and another",
    ]


async def test_an_edited_message_with_markup_shows_as_the_text_typed(
    open_page: OpenPage, server: ServerProcess
) -> None:
    hostile = '<img src=x onerror="window.pwned=1"> **not bold** [link](javascript:alert(1))'
    page = await open_page()
    await sign_in(page, server.base_url, "edit-markup")
    await send(page, "hello")
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit message").fill(hostile)
    await page.get_by_label("Edit message").press("Enter")
    await expect(page.locator(".message.user")).to_have_text([hostile])
    await idle(page)
    await page.get_by_role("button", name="Edit").click()
    await expect(page.get_by_label("Edit message")).to_have_value(hostile)
    await page.get_by_label("Edit message").press("Escape")
    user = page.locator(".message.user")
    assert await user.locator("img, a, strong, script").count() == 0
    assert await page.evaluate("window.pwned") is None


async def test_a_reload_during_an_edits_reply_shows_it_coming_on_the_new_branch(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    user = "reload-edit"
    page = await open_page()
    await sign_in(page, slow_server.base_url, user)
    await stopped_story(page)
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit message").fill("tell me another story")
    await page.get_by_label("Edit message").press("Enter")
    reply = page.locator(".message.assistant")
    await expect(reply).to_contain_text("Part 2 of")
    await page.reload()
    await expect(page.locator(".message.user")).to_have_text(["tell me another story"])
    await expect(reply).to_have_count(1)
    await expect(reply).to_contain_text("Part 4 of")
    await page.get_by_role("button", name="Stop").click()
    await idle(page)
    await expect(page.locator(".message-actions.user .version-count")).to_have_text(["2/2"])
    stored = await stored_thread(slow_server, user)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["tell me another story"]
    assert stored[-1]["metadata"] == {"status": "stopped"}


async def test_a_reply_begun_in_another_browser_shows_when_the_page_comes_back_into_view(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    here = await open_page()
    await sign_in(here, slow_server.base_url, "elsewhere")
    await begin_turn(here, "hello")  # a conversation to share; its slow reply stopped
    await expect(here.get_by_role("button", name="Stop")).to_be_enabled()
    await here.get_by_role("button", name="Stop").click()
    await idle(here)
    there = await open_page()  # another browser: no tab of this one hears of its turns
    await sign_in(there, slow_server.base_url, "elsewhere")
    await there.locator(".conversation").first.click()
    await begin_turn(there, "and now a story")
    await expect(there.locator(".message.assistant").nth(1)).to_contain_text("Part 2 of")

    await here.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    await expect(here.locator(".message.assistant").nth(1)).to_contain_text("Part 3 of")
    await here.get_by_role("button", name="Stop").click()
    await expect(there.locator(".message.assistant").nth(1).locator(".mark")).to_have_text(
        "stopped"
    )
    await idle(here)
