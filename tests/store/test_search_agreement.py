"""SQLite and PostgreSQL find the same messages for the same query, whatever the script.

Messages of made-up words from many scripts at once — accents, marks of every kind,
joiners, ligatures, fullwidth forms, CJK, letters newer than FTS5's Unicode 6.1 tables —
are stored in both databases; every query made of their words (whole, in pairs, as
prefixes) must find the same messages in both. This is how FTS5 was found splitting
words at spacing marks, which PostgreSQL keeps inside them.
"""

from __future__ import annotations

import random
import shutil
import uuid
from pathlib import Path

import pytest

from chatledger.domain import ChatMessage
from chatledger.errors import ValidationError
from chatledger.store import SQLAlchemyStore
from chatledger.store.fulltext import words

POOL = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœĳǅǈǋǲ"
    "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώΑΒΓΔΣς"
    "абвгдежзийклмнопрстуфхцчшщъыьэюяЁё"
    "אבגדהוזחטיכלמנסעפצקרשת\u05b0\u05b4\u05b5\u05b7\u05b8\u05b9\u05bc\u05c1"
    "\u0627\u0628\u062a\u062b\u062c\u062d\u062e\u062f\u0630\u0631\u0632\u0633\u0634"
    "\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652"
    "कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह"
    "\u093e\u093f\u0940\u0941\u0942\u0947\u0948\u094b\u094c\u094d\u0902\u0903"
    "กขคงจฉชซญดตถทนบปผพฟภมยรลวศษสหอฮ"
    "\u0e31\u0e34\u0e35\u0e36\u0e37\u0e38\u0e39\u0e47\u0e48\u0e49\u0e4a\u0e4b"
    "東京都大阪日本語漢字中文简体繁體ひらがなカタカナー한국어글자"
    "\uff21\uff22\uff41\uff42\uff10\uff11\ufb01\ufb02\ufb00½²³①Ⅻ\u0660\u0661\u0969\u0966"
    "\u0300\u0301\u0302\u0308\u0327\u20dd\u200c\u200d_"
    "ᏣᎳᎩⴀⴁꓐꓑ𝐀𝐁𝒜\U00016e40\U00016e41ᲀᲁ\u08be\u08bf"
)
SEPARATORS = [" ", " ", " ", "-", ".", ", ", "\n", "😀", "…", "'", '"', "/"]


def _text(chance: random.Random) -> str:
    parts = []
    for _ in range(chance.randint(3, 12)):
        parts.append("".join(chance.choice(POOL) for _ in range(chance.randint(1, 5))))
        parts.append(chance.choice(SEPARATORS))
    return "".join(parts)


async def _found(store: SQLAlchemyStore, user: str, query: str) -> set[int] | str:
    try:
        seqs: set[int] = set()
        cursor = None
        while True:
            page = await store.search(user, query, limit=50, cursor=cursor)
            seqs |= {hit.seq for hit in page.items}
            if page.next_cursor is None:
                return seqs
            cursor = page.next_cursor
    except ValidationError as refused:
        return refused.code


@pytest.mark.parametrize("seed", [1, 2])
async def test_both_databases_find_the_same_messages(
    seed: int, tmp_path: Path, sqlite_template: Path, postgres_url: str
) -> None:
    chance = random.Random(seed)
    texts = [_text(chance) for _ in range(200)]
    path = tmp_path / "agreement.db"
    shutil.copy(sqlite_template, path)
    user = f"agreement-{uuid.uuid4()}"  # the PostgreSQL database is shared by the run
    stores = [SQLAlchemyStore.from_url(f"sqlite:///{path}"), SQLAlchemyStore.from_url(postgres_url)]
    try:
        for store in stores:
            conversation = await store.create_conversation(user)
            await store.append(user, conversation.id, [ChatMessage.user(t) for t in texts])
        queries = []
        for text in texts[:100]:
            written = [text[start:end] for start, end, _ in words(text)]
            if written:
                word = chance.choice(written)
                pair = chance.sample(written, min(2, len(written)))
                queries += [word, word[:2] + "*", " ".join(pair)]
        found = 0
        for query in queries:
            sqlite, postgresql = [await _found(store, user, query) for store in stores]
            assert sqlite == postgresql, query
            found += isinstance(sqlite, set) and bool(sqlite)
        assert found > len(queries) // 2
    finally:
        for store in stores:
            await store.close()
