"""A chat server whose agent writes slowly, for the browser test that stops a reply.

    python tests/browser/slow_server.py --host 127.0.0.1 --port 8123 --database-url sqlite:///x.db

The rules agent answers at once, leaving nothing to stop. This one tells `STORY` a word at a
time, pausing between words as a model would, so a reply is in flight long enough to be
stopped. Dev sign-in is on and the JWT secret is random, as with `chatledger serve --dev`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Final

import uvicorn

from chatledger.agents import AgentEvent, AssistantMessage, TextDelta, Toolbox
from chatledger.api import create_app
from chatledger.domain import ChatMessage
from chatledger.settings import Settings
from chatledger.store import SQLAlchemyStore

STORY: Final = " ".join(f"Part {n} of a long story that goes on and on." for n in range(1, 41))
WORD_EVERY: Final = 0.05  # seconds: the whole story takes about 20 s, never reached


class SlowAgent:
    """Says `STORY`, one word per delta, `WORD_EVERY` seconds apart."""

    async def run(
        self, messages: Sequence[ChatMessage], toolbox: Toolbox
    ) -> AsyncIterator[AgentEvent]:
        for word in STORY.split(" "):
            await asyncio.sleep(WORD_EVERY)
            yield TextDelta(word + " ")
        yield AssistantMessage(STORY)

    async def summarize(self, messages: Sequence[ChatMessage], previous: str | None) -> str:
        return previous or ""


async def migrate(database_url: str) -> None:
    store = SQLAlchemyStore.from_url(database_url)
    try:
        await store.migrate()
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    options = parser.parse_args()
    settings = Settings(
        database_url=options.database_url,
        jwt_secret=secrets.token_urlsafe(32),
        stop_poll_interval=0.05,
        agent_timeout=30,
    )
    asyncio.run(migrate(settings.database_url))
    app = create_app(settings, agent=SlowAgent(), dev_login=True)
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
