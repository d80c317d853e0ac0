"""Words, queries and snippets, without a database: the parser hands a database nothing
but quoted words, and a snippet marks exactly the words a query looks for."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from chatledger.errors import ValidationError
from chatledger.store.fulltext import (
    MAX_INDEXED_CHARS,
    MAX_WORD_CHARS,
    SNIPPET_CHARS,
    fold,
    index_terms,
    index_text,
    parse_query,
    snippet,
    words,
)
from chatledger.store.unicode_marks import MARKS, marks_class
from tests.factories import examples
from tests.search_queries import HOSTILE_QUERIES

_FTS5 = re.compile(r'"(?:[^"]|"")+"\*?(?: AND "(?:[^"]|"")+"\*?)*')
_TSQUERY = re.compile(r"'(?:[^'\\]|''|\\\\)+'(?::\*)?(?: & '(?:[^'\\]|''|\\\\)+'(?::\*)?)*")


def test_the_marks_are_those_of_this_pythons_unicode() -> None:
    assert marks_class() == MARKS


@pytest.mark.parametrize(("query", "code"), HOSTILE_QUERIES, ids=lambda value: repr(value)[:30])
def test_each_hostile_query_is_words_or_refused_as_specified(query: str, code: str | None) -> None:
    if code is None:
        parsed = parse_query(query)
        assert parsed.terms
        assert _FTS5.fullmatch(parsed.fts5()), parsed.fts5()
        assert _TSQUERY.fullmatch(parsed.tsquery()), parsed.tsquery()
    else:
        with pytest.raises(ValidationError) as refused:
            parse_query(query)
        assert (refused.value.code, refused.value.field) == (code, "q")


@given(st.text(max_size=600))
@settings(max_examples=examples(500))
def test_any_text_is_a_query_of_quoted_words_or_a_422(query: str) -> None:
    try:
        parsed = parse_query(query)
    except ValidationError as refused:
        assert refused.code in ("query_without_words", "query_too_long", "query_invalid")
        return
    assert _FTS5.fullmatch(parsed.fts5()), parsed.fts5()
    assert _TSQUERY.fullmatch(parsed.tsquery()), parsed.tsquery()
    assert all(term and term == fold(term) for term in parsed.terms)


@pytest.mark.parametrize(
    ("word", "folded"),
    [
        ("Landlord", "landlord"),
        ("CAFÉ", "cafe"),
        ("cafe\u0301", "cafe"),
        ("Straße", "strasse"),
        ("ﬁle", "file"),
        ("\uff21\uff22", "ab"),
        ("Ὀδυσσεύς", "οδυσσευσ"),
        ("שָׁלוֹם", "שלום"),
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u062e\u0648\u0627\u0647\u0645",
        ),
        ("\u0301", ""),
    ],
)
def test_folding(word: str, folded: str) -> None:
    assert fold(word) == folded


def test_words_are_letters_digits_and_marks() -> None:
    text = "snake_case, e-mail a.b 3.14 x😀y हिन्दी ภาษาไทย (東京)"
    assert [word for _, _, word in words(text)] == [
        "snake", "case", "e", "mail", "a", "b", "3", "14", "x", "y",
        "हिनदी", "ภาษาไทย", "東京",
    ]  # fmt: skip
    assert [text[start:end] for start, end, _ in words(text)][-3:] == [
        "हिन्दी",
        "ภาษาไทย",
        "東京",
    ]


def test_what_is_indexed_is_bounded() -> None:
    assert index_text("Keep THIS " + "x" * (MAX_WORD_CHARS + 1) + " and that") == (
        "keep this and that"
    )
    indexed = index_text("word " * MAX_INDEXED_CHARS)
    assert len(indexed) <= MAX_INDEXED_CHARS
    assert set(indexed.split()) == {"word"}


@settings(max_examples=examples(300))
@given(st.text(st.characters(max_codepoint=127), max_size=500))
def test_ascii_text_is_indexed_as_its_words_are(content: str) -> None:
    # index_terms takes a shortcut for ASCII text: it must keep what `words` finds.
    found = [term for _, _, term in words(content) if len(term) <= MAX_WORD_CHARS]
    assert index_terms(content) == found


_WORDS = st.sampled_from(["rent", "Rent", "RENT", "café", "cafe", "landlord", "x", "東京"])
_GLUE = st.sampled_from([" ", "  ", "\n", ", ", "-", "_", "…", "<b>", "😀", "\u0301 "])


@given(st.lists(st.tuples(_WORDS, _GLUE), max_size=120), _WORDS, st.booleans())
@settings(max_examples=examples(300))
def test_a_snippet_is_the_text_with_the_words_it_looks_for_marked(
    parts: list[tuple[str, str]], looked_for: str, prefix: bool
) -> None:
    content = "".join(word + glue for word, glue in parts)
    query = parse_query(looked_for[:2] + "*" if prefix else looked_for)
    shown, marks = snippet(content, query)

    collapsed = re.sub(r"\s+", " ", content).strip()
    assert shown.removeprefix("…").removesuffix("…") in collapsed
    assert len(shown) <= SNIPPET_CHARS + 2 * len("…") + max(map(len, [*collapsed.split(), ""]))
    assert list(marks) == sorted(marks)
    assert all(0 <= start < end <= len(shown) for start, end in marks)
    marked = [shown[start:end] for start, end in marks]
    assert all(query.matches(fold(word)) for word in marked)
    # Every word of the snippet that the query looks for is marked.
    assert marked == [shown[s:e] for s, e, word in words(shown) if query.matches(word)]
    if any(query.matches(word) for _, _, word in words(content)):
        assert marks
