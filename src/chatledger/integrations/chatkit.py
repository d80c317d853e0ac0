"""ChatKit on chatledger: a ChatKit front end's threads, kept and answered by chatledger.

`ChatLedgerStore` is the ChatKit SDK's `Store` on chatledger's store, and
`ChatLedgerChatKitServer` its `ChatKitServer`, whose `respond` runs chatledger's own turn
(the `ChatService` that serves `/api/{user_id}/chat`: one turn at a time per
conversation, tool pairs kept whole, everything stored as it happens).

- **A thread is a conversation**, with the same id; its title is the conversation's.
- **Its items are the messages of the conversation's current branch.** An item ChatKit
  makes itself is stored as a message that keeps the item's JSON under `CHATKIT_ITEM`: a
  user message as a user message with its text (the agent reads it), hidden context as a
  system message, anything else (a widget, a client tool call ...) as it is, an assistant
  message no model reads. A message chatledger wrote (a turn's tool calls, results and
  replies, a conversation held through `/api`) reads as ChatKit items: a user message as
  a user message, an assistant message's text as an assistant message, a tool result as
  a task (the tool's name and its result, done); a tool call has no item of its own. Its
  id says where it is: `cl_12` is message 12.
- **The user is the request's**, from its token (`ChatKitContext`), never from the
  payload: another user's thread or item is "not found", as a missing one is.
- **A turn**: ChatKit hands the store the user's message (`add_thread_item`), then asks
  `respond`, which runs chatledger's turn on it: the turn stores the message as it takes
  the thread (so a message refused for a busy thread leaves nothing behind), and its
  text, tool calls and reply stream as ChatKit events. A retry answers a stored message
  again, as a regeneration does. The turn stores its messages itself; the SDK's calls to
  store the items it streamed again change nothing (`ChatKitContext.turn_items`).
  ChatKit's Stop (the stream cancelled) stops the turn.
- **Attachments** are refused: chatledger keeps no files.

Finding an item by an id chatledger did not give (one ChatKit made) reads the branch back
from its newest message until it is found: ChatKit looks up recent items (the message to
retry from, the last client tool call), which are found at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, ParamSpec, TypeVar

from chatkit import store as chatkit_store
from chatkit.actions import Action
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import AttachmentStore, Store, StoreItemType
from chatkit.types import (
    ActiveStatus,
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    AttachmentCreateParams,
    AudioInput,
    CustomTask,
    ErrorEvent,
    FeedbackKind,
    HiddenContextItem,
    InferenceOptions,
    Page,
    SDKHiddenContextItem,
    SyncCustomActionResponse,
    TaskItem,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemReplacedEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    TranscriptionResult,
    UserMessageInput,
    UserMessageItem,
    UserMessageTextContent,
    WidgetItem,
)
from pydantic import TypeAdapter, ValidationError as PydanticValidationError

from chatledger.domain import (
    CHATKIT_ITEM,
    Branch,
    ChatMessage,
    Conversation,
    Message,
    Role,
    StreamEvent,
    check_new_message,
)
from chatledger.errors import ChatLedgerError, NotFoundError, ValidationError
from chatledger.service import ChatService, title_of
from chatledger.storage import new_id, utcnow
from chatledger.store import SQLAlchemyStore

__all__ = [
    "ChatKitContext",
    "ChatKitNotFoundError",
    "ChatLedgerChatKitServer",
    "ChatLedgerStore",
    "check_user_input",
]

log = logging.getLogger("chatledger.chatkit")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_ITEM: Final[TypeAdapter[ThreadItem]] = TypeAdapter(ThreadItem)
# Where ChatKit's own thread fields (status, allowed image domains, metadata) are kept in
# the conversation's metadata, when they are not the defaults.
_THREAD_FIELDS: Final = "chatkit_thread"
_NATIVE_ID: Final = re.compile(r"cl_([1-9][0-9]{0,17})")
# As the ChatKit SDK begins its ids, per kind of item.
_ITEM_PREFIXES: Final[dict[StoreItemType, str]] = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "task": "tsk",
    "workflow": "wf",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}
# Messages read per step while paging items or looking one up.
_STEP: Final = 100
# Items in a page at most, as conversations in a page of the chat API.
_MAX_PAGE: Final = 100
# A task shows at most this much of a tool's result.
_RESULT_CHARS: Final = 2_000


class ChatKitNotFoundError(NotFoundError, chatkit_store.NotFoundError):
    """Not found, as chatledger says it (a 404) and as the ChatKit SDK does: every
    `ChatLedgerStore` method raises this for what is missing or another user's."""


