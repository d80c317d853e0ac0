"""Full-text search on SQLite and PostgreSQL: what it finds, in which order, with which
snippets; that it finds nothing of another user's, nothing deleted, and never fails on
what people type."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from chatledger.domain import ChatMessage, SearchHit, ToolCall
from chatledger.errors import ValidationError
from chatledger.store import Connector, Lease, SQLAlchemyStore
from chatledger.store.core import utcnow
from chatledger.store.fulltext import MAX_INDEXED_CHARS
from chatledger.store.schema import conversations
from chatledger.store.search import MAX_SEARCH_HITS
from tests.search_queries import HOSTILE_QUERIES


async def _conversation(
    store: SQLAlchemyStore, user: str, *texts: str, title: str | None = None
) -> str:
    conversation = await store.create_conversation(user, title=title)
    messages = [
        ChatMessage.user(t) if n % 2 == 0 else ChatMessage.assistant(t) for n, t in enumerate(texts)
    ]
    if messages:
        await store.append(user, conversation.id, messages)
    return conversation.id


def _where(hits: Sequence[SearchHit]) -> list[tuple[str, int]]:
    return [(hit.conversation_id, hit.seq) for hit in hits]


def _marked(hit: SearchHit) -> list[str]:
    return [hit.snippet[start:end] for start, end in hit.marks]


async def _index_rows(db: Connector, user_id: str) -> int:
    statement = text("SELECT count(*) FROM message_search WHERE user_id = :u")
    return int(await db.read(lambda conn: conn.execute(statement, {"u": user_id}).scalar_one()))


async def test_a_stored_message_is_found_by_any_of_its_words(store: SQLAlchemyStore) -> None:
    first = await _conversation(
        store,
        "alice",
        "My landlord wants the rent on Friday.",
        "Then pay the rent on Thursday.",
        title="Rent",
    )
    await _conversation(store, "alice", "Nothing about flats here.")

    page = await store.search("alice", "LANDLORD")
    assert [(h.conversation_id, h.seq, h.role.value, h.title) for h in page.items] == [
        (first, 1, "user", "Rent")
    ]
    assert page.next_cursor is None
    both = await store.search("alice", "rent")
    assert sorted(_where(both.items)) == [(first, 1), (first, 2)]
    # Every word must appear.
    assert _where((await store.search("alice", "rent landlord")).items) == [(first, 1)]
    assert (await store.search("alice", "rent flats")).items == []
    assert (await store.search("alice", "land")).items == []


async def test_the_index_commits_and_rolls_back_with_the_append(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as bound:
            await bound.append("alice", conversation.id, [ChatMessage.user("ephemeral words")])
            assert len((await bound.search("alice", "ephemeral")).items) == 1
            raise Boom
    assert (await store.search("alice", "ephemeral")).items == []


async def test_more_occurrences_in_a_shorter_message_rank_first(store: SQLAlchemyStore) -> None:
    filler = " ".join(f"filler{n}" for n in range(40))
    once_long = await _conversation(store, "alice", f"the quokka sat {filler}")
    thrice = await _conversation(store, "alice", "quokka quokka quokka and more")
    once_short = await _conversation(store, "alice", "a quokka smiled")
    twice = await _conversation(store, "alice", f"quokka {filler} quokka")

    order = [hit.conversation_id for hit in (await store.search("alice", "quokka")).items]
    assert order.index(thrice) < order.index(once_short) < order.index(once_long)
    assert order.index(twice) < order.index(once_long)


async def test_ties_are_broken_by_conversation_then_seq(store: SQLAlchemyStore) -> None:
    same = ["the same words", "the same words"]
    ids = [await _conversation(store, "alice", *same) for _ in range(4)]
    hits = (await store.search("alice", "same words")).items
    assert _where(hits) == sorted((c, s) for c in ids for s in (1, 2))
    assert (await store.search("alice", "same words")).items == hits


async def test_snippets_are_plain_text_around_the_match_with_the_words_marked(
    store: SQLAlchemyStore,
) -> None:
    before = " ".join(f"w{n}" for n in range(60))
    after = " ".join(f"v{n}" for n in range(60))
    content = f"{before}\n\nThe <b>Landlord</b> said:\t<script>alert('rent')</script> {after}"
    await _conversation(store, "alice", content)

    [hit] = (await store.search("alice", "landlord rent")).items
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert len(hit.snippet) <= 200
    # Nothing added, nothing escaped: the text as stored, whitespace collapsed.
    assert hit.snippet.strip("…") in re.sub(r"\s+", " ", content)
    assert "<b>Landlord</b>" in hit.snippet and "<script>" in hit.snippet
    assert _marked(hit) == ["Landlord", "rent"]
    assert hit.snippet[: hit.marks[0][0]].endswith("The <b>")


async def test_a_prefix_is_the_last_word_with_a_star(store: SQLAlchemyStore) -> None:
    conversation = await _conversation(store, "alice", "Landlords and landlines", "land ahoy")
    hits = (await store.search("alice", "land*")).items
    assert sorted(_where(hits)) == [(conversation, 1), (conversation, 2)]
    by_seq = {hit.seq: _marked(hit) for hit in hits}
    assert by_seq == {1: ["Landlords", "landlines"], 2: ["land"]}
    assert _where((await store.search("alice", "ahoy land*")).items) == [(conversation, 2)]
    assert _where((await store.search("alice", "ahoyz land*")).items) == []
    # A star elsewhere is punctuation; a one-letter prefix is a word.
    for query in ("land *", "land* ahoy", "*land"):
        assert _where((await store.search("alice", query)).items) == [(conversation, 2)]
    assert (await store.search("alice", "l*")).items == []


@pytest.mark.parametrize(
    ("stored", "query", "marked"),
    [
        ("Un café crème, s'il vous plaît", "CAFE creme", ["café", "crème"]),
        ("Un cafe\u0301 noir", "café", ["cafe\u0301"]),  # stored decomposed
        ("Un café noir", "cafe\u0301", ["café"]),  # searched decomposed
        ("Die Straße ist lang", "strasse", ["Straße"]),
        ("Der STRASSE entlang", "straße", ["STRASSE"]),
        ("a ﬁle of ﬂour", "file flour", ["ﬁle", "ﬂour"]),
        ("\uff26\uff35\uff2c\uff2c width", "full", ["\uff26\uff35\uff2c\uff2c"]),
        ("Ναυσικά ΟΔΥΣΣΕΥΣ", "ναυσικα οδυσσευς", ["Ναυσικά", "ΟΔΥΣΣΕΥΣ"]),
        ("Привет, мир", "ПРИВЕТ", ["Привет"]),
        ("שָׁלוֹם עולם", "שלום", ["שָׁלוֹם"]),  # Hebrew points dropped
        ("مَرْحَبًا بالعالم", "مرحبا", ["مَرْحَبًا"]),  # Arabic vowel marks dropped
        ("मुझे हिन्दी पसंद है", "हिन्दी", ["हिन्दी"]),  # marks inside the word
        ("ภาษาไทย ง่าย", "ภาษาไทย", ["ภาษาไทย"]),
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 آب",
            "\u0645\u06cc\u062e\u0648\u0627\u0647\u0645",
            ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"],
        ),
        ("東京 に 住む", "東京", ["東京"]),
        ("東京都に住んでいます", "東京*", ["東京都に住んでいます"]),
        ("snake_case_name here", "case", ["case"]),
        ("pizza🍕time", "time", ["time"]),
        ("hello \u0903 world", "hello \u0903", ["hello"]),  # a lone mark is no word
    ],
)
async def test_words_match_across_case_accents_and_scripts(
    store: SQLAlchemyStore, stored: str, query: str, marked: list[str]
) -> None:
    conversation = await _conversation(store, "alice", stored)
    [hit] = (await store.search("alice", query)).items
    assert (hit.conversation_id, _marked(hit)) == (conversation, marked)


@pytest.mark.parametrize(
    ("stored", "query"),
    [
        # No segmentation: a run of CJK or Thai is one word, found whole or by its start.
        ("東京都に住んでいます", "東京"),
        ("東京都に住んでいます", "住んで"),
        ("ภาษาไทยง่าย", "ไทย"),
        # No stemming.
        ("the landlords rented", "landlord"),
        # Emoji are not words.
        ("pizza 🍕", "🍕 pizzas"),
    ],
)
async def test_what_the_tokenizer_does_not_find(
    store: SQLAlchemyStore, stored: str, query: str
) -> None:
    await _conversation(store, "alice", stored)
    assert (await store.search("alice", query)).items == []


async def test_another_users_messages_never_appear(store: SQLAlchemyStore) -> None:
    canary = "zebracanary"
    bobs = await store.create_conversation("bob", title=f"{canary} title")
    call = ToolCall(id="call-1", name="note", arguments=f'{{"text": "{canary}"}}')
    await store.append(
        "bob",
        bobs.id,
        [
            ChatMessage.user(f"{canary} in a user message"),
            ChatMessage.assistant(f"{canary} in a reply", tool_calls=[call]),
            ChatMessage.tool(tool_call_id="call-1", name="note", content=f"{canary} result"),
            ChatMessage.assistant(f"again {canary}"),
        ],
    )
    alices = await _conversation(store, "alice", "nothing of that kind", "zebra crossing")

    for query in (canary, f"{canary}*", "zebra*", "zebrac*", "user message", "again"):
        for tools in (False, True):
            hits = (await store.search("alice", query, include_tools=tools)).items
            assert {hit.conversation_id for hit in hits} <= {alices}, (query, tools)
    assert len((await store.search("bob", canary, include_tools=True)).items) == 4
    assert _where((await store.search("alice", "zebra*")).items) == [(alices, 2)]
    # Bob's better matches take no place on alice's pages either.
    await _conversation(store, "bob", *(["zebra zebra zebra crossing"] * 30))
    page = await store.search("alice", "zebra crossing", limit=5)
    assert (_where(page.items), page.next_cursor) == ([(alices, 2)], None)


async def test_tool_results_are_found_only_when_asked_for(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    call = ToolCall(id="call-1", name="lookup", arguments='{"q": "wombat"}')
    await store.append(
        "alice",
        conversation.id,
        [
            ChatMessage.system("wombat instructions"),
            ChatMessage.user("find the wombat"),
            ChatMessage.assistant("", tool_calls=[call]),
            ChatMessage.tool(tool_call_id="call-1", name="lookup", content='{"found": "wombat"}'),
            ChatMessage.assistant("The wombat is found."),
        ],
    )
    without = await store.search("alice", "wombat")
    with_tools = await store.search("alice", "wombat", include_tools=True)
    assert sorted(hit.seq for hit in without.items) == [2, 5]
    assert sorted(hit.seq for hit in with_tools.items) == [2, 4, 5]
    assert {hit.role.value for hit in with_tools.items} == {"user", "assistant", "tool"}


async def test_deleting_a_conversation_deletes_its_hits(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    gone = await _conversation(store, "alice", "marmot one", "marmot two")
    kept = await _conversation(store, "alice", "marmot three")
    bobs = await _conversation(store, "bob", "marmot four")

    await store.delete_conversation("alice", gone)

    assert _where((await store.search("alice", "marmot")).items) == [(kept, 1)]
    assert _where((await store.search("bob", "marmot")).items) == [(bobs, 1)]
    assert await _index_rows(connector, "alice") == 1
    # The same id, if it ever came back, would start with nothing in the index.
    await store.delete_conversation("alice", kept)
    assert await _index_rows(connector, "alice") == 0


async def test_deleting_a_user_deletes_their_hits_and_no_one_elses(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    for n in range(3):
        await _conversation(store, "alice", f"ocelot {n}", "ocelot reply")
    bobs = await _conversation(store, "bob", "ocelot of bob's")

    await store.delete_user("alice")

    assert (await store.search("alice", "ocelot")).items == []
    assert await _index_rows(connector, "alice") == 0
    assert _where((await store.search("bob", "ocelot")).items) == [(bobs, 1)]
    assert await _index_rows(connector, "bob") == 1


async def test_purged_conversations_leave_nothing_in_the_index(
    store: SQLAlchemyStore, connector: Connector
) -> None:
    temporary = await store.create_conversation("alice", temporary=True)
    await store.append("alice", temporary.id, [ChatMessage.user("axolotl secret")])
    idle = await _conversation(store, "alice", "axolotl of old")
    fresh = await _conversation(store, "alice", "axolotl today")
    busy = await store.create_conversation("alice")
    lease = Lease.new(timedelta(minutes=1))
    await store.turns.start(
        "alice", busy.id, ChatMessage.user("axolotl running"), turn_id=lease.id,
        lease_expires_at=lease.expires_at,
    )  # fmt: skip

    def age(conversation_id: str, **values: Any) -> Any:
        statement = update(conversations).where(conversations.c.id == conversation_id)
        return connector.write(lambda conn: conn.execute(statement.values(values)))

    await age(temporary.id, expires_at=utcnow() - timedelta(seconds=1))
    await age(idle, updated_at=utcnow() - timedelta(days=40))
    await age(busy.id, updated_at=utcnow() - timedelta(days=40))

    assert await store.purge_conversations(idle_for=timedelta(days=30)) == 2

    hits = (await store.search("alice", "axolotl")).items
    assert sorted(_where(hits)) == sorted([(fresh, 1), (busy.id, 1)])
    assert await _index_rows(connector, "alice") == 2


async def test_pages_visit_every_hit_once_in_rank_order(store: SQLAlchemyStore) -> None:
    for n in range(23):
        # Different lengths, different ranks; some the same, to exercise the ties.
        padding = " ".join(["pad"] * (n % 7))
        await _conversation(store, "alice", f"capybara {padding}", f"capybara capybara {n}")
    whole = (await store.search("alice", "capybara", limit=50)).items
    assert len(whole) == 46

    seen: list[SearchHit] = []
    cursor = None
    pages = 0
    while True:
        page = await store.search("alice", "capybara", limit=7, cursor=cursor)
        seen += page.items
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 7
    assert seen == whole


async def test_paging_stops_at_the_bound(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append(
        "alice",
        conversation.id,
        [ChatMessage.user(f"dingo {n}") for n in range(MAX_SEARCH_HITS + 5)],
    )
    seqs: list[int] = []
    cursor = None
    while True:
        page = await store.search("alice", "dingo", limit=50, cursor=cursor)
        seqs += [hit.seq for hit in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seqs) == len(set(seqs)) == MAX_SEARCH_HITS


async def test_a_cursor_serves_only_its_own_search_and_user(store: SQLAlchemyStore) -> None:
    for n in range(4):
        await _conversation(store, "alice", f"gecko {n} tool")
        await _conversation(store, "bob", f"gecko {n}")
    cursor = (await store.search("alice", "gecko", limit=2)).next_cursor
    assert cursor is not None
    assert len((await store.search("alice", "gecko", limit=2, cursor=cursor)).items) == 2
    listing = await store.list_conversations("alice", limit=1)
    assert listing.next_cursor is not None
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for user, query, tools, bad in [
        ("alice", "gecko tool", False, cursor),  # another query
        ("alice", "gecko", True, cursor),  # the same query, with tool results
        ("bob", "gecko", False, cursor),  # another user
        ("alice", "gecko", False, tampered),
        ("alice", "gecko", False, listing.next_cursor),  # a listing's cursor
        ("alice", "gecko", False, "not a cursor"),
    ]:
        with pytest.raises(ValidationError) as refused:
            await store.search(user, query, cursor=bad, include_tools=tools)
        assert refused.value.field == "cursor"
    with pytest.raises(ValidationError):
        await store.list_conversations("alice", cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
async def test_a_limit_must_be_a_positive_integer(store: SQLAlchemyStore, limit: Any) -> None:
    with pytest.raises(ValidationError):
        await store.search("alice", "x", limit=limit)


async def test_hostile_queries_are_words_or_refused_never_syntax(store: SQLAlchemyStore) -> None:
    # Messages made of the words the hostile queries hold, so that some of them find hits.
    await _conversation(
        store,
        "alice",
        "near a b and or not body keys x user_id bob drop table messages select 1 w1 w2",
        "café 東京 שלום مرحبا بالعالم pizza same hello",
    )
    bobs = await _conversation(store, "bob", "near a b and or not drop table messages")
    for query, code in HOSTILE_QUERIES:
        if code is None:
            for hit in (await store.search("alice", query, include_tools=True)).items:
                assert hit.conversation_id != bobs, query
        else:
            with pytest.raises(ValidationError) as refused:
                await store.search("alice", query)
            assert (refused.value.code, refused.value.field) == (code, "q"), query
    # Still all there, and still only alice's.
    assert len((await store.search("alice", "drop table messages")).items) == 1
    assert len((await store.search("alice", "near(a b)")).items) == 1


async def test_a_message_of_the_largest_size_is_indexed_from_its_start(
    store: SQLAlchemyStore,
) -> None:
    # Distinct one-character CJK words, as many as fit: the largest tsvector a message
    # can make. PostgreSQL refuses a tsvector over 1 MB; the index keeps to its bound.
    words = " ".join(chr(0x4E00 + n % 20_000) for n in range(128 * 1024))
    content = "firstword " + words[: 256 * 1024 - 30] + " trailingword"
    assert len(content) <= 256 * 1024
    conversation = await _conversation(store, "alice", content)
    assert _where((await store.search("alice", "firstword")).items) == [(conversation, 1)]
    assert _where((await store.search("alice", chr(0x4E00 + 17))).items) == [(conversation, 1)]
    # Past what is indexed, a word is not found.
    assert len(content) > 2 * MAX_INDEXED_CHARS
    assert (await store.search("alice", "trailingword")).items == []


@pytest.mark.xfail(
    sqlite3.sqlite_version_info < (3, 42),
    reason="before 3.42, FTS5 keeps a deleted row's words in its index segments until it "
    "merges them (no secure-delete option): never found, but readable in the file",
    strict=True,
)
async def test_deleted_words_are_gone_from_the_sqlite_file(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "scrubbed.db"
    shutil.copy(sqlite_template, path)
    store = SQLAlchemyStore.from_url(f"sqlite:///{path}")
    try:
        words = {"alice": "qwzxcanaryalpha", "bob": "qwzxcanarybravo"}
        conversations = {}
        for user, word in words.items():
            conversations[user] = await _conversation(store, user, f"remember {word}", "ok")
        await _conversation(store, "carol", "something to keep")
        await store.delete_conversation("alice", conversations["alice"])
        await store.delete_user("bob")
    finally:
        await store.close()
    files = [path, path.with_name(path.name + "-wal")]
    on_disk = b"".join(f.read_bytes() for f in files if f.exists())
    assert b"something" in on_disk
    for word in words.values():
        assert word.encode()[4:] not in on_disk
