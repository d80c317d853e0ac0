"""Appends messages concurrently from a separate process (run by test_concurrency.py).

Usage: python -m tests.store.append_worker URL USER CONVERSATION LABEL COUNT
Waits for a line on stdin before starting, so two workers start together.
"""

import asyncio
import sys

from chatledger.domain import ChatMessage
from chatledger.store import SQLAlchemyStore


async def main(url: str, user: str, conversation: str, label: str, count: int) -> None:
    store = SQLAlchemyStore.from_url(url)
    try:
        sys.stdin.readline()
        await asyncio.gather(
            *(
                store.append(user, conversation, [ChatMessage.user(f"{label}-{n}")])
                for n in range(count)
            )
        )
    finally:
        await store.close()


if __name__ == "__main__":
    url, user, conversation, label, count = sys.argv[1:]
    asyncio.run(main(url, user, conversation, label, int(count)))
