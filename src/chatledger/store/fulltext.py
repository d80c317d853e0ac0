"""Words as search sees them: one tokenizer for the index, the query and the snippet.

chatledger splits and folds words itself and hands both databases the result: a message
is indexed as its folded words separated by spaces, and a query becomes quoted folded
words. SQLite's FTS5 (unicode61) and PostgreSQL's `simple` configuration are left nothing
to decide, so the two find the same messages for the same query, and a snippet marks
exactly the words that matched. No text of a query ever reaches a database as syntax.

A word is a run of letters, digits and combining marks (Unicode L, N, M; a zero-width
joiner or non-joiner inside a word keeps it whole). Folding case-folds ("Straße" →
"strasse"), decomposes compatibility forms ("ﬁ" → "fi", fullwidth → ASCII), and drops
nonspacing marks ("café" → "cafe"; also Arabic vowel signs, Hebrew points, Thai tone
marks). What it does not do: stem ("rent" does not find "rented"), drop stop words, or
segment scripts written without spaces: Chinese, Japanese or Thai text is one word from
one space or punctuation mark to the next, found whole or, with a final `*`, by its
beginning (`東京*` finds "東京都に住んでいます"; `京都` does not). Emoji and other symbols
are not words.

Changing what this module makes of a text changes what is in the index: it needs a
migration that indexes every message again.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from chatledger.errors import ValidationError
from chatledger.store.unicode_marks import MARKS, spacing_marks

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "MAX_WORD_CHARS",
    "SearchQuery",
    "fold",
    "index_terms",
    "index_text",
    "parse_query",
    "snippet",
    "terms",
    "words",
]

MAX_QUERY_CHARS: Final = 500
# Every term must appear in a hit: past a few dozen, a query matches nothing anyway.
MAX_QUERY_TERMS: Final = 32
# Longer "words" are hashes, base64 and minified code: nobody searches for them, and
# PostgreSQL refuses a lexeme over 2 kB.
MAX_WORD_CHARS: Final = 64
# How much of a message is indexed (its first words, folded, spaces included). Keeps
# every tsvector far below PostgreSQL's 1 MB limit, whatever a 256 kB tool result holds.
MAX_INDEXED_CHARS: Final = 100_000
# A prefix matches every indexed word it begins: one letter would match a good part of
# the index.
MIN_PREFIX_CHARS: Final = 2
SNIPPET_CHARS: Final = 160
# How much of the text before the first match a snippet shows.
SNIPPET_LEAD: Final = 40

_JOINERS: Final = "\u200c\u200d"
# A word starts with a letter or digit (PostgreSQL's parser drops a mark it finds first),
# then letters, digits, marks and joiners. Underscores are punctuation to both databases:
# they are replaced by spaces before matching (`_spaced`), which keeps offsets.
_WORD: Final = re.compile(f"\\w[\\w{MARKS}{_JOINERS}]*")
# What a folded word is indexed as: letters and digits, and the spacing marks folding
# keeps (Devanagari vowel signs...), starting with a letter or digit. Compatibility
# decomposition can put punctuation in a folded word ("½" is 1, a fraction slash, 2):
# it separates terms.
_TERM: Final = re.compile(f"[^\\W_](?:[^\\W_]|[{spacing_marks()}])*")
# NUL, controls (tab, newline and carriage return are whitespace), lone surrogates.
_INVALID: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACES: Final = re.compile(r"\s+")
# Punctuation right after a word ("rent." "rent?!"): a snippet keeps it.
_TRAILING: Final = re.compile(f"[^\\s\\w{MARKS}{_JOINERS}]*")
_ASCII_TERM: Final = re.compile("[a-z0-9]+")
_DROPPED: Final = frozenset({"Mn", "Me"})
_IN_WORD: Final = re.compile(f"[\\w{MARKS}{_JOINERS}]")


def fold(word: str) -> str:
    """A word as it is indexed and searched: case-folded, compatibility-decomposed,
    without nonspacing or enclosing marks or joiners, recomposed."""
    folded = word.casefold()
    if folded.isascii():
        return folded
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", word).casefold())
    kept = "".join(
        char
        for char in decomposed
        if char not in _JOINERS and unicodedata.category(char) not in _DROPPED
    )
    return unicodedata.normalize("NFC", kept)


def terms(word: str) -> list[str]:
    """The terms a word is indexed and searched as: its folded form, or the parts of it
    that are letters, digits and spacing marks (none, for a word that folds to
    nothing)."""
    folded = fold(word)
    if folded.isascii():
        return [folded]
    return _TERM.findall(folded)


def _spaced(text: str) -> str:
    # Same length, so offsets into it are offsets into `text`.
    return text.replace("_", " ")


def words(text: str) -> Iterator[tuple[int, int, str]]:
    """Each term of each word of `text`, with the word's span. Both databases are handed
    exactly these terms, so what one finds the other finds."""
    for match in _WORD.finditer(_spaced(text)):
        for term in terms(match.group()):
            yield match.start(), match.end(), term


def index_terms(content: str) -> list[str]:
    """What the databases index for a message: its terms in order, up to
    `MAX_INDEXED_CHARS` of them (a space counted after each), none over
    `MAX_WORD_CHARS`."""
    kept: list[str] = []
    size = 0
    found: Iterable[str]
    if content.isascii():
        # What `words` finds in ASCII text, found at once: runs of letters and digits
        # (an underscore separates words), folded by lowercasing.
        found = _ASCII_TERM.findall(content.lower())
    else:
        found = (term for _, _, term in words(content))
    for term in found:
        if len(term) > MAX_WORD_CHARS:
            continue
        size += len(term) + 1
        if size > MAX_INDEXED_CHARS:
            break
        kept.append(term)
    return kept


def index_text(content: str) -> str:
    """`index_terms` separated by spaces: what FTS5 is given for a message."""
    return " ".join(index_terms(content))


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed query: every term must appear; with `prefix`, the last one matches the
    words it begins."""

    terms: tuple[str, ...]
    prefix: bool = False

    def matches(self, term: str) -> bool:
        """Whether a term of a message is one the query looks for."""
        if self.prefix and term.startswith(self.terms[-1]):
            return True
        return term in self.terms

    def fts5(self) -> str:
        """An FTS5 expression: each term a quoted string (`"` doubled), all required."""
        quoted = ['"' + term.replace('"', '""') + '"' for term in self.terms]
        if self.prefix:
            quoted[-1] += "*"
        return " AND ".join(quoted)

    def tsquery(self) -> str:
        """A `tsquery` in its input syntax: each term a quoted lexeme (`'` and `\\`
        escaped), all required."""
        quoted = ["'" + term.replace("\\", "\\\\").replace("'", "''") + "'" for term in self.terms]
        if self.prefix:
            quoted[-1] += ":*"
        return " & ".join(quoted)

    def fingerprint(self, *, include_tools: bool) -> str:
        """Names this search, so that a cursor serves only the search it came from."""
        key = "\x00".join((*self.terms, str(self.prefix), str(include_tools)))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def parse_query(query: object) -> SearchQuery:
    """Split a query into words: every word must appear in a hit; a `*` right after the
    last one makes it a prefix (of two characters or more). Everything else —
    quotes, operators, brackets, punctuation — only separates words.

    Raises:
        ValidationError: `query_too_long` (over `MAX_QUERY_CHARS` characters or
            `MAX_QUERY_TERMS` words), `query_invalid` (NUL, a control character or a lone
            surrogate), or `query_without_words` (nothing to search for).
    """
    if not isinstance(query, str):
        raise ValidationError("q must be a string", field="q", code="query_invalid")
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationError(
            f"the query is longer than {MAX_QUERY_CHARS} characters",
            field="q",
            code="query_too_long",
        )
    if _INVALID.search(query):
        raise ValidationError(
            "the query contains a control character, a NUL or an unpaired surrogate",
            field="q",
            code="query_invalid",
        )
    terms: dict[str, None] = {}
    last, last_end = "", 0
    for _, end, word in words(query):
        terms.setdefault(word, None)
        last, last_end = word, end
    if not terms:
        raise ValidationError(
            "the query has no words to search for", field="q", code="query_without_words"
        )
    if len(terms) > MAX_QUERY_TERMS:
        raise ValidationError(
            f"the query has more than {MAX_QUERY_TERMS} different words",
            field="q",
            code="query_too_long",
        )
    prefix = query[last_end : last_end + 1] == "*" and len(last) >= MIN_PREFIX_CHARS
    if prefix:
        # The prefix is the last word written, which may have appeared before as a word.
        del terms[last]
        terms[last] = None
    return SearchQuery(tuple(terms), prefix)


