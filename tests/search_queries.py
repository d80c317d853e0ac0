"""Hostile and awkward search queries, with what each must give.

Written before the query parser, as its specification. Each entry is `(query, code)`:
`code` None means the query is searched (200, hits or none) — its words are words and
nothing else, whatever a database's query language would make of them — and otherwise
it is the `code` of the 422 it gets. No query here may ever reach a database as syntax:
none may answer 500.
"""

from __future__ import annotations

from typing import Final

SEARCHED: Final = None
NO_WORDS: Final = "query_without_words"
TOO_LONG: Final = "query_too_long"
INVALID: Final = "query_invalid"

HOSTILE_QUERIES: Final[list[tuple[str, str | None]]] = [
    # FTS5 and tsquery syntax on its own: nothing to search for.
    ('"', NO_WORDS),
    ('""', NO_WORDS),
    ("*", NO_WORDS),
    ("**", NO_WORDS),
    ("-", NO_WORDS),
    (":", NO_WORDS),
    (":*", NO_WORDS),
    ("^", NO_WORDS),
    ("(", NO_WORDS),
    (")", NO_WORDS),
    ("()", NO_WORDS),
    ("{}", NO_WORDS),
    ("+", NO_WORDS),
    ("&", NO_WORDS),
    ("|", NO_WORDS),
    ("!", NO_WORDS),
    ("<->", NO_WORDS),
    ("'", NO_WORDS),
    ("%", NO_WORDS),
    ("_", NO_WORDS),
    ("__", NO_WORDS),
    ("\\", NO_WORDS),
    ("$$", NO_WORDS),
    ("   ", NO_WORDS),
    ("", NO_WORDS),
    ("\t\n", NO_WORDS),
    ("😀", NO_WORDS),
    ("🍕🍕🍕", NO_WORDS),
    ("\u0301", NO_WORDS),  # a combining accent with nothing to sit on
    ("\u0903", NO_WORDS),  # a spacing mark (Devanagari visarga) alone
    ("\u0903\u0903 \u0e49", NO_WORDS),
    ("\u200d", NO_WORDS),  # zero-width joiner
    ("\u202e", NO_WORDS),  # right-to-left override
    # Operators of either query language are plain words to us.
    ("NEAR", SEARCHED),
    ("NEAR(a b)", SEARCHED),
    ("NEAR(a b, 2)", SEARCHED),
    ("AND", SEARCHED),
    ("OR NOT", SEARCHED),
    ("a OR b", SEARCHED),
    ("NOT a", SEARCHED),
    ("-a", SEARCHED),
    ("a -b", SEARCHED),
    ("a:b", SEARCHED),
    ("body:x", SEARCHED),
    ("keys : x", SEARCHED),
    ("{keys}: x", SEARCHED),
    ("user_id:bob", SEARCHED),
    ("^a", SEARCHED),
    ('"a', SEARCHED),
    ('a"', SEARCHED),
    ('"a" "b"', SEARCHED),
    ('"a b"', SEARCHED),
    ("a*", SEARCHED),
    ("*a", SEARCHED),
    ("a**", SEARCHED),
    ("a* b", SEARCHED),
    ("a*b", SEARCHED),
    ("a & b | !c", SEARCHED),
    ("a <-> b", SEARCHED),
    ("'a':*", SEARCHED),
    ("a':* | 'b", SEARCHED),
    ("(a", SEARCHED),
    ("a)", SEARCHED),
    ("a + b", SEARCHED),
    # SQL and LIKE fragments.
    ("'; DROP TABLE messages; --", SEARCHED),
    ("' OR '1'='1", SEARCHED),
    ("1; SELECT pg_sleep(10)", SEARCHED),
    ("%a%", SEARCHED),
    ("a_b", SEARCHED),
    ("a\\b", SEARCHED),
    ("a\\", SEARCHED),
    ("$$ a $$", SEARCHED),
    # Unicode: accents, scripts, marks, width, emoji among words.
    ("café", SEARCHED),
    ("CAFÉ", SEARCHED),
    ("cafe\u0301", SEARCHED),  # decomposed é
    ("Straße", SEARCHED),
    ("ﬁle", SEARCHED),  # ligature
    ("\uff21\uff2e\uff24", SEARCHED),  # AND, fullwidth
    ("東京", SEARCHED),
    ("東京*", SEARCHED),
    ("שלום", SEARCHED),  # Hebrew, right to left
    ("مرحبا بالعالم", SEARCHED),  # Arabic, right to left
    ("\u202eabc", SEARCHED),  # an override before a word
    ("हिन्दी", SEARCHED),  # Devanagari: marks inside the word
    ("ภาษาไทย", SEARCHED),
    ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", SEARCHED),  # Persian, with a ZWNJ
    ("pizza 🍕", SEARCHED),
    ("x😀y", SEARCHED),
    ("a\u0000b", INVALID),  # NUL
    ("\u0000", INVALID),
    ("a\u001bb", INVALID),  # escape
    ("a\u007fb", INVALID),  # delete
    ("a\u0085b", INVALID),  # a C1 control
    ("a\ud800b", INVALID),  # a lone surrogate
    # Size.
    ("a" * 500, SEARCHED),
    ("a" * 501, TOO_LONG),
    ("word " * 2_000, TOO_LONG),  # 10 kB
    ("x" * 10_000, TOO_LONG),
    (" ".join(f"w{n}" for n in range(1_000)), TOO_LONG),  # 1,000 terms
    (" ".join(f"w{n}" for n in range(33)), TOO_LONG),  # 33 words, under 500 characters
    (" ".join(f"w{n}" for n in range(32)), SEARCHED),
    (" ".join(["same"] * 100), SEARCHED),  # 100 words, one term
    ("a" * 200, SEARCHED),  # a word longer than any that is indexed
]
