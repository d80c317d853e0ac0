"""Servers and a browser for the browser tests and the screenshot script.

The browser is Debian's Chromium at /usr/bin/chromium (`make chromium` installs it), run
headless by Playwright; a browser is never downloaded. Servers are real processes on
127.0.0.1, each in a session of its own (see tests/process/servers.py), writing their
output to a log file in their directory.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from tests.process.servers import ServerProcess, child_env, free_port

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
# The sizes issue 15 names: a laptop, and a phone.
DESKTOP: Final = ViewportSize(width=1440, height=900)
PHONE: Final = ViewportSize(width=390, height=844)
SLOW_SERVER: Final = Path(__file__).with_name("slow_server.py")


async def start(args: Sequence[str], *, directory: Path) -> ServerProcess:
    """`python ARGS --host 127.0.0.1 --port N --database-url <SQLite in directory>`, ready."""
    port = free_port()
    log_path = directory / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{directory / 'chatledger.db'}",
            cwd=directory,
            env=child_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(process, port)
    try:
        await server.wait_ready()
    except AssertionError as error:
        await server.stop()
        raise AssertionError(f"{error}{log_path.read_text(errors='replace')}") from None
    return server


async def serve_rules(directory: Path) -> ServerProcess:
    """`chatledger serve --dev` with the rules agent."""
    return await start(
        ["-m", "chatledger", "serve", "--dev", "--agent", "rules"], directory=directory
    )


async def serve_slow(directory: Path) -> ServerProcess:
    """The server of slow_server.py: its agent writes a long reply slowly."""
    return await start([str(SLOW_SERVER)], directory=directory)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(page: Page, base_url: str, user_id: str) -> None:
    """Open the page and sign in as `user_id` with dev sign-in."""
    await page.goto(base_url)
    await page.get_by_label("User id").fill(user_id)
    await page.locator("#dev-signin").get_by_role("button", name="Sign in").click()
    await expect(page.locator("#user")).to_have_text(user_id)


async def begin_turn(page: Page, text: str) -> None:
    """Send `text`, not waiting for the turn to end."""
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")


async def send(page: Page, text: str) -> None:
    """Send `text` and wait until the turn is over (the page then shows the stored thread)."""
    sent = await page.locator(".message.user").count()
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")
    await expect(page.locator(".message.user")).to_have_count(sent + 1)
    await expect(page.get_by_role("button", name="Send")).to_be_visible()


async def dev_token(server: ServerProcess, user_id: str) -> str:
    async with server.client() as client:
        response = await client.post("/auth/dev-token", json={"user_id": user_id})
        response.raise_for_status()
        token: str = response.json()["token"]
        return token


async def stored_thread(server: ServerProcess, user_id: str) -> list[dict[str, Any]]:
    """The messages of the user's latest conversation as the server stored them."""
    headers = {"Authorization": f"Bearer {await dev_token(server, user_id)}"}
    async with server.client(headers=headers) as client:
        conversations = await client.get(f"/api/{user_id}/conversations")
        conversations.raise_for_status()
        latest = conversations.json()["items"][0]["id"]
        messages = await client.get(f"/api/{user_id}/conversations/{latest}/messages")
        messages.raise_for_status()
        items: list[dict[str, Any]] = messages.json()["items"]
        return items


async def show_reply(
    page: Page, server: ServerProcess, user_id: str, reply: str, *, asked: str = "Say something."
) -> None:
    """Store a conversation in which the user `asked` and the assistant said `reply`, as a
    model might have (the `/v1` Conversations API takes items of any role), and open the
    page on it, signed in as `user_id`."""
    token = await dev_token(server, user_id)
    items = [
        {"type": "message", "role": "user", "content": asked},
        {"type": "message", "role": "assistant", "content": reply},
    ]
    async with server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        response = await client.post("/v1/conversations", json={"items": items})
        response.raise_for_status()
    conversation_id = response.json()["id"].removeprefix("conv_")
    # Signed in as the page keeps it (session.js): the user in localStorage, the
    # conversation the tab shows in sessionStorage.
    await page.goto(server.base_url)
    await page.evaluate(
        """([session, conversationId]) => {
            localStorage.setItem("chatledger.session", session);
            sessionStorage.setItem("chatledger.conversation", conversationId);
        }""",
        [json.dumps({"token": token, "userId": user_id}), conversation_id],
    )
    await page.reload()
    await expect(page.locator(".message.assistant")).to_have_count(1)