def snippet(content: str, query: SearchQuery) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Plain text around the first word `query` looks for, and where it marks words.

    The snippet is at most about `SNIPPET_CHARS` long, starts and ends on whole words,
    has its whitespace collapsed to single spaces, and begins (ends) with "…" where it
    leaves text out. The marks are `[start, end)` offsets into it, in characters (code
    points), one per word the query looks for: a client highlights them by slicing the
    text, never by rendering it as markup. Without a match (only possible for words
    past what is indexed) it is the beginning of the text, without marks.
    """
    spaced = _spaced(content)
    start = 0
    for match in _WORD.finditer(spaced):
        if any(query.matches(term) for term in terms(match.group())):
            start = match.start()
            break
    # Begin a little before the match, on a whole word.
    begin = 0
    if start > SNIPPET_LEAD:
        begin = start
        lead = start - SNIPPET_LEAD
        for match in _WORD.finditer(spaced, lead):
            if match.start() == lead and _IN_WORD.match(spaced, lead - 1):
                continue  # the tail of a word that begins before `lead`
            begin = match.start()
            break
    end = begin
    for match in _WORD.finditer(spaced, begin):
        if match.start() > start and match.end() - begin > SNIPPET_CHARS:
            break
        end = match.end()
    trailing = _TRAILING.match(spaced, end)
    if trailing is not None:
        end = trailing.end()
    text = _SPACES.sub(" ", content[begin:end]).strip()
    if _WORD.search(spaced, 0, begin):
        text = "…" + text
    if _WORD.search(spaced, end):
        text += "…"
    # A word of several terms ("½") is marked once.
    marks = tuple(dict.fromkeys((s, e) for s, e, term in words(text) if query.matches(term)))
    return text, marks
