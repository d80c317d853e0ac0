"""The page around the messages, in Debian's Chromium against real `chatledger serve --dev`
processes: search, the grouped conversation list and its row menu, the archived view, the
theme, sign-in shared by tabs, keyboard shortcuts, touch sizes and example prompts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from tests.browser.conftest import OpenPage
from tests.browser.harness import DESKTOP, PHONE, dev_token, send, sign_in
from tests.process.servers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

XSS = "<img src=x onerror=window.__xss=1>"


@asynccontextmanager
async def api(server: ServerProcess, user_id: str) -> AsyncIterator[httpx.AsyncClient]:
    """The user's API, as another client of the same server sees it."""
    headers = {"Authorization": f"Bearer {await dev_token(server, user_id)}"}
    async with server.client(headers=headers) as client:
        client.base_url = httpx.URL(f"{server.base_url}/api/{user_id}/")
        yield client


async def listed(server: ServerProcess, user_id: str, **query: str) -> list[dict[str, Any]]:
    async with api(server, user_id) as client:
        response = await client.get("conversations", params=query)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items


def watch(page: Page, errors: list[str]) -> Page:
    """Record what the conftest's open_page records, for a page it did not open."""
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.text.startswith("Failed to load resource")
            and errors.append(m.text)
        ),
    )
    return page


async def show_list(page: Page) -> None:
    """On a narrow screen the list is behind the Chats button."""
    toggle = page.get_by_role("button", name="Chats")
    if await toggle.is_visible() and await toggle.get_attribute("aria-expanded") == "false":
        await toggle.click()


def group(page: Page, name: str) -> Any:
    return page.locator(f'.conversation-group[data-group="{name}"] .conversation-title')


# -- search --------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1440x900", "390x844"])
async def test_a_search_hit_opens_its_conversation_at_the_message_with_the_word_marked(
    open_page: OpenPage, server: ServerProcess, viewport: ViewportSize
) -> None:
    user = f"finder-{viewport['width']}"
    # The word is in the first turn of a conversation longer than the page of history the
    # page loads (50 messages: 4 a turn), so opening the hit loads back to it.
    async with api(server, user) as client:
        first = await client.post("chat", json={"message": "add buy a pineapple"})
        first.raise_for_status()
        old = first.json()["conversation_id"]
        for n in range(13):
            turn = await client.post("chat", json={"conversation_id": old, "message": f"add {n}"})
            turn.raise_for_status()
        (await client.post("chat", json={"message": "add call mom"})).raise_for_status()

    page = await open_page(viewport=viewport)
    await sign_in(page, server.base_url, user)
    await show_list(page)
    await page.get_by_label("Search conversations").fill("pineap*")
    user_hit = page.locator('#search-results li[data-role="user"] .search-hit')
    await expect(user_hit.locator("mark")).to_have_text("pineapple")
    await expect(user_hit.locator(".snippet")).to_have_text("add buy a pineapple")
    await expect(page.locator("#conversation-list")).to_be_hidden()

    await user_hit.click()
    await expect(page.locator("#title")).to_have_text("add buy a pineapple")
    found = page.locator(".message.found")
    await expect(found).to_have_count(1)
    await expect(found.locator("mark")).to_have_text(["pineapple"])
    await expect(found).to_have_class("message user found")
    await expect(found).to_be_in_viewport()
    assert await page.locator(".message.user").count() > 13  # loaded back to it


