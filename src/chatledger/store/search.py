"""Full-text search over a user's messages: the index, and the query that reads it.

The index holds each user, assistant and tool message as its terms
(`chatledger.store.fulltext`). `index_messages` writes it in the append's own
transaction, so a message is findable exactly when it is stored. On PostgreSQL it is the
`message_search` table, a `tsvector` under a GIN index, deleted with its message by a
foreign-key cascade. The tsvector is written in its input syntax, terms and positions as
they are, and queries likewise: PostgreSQL's text-search parser, whose idea of a letter
comes from the server's C library and locale, never sees the text, and no configuration
or extension is involved. On SQLite it is an FTS5 table of the same name (tokenizer
`unicode61 remove_diacritics 2`, with the spacing marks as token characters, so that it
splits the terms it is given nowhere but at the spaces between them). An FTS5 table has no
foreign keys, so what deletes conversations and users deletes their rows from it in the
same transaction (`unindex_conversations`, `unindex_user`).

Each FTS5 row also holds two key words: one for its user and one for its conversation,
hashes no text contains. A search asks for its user's key word as well as for the query's
words, so FTS5 intersects the user's entries with the words' instead of ranking every
user's matches and throwing away all but one user's; deletion finds a conversation's rows
by its key word. The keys only narrow the search: every statement also compares the
stored user (and conversation) ids, so a hash collision could cost time, never
isolation.

Ranking: SQLite's `bm25` (term frequency, document length, and how rare the term is in the
whole table); PostgreSQL's `ts_rank` (term frequency, normalised by document length).
Ties are broken by conversation id, then seq.

Paging is by a bounded offset, not by keyset. Every page ranks all of the user's matches
anyway (a rank belongs to one query, so no index holds it): a keyset would save no work.
A cursor holding a rank would hand the client SQLite's bm25, which is computed from every
user's messages. The bound keeps the sort a top-N one. The price: a message appended
between two pages that ranks above the offset pushes the following hits down by one, so
one of them shows twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, TextClause, text

from chatledger.domain import ChatMessage, Message, Page, Role, SearchHit, check_text
from chatledger.errors import ValidationError
from chatledger.store.core import check_limit
from chatledger.store.cursor import sign, verify
from chatledger.store.engine import Connector
from chatledger.store.fulltext import SearchQuery, index_terms, parse_query, snippet

__all__ = [
    "INDEXED_ROLES",
    "MAX_SEARCH_HITS",
    "MAX_SEARCH_PAGE_SIZE",
    "Found",
    "document_of",
    "find",
    "index_messages",
    "row_keys",
    "search_messages",
    "tsvector",
    "unindex_conversations",
    "unindex_user",
]

MAX_SEARCH_PAGE_SIZE: Final = 50
# How deep search pages go: past the first thousand hits, a query needs more words.
MAX_SEARCH_HITS: Final = 1_000

# System messages are instructions to the model, not part of the conversation people see.
INDEXED_ROLES: Final = frozenset({Role.USER, Role.ASSISTANT, Role.TOOL})
_SHOWN: Final = {False: "('user', 'assistant')", True: "('user', 'assistant', 'tool')"}


def _key(kind: str, *parts: str) -> str:
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=10)
    return kind + digest.hexdigest()


def _user_key(user_id: str) -> str:
    return _key("u", user_id)


def _conversation_key(user_id: str, conversation_id: str) -> str:
    return _key("c", user_id, conversation_id)


def row_keys(user_id: str, conversation_id: str) -> str:
    """The key words of an FTS5 row: its user's and its conversation's."""
    return f"{_user_key(user_id)} {_conversation_key(user_id, conversation_id)}"


# Positions past this are stored as this; a lexeme keeps at most 256 of them.
_MAX_POSITION: Final = 16_383
_MAX_POSITIONS: Final = 256


def tsvector(terms: Sequence[str]) -> str:
    """A tsvector in its input syntax: each term with the positions it has in `terms`."""
    positions: dict[str, list[int]] = {}
    for position, term in enumerate(terms, 1):
        at = positions.setdefault(term, [])
        if len(at) < _MAX_POSITIONS and (not at or at[-1] < _MAX_POSITION):
            at.append(min(position, _MAX_POSITION))
    return " ".join(
        "'" + term.replace("\\", "\\\\").replace("'", "''") + "':" + ",".join(map(str, at))
        for term, at in positions.items()
    )


_PG_INSERT: Final = text(
    "INSERT INTO message_search (user_id, conversation_id, seq, role, document)"
    " VALUES (:user_id, :conversation_id, :seq, :role, CAST(:document AS tsvector))"
)
_FTS_INSERT: Final = text(
    "INSERT INTO message_search (body, keys, user_id, conversation_id, seq, role)"
    " VALUES (:body, :keys, :user_id, :conversation_id, :seq, :role)"
)
_FTS_DELETE: Final = text(
    "DELETE FROM message_search WHERE message_search MATCH :match"
    " AND user_id = :user_id AND conversation_id = :conversation_id"
)
_FTS_DELETE_USER: Final = text(
    "DELETE FROM message_search WHERE message_search MATCH :match AND user_id = :user_id"
)


def _terms(message: Message | ChatMessage) -> list[str]:
    """What the index holds of a message: its words, none for a role it leaves out."""
    return index_terms(message.content) if message.role in INDEXED_ROLES else []


def document_of(message: Message | ChatMessage) -> str | None:
    """A message's entry in PostgreSQL's index (a tsvector's text), None if it has none."""
    terms = _terms(message)
    return tsvector(terms) if terms else None


def index_body(message: Message | ChatMessage) -> str | None:
    """A message's entry in SQLite's index (the text FTS5 tokenizes), None if it has none."""
    terms = _terms(message)
    return " ".join(terms) if terms else None


def index_messages(conn: Connection, user_id: str, messages: Sequence[Message]) -> None:
    """Add `messages` to the search index, in the transaction that stores them."""
    postgresql = conn.dialect.name == "postgresql"
    keys: dict[str, str] = {}  # an append's messages are all of one conversation
    rows = []
    for m in messages:
        if not (terms := _terms(m)):
            continue
        row: dict[str, Any] = {
            "user_id": user_id,
            "conversation_id": m.conversation_id,
            "seq": m.seq,
            "role": m.role.value,
        }
        if postgresql:
            row["document"] = tsvector(terms)
        else:
            row["body"] = " ".join(terms)
            if m.conversation_id not in keys:
                keys[m.conversation_id] = row_keys(user_id, m.conversation_id)
            row["keys"] = keys[m.conversation_id]
        rows.append(row)
    if rows:
        conn.execute(_PG_INSERT if postgresql else _FTS_INSERT, rows)


def unindex_conversations(conn: Connection, keys: Iterable[tuple[str, str]]) -> None:
    """Remove conversations, as `(user_id, conversation_id)`, from the search index;
    call it in the transaction that deletes them."""
    if conn.dialect.name == "postgresql":
        return  # the foreign-key cascade from messages does it
    params = [
        {
            "match": f'keys : "{_conversation_key(user_id, conversation_id)}"',
            "user_id": user_id,
            "conversation_id": conversation_id,
        }
        for user_id, conversation_id in keys
    ]
    if params:
        conn.execute(_FTS_DELETE, params)


def unindex_user(conn: Connection, user_id: str) -> None:
    """Remove everything of a user's from the search index; call it in the transaction
    that deletes the user."""
    if conn.dialect.name == "postgresql":
        return  # the foreign-key cascade from messages does it
    conn.execute(_FTS_DELETE_USER, {"match": f'keys : "{_user_key(user_id)}"', "user_id": user_id})


def _search_statement(dialect: str, include_tools: bool) -> TextClause:
    # The hits of a page are chosen, ranked and cut to the page from the index alone;
    # only then are their messages and conversations read, for the page's rows only.
    shown = _SHOWN[include_tools]
    if dialect == "postgresql":
        hits = (
            "SELECT conversation_id, seq, ts_rank(document, query, 1) AS score"
            " FROM message_search, CAST(:query AS tsquery) AS query"
            f" WHERE user_id = :user_id AND document @@ query AND role IN {shown}"
            " ORDER BY score DESC, conversation_id, seq"
        )
        order = "h.score DESC, h.conversation_id, h.seq"
    else:
        hits = (
            "SELECT conversation_id, seq, bm25(message_search, 1.0, 0.0) AS score"
            " FROM message_search"
            f" WHERE message_search MATCH :query AND user_id = :user_id AND role IN {shown}"
            " ORDER BY score, conversation_id, seq"
        )
        order = "h.score, h.conversation_id, h.seq"
    return text(
        f"WITH h AS ({hits} LIMIT :limit OFFSET :offset)"
        " SELECT h.conversation_id, h.seq, m.role, m.content, c.title FROM h"
        " JOIN messages AS m ON m.user_id = :user_id"
        " AND m.conversation_id = h.conversation_id AND m.seq = h.seq"
        " JOIN conversations AS c ON c.user_id = :user_id AND c.id = h.conversation_id"
        f" ORDER BY {order}"
    )


_SEARCH: Final = {
    (dialect, tools): _search_statement(dialect, tools)
    for dialect in ("postgresql", "sqlite")
    for tools in (False, True)
}


@dataclass(frozen=True, slots=True)
class Found:
    """A hit as the index finds it, before its snippet is made."""

    conversation_id: str
    title: str | None
    seq: int
    role: Role
    content: str


def find(
    conn: Connection,
    user_id: str,
    query: SearchQuery,
    *,
    include_tools: bool,
    limit: int,
    offset: int,
) -> list[Found]:
    """The user's messages that hold every word of `query`, best first: `limit` of
    them, after the first `offset`."""
    dialect = conn.dialect.name
    params: dict[str, Any] = {"user_id": user_id, "limit": limit, "offset": offset}
    if dialect == "postgresql":
        params["query"] = query.tsquery()
    else:
        params["query"] = f'keys : "{_user_key(user_id)}" AND body : ({query.fts5()})'
    rows = conn.execute(_SEARCH[dialect, include_tools], params)
    return [
        Found(conversation_id, title, seq, Role(role), content)
        for conversation_id, seq, role, content, title in rows
    ]


async def search_messages(
    db: Connector,
    cursor_key: bytes,
    user_id: str,
    query: str,
    *,
    limit: int,
    cursor: str | None,
    include_tools: bool,
) -> Page[SearchHit]:
    """`SQLAlchemyStore.search`, over the connector `db`, with cursors signed by
    `cursor_key`."""
    parsed = parse_query(query)
    limit = min(check_limit(limit), MAX_SEARCH_PAGE_SIZE)
    if not isinstance(include_tools, bool):
        raise ValidationError("include_tools must be true or false", field="tools")
    fingerprint = parsed.fingerprint(include_tools=include_tools)
    offset = 0
    if cursor is not None:
        fields = verify(cursor_key, user_id, check_text("cursor", cursor))
        if (
            len(fields) != 3
            or fields[0] != "search"
            or fields[2] != fingerprint
            or isinstance(fields[1], bool)
            or not isinstance(fields[1], int)
            or not 0 < fields[1] < MAX_SEARCH_HITS
        ):
            raise ValidationError("cursor is not valid", field="cursor")
        offset = fields[1]
    take = min(limit, MAX_SEARCH_HITS - offset)

    def work(conn: Connection) -> tuple[list[SearchHit], bool]:
        # One more than the page tells whether another follows. Snippets are made here:
        # on SQLite that is the worker thread, off the event loop.
        found = find(
            conn, user_id, parsed, include_tools=include_tools, limit=take + 1, offset=offset
        )
        hits = []
        for hit in found[:take]:
            shown, marks = snippet(hit.content, parsed)
            hits.append(
                SearchHit(
                    conversation_id=hit.conversation_id,
                    title=hit.title,
                    seq=hit.seq,
                    role=hit.role,
                    snippet=shown,
                    marks=marks,
                )
            )
        return hits, len(found) > take

    hits, more = await db.read(work)
    next_cursor = None
    if more and offset + take < MAX_SEARCH_HITS:
        next_cursor = sign(cursor_key, user_id, ["search", offset + take, fingerprint])
    return Page(hits, next_cursor)
