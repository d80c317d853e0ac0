"""`ChatLedgerSession`: the OpenAI Agents SDK's `Session`, kept in chatledger's store.

    session = ChatLedgerSession(store, user_id="alice")  # instead of SQLiteSession(...)
    result = await Runner.run(agent, "Add milk", session=session)

A session is one conversation of one user: every item the SDK adds is a message of it
(see `chatledger.integrations.items` for the mapping), so the same conversation reads
through the chat API, the web page and the context builder, and a conversation started
by the chat API can be continued through a session.

Nothing is ever deleted: `pop_item` moves the conversation's head back one message and
`clear_session` moves it before the first, as an edit does; what was popped or cleared
stays in the conversation, on a branch the head no longer reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final, TypeVar, cast

from chatledger.integrations.items import item_of, items_of, messages_of

if TYPE_CHECKING:
    from agents import SessionSettings, TResponseInputItem

    from chatledger.domain import ChatMessage
    from chatledger.store import SQLAlchemyStore

__all__ = ["ChatLedgerSession"]

_T = TypeVar("_T")
# A limit no branch reaches (the largest a PostgreSQL LIMIT parameter takes).
_WHOLE_BRANCH: Final = 2**31 - 1


async def _outlive_cancellation(awaitable: Awaitable[_T]) -> _T:
    """Wait for a write's outcome even if the caller is cancelled meanwhile, then raise
    the cancellation: as the SDK's own sessions do, so a cancelled run never leaves the
    session in a state its caller cannot know."""
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as error:
            cancelled = cancelled or error
    result = task.result() if cancelled is None else None
    if cancelled is not None:
        task.exception()  # retrieved, so it is not reported as never retrieved
        raise cancelled
    return cast(_T, result)


class ChatLedgerSession:
    """An Agents SDK `Session` on a chatledger store, for one user's conversation.

    Args:
        store: the store (SQLite or PostgreSQL).
        user_id: whose conversation it is.
        conversation_id: an existing conversation of `user_id` to continue, or None to
            create one on first use.
        session_settings: the SDK's `SessionSettings`; its `limit` is what `get_items`
            returns when called without one.

    Attributes:
        session_id: the conversation's id; empty until a new one is created on first use.
    """

    def __init__(
        self,
        store: SQLAlchemyStore,
        user_id: str,
        conversation_id: str | None = None,
        *,
        session_settings: SessionSettings | None = None,
    ) -> None:
        if session_settings is None:
            from agents import SessionSettings

            session_settings = SessionSettings()
        self.session_settings: SessionSettings | None = session_settings
        self.session_id = conversation_id or ""
        self._store = store
        self._user_id = user_id
        self._checked = False
        self._creating: asyncio.Lock | None = None

    async def _conversation(self) -> str | None:
        """The conversation's id, checked once to be the user's; None while there is none
        yet (`add_items` creates it)."""
        if self._checked:
            return self.session_id
        if self._creating is None:
            self._creating = asyncio.Lock()
        async with self._creating:
            if not self._checked:
                if not self.session_id:
                    return None
                await self._store.get_conversation(self._user_id, self.session_id)
                self._checked = True
        return self.session_id

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest `limit` items of the conversation's current branch, oldest first.

        Args:
            limit: how many; None for the session settings' limit (None there: all).
                Zero gives none; a negative limit gives all, as `SQLiteSession` does.

        Raises:
            NotFoundError: the conversation is not the user's (or not there).
        """
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        conversation_id = await self._conversation()
        if conversation_id is None or limit == 0:
            return []
        # One read, so the items are one consistent snapshot of the branch.
        wanted = _WHOLE_BRANCH if limit is None or limit < 0 else min(limit, _WHOLE_BRANCH)
        messages = await self._store.history(self._user_id, conversation_id, limit=wanted)
        # A message chatledger wrote with several tool calls reads as several items.
        return cast("list[TResponseInputItem]", items_of(messages)[-wanted:])

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append `items` to the conversation, all or none, in one transaction.

        Raises:
            ValidationError: an item is not a JSON object of storable text, has no type,
                or is too large (`TooLargeError`); nothing is stored.
            NotFoundError: the conversation is not the user's.
            ConflictError: `conversation_busy`, a chat turn is running in it.
        """
        messages = messages_of(items)
        if not messages:
            return
        await _outlive_cancellation(self._append(messages))

    async def _append(self, messages: list[ChatMessage]) -> None:
        conversation_id = await self._conversation()
        if conversation_id is not None:
            await self._store.append(self._user_id, conversation_id, messages)
            return
        assert self._creating is not None
        async with self._creating:
            if self._checked:  # created meanwhile by another call
                await self._store.append(self._user_id, self.session_id, messages)
                return
            # Created with its first items, all or none: a batch the store refuses leaves
            # no empty conversation behind.
            async with self._store.transaction() as store:
                created = await store.create_conversation(self._user_id)
                await store.append(self._user_id, created.id, messages)
            self.session_id, self._checked = created.id, True

    async def pop_item(self) -> TResponseInputItem | None:
        """Take back the newest item: the head moves to the message before it, and the item
        is returned (None when the branch is empty). The message stays in the
        conversation, on a branch the head no longer reads.

        A message chatledger wrote itself that reads as several items (text and tool
        calls) is taken back whole; the last of its items is returned.
        """
        conversation_id = await self._conversation()
        if conversation_id is None:
            return None
        popped = await _outlive_cancellation(self._store.pop_head(self._user_id, conversation_id))
        if popped is None:
            return None
        return cast("TResponseInputItem", item_of(popped)[-1])

    async def clear_session(self) -> None:
        """Start the conversation afresh: the head moves before its first message. Every
        message stays, on a branch the head no longer reads."""
        conversation_id = await self._conversation()
        if conversation_id is None:
            return
        await _outlive_cancellation(self._store.rewind(self._user_id, conversation_id, to_seq=None))
