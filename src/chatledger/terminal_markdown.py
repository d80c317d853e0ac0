"""A reply's markdown shown on a terminal as it streams in: styled, its markers hidden.

`MarkdownStyler` is fed the reply's text in whatever pieces it arrives and gives back, at
once, what to write: the same text with SGR escape codes (bold, dim, cyan) in place of
the markers it understands, and nothing held back but the few characters that cannot be
decided yet (the start of a line, which might be a heading or a list item; a `*` that
might be the first of `**`). Nothing is ever written twice or moved back over, so it works
with long lines that wrap, wide characters, and output that scrolls.

Understood: `#` headings (bold), `-`/`*`/`+` list items (a bullet), `>` quotes (a dim
bar), fenced code blocks (cyan, their fences dim), `inline code` (cyan) and **strong**
(bold). Anything else is shown as written. The text must already be printable
(`terminal._printable`): the only escape codes in the output are the styler's own.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MarkdownStyler"]

_RESET: Final = "\x1b[0m"
_CODES: Final = {"bold": "1", "dim": "2", "code": "36"}
# A line's first characters that may still become a marker: spaces, then part of one.
_PARTIAL: Final = re.compile(r" *(#{1,6}|[-*+]|>|`{1,2}|\d{1,9}[.)]?)?")
_HEADING: Final = re.compile(r"( {0,3})#{1,6} ")
_ITEM: Final = re.compile(r"( *)[-*+] ")
_QUOTE: Final = re.compile(r"( {0,3})> ?")
_FENCE: Final = re.compile(r" {0,3}```")
# Held at a line's start until its marker is known: long enough for any of them.
_PREFIX_CHARS: Final = 12


class MarkdownStyler:
    """Turns a reply's markdown into styled terminal text, piece by piece."""

    def __init__(self) -> None:
        self._line_start = True
        self._held = ""  # the start of a line, not decided yet
        self._star = False  # a `*` that may be the first of `**`
        self._fence = False  # inside a fenced code block
        self._fence_line = False  # on a fence's own line
        self._heading = False
        self._strong = False
        self._code = False  # inside `inline code`
        self._shown: frozenset[str] = frozenset()  # the styles in effect on the terminal

    def feed(self, text: str) -> str:
        """What to write for `text`, the next piece of the reply."""
        out: list[str] = []
        for char in text:
            self._take(char, out)
        return "".join(out)

    def finish(self) -> str:
        """What is still held, written out, and every style ended: the reply is over."""
        out: list[str] = []
        if self._held:
            held, self._held = self._held, ""
            self._line_start = False
            self._begin_line(held, out)
        self._flush_star(out)
        self._fence = self._fence_line = self._heading = self._strong = self._code = False
        self._restyle(out)
        self._line_start = True
        return "".join(out)

    def _take(self, char: str, out: list[str]) -> None:
        if not self._line_start:
            self._inline(char, out)
            return
        self._held += char
        if char != "\n" and len(self._held) < _PREFIX_CHARS and _PARTIAL.fullmatch(self._held):
            return
        held, self._held = self._held, ""
        self._line_start = False
        self._begin_line(held, out)

    def _begin_line(self, held: str, out: list[str]) -> None:
        """Show a line's first characters, `held`, as what its start says the line is."""
        rest = held
        if _FENCE.match(held):
            self._fence = not self._fence
            self._fence_line = True
        elif not self._fence:
            if heading := _HEADING.match(held):
                out.append(heading.group(1))
                rest = held[heading.end() :]
                self._heading = True
            elif item := _ITEM.match(held):
                out.append(f"{item.group(1)}• ")
                rest = held[item.end() :]
            elif quote := _QUOTE.match(held):
                out.append(f"{quote.group(1)}\x1b[2m│{_RESET} ")
                rest = held[quote.end() :]
        self._restyle(out)
        for char in rest:
            self._take(char, out)

    def _inline(self, char: str, out: list[str]) -> None:
        if char == "\n":
            self._flush_star(out)
            self._fence_line = self._heading = self._strong = self._code = False
            self._restyle(out)
            out.append("\n")
            self._line_start = True
        elif self._fence or self._fence_line:
            out.append(char)
        elif char == "`":
            self._flush_star(out)
            self._code = not self._code
            self._restyle(out)
        elif self._code:
            out.append(char)
        elif char == "*" and not self._star:
            self._star = True  # one `*` is shown as it is, two are a switch to or from bold
        elif char == "*":
            self._star = False
            self._strong = not self._strong
            self._restyle(out)
        else:
            self._flush_star(out)
            out.append(char)

    def _flush_star(self, out: list[str]) -> None:
        if self._star:
            self._star = False
            out.append("*")

    def _restyle(self, out: list[str]) -> None:
        """Put the terminal in the styles the state calls for, if it is not already."""
        styles = set()
        if self._heading or self._strong:
            styles.add("bold")
        if self._fence_line:
            styles.add("dim")
        elif self._fence or self._code:
            styles.add("code")
        wanted = frozenset(styles)
        if wanted == self._shown:
            return
        self._shown = wanted
        codes = ";".join(_CODES[style] for style in sorted(wanted))
        out.append(_RESET + (f"\x1b[{codes}m" if codes else ""))
