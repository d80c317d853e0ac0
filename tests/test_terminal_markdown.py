"""A reply's markdown styled for a terminal as it streams in (`MarkdownStyler`)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from chatledger.terminal_markdown import MarkdownStyler
from tests.factories import examples

BOLD, DIM, CODE, RESET = "\x1b[0m\x1b[1m", "\x1b[0m\x1b[2m", "\x1b[0m\x1b[36m", "\x1b[0m"
_CODES = re.compile("\x1b\\[[0-9;]*m")


def styled(*pieces: str) -> str:
    styler = MarkdownStyler()
    return "".join(styler.feed(piece) for piece in pieces) + styler.finish()


@pytest.mark.parametrize(
    ("markdown", "shown"),
    [
        ("plain words", "plain words"),
        ("# Title\nbody", f"{BOLD}Title{RESET}\nbody"),
        ("some **strong** words", f"some {BOLD}strong{RESET} words"),
        ("run `make test` now", f"run {CODE}make test{RESET} now"),
        ("- one\n  * two\n+ three", "• one\n  • two\n• three"),
        ("> quoted", f"\x1b[2m│{RESET} quoted"),
        ("```sh\nls *\n```\nafter", f"{DIM}```sh{CODE}\nls *\n{DIM}```{RESET}\nafter"),
        ("5 * 3 = 15, *not* bold", "5 * 3 = 15, *not* bold"),
        ("**never closed\nnext", f"{BOLD}never closed{RESET}\nnext"),
        ("1. first\n-not an item\n#not a heading", "1. first\n-not an item\n#not a heading"),
        ("`**` in code", f"{CODE}**{RESET} in code"),
    ],
    ids=lambda value: value[:20],
)
def test_markdown_is_styled_and_its_markers_hidden(markdown: str, shown: str) -> None:
    assert styled(markdown) == shown


_PIECES = st.sampled_from(["#", "# ", "-", " ", "*", "**", "`", "```", "\n", "> ", "a", "1."])


# Printable text, as the terminal hands the styler (control characters already replaced).
_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=5)


@settings(max_examples=examples(300))
@given(st.lists(st.one_of(_PIECES, _TEXT), max_size=40), st.data())
def test_pieces_of_any_size_show_as_the_whole_does(parts: list[str], data: st.DataObject) -> None:
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    whole = styled(text)
    assert styled(*pieces) == whole
    # Only the styler's own codes are added, and every piece of the text is there but
    # the markers: nothing else is dropped or invented.
    shown = _CODES.sub("", whole)
    assert "\x1b" not in shown
    assert _letters(shown) == _letters(text)


def _letters(text: str) -> str:
    return re.sub(r"[#*`>+\-•│\s]", "", text)