def _says_not_found(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    @functools.wraps(method)
    async def said(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except ChatKitNotFoundError:
            raise
        except NotFoundError as error:
            raise ChatKitNotFoundError(error.message) from error

    return said


@dataclass
class ChatKitContext:
    """What a ChatKit request carries besides its payload.

    Attributes:
        user_id: the verified user (from the request's token).
        turn_items: the ids of items this request's turn stored itself, or streamed and
            took back: storing or deleting them again through the `Store` does nothing.
        placed: the seq of each user message item stored in this request, by item id.
        waiting: where `ChatLedgerChatKitServer` has a new user message wait for its
            turn, which stores it as it takes the conversation (so that of two messages
            sent at once, the one refused leaves nothing behind); None (another server
            using `ChatLedgerStore`): the store stores it at once.
    """

    user_id: str
    turn_items: set[str] = field(default_factory=set)
    placed: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, UserMessageItem] | None = None


def _native_id(seq: int) -> str:
    return f"cl_{seq}"


def _user_text(item: UserMessageItem) -> str:
    return "".join(part.text for part in item.content)


def _thread(conversation: Conversation) -> ThreadMetadata:
    extra = conversation.metadata.get(_THREAD_FIELDS)
    own = {
        "id": conversation.id,
        "title": conversation.title,
        "created_at": conversation.created_at,
    }
    if isinstance(extra, dict):
        try:
            return ThreadMetadata.model_validate({"status": {"type": "active"}, **extra, **own})
        except PydanticValidationError:
            pass  # metadata set through `/api` that ChatKit cannot take: left out
    return ThreadMetadata.model_validate({"status": {"type": "active"}, **own})


def items_of_message(message: Message, thread_id: str) -> list[ThreadItem]:
    """The ChatKit items a message reads as (none, or one; see the module docstring)."""
    stored = message.metadata.get(CHATKIT_ITEM)
    if isinstance(stored, Mapping):
        try:
            # In this thread, whichever it was made in (a fork or an import copies it).
            return [_ITEM.validate_python({**stored, "thread_id": thread_id})]
        except PydanticValidationError:
            pass  # not an item ChatKit can read (an import, a newer SDK's): read as stored
    common = {"id": _native_id(message.seq), "thread_id": thread_id}
    created_at = message.created_at
    if message.role is Role.USER:
        return [
            UserMessageItem(
                **common,
                created_at=created_at,
                content=[UserMessageTextContent(text=message.content)],
                inference_options=InferenceOptions(),
            )
        ]
    if message.role is Role.ASSISTANT and message.content:
        return [
            AssistantMessageItem(
                **common,
                created_at=created_at,
                content=[AssistantMessageContent(text=message.content)],
            )
        ]
    if message.role is Role.TOOL:
        return [_task(common["id"], thread_id, created_at, message.name, message.content)]
    return []


def _task(
    item_id: str,
    thread_id: str,
    created_at: datetime,
    name: str | None,
    result: str | None,
) -> TaskItem:
    done = result is not None
    return TaskItem(
        id=item_id,
        thread_id=thread_id,
        created_at=created_at,
        task=CustomTask(
            title=name or "tool",
            content=None if result is None else result[:_RESULT_CHARS],
            status_indicator="complete" if done else "loading",
        ),
    )


def message_of_item(item: ThreadItem) -> ChatMessage:
    """The message that stores an item ChatKit made (see the module docstring)."""
    kept = {CHATKIT_ITEM: item.model_dump(mode="json")}
    if isinstance(item, UserMessageItem):
        return ChatMessage.user(_user_text(item), metadata=kept)
    if isinstance(item, HiddenContextItem | SDKHiddenContextItem):
        content = item.content if isinstance(item.content, str) else json.dumps(item.content)
        return ChatMessage(role=Role.SYSTEM, content=content, metadata=kept)
    if isinstance(item, AssistantMessageItem):
        text = "".join(part.text for part in item.content)
        return ChatMessage.assistant(text, metadata=kept)
    return ChatMessage.assistant(metadata=kept)


def check_user_input(message: UserMessageInput, *, max_chars: int) -> None:
    """Refuse a user message the store would refuse, before anything is stored: it is
    checked as the message that will keep it (its item's JSON included: a quoted text,
    a tag's data), under ids as long as the ones it will get.

    Raises:
        ValidationError, TooLargeError: as `check_new_message` does.
    """
    item = UserMessageItem(
        id=f"msg_{'0' * 32}",  # as long as `generate_item_id` makes them
        thread_id=new_id(),
        created_at=utcnow(),
        content=message.content,
        attachments=[],
        quoted_text=message.quoted_text,
        inference_options=message.inference_options,
    )
    check_new_message(message_of_item(item), max_chars=max_chars)


class ChatLedgerStore(Store[ChatKitContext]):
    """The ChatKit SDK's `Store` on a chatledger store, scoped to each request's user."""

    def __init__(self, store: SQLAlchemyStore) -> None:
        self.ledger = store

    def generate_thread_id(self, context: ChatKitContext) -> str:
        return new_id()

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: ChatKitContext
    ) -> str:
        # The SDK's prefixes, with 32 hex digits rather than its 8: an id must be unique in
        # its thread for as long as the thread lasts.
        return f"{_ITEM_PREFIXES[item_type]}_{new_id().replace('-', '')}"

    # -- threads ----------------------------------------------------------------------

    @_says_not_found
    async def load_thread(self, thread_id: str, context: ChatKitContext) -> ThreadMetadata:
        return _thread(await self.ledger.get_conversation(context.user_id, thread_id))

    @_says_not_found
    async def save_thread(self, thread: ThreadMetadata, context: ChatKitContext) -> None:
        fields = thread.model_dump(
            mode="json", include={"status", "allowed_image_domains", "metadata"}
        )
        defaults = {"status": ActiveStatus().model_dump(mode="json"), "metadata": {}}
        extra = {k: v for k, v in fields.items() if v is not None and defaults.get(k) != v}
        try:
            conversation = await self.ledger.get_conversation(context.user_id, thread.id)
        except NotFoundError:
            await self.ledger.create_conversation(
                context.user_id,
                conversation_id=thread.id,
                title=thread.title,
                metadata={_THREAD_FIELDS: extra} if extra else {},
            )
            return
        metadata = {k: v for k, v in conversation.metadata.items() if k != _THREAD_FIELDS}
        if extra:
            metadata[_THREAD_FIELDS] = extra
        if conversation.title != thread.title or metadata != conversation.metadata:
            await self.ledger.update_conversation(
                context.user_id, thread.id, title=thread.title, metadata=metadata
            )

    @_says_not_found
    async def load_threads(
        self, limit: int, after: str | None, order: str, context: ChatKitContext
    ) -> Page[ThreadMetadata]:
        oldest_first = order == "asc"
        try:
            page = await self.ledger.list_conversations_by_age(
                context.user_id, limit=limit, cursor=after, oldest_first=oldest_first
            )
        except ValidationError:
            if after is None:
                raise
            # Not a cursor a page before gave: a thread's id, to list on from, will do.
            page = await self.ledger.list_conversations_by_age(
                context.user_id, limit=limit, after_id=after, oldest_first=oldest_first
            )
        return Page(
            data=[_thread(c) for c in page.items],
            has_more=page.next_cursor is not None,
            after=page.next_cursor,
        )

    @_says_not_found
    async def delete_thread(self, thread_id: str, context: ChatKitContext) -> None:
        await self.ledger.delete_conversation(context.user_id, thread_id)

    # -- items ------------------------------------------------------------------------

    @_says_not_found
    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: ChatKitContext,
    ) -> Page[ThreadItem]:
        """A page of the current branch's items; `after` is the `after` of the page
        before (the position of its last item)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be a positive integer", field="limit")
        limit = min(limit, _MAX_PAGE)
        oldest_first = order == "asc"
        cursor = None if after is None else await self._position(thread_id, after, context)
        found: list[tuple[tuple[int, int], ThreadItem]] = []
        # The seq to read on from (itself included): a message may be several items.
        bound = None if cursor is None else cursor[0]
        while True:
            if oldest_first:
                after_seq = None if bound is None else bound - 1
                messages = await self.ledger.history(
                    context.user_id, thread_id, limit=_STEP, after_seq=after_seq, oldest_first=True
                )
            else:
                before_seq = None if bound is None else bound + 1
                messages = await self.ledger.history(
                    context.user_id, thread_id, limit=_STEP, before_seq=before_seq
                )
                messages.reverse()
            for message in messages:
                items = list(enumerate(items_of_message(message, thread_id)))
                for index, item in items if oldest_first else items[::-1]:
                    place = (message.seq, index)
                    if cursor is None or (place > cursor if oldest_first else place < cursor):
                        found.append((place, item))
            if len(found) > limit or len(messages) < _STEP:
                break
            bound = messages[-1].seq + (1 if oldest_first else -1)
        page = found[:limit]
        more = len(found) > limit
        return Page(
            data=[item for _, item in page],
            has_more=more,
            after=f"p{page[-1][0][0]}.{page[-1][0][1]}" if more else None,
        )

    async def _position(
        self, thread_id: str, after: str, context: ChatKitContext
    ) -> tuple[int, int]:
        """Where a page's `after` points: a position this store gave, or an item's id."""
        matched = re.fullmatch(r"p([1-9][0-9]{0,17})\.([0-9]{1,4})", after)
        if matched:
            return int(matched[1]), int(matched[2])
        message, index = await self._find(thread_id, after, context)
        return message.seq, index

    async def _find(
        self, thread_id: str, item_id: str, context: ChatKitContext
    ) -> tuple[Message, int]:
        """The message item `item_id` is part of, on the thread's current branch, and
        its place among that message's items.

        Raises:
            NotFoundError: no such item on the branch (or thread, for this user).
        """
        native = _NATIVE_ID.fullmatch(item_id)
        if native:
            seq = int(native[1])
            on_branch = await self.ledger.history(
                context.user_id, thread_id, limit=1, after_seq=seq - 1, before_seq=seq + 1
            )
            for message in on_branch:
                for index, item in enumerate(items_of_message(message, thread_id)):
                    if item.id == item_id:
                        return message, index
            raise NotFoundError(f"no item {item_id} in this thread")
        # Where this request stored it, if it did: the search starts there (a hint only,
        # from the head if it is not found there: the branch may have moved since).
        placed = context.placed.get(item_id)
        for start in [None] if placed is None else [placed + 1, None]:
            before = start
            while True:
                messages = await self.ledger.history(
                    context.user_id, thread_id, limit=_STEP, before_seq=before
                )
                for message in reversed(messages):
                    stored = message.metadata.get(CHATKIT_ITEM)
                    if isinstance(stored, Mapping) and stored.get("id") == item_id:
                        items = items_of_message(message, thread_id)  # as it reads
                        if items and items[0].id == item_id:
                            return message, 0
                if len(messages) < _STEP:
                    break
                before = messages[0].seq
        raise NotFoundError(f"no item {item_id[:100]} in this thread")

    @_says_not_found
    async def load_item(self, thread_id: str, item_id: str, context: ChatKitContext) -> ThreadItem:
        message, index = await self._find(thread_id, item_id, context)
        return items_of_message(message, thread_id)[index]

    @_says_not_found
    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: ChatKitContext
    ) -> None:
        if item.id in context.turn_items:
            return  # the turn stored it
        if isinstance(item, UserMessageItem) and context.waiting is not None:
            context.waiting[item.id] = item  # the turn that answers it stores it
            return
        [stored] = await self.ledger.append(context.user_id, thread_id, [message_of_item(item)])
        context.placed[item.id] = stored.seq

    @_says_not_found
    async def save_item(self, thread_id: str, item: ThreadItem, context: ChatKitContext) -> None:
        """Store a new version of an item (an edit of the branch from it on), or add it."""
        if item.id in context.turn_items:
            return
        try:
            message, _ = await self._find(thread_id, item.id, context)
        except NotFoundError:
            await self.add_thread_item(thread_id, item, context)
            return
        await self.ledger.remove_from_branch(
            context.user_id, thread_id, message.seq, replacement=message_of_item(item)
        )

    @_says_not_found
    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: ChatKitContext
    ) -> None:
        """Take an item off the thread's current branch (a new version of the branch
        without it; the old one stays, as after an edit). An assistant message that also
        called tools keeps its calls."""
        if item_id in context.turn_items:
            return
        message, _ = await self._find(thread_id, item_id, context)
        replacement = None
        if message.tool_calls and CHATKIT_ITEM not in message.metadata:
            replacement = ChatMessage.assistant(tool_calls=message.tool_calls)
        await self.ledger.remove_from_branch(
            context.user_id, thread_id, message.seq, replacement=replacement
        )

    # -- attachments: refused ---------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: ChatKitContext) -> None:
        raise _no_attachments()

    async def load_attachment(self, attachment_id: str, context: ChatKitContext) -> Attachment:
        raise _no_attachments()

    async def delete_attachment(self, attachment_id: str, context: ChatKitContext) -> None:
        raise _no_attachments()


class _NoAttachments(AttachmentStore[ChatKitContext]):
    """Refuses every attachment request (`attachments.create`, `attachments.delete`)."""

    async def create_attachment(
        self, input: AttachmentCreateParams, context: ChatKitContext
    ) -> Attachment:
        raise _no_attachments()

    async def delete_attachment(self, attachment_id: str, context: ChatKitContext) -> None:
        raise _no_attachments()


def _not_served(what: str) -> ValidationError:
    return ValidationError(f"{what} is not served by chatledger", code="not_supported")


def _no_attachments() -> ValidationError:
    return ValidationError(
        "attachments are not supported: chatledger keeps no files",
        field="attachments",
        code="attachments_unsupported",
    )


class ChatLedgerChatKitServer(ChatKitServer[ChatKitContext]):
    """A `ChatKitServer` whose `respond` runs chatledger's turn.

    Args:
        store: the ChatKit store (on the same chatledger store as `service`).
        service: runs the turns: the same agent, toolsets and rules as `/api/{user}/chat`.
    """

    def __init__(self, store: ChatLedgerStore, service: ChatService) -> None:
        super().__init__(store, _NoAttachments())
        self.ledger_store = store
        self.service = service
        self._stopping: set[asyncio.Task[bool]] = set()

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: ChatKitContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        """Answer the user's message with a chatledger turn, streamed as ChatKit events.

        Only user messages are answered: the agents chatledger runs call no client tools
        and show no widgets, so ChatKit never asks for anything else.
        """
        if input_user_message is None:
            return
        ledger = self.ledger_store.ledger
        conversation = await ledger.get_conversation(context.user_id, thread.id)
        new = (context.waiting or {}).pop(input_user_message.id, None)
        if new is not None:
            # A new message: the turn stores it, with its item, as it takes the thread;
            # its own messages follow it.
            text = _user_text(new)
            if thread.title is None:
                thread.title = title_of(text)
            first_seq = conversation.message_count + 2
            events = self.service.stream(
                context.user_id, thread.id, text, message_metadata=message_of_item(new).metadata
            )
        else:  # a retry: the stored message is answered again, nothing added before
            answered, _ = await self.ledger_store._find(thread.id, input_user_message.id, context)
            first_seq = conversation.message_count + 1
            events = self.service.stream(
                context.user_id, thread.id, None, branch=Branch(answered.seq, edit=False)
            )
        # Foreseen: nothing but the turn writes in the thread while it runs. Another
        # writer between the read above and the turn's start is put right at its end.
        turn = _TurnItems(thread.id, context, next_seq=first_seq)
        started: str | None = None  # the id of the user message the turn answers
        try:
            async for event in events:
                if event.name == "conversation":
                    started = str(event.data.get("user_message_id"))
                for streamed in turn.events(event):
                    yield streamed
        except ChatLedgerError as error:
            yield ErrorEvent(message=error.message, allow_retry=error.retry_after is not None)
        if started is not None:
            for streamed in turn.reconcile(await self._stored_after(context, thread.id, started)):
                yield streamed

    async def _stored_after(
        self, context: ChatKitContext, thread_id: str, message_id: str
    ) -> list[Message]:
        """The messages after message `message_id` on the thread's branch: what a turn
        stored, read back from the newest until its user message is met."""
        after: list[Message] = []
        before: int | None = None
        while True:
            page = await self.ledger_store.ledger.history(
                context.user_id, thread_id, limit=_STEP, before_seq=before
            )
            for index in range(len(page) - 1, -1, -1):
                if page[index].id == message_id:
                    return page[index + 1 :] + after
            if len(page) < _STEP:
                return []  # not on the branch any more: nothing to put right
            after = page + after
            before = page[0].seq

    async def process(
        self, request: str | bytes | bytearray, context: ChatKitContext
    ) -> StreamingResult | NonStreamingResult:
        """The SDK's `process`, with new user messages left for their turns to store."""
        if context.waiting is None:
            context.waiting = {}
        return await super().process(request, context)

    async def add_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        feedback: FeedbackKind,
        context: ChatKitContext,
    ) -> None:
        """Feedback is not kept; it is still refused for a thread that is not the user's."""
        await self.ledger_store.load_thread(thread_id, context)

    async def transcribe(
        self, audio_input: AudioInput, context: ChatKitContext
    ) -> TranscriptionResult:
        raise _not_served("transcription")

    async def sync_action(
        self,
        thread: ThreadMetadata,
        action: Action[str, object],
        sender: WidgetItem | None,
        context: ChatKitContext,
    ) -> SyncCustomActionResponse:
        raise _not_served("a custom action")

    async def handle_stream_cancelled(
        self,
        thread: ThreadMetadata,
        pending_items: list[ThreadItem],
        context: ChatKitContext,
    ) -> None:
        """ChatKit's Stop: the turn stops as `POST …/stop` stops it (what was said so far
        is kept as its reply, the thread free at once). ChatKit tells a Stop from a
        connection that dropped by nothing, so a dropped connection stops it too.

        This runs while the request is being cancelled, which cancels whatever it awaits:
        the stop request is a task of its own, which finishes however this ends."""
        stopping = asyncio.create_task(self.service.stop(context.user_id, thread.id))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        stopping.add_done_callback(_forget)
        await asyncio.shield(stopping)


