"""The chat page in Debian's Chromium, against real `chatledger serve --dev` processes."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest
from playwright.async_api import Browser, Route, expect

from tests.browser.conftest import OpenPage
from tests.browser.harness import PHONE, begin_turn, dev_token, send, sign_in, stored_thread
from tests.browser.screenshot import SHOTS, capture_all
from tests.browser.slow_server import STORY
from tests.process.servers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

XSS = "<img src=x onerror=window.__xss=1>"


async def test_a_turn_streams_in_with_its_tool_badge_and_the_task_appears(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "streamer")
    # After a turn the page reads back the stored thread; held back, what shows until then
    # is what the stream brought.
    stored = asyncio.Event()

    async def hold(route: Route) -> None:
        await stored.wait()
        await route.continue_()

    await page.route("**/messages?*", hold)
    async with page.expect_response(lambda r: r.url.endswith("/chat/stream")) as streamed:
        await begin_turn(page, "add buy milk")
    response = await streamed.value
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.request.headers["idempotency-key"]

    reply = page.locator(".message.assistant")
    await expect(reply).to_have_text('Added task 1: "buy milk".')
    badge = page.locator("details.tool")
    await expect(badge.locator("summary")).to_have_text("add_task ok")
    await expect(badge.locator(".tool-arguments")).not_to_be_visible()
    await badge.locator("summary").click()
    await expect(badge.locator(".tool-arguments")).to_have_text('{\n  "title": "buy milk"\n}')
    await expect(badge.locator(".tool-result")).to_contain_text('"status": "created"')

    stored.set()
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    await expect(page.locator("#task-list .task-title")).to_have_text(["buy milk"])
    # The stored thread replaced the streamed one, and the badge stayed open.
    await expect(reply).to_have_text('Added task 1: "buy milk".')
    await expect(badge.locator(".tool-result")).to_contain_text('"task_id": 1')


async def test_a_reload_keeps_the_user_signed_in_on_the_same_conversation(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "reloader")
    await send(page, "add water the plants")
    await page.reload()
    await expect(page.locator("#user")).to_have_text("reloader")
    await expect(page.locator(".message.user")).to_have_text(["add water the plants"])
    await expect(page.locator(".message.assistant")).to_have_text(
        'Added task 1: "water the plants".'
    )
    current = page.locator('.conversation[aria-current="true"]')
    await expect(current.locator(".conversation-title")).to_have_text("add water the plants")
    await expect(page.locator("#title")).to_have_text("add water the plants")
    await expect(page.locator("#task-list .task-title")).to_have_text(["water the plants"])

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#dev-signin")).to_be_visible()
    await page.reload()
    await expect(page.locator("#dev-signin")).to_be_visible()


async def test_conversations_can_be_started_renamed_and_deleted(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "organizer")
    titles = page.locator("#conversation-list .conversation-title")
    await send(page, "add eggs")
    await page.get_by_role("button", name="New conversation").click()
    await expect(page.locator("#title")).to_have_text("New conversation")
    await expect(page.locator(".message")).to_have_count(0)
    await send(page, "add bread")
    await expect(titles).to_have_text(["add bread", "add eggs"])

    await page.get_by_role("button", name="Rename").click()
    await page.get_by_label("Title").fill("Groceries")
    await page.get_by_label("Title").press("Enter")
    await expect(page.locator("#title")).to_have_text("Groceries")
    await expect(titles).to_have_text(["Groceries", "add eggs"])

    await titles.filter(has_text="add eggs").click()
    await expect(page.locator(".message.user")).to_have_text(["add eggs"])
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete").click()
    await expect(titles).to_have_text(["Groceries"])
    await expect(page.locator("#title")).to_have_text("New conversation")
    await page.reload()
    await expect(titles).to_have_text(["Groceries"])


async def test_stop_keeps_the_partial_reply_marked_as_stopped(
    open_page: OpenPage, slow_server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, slow_server.base_url, "listener")
    await begin_turn(page, "tell me a long story")
    reply = page.locator(".message.assistant")
    await expect(reply).to_contain_text("Part 2 of")  # it streams in
    await page.get_by_role("button", name="Stop").click()
    await expect(reply.locator(".mark")).to_have_text("stopped")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()

    shown = await reply.locator(".text").text_content()
    assert shown and "Part 2 of" in shown
    assert STORY.startswith(shown.strip()) and len(shown.strip()) < len(STORY)
    stored = await stored_thread(slow_server, "listener")
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[-1]["content"] == shown
    assert stored[-1]["metadata"] == {"status": "stopped"}


async def test_model_and_user_text_is_shown_as_text_never_as_html(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "mallory")
    await send(page, f"add {XSS}")
    await expect(page.locator(".message.user")).to_have_text(f"add {XSS}")
    await expect(page.locator(".message.assistant")).to_have_text(f'Added task 1: "{XSS}".')
    await expect(page.locator("#task-list .task-title")).to_have_text([XSS])
    await page.locator("details.tool summary").click()
    await expect(page.locator(".tool-arguments")).to_contain_text(XSS)
    await expect(page.locator(".conversation-title")).to_have_text([f"add {XSS}"])
    assert await page.locator("img").count() == 0
    assert await page.evaluate("window.__xss") is None


async def test_a_phone_sized_screen_has_no_horizontal_scrolling_and_can_chat(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page(viewport=PHONE)
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    await sign_in(page, server.base_url, "pocket")
    await send(page, "add call the plumber about the leaking tap in the kitchen before Saturday")
    await expect(page.locator(".message.assistant")).to_contain_text("Added task 1")
    assert await page.evaluate(overflow) == 0

    # The panels are one tap away instead of beside the chat.
    await expect(page.locator("#task-list")).not_to_be_visible()
    await page.get_by_role("button", name="Tasks", exact=True).click()
    await expect(page.locator("#task-list .task-title")).to_contain_text(["plumber"])
    assert await page.evaluate(overflow) == 0
    await page.get_by_role("button", name="Chats").click()
    await page.locator(".conversation").click()
    await expect(page.get_by_label("Message", exact=True)).to_be_visible()
    assert await page.evaluate(overflow) == 0


async def test_a_pasted_token_signs_in_too(open_page: OpenPage, server: ServerProcess) -> None:
    page = await open_page()
    await page.goto(server.base_url)
    await page.get_by_label("Token").fill(await dev_token(server, "pasted"))
    await page.locator("#token-signin").get_by_role("button", name="Sign in").click()
    await expect(page.locator("#user")).to_have_text("pasted")
    await expect(page.locator("#conversation-list")).to_have_text("No conversations yet.")


async def test_an_unknown_token_goes_back_to_sign_in(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await page.goto(server.base_url)
    session = {"token": "not-a-valid-token", "userId": "eve", "conversationId": None}
    await page.evaluate("s => localStorage.setItem('chatledger.session', s)", json.dumps(session))
    await page.reload()
    await expect(page.locator("#signin-note")).to_have_text(
        "Your session has ended. Sign in again."
    )
    await expect(page.locator("#dev-signin")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('chatledger.session')") is None


async def test_a_refused_message_shows_why_and_comes_back_to_be_edited(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "verbose")
    await page.get_by_label("Message", exact=True).fill("x" * 40_000)
    await page.get_by_label("Message", exact=True).press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("longer than")
    await expect(page.get_by_role("button", name="Retry")).to_be_hidden()
    await expect(page.get_by_label("Message", exact=True)).to_have_value("x" * 40_000)
    await expect(page.locator(".message")).to_have_count(0)


async def test_retry_after_a_lost_answer_replays_the_turn_instead_of_repeating_it(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await sign_in(page, server.base_url, "unlucky")
    keys = []

    async def lose_the_answer(route: Route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        await route.fetch()  # the server runs the turn...
        await route.abort("internetdisconnected")  # ...and its answer never arrives

    await page.route("**/chat/stream", lose_the_answer)
    await begin_turn(page, "add buy milk")
    await expect(page.get_by_role("alert")).to_contain_text("cannot be reached")
    await expect(page.locator(".message.user .mark")).to_have_text("not sent")

    await page.unroute("**/chat/stream")
    async with page.expect_request("**/chat/stream") as retried:
        await page.get_by_role("button", name="Retry").click()
    assert (await retried.value).headers["idempotency-key"] == keys[0]
    await expect(page.locator(".message.assistant")).to_have_text('Added task 1: "buy milk".')
    await expect(page.locator(".message.user")).to_have_text(["add buy milk"])
    await expect(page.locator("#task-list .task-title")).to_have_text(["buy milk"])
    assert len(await stored_thread(server, "unlucky")) == 4  # one turn, not two


async def test_the_screenshot_script_captures_the_main_screen(
    browser: Browser, server: ServerProcess, tmp_path: Path
) -> None:
    paths = await capture_all(browser, server.base_url, tmp_path)
    assert [path.name for path in paths] == [name for name, _, _ in SHOTS]
    for path, (_, viewport, _) in zip(paths, SHOTS, strict=True):
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", header[16:24]) == (viewport["width"], viewport["height"])


READ_EVENTS = """async (chunks) => {
    const { readEvents } = await import("/static/sse.js");
    const encoder = new TextEncoder();
    const body = new ReadableStream({
        start(controller) {
            for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
            controller.close();
        },
    });
    const events = [];
    for await (const event of readEvents(body)) events.push(event);
    return events;
}"""


async def test_the_event_stream_parser_reads_events_however_they_are_cut(
    open_page: OpenPage, server: ServerProcess
) -> None:
    page = await open_page()
    await page.goto(server.base_url)
    chunks = [
        ": ping\r\n\r\nid: 1\r\nevent: delta\r",  # a comment; a \r\n cut in two
        '\ndata: {"text"',
        ': "a"}\r\n\r\n',
        "event: done\ndata: line one\ndata: line two\n\n",  # \n alone; two data lines
        "event: cut\rdata: never finished",  # \r alone; the stream ends mid-event
    ]
    assert await page.evaluate(READ_EVENTS, chunks) == [
        {"type": "delta", "data": '{"text": "a"}', "id": "1"},
        {"type": "done", "data": "line one\nline two", "id": "1"},
    ]