async def test_search_snippets_stay_text_and_a_query_of_no_words_gets_a_quiet_note(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
    await sign_in(page, server.base_url, "snooper")
    await send(page, f"add zebra {XSS}")
    box = page.get_by_label("Search conversations")
    await box.fill("zebra")
    hit = page.locator("#search-results .search-hit").first
    await expect(hit.locator(".snippet")).to_contain_text(XSS)
    await expect(hit.locator("mark")).to_have_text("zebra")
    assert await page.locator("img").count() == 0
    assert await page.evaluate("window.__xss") is None

    async with page.expect_response("**/search?*") as answered:
        await box.fill("*")
    assert (await answered.value).status == 422
    await expect(page.locator("#search-note")).to_have_text("the query has no words to search for")
    await expect(page.locator("#search-results li")).to_have_count(0)
    await expect(page.get_by_role("alert")).to_be_hidden()  # a note, not the error banner

    await box.press("Escape")  # clears the box: the list is back
    await expect(box).to_have_value("")
    await expect(page.locator("#conversation-list .conversation-title")).to_have_text(
        [f"add zebra {XSS}"]
    )


# -- the grouped list ----------------------------------------------------------------------

GROUPING = """async ([now, cases]) => {
    const { groupOf, relativeTime } = await import("/static/conversations.js");
    const at = new Date(now);
    return cases.map(([updated, pinned]) => [
        groupOf(new Date(updated), { pinned, now: at }),
        relativeTime(new Date(updated), at),
    ]);
}"""


async def test_conversations_are_grouped_by_the_day_they_were_updated_in_the_browsers_zone(
    browser: Browser, server: ServerProcess
) -> None:
    errors: list[str] = []
    context = await browser.new_context(timezone_id="America/New_York", locale="en-US")
    try:
        page = watch(await context.new_page(), errors)
        await page.goto(server.base_url)
        now = "2026-03-10T16:00:00Z"  # noon in New York, two days after DST began
        cases = [
            ("2026-03-10T15:55:00Z", False),
            ("2026-03-10T04:30:00Z", False),  # 00:30 in New York
            ("2026-03-10T03:30:00Z", False),  # 23:30 the day before, though the 10th in UTC
            ("2026-03-09T03:59:00Z", False),  # the 8th: two days ago
            ("2026-03-03T05:00:00Z", False),  # the first minute of seven days ago
            ("2026-03-03T04:59:00Z", False),  # the minute before it
            ("2026-03-11T09:00:00Z", False),  # another clock ahead of this one
            ("2025-01-01T12:00:00Z", True),
        ]
        assert await page.evaluate(GROUPING, [now, cases]) == [
            ["Today", "5 min. ago"],
            ["Today", "11 hr. ago"],
            ["Yesterday", "yesterday"],
            ["Previous 7 days", "2 days ago"],
            ["Previous 7 days", "last wk."],
            ["Older", "last wk."],
            ["Today", "now"],
            ["Pinned", "last yr."],
        ]
    finally:
        await context.close()
    assert errors == []


async def test_a_new_conversation_is_listed_under_today_with_its_time(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
    await sign_in(page, server.base_url, "today")
    await send(page, "add feed the cat")
    await expect(group(page, "Today")).to_have_text(["add feed the cat"])
    [stored] = await listed(server, "today")
    time = page.locator(".conversation time")
    await expect(time).to_have_attribute("datetime", stored["updated_at"])
    await expect(time).to_have_text("now")
    assert await time.get_attribute("title")  # the absolute time, as a tooltip


async def test_pinning_from_the_row_menu_by_keyboard_lists_it_first_after_a_reload(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
    await sign_in(page, server.base_url, "pinner")
    await send(page, "add first")
    await page.get_by_role("button", name="New conversation").click()
    await send(page, "add second")
    await expect(group(page, "Today")).to_have_text(["add second", "add first"])

    options = page.get_by_role("button", name="Options for add first")
    await options.focus()
    await options.press("Enter")
    menu = page.get_by_role("menu")
    await expect(menu.get_by_role("menuitem")).to_have_text(["Pin", "Rename", "Archive", "Delete"])
    await expect(menu.get_by_role("menuitem", name="Pin")).to_be_focused()
    await page.keyboard.press("ArrowUp")  # wraps round to the last
    await expect(menu.get_by_role("menuitem", name="Delete")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(menu).to_have_count(0)
    await expect(options).to_be_focused()

    await options.press("Enter")
    await page.keyboard.press("Enter")  # Pin
    await expect(group(page, "Pinned")).to_have_text(["add first"])
    await expect(options).to_be_focused()  # its row drawn anew, the keyboard's place kept
    await expect(group(page, "Today")).to_have_text(["add second"])
    await page.reload()
    await expect(group(page, "Pinned")).to_have_text(["add first"])
    assert [c["pinned"] for c in await listed(server, "pinner")] == [True, False]

    await page.get_by_role("button", name="Options for add first").click()
    await page.get_by_role("menuitem", name="Unpin").click()
    await expect(group(page, "Today")).to_have_text(["add second", "add first"])


async def test_archiving_moves_a_conversation_to_the_archived_view_and_back(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
    await sign_in(page, server.base_url, "archivist")
    await send(page, "add old stuff")
    await page.get_by_role("button", name="New conversation").click()
    await send(page, "add new stuff")
    titles = page.locator("#conversation-list .conversation-title")

    await page.get_by_role("button", name="Options for add old stuff").click()
    await page.get_by_role("menuitem", name="Archive").click()
    await expect(titles).to_have_text(["add new stuff"])
    assert [c["title"] for c in await listed(server, "archivist")] == ["add new stuff"]
    assert [c["title"] for c in await listed(server, "archivist", archived="true")] == [
        "add old stuff"
    ]

    archived = page.get_by_role("button", name="Archived")
    await archived.click()
    await expect(archived).to_have_attribute("aria-pressed", "true")
    await expect(titles).to_have_text(["add old stuff"])
    await page.get_by_role("button", name="Options for add old stuff").click()
    await page.get_by_role("menuitem", name="Unarchive").click()
    await expect(page.locator("#conversation-list")).to_have_text("No archived conversations.")
    await archived.click()
    await expect(titles).to_have_text(["add new stuff", "add old stuff"])
    assert await listed(server, "archivist", archived="true") == []


# -- theme, tabs, keys ---------------------------------------------------------------------


async def test_the_theme_toggle_sets_data_theme_and_is_remembered(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
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


async def test_signing_out_in_one_tab_signs_out_the_other_and_signing_in_reaches_it(
    open_page: OpenPage, server: ServerProcess
) -> None:
    errors: list[str] = []
    first = await open_page(viewport=DESKTOP)
    await sign_in(first, server.base_url, "twotabs")
    second = watch(await first.context.new_page(), errors)
    await second.goto(server.base_url)
    await expect(second.locator("#user")).to_have_text("twotabs")  # signed in already

    await first.get_by_role("button", name="Sign out").click()
    await expect(second.locator("#signin-note")).to_have_text("You signed out in another tab.")
    await expect(second.locator("#app")).to_be_hidden()

    await sign_in(second, server.base_url, "twotabs-again")
    await expect(first.locator("#user")).to_have_text("twotabs-again")
    await expect(first.get_by_label("Message", exact=True)).to_be_visible()
    assert errors == []


async def test_keyboard_shortcuts_start_a_chat_and_focus_the_composer(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
    await sign_in(page, server.base_url, "typist")
    composer = page.get_by_label("Message", exact=True)
    await expect(composer).to_be_focused()  # after sign-in
    await composer.fill("add practise scales")
    await page.get_by_role("button", name="Send").click()
    await expect(composer).to_be_focused()  # after a send with the button
    await expect(page.locator(".message.assistant")).to_have_count(1)

    await page.get_by_label("Search conversations").focus()
    await page.keyboard.press("Shift+Escape")
    await expect(composer).to_be_focused()

    await page.get_by_role("button", name="Rename").focus()
    await page.keyboard.press("Control+Shift+O")
    await expect(page.locator("#title")).to_have_text("New conversation")
    await expect(page.locator(".message")).to_have_count(0)
    await expect(composer).to_be_focused()


async def test_escape_stops_a_running_reply(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
    await sign_in(page, slow_server.base_url, "impatient")
    await page.get_by_label("Message", exact=True).fill("tell me a long story")
    await page.get_by_label("Message", exact=True).press("Enter")
    reply = page.locator(".message.assistant")
    await expect(reply).to_contain_text("Part 2 of")
    await expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    await page.keyboard.press("Escape")
    await expect(reply.locator(".mark")).to_have_text("stopped")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()


async def test_list_menu_and_composer_buttons_are_touch_sized_on_a_phone(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=PHONE)
    await sign_in(page, server.base_url, "thumbs")
    await send(page, "add water the ferns")
    heights = "els => els.map(e => [e.id || e.getAttribute('role') || e.className, e.offsetHeight])"
    composer = await page.locator(".composer button:visible").evaluate_all(heights)
    await show_list(page)
    await page.get_by_role("button", name="Options for add water the ferns").click()
    listed_buttons = await page.locator(".conversations button:visible").evaluate_all(heights)
    names = [name for name, _ in listed_buttons]
    assert {"new-conversation", "show-archived", "conversation", "row-menu-button"} <= set(names)
    assert names.count("menuitem") == 4  # Pin, Rename, Archive, Delete
    short = [(name, px) for name, px in [*composer, *listed_buttons] if px < 44]
    assert short == []
    assert [name for name, _ in composer] == ["send"]  # Stop shows only while a reply runs
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert await page.evaluate(overflow) == 0


# -- an empty conversation -----------------------------------------------------------------


async def test_example_prompts_send_and_the_rules_agent_answers_each(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=DESKTOP)
    await sign_in(page, server.base_url, "newcomer")
    examples = page.locator("#examples .example")
    await expect(examples).to_have_text(
        [
            "Add a task to buy milk",
            "What are my tasks?",
            "Mark buy milk as done",
            "What can you do?",
        ]
    )
    replies = [
        'Added task 1: "buy milk".',
        "#1 buy milk",
        'Marked task 1 "buy milk" as done.',
        "I keep your task list.",
    ]
    for n, reply in enumerate(replies):
        await examples.nth(n).click()
        await expect(page.locator(".message.user")).to_have_count(1)
        await expect(page.locator("#examples")).to_be_hidden()
        await expect(page.locator(".message.assistant")).to_contain_text(reply)
        await expect(page.get_by_role("button", name="Send")).to_be_visible()
        await expect(page.get_by_label("Message", exact=True)).to_be_focused()
        await page.get_by_role("button", name="New conversation").click()
        await expect(page.locator("#examples")).to_be_visible()
    await expect(page.locator("#task-list .task[data-completed='true']")).to_have_count(1)
