"""`SQLAlchemyStore`: the conversation store on SQLite or PostgreSQL.

Every public method takes the `user_id` first and every statement filters on it, so
isolation holds by construction. Each method runs in its own short transaction, or joins
the one opened by `transaction()` when several changes must commit together (a task
tool's effect and the messages that record it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    false,
    insert,
    or_,
    select,
    text,
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
    check_text,
)
from chatledger.errors import NotFoundError, ValidationError
from chatledger.storage import Lease
from chatledger.store.core import (
    MAX_BIGINT,
    UNSET,
    AnyRow,
    LeaseUse,
    Unset,
    check_conversation_id,
    check_conversation_metadata,
    check_conversation_title,
    check_limit,
    check_user_id,
    new_id,
    readable_metadata,
    utcnow,
)
from chatledger.store.cursor import (
    decode_age_cursor,
    decode_cursor,
    encode_age_cursor,
    encode_cursor,
)
from chatledger.store.engine import Connector, connect
from chatledger.store.hot import read_context_run, read_head_run, stop_requested
from chatledger.store.idempotency import IdempotencyStore
from chatledger.store.ledger import (
    HEAD,
    Writer,
    copied,
    insert_messages,
    message_of,
    read_path,
    read_path_oldest_first,
    require_conversation,
    run_of,
    run_rows,
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
from chatledger.store.search import (
    search_messages,
    unindex_conversations,
    unindex_user,
)
from chatledger.store.summaries import SELECT_SUMMARY, SummaryStore, summary_of
from chatledger.store.tasks import TaskStore
from chatledger.store.transfer import ImportReport, Transfer, read_lines
from chatledger.store.turns import TurnStore
from chatledger.store.usage import read_usage
from chatledger.tokens import TokenCounter, approximate_tokens
from chatledger.usage import UsageReport, check_period

__all__ = ["Lease", "SQLAlchemyStore"]

MAX_PAGE_SIZE: Final = 100
# How long a temporary conversation lives.
TEMPORARY_FOR: Final = timedelta(days=1)
# Conversations deleted per transaction by `purge_conversations`: short transactions,
# however much is due.
_PURGE_BATCH: Final = 500
# Bigger than any reply a model writes, small enough that one row cannot exhaust memory.
DEFAULT_MAX_MESSAGE_CHARS: Final = 256 * 1024

_c = conversations.c
_m = message_table.c
_s = summaries.c
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
    _c.head_seq,
)

# The statements of a chat turn are built once, at import: built per call, each would be
# constructed and cache-keyed again on every turn.
_SELECT_CONVERSATION = select(*_CONVERSATION_COLUMNS).where(
    _c.user_id == bindparam("user"), _c.id == bindparam("conversation")
)
# The newest summary of messages in one run of a branch: a summary stands in only for
# the branch it summarised, so it is looked for along the branch being read.
_SUMMARY_IN_RUN = (
    SELECT_SUMMARY.where(_s.upto_seq >= bindparam("low"), _s.upto_seq <= bindparam("high"))
    .order_by(_s.upto_seq.desc())
    .limit(1)
)
# The head, its run, and the newest summary within that run (NULLs if none), in one
# statement: for a conversation never edited that is the whole lookup, and a turn's
# context takes two statements, this one and the range it reads.
_HEAD_AND_SUMMARY = (
    select(
        _c.head_seq,
        _c.head_run_start,
        _c.head_run_parent,
        _s.upto_seq,
        _s.content,
        _s.token_count,
        _s.updated_at,
    )
    .select_from(
        conversations.outerjoin(
            summaries,
            and_(
                _s.user_id == _c.user_id,
                _s.conversation_id == _c.id,
                _s.upto_seq >= _c.head_run_start,
                _s.upto_seq <= _c.head_seq,
            ),
        )
    )
    .where(_c.user_id == bindparam("user"), _c.id == bindparam("conversation"))
    .order_by(_s.upto_seq.desc())
    .limit(1)
)
_CHILDREN = select(_m.parent_seq, _m.seq).where(
    _m.user_id == bindparam("user"), _m.conversation_id == bindparam("conversation")
)
# The newest leaf below a message: its descendants, one index lookup each.
_NEWEST_LEAF = text(
    """
    WITH RECURSIVE below(seq) AS (
        SELECT CAST(:seq AS BIGINT)
        UNION ALL
        SELECT m.seq FROM messages m JOIN below b
            ON m.parent_seq = b.seq AND (m.seq = b.seq + 1 OR m.run_start = m.seq)
        WHERE m.user_id = :user AND m.conversation_id = :conversation
    )
    SELECT max(seq) FROM below
    """
)
_HEAD_FOR_UPDATE = HEAD.with_for_update()
_SUMMARIES_NEWEST_FIRST = SELECT_SUMMARY.order_by(_s.upto_seq.desc())
# A limit no branch reaches (the largest a PostgreSQL LIMIT parameter takes).
_WHOLE_BRANCH: Final = 2**31 - 1


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
        head_seq=row.head_seq,
    )


def _answered_later(call_ids: set[str], later: Sequence[Message]) -> bool:
    """Whether a result in `later` answers one of the calls `call_ids`. A result answers
    the latest call with its id before it: models reuse ids (`call_0`) from turn to turn,
    and a later call with the same id answers for its own results."""
    waiting = set(call_ids)
    for message in later:
        if not waiting:
            return False
        if message.tool_call_id in waiting:
            return True
        waiting -= {call.id for call in message.tool_calls}
    return False


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
        self._transfer = Transfer(
            db, max_message_chars=self._max_message_chars, token_counter=self._token_counter
        )

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
    def max_message_chars(self) -> int:
        """The longest content or metadata a message may have."""
        return self._max_message_chars

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
        conversation_id: str | None = None,
    ) -> Conversation:
        """Create an empty conversation with a random, unguessable id.

        A `temporary` one is deleted a day after it was created, however active.
        `conversation_id` is for an integration that must name a conversation before it
        creates it (a ChatKit thread): an id it made with `new_id()`, never a client's.
        """
        now = utcnow()
        expires_at = now + TEMPORARY_FOR if temporary else None
        conversation = Conversation(
            id=new_id() if conversation_id is None else check_conversation_id(conversation_id),
            title=check_conversation_title(title),
            metadata=check_conversation_metadata(metadata or {}),
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

    async def list_conversations_by_age(
        self,
        user_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        after_id: str | None = None,
        oldest_first: bool = False,
    ) -> Page[Conversation]:
        """The user's conversations that are not archived, newest first (or oldest first),
        by when they were created: the order a ChatKit thread list takes. `limit` is
        clamped to 100; a cursor is checked as `list_conversations` checks its own.
        Instead of a cursor, `after_id` names the conversation to list on from.

        Raises:
            NotFoundError: no conversation `after_id` for this user.
        """
        user_id = check_user_id(user_id)
        limit = min(check_limit(limit), MAX_PAGE_SIZE)
        query = select(*_CONVERSATION_COLUMNS).where(_c.user_id == user_id, _c.archived == false())
        position = tuple_(_c.created_at, _c.id)
        if after_id is not None:
            anchor = await self.get_conversation(user_id, after_id)
            cursor = encode_age_cursor(self._cursor_key, user_id, anchor.created_at, anchor.id)
        if cursor is not None:
            created_at, last_id = decode_age_cursor(
                self._cursor_key, user_id, check_text("cursor", cursor)
            )
            after = tuple_(created_at, last_id)
            query = query.where(position > after if oldest_first else position < after)
        order = (_c.created_at, _c.id) if oldest_first else (_c.created_at.desc(), _c.id.desc())
        query = query.order_by(*order).limit(limit + 1)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        now = utcnow()
        items = [_conversation(row, now) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_age_cursor(self._cursor_key, user_id, last.created_at, last.id)
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
            values["title"] = check_conversation_title(title)
        if not isinstance(metadata, Unset):
            values["metadata"] = check_conversation_metadata(metadata)
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
        return await self._writer.append_alone(
            self._db,
            user_id,
            conversation_id,
            prepared,
            use=use,
            lease_id=None if lease is None else lease.id,
            lease_expires_at=None if lease is None else lease.expires_at,
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
        return await stop_requested(self._db, user_id, conversation_id, lease.id)

    async def history(
        self,
        user_id: str,
        conversation_id: str,
        *,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
        leaf: int | None = None,
        oldest_first: bool = False,
    ) -> list[Message]:
        """The latest `limit` messages of a branch (of those between `after_seq` and
        `before_seq`, both excluded), oldest first; with `oldest_first`, the earliest
        `limit` of them instead.

        The branch is the head's, or the one ending at message `leaf`: that message and
        its parents, back to the first. Read backwards, one range scan per run of
        consecutive messages (a conversation never edited is one run): its cost depends
        on `limit`, not on how long the conversation is.

        Raises:
            NotFoundError: no such conversation for this user, or no message `leaf`.
            ValidationError: a bound is not an integer.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        limit = check_limit(limit)
        bounds: dict[str, int] = {}
        for name, bound in (("before_seq", before_seq), ("after_seq", after_seq), ("leaf", leaf)):
            if bound is not None:
                if isinstance(bound, bool) or not isinstance(bound, int):
                    raise ValidationError(f"{name} must be an integer", field=name)
                # One short of a bigint's ends: the statements read past a bound (`+ 1`,
                # `- 1`), which PostgreSQL refuses to overflow. No seq comes near either.
                bounds[name] = max(min(bound, MAX_BIGINT - 1), -MAX_BIGINT + 1)

        after = max(bounds.get("after_seq", 0), 0)
        if leaf is None and not oldest_first:
            # The head's run in one statement on the driver; the runs before it, if the
            # window reaches them, one range scan each. Each run is written once and
            # never changes, so reading them apart reads what reading them together would.
            found = await read_head_run(
                self._db,
                user_id,
                conversation_id,
                limit=limit,
                after=after,
                before=bounds.get("before_seq"),
            )
            if found is not None:
                newest, run_start, run_parent = found
                if len(newest) < limit and run_start > after + 1 and run_parent is not None:
                    earlier = await self._db.read(
                        lambda conn: read_path(
                            conn,
                            user_id,
                            conversation_id,
                            run_parent,
                            limit=limit - len(newest),
                            after=after,
                            before=bounds.get("before_seq"),
                        )
                    )
                    newest += [message_of(row) for row in earlier]
                return newest[::-1]

        def work(conn: Connection) -> list[Message]:
            key = {"user": user_id, "conversation": conversation_id}
            if leaf is None:
                head = conn.execute(HEAD, key).first()
                if head is None:
                    raise NotFoundError("conversation not found")
                start = head.head_seq
                run: tuple[int, int | None] | None = (head.head_run_start, head.head_run_parent)
            else:
                require_conversation(conn, user_id, conversation_id)
                start, run = bounds["leaf"], None
            read = read_path_oldest_first if oldest_first else read_path
            path = read(
                conn,
                user_id,
                conversation_id,
                start,
                run=run,
                limit=limit,
                after=after,
                before=bounds.get("before_seq"),
            )
            return [message_of(row) for row in (path if oldest_first else reversed(path))]

        return await self._db.read(work)

    async def load_context(
        self, user_id: str, conversation_id: str, *, limit: int
    ) -> tuple[Summary | None, list[Message]]:
        """The summary that stands in for the head's branch up to some message, and the
        latest `limit` messages of the branch after it, oldest first.

        What a turn needs to build its agent's input. A summary of another branch (one
        made before an edit, say) is never used: it is looked for along the branch, in
        each run the window reads. The cost does not grow with the conversation: a
        linear one takes one statement (`hot.read_context_run`).
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        limit = check_limit(limit)
        key = {"user": user_id, "conversation": conversation_id}

        # The head's run first, in one statement, for most conversations all there is.
        hot = await read_context_run(self._db, user_id, conversation_id, limit=limit)
        if hot is not None:
            newest, summary, parent = hot
            if summary is not None or parent is None or len(newest) >= limit:
                return summary, newest[::-1]

        def work(conn: Connection) -> tuple[Summary | None, list[Message]]:
            seq: int | None
            run: tuple[int, int | None] | None
            found: Any
            if hot is not None:  # the runs before the head's, each written once for good
                messages, seq, run, found = hot[0], hot[2], None, None
            else:
                head = conn.execute(_HEAD_AND_SUMMARY, key).first()
                if head is None:
                    raise NotFoundError("conversation not found")
                seq, run = head.head_seq, (head.head_run_start, head.head_run_parent)
                found = None if head.upto_seq is None else head
                messages = []
            while seq is not None and len(messages) < limit:
                if run is None:  # an earlier run: its summary is looked for in it
                    run = run_of(conn, user_id, conversation_id, seq)
                    found = conn.execute(
                        _SUMMARY_IN_RUN, {**key, "low": run[0], "high": seq}
                    ).first()
                run_start, parent = run
                low = run_start if found is None else found.upto_seq + 1
                if low <= seq:
                    rows = run_rows(conn, user_id, conversation_id, low, seq, limit - len(messages))
                    messages += map(message_of, rows)
                if found is not None:
                    return summary_of(found), messages[::-1]
                seq, run = parent, None
            return None, messages[::-1]

        return await self._db.read(work)

    # -- branches -----------------------------------------------------------------------

    async def siblings(
        self, user_id: str, conversation_id: str, messages: Sequence[Message]
    ) -> dict[int, list[int]]:
        """For each of `messages`, the seqs of every version of it (itself and its
        siblings: the messages with the same parent), oldest first.

        One indexed query on the parents. Raises `NotFoundError` for a conversation that
        is not the user's (when `messages` is empty: nothing to look for).
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        parents = {m.parent_seq for m in messages}
        if not parents:
            return {}
        found = [p for p in parents if p is not None]
        # A message's children: the run that goes on from it (its next seq), and the
        # messages starting runs of their own under it (the index's rows).
        starts = _m.run_start == _m.seq
        query = _CHILDREN.where(
            or_(
                and_(starts, _m.parent_seq.in_(found)),
                and_(starts, _m.parent_seq.is_(None)) if None in parents else false(),
                and_(_m.seq.in_([p + 1 for p in found]), _m.parent_seq == _m.seq - 1),
            )
        ).order_by(_m.seq)
        key = {"user": user_id, "conversation": conversation_id}

        def work(conn: Connection) -> dict[int, list[int]]:
            children: dict[int | None, list[int]] = {}
            for parent, seq in conn.execute(query, key):
                children.setdefault(parent, []).append(seq)
            if not children:
                require_conversation(conn, user_id, conversation_id)
            return {m.seq: children.get(m.parent_seq, [m.seq]) for m in messages}

        return await self._db.read(work)

    async def set_head(self, user_id: str, conversation_id: str, seq: int) -> int:
        """Make the next turn continue from message `seq`'s branch: the head becomes the
        newest message at or below `seq` (a leaf), durably, for every replica.

        Returns:
            The new head's seq.

        Raises:
            NotFoundError: no such conversation or message for this user.
            ConflictError: `conversation_busy`, a turn is running in the conversation.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_BIGINT:
            raise ValidationError("seq must be a positive integer", field="seq")
        key = {"user": user_id, "conversation": conversation_id}

        def work(conn: Connection) -> int:
            require_conversation(conn, user_id, conversation_id)
            run_of(conn, user_id, conversation_id, seq)  # raises if there is no such message
            leaf: int = conn.execute(_NEWEST_LEAF, {**key, "seq": seq}).scalar_one()
            self._writer.move_head(conn, user_id, conversation_id, leaf, now=utcnow())
            return leaf

        return await self._db.write(work)

    async def rewind(self, user_id: str, conversation_id: str, *, to_seq: int | None) -> None:
        """Make message `to_seq` itself the head (None: before the first message), so the
        next append continues right after it. Nothing is deleted: the messages after it
        stay, on a branch the head no longer reads.

        Unlike `set_head`, which goes down to the newest leaf, this stops exactly at
        `to_seq`: what undoing the last messages (an Agents SDK session's `pop_item`,
        `clear_session`) needs.

        Raises:
            NotFoundError: no such conversation or message for this user.
            ValidationError: `to_seq` is not a positive integer.
            ConflictError: `conversation_busy`, a turn is running in the conversation.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        if to_seq is not None and (
            isinstance(to_seq, bool) or not isinstance(to_seq, int) or not 1 <= to_seq <= MAX_BIGINT
        ):
            raise ValidationError("to_seq must be a positive integer", field="to_seq")

        def work(conn: Connection) -> None:
            # move_head looks the message up (NotFoundError) and refuses while a live
            # turn holds the conversation, closing a dead one first.
            require_conversation(conn, user_id, conversation_id)
            self._writer.move_head(conn, user_id, conversation_id, to_seq, now=utcnow())

        await self._db.write(work)

    async def pop_head(self, user_id: str, conversation_id: str) -> Message | None:
        """Move the head back one message, to its parent, and return the message that was
        the head (None, and nothing changed, when the head's branch is empty). Nothing is
        deleted: the message stays, on a branch the head no longer reads.

        One transaction: of two concurrent pops, each gets a different message.

        Raises:
            NotFoundError: no such conversation for this user.
            ConflictError: `conversation_busy`, a turn is running in the conversation.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        key = {"user": user_id, "conversation": conversation_id}

        def work(conn: Connection) -> Message | None:
            # FOR UPDATE (PostgreSQL; SQLite writes one at a time anyway): a concurrent
            # pop waits here and then reads the head this one leaves.
            head = conn.execute(_HEAD_FOR_UPDATE, key).first()
            if head is None:
                raise NotFoundError("conversation not found")
            if head.head_seq is None:
                return None
            [row] = run_rows(conn, user_id, conversation_id, head.head_seq, head.head_seq, 1)
            popped = message_of(row)
            self._writer.move_head(conn, user_id, conversation_id, popped.parent_seq, now=utcnow())
            return popped

        return await self._db.write(work)

    async def remove_from_branch(
        self,
        user_id: str,
        conversation_id: str,
        seq: int,
        *,
        replacement: ChatMessage | None = None,
    ) -> None:
        """Take message `seq` off the head's branch, or put `replacement` in its place.

        The head moves to the message's parent, and `replacement` (if any) and a copy of
        each message after it on the branch are appended there, all in one transaction:
        a new version of the branch, as an edit makes. Nothing is deleted: the old
        version stays, on a branch the head no longer reads. Taking off the head itself
        copies nothing.

        Raises:
            NotFoundError: no such conversation for this user, or message `seq` is not on
                the head's branch.
            ValidationError: `would_split_tool_call`, the message calls a tool (one that
                `replacement` does not) whose result is on the branch after it; or
                `replacement` is invalid.
            ConflictError: `conversation_busy`, a turn is running in the conversation.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_BIGINT:
            raise NotFoundError("message not found")
        key = {"user": user_id, "conversation": conversation_id}

        def work(conn: Connection) -> None:
            head = conn.execute(_HEAD_FOR_UPDATE, key).first()
            if head is None:
                raise NotFoundError("conversation not found")
            rows = [] if head.head_seq is None else read_path(
                conn, user_id, conversation_id, head.head_seq, limit=_WHOLE_BRANCH, after=seq - 1
            )  # fmt: skip
            if not rows or rows[-1].seq != seq:
                raise NotFoundError("message not found")
            removed, *after = [message_of(row) for row in reversed(rows)]
            kept = {call.id for call in replacement.tool_calls} if replacement else set()
            if _answered_later({call.id for call in removed.tool_calls} - kept, after):
                raise ValidationError(
                    f"message {seq} calls a tool whose result comes after it: remove the"
                    " result first",
                    field="seq",
                    code="would_split_tool_call",
                )
            now = utcnow()
            self._writer.move_head(conn, user_id, conversation_id, removed.parent_seq, now=now)
            again = [replacement] if replacement else []
            again += [
                ChatMessage(
                    role=m.role,
                    content=m.content,
                    tool_calls=m.tool_calls,
                    tool_call_id=m.tool_call_id,
                    name=m.name,
                    metadata=m.metadata,
                )
                for m in after
            ]
            if again:
                prepared = self._writer.prepare(again)
                self._writer.append(conn, user_id, conversation_id, prepared, now=now)

        await self._db.write(work)

    async def fork(
        self, user_id: str, conversation_id: str, *, upto_seq: int | None = None
    ) -> Conversation:
        """A new conversation holding a copy of one branch: message `upto_seq` (default:
        the head) and its parents back to the first, numbered 1, 2, ... again. The copy
        has the source's title and metadata; the summary of the branch comes along.

        Raises:
            NotFoundError: no such conversation or message for this user.
            ValidationError: `would_split_tool_call`, message `upto_seq` calls tools whose
                results come after it.
        """
        user_id = check_user_id(user_id)
        conversation_id = check_conversation_id(conversation_id)
        if upto_seq is not None and (
            isinstance(upto_seq, bool) or not isinstance(upto_seq, int) or upto_seq < 1
        ):
            raise ValidationError("upto_seq must be a positive integer", field="upto_seq")
        key = {"user": user_id, "conversation": conversation_id}

        def work(conn: Connection) -> Conversation:
            source = conn.execute(_SELECT_CONVERSATION, key).first()
            if source is None:
                raise NotFoundError("conversation not found")
            leaf = source.head_seq if upto_seq is None else upto_seq
            rows = [] if leaf is None else read_path(
                conn, user_id, conversation_id, leaf, limit=_WHOLE_BRANCH
            )  # fmt: skip
            branch = [message_of(row) for row in reversed(rows)]
            if branch and branch[-1].tool_calls:
                raise ValidationError(
                    f"message {leaf} calls tools whose results come after it: fork from"
                    " a later message",
                    field="upto_seq",
                    code="would_split_tool_call",
                )
            now = utcnow()
            copy = Conversation(
                id=new_id(),
                title=source.title,
                metadata=readable_metadata(source.metadata),
                message_count=len(branch),
                created_at=now,
                updated_at=now,
                head_seq=len(branch) or None,
            )
            conn.execute(
                insert(conversations),
                {
                    "user_id": user_id,
                    "id": copy.id,
                    "title": copy.title,
                    "metadata": copy.metadata,
                    "next_seq": len(branch) + 1,
                    "head_seq": copy.head_seq,
                    "head_run_start": 1 if branch else None,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            renumbered = {m.seq: place for place, m in enumerate(branch, 1)}
            # One run: the copy is linear.
            insert_messages(
                conn,
                user_id,
                [(copied(m, conversation_id=copy.id, seq=renumbered[m.seq]), 1) for m in branch],
            )
            # The newest summary of the branch comes along, renumbered; the others in the
            # table summarise other branches. A conversation has a few, not one per
            # message: one per fold.
            for summary in conn.execute(_SUMMARIES_NEWEST_FIRST, key):
                if summary.upto_seq in renumbered:
                    conn.execute(
                        insert(summaries),
                        {
                            "user_id": user_id,
                            "conversation_id": copy.id,
                            "upto_seq": renumbered[summary.upto_seq],
                            "content": summary.content,
                            "token_count": summary.token_count,
                            "updated_at": now,
                        },
                    )
                    break
            return copy

        return await self._db.write(work)

    # -- usage --------------------------------------------------------------------------

    async def token_usage(self, user_id: str, *, first_day: date, last_day: date) -> UsageReport:
        """The tokens the user's turns used from `first_day` to `last_day`, both included:
        in all, per day (UTC) and per conversation.

        A turn counts on the day it started, once it has ended. What a deleted
        conversation's turns used is deleted with them: it counts nowhere.

        Raises:
            ValidationError: the days are not dates, the last comes before the first, or
                the period is longer than `chatledger.usage.MAX_USAGE_DAYS`.
        """
        user_id = check_user_id(user_id)
        first_day, last_day = check_period(first_day, last_day)
        dialect = self._db.dialect
        return await self._db.read(
            lambda conn: read_usage(conn, dialect, user_id, first_day, last_day)
        )

    # -- export and import --------------------------------------------------------------

    def export(self, user_id: str) -> AsyncIterator[str]:
        """Everything the user has that is theirs to take along, as JSON Lines (each
        string one or more whole lines): conversations with their branches, head and
        summaries, every message, tasks. See `chatledger.store.transfer` for the format.

        Streamed: a page of rows at a time, each page its own read, never the user's
        whole history in memory.
        """
        return self._transfer.export(user_id)

    async def import_lines(
        self, user_id: str, data: AsyncIterable[bytes] | Iterable[bytes]
    ) -> ImportReport:
        """Import an export (`export`'s lines, as bytes in chunks split anywhere) into
        the user's account, one conversation per transaction.

        A conversation with anything wrong in it is not written at all and the report
        names its line; the others are. Importing the same file again adds nothing.

        Returns:
            What was imported, what was there already, what failed and where, and
            whether the file's end was reached.

        Raises:
            ValidationError: the data is not a chatledger export (nothing is written).
        """
        lines = read_lines(data, max_line_bytes=self._transfer.max_line_bytes)
        return await self._transfer.import_records(user_id, lines)

    async def import_chatgpt(self, user_id: str, data: bytes) -> ImportReport:
        """Import a ChatGPT data export's `conversations.json` (its bytes): each
        conversation's message tree, branches and current node (as the head), as
        `import_lines` imports an export; see `chatledger.chatgpt` for what is kept.

        Raises:
            ValidationError: `data` is not a JSON array of conversations.
        """
        return await self._transfer.import_chatgpt(user_id, data)

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
