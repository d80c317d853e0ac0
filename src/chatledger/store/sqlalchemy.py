"""`SQLAlchemyStore`: the conversation store on SQLite or PostgreSQL.

Every public method takes the `user_id` first and every statement filters on it, so
isolation holds by construction. Each method runs in its own short transaction, or joins
the one opened by `transaction()` when several changes must commit together (a task
tool's effect and the messages that record it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    bindparam,
    delete,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import URL

from chatledger.domain import (
    ChatMessage,
    Conversation,
    Message,
    Page,
    SearchHit,
    Summary,
    check_metadata,
    check_text,
    check_written_text,
)
from chatledger.errors import NotFoundError, ValidationError
from chatledger.storage import Lease
from chatledger.store.core import (
    MAX_BIGINT,
    UNSET,
    AnyRow,
    Unset,
    check_conversation_id,
    check_limit,
    check_user_id,
    new_id,
    utcnow,
)
from chatledger.store.cursor import decode_cursor, encode_cursor
from chatledger.store.engine import Connector, connect
from chatledger.store.idempotency import IdempotencyStore
from chatledger.store.ledger import (
    MESSAGE_COLUMNS,
    LeaseUse,
    Writer,
    message_of,
    readable_metadata,
    require_conversation,
)
from chatledger.store.limits import RateLimitStore
from chatledger.store.migrate import upgrade
from chatledger.store.schema import (
    conversations,
    idempotency_keys,
    messages as message_table,
    rate_limits,
    summaries,
    task_counters,
    tasks,
    turn_events,
    turns,
)
from chatledger.store.search import search_messages, unindex_conversations, unindex_user
from chatledger.store.summaries import SELECT_SUMMARY, SummaryStore, summary_of
from chatledger.store.tasks import TaskStore
from chatledger.store.turns import TurnStore
from chatledger.tokens import TokenCounter, approximate_tokens

__all__ = ["Lease", "SQLAlchemyStore"]

MAX_PAGE_SIZE: Final = 100
# A conversation's metadata is read with every listing: kept small.
MAX_CONVERSATION_METADATA_CHARS: Final = 16 * 1024
# How long a temporary conversation lives.
TEMPORARY_FOR: Final = timedelta(days=1)
# Conversations deleted per transaction by `purge_conversations`: short transactions,
# however much is due.
_PURGE_BATCH: Final = 500
# Bigger than any reply a model writes, small enough that one row cannot exhaust memory.
DEFAULT_MAX_MESSAGE_CHARS: Final = 256 * 1024

_c = conversations.c
_m = message_table.c
_CONVERSATION_COLUMNS = (
    _c.id,
    _c.title,
    _c.metadata,
    _c.next_seq,
    _c.lease_id,
    _c.lease_expires_at,
    _c.created_at,
    _c.updated_at,
    _c.expires_at,
    _c.pinned,
    _c.archived,
)

# The statements of a chat turn are built once, at import: built per call, each would be
# constructed and cache-keyed again on every turn.
_SELECT_CONVERSATION = select(*_CONVERSATION_COLUMNS).where(
    _c.user_id == bindparam("user"), _c.id == bindparam("conversation")
)
_HISTORY = (
    select(*MESSAGE_COLUMNS)
    .where(_m.user_id == bindparam("user"), _m.conversation_id == bindparam("conversation"))
    .order_by(_m.seq.desc())
    .limit(bindparam("limit", type_=Integer))
)
# Keyed by (bounded above, bounded below): each shape is built once.
_HISTORY_RANGES = {
    (False, False): _HISTORY,
    (True, False): _HISTORY.where(_m.seq < bindparam("before_seq")),
    (False, True): _HISTORY.where(_m.seq > bindparam("after_seq")),
    (True, True): _HISTORY.where(_m.seq < bindparam("before_seq"), _m.seq > bindparam("after_seq")),
}


def _conversation(row: AnyRow, now: datetime) -> Conversation:
    running = row.lease_id is not None and row.lease_expires_at > now
    return Conversation(
        id=row.id,
        title=row.title,
        metadata=readable_metadata(row.metadata),
        message_count=row.next_seq - 1,
        created_at=row.created_at,
        updated_at=row.updated_at,
        running_turn_id=row.lease_id if running else None,
        expires_at=row.expires_at,
        pinned=row.pinned,
        archived=row.archived,
    )


def _check_title(title: object) -> str | None:
    if title is None:
        return None
    return check_written_text("title", title, max_chars=200).strip() or None


class SQLAlchemyStore:
    """The conversation store on SQLite or PostgreSQL, through SQLAlchemy Core.

    Tasks, idempotency keys, rolling summaries and turns live in the same database, as
    `store.tasks`, `store.idempotency`, `store.summaries` and `store.turns`.

    Args:
        connector: where statements run; `from_url` makes the right one for a URL.
        max_message_chars: longest content or metadata a message may have.
        token_counter: counts the tokens of a text; stored per message at append time.
        cursor_key: signs listing cursors. Replicas behind one load balancer must share
            it; by default a random key, valid for this process only.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        token_counter: TokenCounter = approximate_tokens,
        cursor_key: bytes | None = None,
    ) -> None:
        self._max_message_chars = max_message_chars
        self._token_counter = token_counter
        self._writer = Writer(max_message_chars=max_message_chars, token_counter=token_counter)
        self._cursor_key = cursor_key if cursor_key is not None else os.urandom(32)
        self._use(connector)

    def _use(self, db: Connector) -> None:
        self._db = db
        self.tasks = TaskStore(db)
        self.idempotency = IdempotencyStore(db)
        self.summaries = SummaryStore(db, self._token_counter)
        self.turns = TurnStore(db, self._writer)
        self.rate_limits = RateLimitStore(db)

    @classmethod
    def from_url(
        cls, url: str | URL, *, engine_options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> SQLAlchemyStore:
        """A store for a database URL: `sqlite:///path.db` or `postgresql://...`.

        A plain `postgresql://` URL is mapped to asyncpg; `engine_options` go to
        SQLAlchemy's `create_engine`; other keyword arguments to the constructor.
        """
        return cls(connect(url, **(engine_options or {})), **kwargs)

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._db.dialect

    @property
    def sync_engine(self) -> Engine:
        """The engine statements go through, for event listeners and inspection."""
        return self._db.sync_engine

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema up to date; see `chatledger.store.migrate.upgrade`."""
        await self._db.write(lambda conn: upgrade(conn, revision))

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLAlchemyStore]:
        """A store whose methods (and `tasks`, `turns` ...) share one write transaction.

        Committed when the block exits, rolled back if it raises. Nested use joins the
        outer transaction.
        """
        async with self._db.transaction() as bound_db:
            if bound_db is self._db:
                yield self
                return
            bound = object.__new__(SQLAlchemyStore)
            bound.__dict__.update(self.__dict__)
            bound._use(bound_db)
            yield bound

    async def ping(self) -> None:
        """Raise `UnavailableError` unless the database answers a query."""
        await self._db.read(lambda conn: conn.execute(select(1)).scalar())

    # -- conversations ------------------------------------------------------------------

    async def create_conversation(
        self,
        user_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        temporary: bool = False,
    ) -> Conversation:
        """Create an empty conversation with a random, unguessable id.

        A `temporary` one is deleted a day after it was created, however active.
        """
        now = utcnow()
        expires_at = now + TEMPORARY_FOR if temporary else None
        conversation = Conversation(
            id=new_id(),
            title=_check_title(title),
            metadata=check_metadata(
                "metadata", metadata or {}, max_chars=MAX_CONVERSATION_METADATA_CHARS
            ),
            message_count=0,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )
        row = {
            "user_id": check_user_id(user_id),
            "id": conversation.id,
            "title": conversation.title,
            "metadata": conversation.metadata,
            "next_seq": 1,
            "created_at": now,
            "updated_at": now,
            "expires_at": expires_at,
        }
        await self._db.write(lambda conn: conn.execute(insert(conversations), row))
        return conversation

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        """Raises `NotFoundError` alike whether the id does not exist or is another user's."""
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        key = {"user": user_id, "conversation": conversation_id}
        row = await self._db.read(lambda conn: conn.execute(_SELECT_CONVERSATION, key).first())
        if row is None:
            raise NotFoundError("conversation not found")
        return _conversation(row, utcnow())

    async def list_conversations(
        self,
        user_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        archived: bool = False,
        pinned: bool | None = None,
    ) -> Page[Conversation]:
        """The user's conversations, pinned ones first, then most recently updated first.

        Only archived ones when `archived`, else only the others; only pinned (or only
        unpinned) ones when `pinned` says so. `limit` is clamped to 100. Raises
        `ValidationError` for a cursor that is malformed, tampered with, or was issued to
        another user.
        """
        user_id = check_user_id(user_id)
        limit = min(check_limit(limit), MAX_PAGE_SIZE)
        query = select(*_CONVERSATION_COLUMNS).where(_c.user_id == user_id, _c.archived == archived)
        if pinned is not None:
            query = query.where(_c.pinned == pinned)
        if cursor is not None:
            after = decode_cursor(self._cursor_key, user_id, check_text("cursor", cursor))
            query = query.where(tuple_(_c.pinned, _c.updated_at, _c.id) < tuple_(*after))
        query = query.order_by(_c.pinned.desc(), _c.updated_at.desc(), _c.id.desc()).limit(
            limit + 1
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        now = utcnow()
        items = [_conversation(row, now) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(
                self._cursor_key, user_id, last.pinned, last.updated_at, last.id
            )
        return Page(items, next_cursor)

    async def update_conversation(
        self,
        user_id: str,
        conversation_id: str,
        *,
        title: str | Unset | None = UNSET,
        metadata: Mapping[str, Any] | Unset = UNSET,
        pinned: bool | Unset = UNSET,
        archived: bool | Unset = UNSET,
    ) -> Conversation:
        """Change the title (None clears it), replace the metadata, pin or archive.

        A new title or metadata counts as activity (`updated_at`); pinning and archiving
        do not, so a conversation keeps its place among the others.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        values: dict[str, Any] = {}
        for name, flag in (("pinned", pinned), ("archived", archived)):
            if not isinstance(flag, Unset):
                if not isinstance(flag, bool):
                    raise ValidationError(f"{name} must be true or false", field=name)
                values[name] = flag
        if not (isinstance(title, Unset) and isinstance(metadata, Unset)):
            values["updated_at"] = utcnow()
        if not isinstance(title, Unset):
            values["title"] = _check_title(title)
        if not isinstance(metadata, Unset):
            values["metadata"] = check_metadata(
                "metadata", metadata, max_chars=MAX_CONVERSATION_METADATA_CHARS
            )
        if not values:
            return await self.get_conversation(user_id, conversation_id)
        statement = (
            update(conversations)
            .where(_c.user_id == user_id, _c.id == conversation_id)
            .values(values)
            .returning(*_CONVERSATION_COLUMNS)
        )
        row = await self._db.write(lambda conn: conn.execute(statement).first())
        if row is None:
            raise NotFoundError("conversation not found")
        return _conversation(row, utcnow())

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        """Delete a conversation and, in the same transaction, all of its messages."""
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        # Messages go by ON DELETE CASCADE, enforced by the database.
        statement = delete(conversations).where(_c.user_id == user_id, _c.id == conversation_id)

        def work(conn: Connection) -> int:
            deleted = int(conn.execute(statement).rowcount)
            if deleted:
                unindex_conversations(conn, [(user_id, conversation_id)])
            return deleted

        if await self._db.write(work) == 0:
            raise NotFoundError("conversation not found")
        await self._db.scrub()

    async def purge_conversations(self, *, idle_for: timedelta | None) -> int:
        """Delete every user's conversations that are due: temporary ones past their
        expiry, and, with `idle_for`, any not touched for that long. All they hold goes
        with them (messages, summaries, turns, stream events).

        In batches of a few hundred, each its own transaction; safe to run from many
        replicas at once (PostgreSQL's SKIP LOCKED keeps them off each other's rows). A
        conversation with a turn holding its lease is left alone, however old.

        Returns:
            How many conversations were deleted.
        """
        now = utcnow()
        due = _c.expires_at <= now
        if idle_for is not None:
            due = or_(due, _c.updated_at <= now - idle_for)
        batch = (
            select(_c.user_id, _c.id)
            .where(due, _c.lease_id.is_(None))
            .limit(_PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        statement = (
            delete(conversations)
            .where(tuple_(_c.user_id, _c.id).in_(batch))
            .returning(_c.user_id, _c.id)
        )

        def work(conn: Connection) -> int:
            keys = [(row.user_id, row.id) for row in conn.execute(statement)]
            unindex_conversations(conn, keys)
            return len(keys)

        deleted = 0
        while True:
            count = await self._db.write(work)
            deleted += count
            if count < _PURGE_BATCH:
                break
        if deleted:
            await self._db.scrub()
        return deleted

    # -- messages -----------------------------------------------------------------------

    async def append(
        self,
        user_id: str,
        conversation_id: str,
        messages: Sequence[ChatMessage],
        *,
        lease: Lease | None = None,
        release_lease: bool = False,
    ) -> list[Message]:
        """Append messages at the end of a conversation, all or none.

        One transaction of three statements whatever the batch size: the counter update
        reserves a contiguous range of `seq` and returns it, one insert stores every row,
        and one adds them to the search index (none when nothing in them is searchable).
        Concurrent appends serialize on the conversation row, so `seq` stays gap-free.

        A conversation runs one turn at a time (`store.turns.start` begins one). While a
        turn runs, appends without its `lease` are refused; with it, the append renews
        the lease, and `release_lease=True` gives it up. A turn whose lease ran out (its
        replica died) is closed as interrupted by the next append that finds it.

        Returns:
            The stored messages, in order.

        Raises:
            ValidationError: a message is invalid; nothing is stored.
            NotFoundError: no such conversation for this user.
            ConflictError: `conversation_busy` (another turn runs; `retry_after` says
                when to try again) or `lease_lost` (`lease` is no longer held).
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        prepared = self._writer.prepare(messages)
        if not prepared:
            raise ValidationError("nothing to append", field="messages")
        use = LeaseUse.NONE
        if lease is not None:
            use = LeaseUse.RELEASE if release_lease else LeaseUse.HOLD
        return await self._db.write(
            lambda conn: self._writer.append(
                conn,
                user_id,
                conversation_id,
                prepared,
                now=utcnow(),
                use=use,
                lease_id=None if lease is None else lease.id,
                lease_expires_at=None if lease is None else lease.expires_at,
            )
        )

    async def request_stop(self, user_id: str, conversation_id: str) -> bool:
        """Ask the turn running in a conversation to stop, whichever process runs it.

        Returns:
            True if a turn was running (it stops within a moment, keeping what it did),
            False if none was. A turn whose replica died is closed as interrupted, and
            is not running.

        Raises:
            NotFoundError: no such conversation for this user.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)

        def work(conn: Connection) -> bool:
            now = utcnow()
            flag = (
                update(conversations)
                .where(
                    _c.user_id == user_id,
                    _c.id == conversation_id,
                    _c.lease_id.is_not(None),
                    _c.lease_expires_at > now,
                )
                .values(stop_requested=True)
            )
            if conn.execute(flag).rowcount:
                return True
            self._writer.take_over(conn, user_id, conversation_id, now=now)
            return False

        return await self._db.write(work)

    async def stop_requested(self, user_id: str, conversation_id: str, lease: Lease) -> bool:
        """Whether the turn holding `lease` has been asked to stop."""
        query = select(_c.stop_requested).where(
            _c.user_id == user_id, _c.id == conversation_id, _c.lease_id == lease.id
        )
        return await self._db.read(lambda conn: bool(conn.execute(query).scalar()))

    async def history(
        self,
        user_id: str,
        conversation_id: str,
        *,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> list[Message]:
        """The latest `limit` messages (of those between `after_seq` and `before_seq`,
        both excluded), oldest first.

        One query on the primary key, read backwards from the end: its cost depends on
        `limit`, not on how long the conversation is.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        params: dict[str, Any] = {
            "user": user_id,
            "conversation": conversation_id,
            "limit": check_limit(limit),
        }
        for name, bound in (("before_seq", before_seq), ("after_seq", after_seq)):
            if bound is not None:
                if isinstance(bound, bool) or not isinstance(bound, int):
                    raise ValidationError(f"{name} must be an integer", field=name)
                params[name] = max(min(bound, MAX_BIGINT), -MAX_BIGINT)
        query = _HISTORY_RANGES[before_seq is not None, after_seq is not None]

        def work(conn: Connection) -> list[Message]:
            rows = conn.execute(query, params).all()
            if not rows:
                # Messages exist only in existing conversations, so only an empty
                # answer needs a second look to tell "empty" from "not found".
                require_conversation(conn, user_id, conversation_id)
            return [message_of(row) for row in reversed(rows)]

        return await self._db.read(work)

    async def load_context(
        self, user_id: str, conversation_id: str, *, limit: int
    ) -> tuple[Summary | None, list[Message]]:
        """The conversation's summary and the latest `limit` messages after it, oldest first.

        What a turn needs to build its agent's input, in two indexed queries whose cost
        does not grow with the conversation: the summary stands in for everything before
        the messages returned.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        key = {"user": user_id, "conversation": conversation_id}
        params = {**key, "limit": check_limit(limit), "after_seq": 0}

        def work(conn: Connection) -> tuple[Summary | None, list[Message]]:
            found = conn.execute(SELECT_SUMMARY, key).first()
            summary = None if found is None else summary_of(found)
            if summary is not None:
                params["after_seq"] = summary.upto_seq
            rows = conn.execute(_HISTORY_RANGES[False, True], params).all()
            if not rows and summary is None:
                require_conversation(conn, user_id, conversation_id)
            return summary, [message_of(row) for row in reversed(rows)]

        return await self._db.read(work)

    # -- search -------------------------------------------------------------------------

    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        include_tools: bool = False,
    ) -> Page[SearchHit]:
        """The user's messages that hold every word of `query`, most relevant first.

        Words are matched whole, case- and accent-insensitively; a `*` right after the
        last word matches the words it begins (see `chatledger.store.fulltext` for what
        a word is). User and assistant messages are searched, and tool results too with
        `include_tools`. Each hit has a plain-text snippet and the offsets of the
        matched words in it. `limit` is clamped to 50; pages reach the first 1,000 hits
        (see `chatledger.store.search` for how they are ranked and paged).

        Raises:
            ValidationError: `query_without_words`, `query_too_long` or `query_invalid`
                (see `parse_query`), or a cursor that is malformed, tampered with,
                another user's or another search's.
        """
        return await search_messages(
            self._db,
            self._cursor_key,
            check_user_id(user_id),
            query,
            limit=limit,
            cursor=cursor,
            include_tools=include_tools,
        )

    # -- users --------------------------------------------------------------------------

    async def delete_user(self, user_id: str) -> None:
        """Delete every row the user owns — conversations, messages, turns, tasks,
        idempotency keys — in one transaction."""
        user_id = check_user_id(user_id)

        def work(conn: Connection) -> None:
            for table in (
                turn_events,
                turns,
                rate_limits,
                summaries,
                message_table,
                conversations,
                tasks,
                task_counters,
                idempotency_keys,
            ):
                conn.execute(delete(table).where(table.c.user_id == user_id))
            unindex_user(conn, user_id)

        await self._db.write(work)
        await self._db.scrub()