def _forget(task: asyncio.Task[bool]) -> None:
    """A stop request's task, done: let go of it; a failure is the log's (the turn then
    ends by its own timeout, its lease as a dead turn's)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("a stop request failed", extra={"error_type": type(error).__name__})


class _TurnItems:
    """Turns a chatledger turn's stream into ChatKit events, item by item.

    The turn holds the conversation while it runs, so its messages take the seqs after
    the newest one, in order: each tool call an assistant message (with what was said
    before it) and its result, then the reply. Items are streamed under the ids those
    messages will have.
    """

    def __init__(self, thread_id: str, context: ChatKitContext, *, next_seq: int) -> None:
        self.thread_id = thread_id
        self.context = context
        self.next_seq = next_seq
        self.text: str | None = None  # the assistant text being streamed, if any
        self.tasks: dict[str, tuple[str, str]] = {}  # call id -> (task item id, tool name)
        self.shown: dict[str, ThreadItem] = {}

    def _show(self, item: ThreadItem) -> ThreadItem:
        self.context.turn_items.add(item.id)
        self.shown[item.id] = item
        return item

    def events(self, event: StreamEvent) -> list[ThreadStreamEvent]:
        data = event.data
        now = utcnow()
        if event.name == "delta":
            out: list[ThreadStreamEvent] = []
            item_id = _native_id(self.next_seq)
            if self.text is None:
                self.text = ""
                pending = AssistantMessageItem(
                    id=item_id, thread_id=self.thread_id, created_at=now, content=[]
                )
                out.append(ThreadItemAddedEvent(item=self._show(pending)))
                out.append(
                    ThreadItemUpdatedEvent(
                        item_id=item_id,
                        update=AssistantMessageContentPartAdded(
                            content_index=0, content=AssistantMessageContent(text="")
                        ),
                    )
                )
            self.text += str(data.get("text", ""))
            out.append(
                ThreadItemUpdatedEvent(
                    item_id=item_id,
                    update=AssistantMessageContentPartTextDelta(
                        content_index=0, delta=str(data.get("text", ""))
                    ),
                )
            )
            return out
        if event.name == "tool_call":
            out = self._said(now)
            task_id = _native_id(self.next_seq + 1)
            name = str(data.get("name", ""))
            self.tasks[str(data.get("id"))] = (task_id, name)
            self.next_seq += 2
            task = _task(task_id, self.thread_id, now, name, None)
            return [*out, ThreadItemAddedEvent(item=self._show(task))]
        if event.name == "tool_result":
            task_id, name = self.tasks.get(str(data.get("id")), ("", ""))
            if not task_id:
                return []
            result = json.dumps(data.get("result"), ensure_ascii=False)
            return [
                ThreadItemDoneEvent(
                    item=self._show(_task(task_id, self.thread_id, now, name, result))
                )
            ]
        if event.name == "done":
            reply = str(data.get("response") or "")
            if reply:
                self.text = reply
            return self._said(now)
        return []

    def _said(self, now: datetime) -> list[ThreadStreamEvent]:
        """The assistant text streamed so far, done: it is stored under the next seq."""
        if not self.text:
            self.text = None
            return []
        item = AssistantMessageItem(
            id=_native_id(self.next_seq),
            thread_id=self.thread_id,
            created_at=now,
            content=[AssistantMessageContent(text=self.text)],
        )
        self.text = None
        return [ThreadItemDoneEvent(item=self._show(item))]

    def reconcile(self, stored: Sequence[Message]) -> list[ThreadStreamEvent]:
        """Events that make what was streamed what was stored: an item shown under an id
        no stored message has is taken back, one shown as another kind of item than the
        stored one is replaced, and a stored one not shown is added."""
        actual = {item.id: item for m in stored for item in items_of_message(m, self.thread_id)}
        out: list[ThreadStreamEvent] = []
        for item_id in self.shown.keys() - actual.keys():
            out.append(ThreadItemRemovedEvent(item_id=item_id))
        for item_id, item in actual.items():
            self.context.turn_items.add(item_id)
            if item_id not in self.shown:
                out.append(ThreadItemDoneEvent(item=item))
            elif type(self.shown[item_id]) is not type(item):
                out.append(ThreadItemReplacedEvent(item=item))
        return out
