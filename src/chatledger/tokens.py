"""Token counting, pluggable and offline by default.

A `TokenCounter` turns text into a token count. The store records each message's count at
append time, so the context window can be chosen in SQL without reading old rows.

The default, `approximate_tokens`, needs no download (tiktoken, for one, fetches its
encodings from the internet on first use). Any `str -> int` callable can replace it.
"""

from __future__ import annotations

from collections.abc import Callable

from chatledger.domain import ChatMessage

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "TokenCounter",
    "approximate_tokens",
    "count_message_tokens",
]

TokenCounter = Callable[[str], int]

# Chat formats wrap every message in a few tokens of role and separators.
MESSAGE_OVERHEAD_TOKENS = 4


def approximate_tokens(text: str) -> int:
    """Estimate tokens without a tokenizer: about 4 bytes of UTF-8 per token.

    Counting bytes rather than characters keeps the estimate from undercounting scripts
    such as CJK, where one character is often a token or more on its own.
    """
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


def count_message_tokens(message: ChatMessage, counter: TokenCounter = approximate_tokens) -> int:
    """Tokens a message costs in a model's input: content, tool calls and overhead."""
    total = MESSAGE_OVERHEAD_TOKENS + counter(message.content)
    for call in message.tool_calls:
        total += counter(call.name) + counter(call.arguments) + MESSAGE_OVERHEAD_TOKENS
    if message.tool_call_id is not None:
        total += counter(message.tool_call_id)
    return total
