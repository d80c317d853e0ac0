"""How a `RulesAgent` user names a task: "task 3", "2 and 3", "the second one", "it",
"the groceries task".

Pure text work, no I/O: `parse_reference` turns the words into a `Reference` (defined in
`chatledger.agents.rules_commands`); the agent resolves it against the conversation
(which task "it" is, which list "the second one" counts in) and the user's tasks.
`title_words` is how titles are compared, on both sides of the comparison.
"""

from __future__ import annotations

import re
from typing import Final

from chatledger.agents.rules_commands import (
    ById,
    ByIds,
    ByTitle,
    Everything,
    Ordinal,
    Recent,
    Reference,
)

__all__ = [
    "IRREGULAR_PAST",
    "LIST_PHRASE",
    "LIST_TAIL",
    "QUOTES",
    "mentioned_ids",
    "parse_reference",
    "rx",
    "title_words",
    "unquote",
]


def rx(pattern: str) -> re.Pattern[str]:
    """A case-insensitive pattern: users write "Delete Task 3" as often as "delete task 3"."""
    return re.compile(pattern, re.IGNORECASE)


QUOTES: Final = '"\u201c\u201d\u2018\u2019'
LIST_PHRASE: Final = (
    r"(?:to|on|onto|in|into|from|off|of)\s+(?:my|the)\s+"
    r"(?:(?:todo|to-do|to do|task|tasks|shopping)\s+)?(?:list|tasks)"
)


def unquote(text: str) -> str:
    """`text` without end punctuation and without one pair of quotes around it."""
    text = text.strip().rstrip(".!?").strip()
    if len(text) >= 2 and text[0] in QUOTES + "'" and text[-1] in QUOTES + "'":
        return text[1:-1].strip()
    return text


_NUMBER_WORDS: Final = {
    word: index + 1
    for index, word in enumerate(
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_BY_ID = rx(
    r"(?:the\s+)?(?:(?:tasks?|todos?|to-dos?|items?|number|no\.?|num|id|nr\.?)"
    r"(?:\s+(?:number|no\.?|id|#))?\s*#?\s*|#\s*)?"
    rf"(?P<id>\d{{1,18}}|{'|'.join(_NUMBER_WORDS)})"
)
_ID_LIST_LEAD = rx(r"^(?:the\s+)?(?:tasks|todos|to-dos|items|numbers|ids)\s+")
_ID_LIST_SEPARATOR = rx(r"\s*(?:,\s*and\b|,|&|\+|\band\b)\s*")
_ORDINAL_WORDS: Final = {
    word: index
    for index, word in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth".split()
    )
} | {"last": -1, "second to last": -2, "second-to-last": -2, "penultimate": -2}
_ORDINAL = rx(
    rf"(?:the\s+)?(?P<ordinal>{'|'.join(_ORDINAL_WORDS)}|(?P<n>\d{{1,3}})(?:st|nd|rd|th))"
    r"(?:\s+(?:one|task|item|todo|entry)(?:\s+on\s+(?:the|my)\s+list)?)?"
)
_RECENT = rx(
    r"it|that|this|them|that one|this one|that task|this task|the task|the same one|"
    r"the (?:latest|new|newest|previous) (?:one|task)|"
    r"the (?:one|task) (?:i|we|you) (?:just )?(?:added|created|made|mentioned)|"
    r"(?:the )?(?:one|task) (?:i|we|you) just (?:added|created|made)"
)
_EVERYTHING = rx(
    r"all|everything|every task|each task|all of them|them all|all (?:of )?(?:my |the )?"
    r"(?:tasks|todos|to-dos|items)|my (?:whole |entire )?(?:list|tasks)|"
    r"the (?:whole |entire )?list|(?:my |the )?(?:whole |entire )?(?:todo|to-do) list"
)
_TITLE_LEAD = rx(r"^(?:the|my|a|an|that|this)\s+")
_TITLE_NOUN = r"(?:task|todo|to-do|item|one|thing|reminder|entry)"
_TITLE_NAMED = rx(rf"^{_TITLE_NOUN}\s+(?:called|named|titled|about|for|to|saying)\s+")
_TITLE_TAIL = rx(rf"\s+{_TITLE_NOUN}s?$")
LIST_TAIL: Final = rx(rf"\s+{LIST_PHRASE}$")


def parse_reference(text: str) -> Reference | None:
    """The task or tasks `text` points at, or None when it names none.

    Examples: "task 3", "#3", "number three" -> ById; "2 and 3", "tasks 5, 6 and 7" ->
    ByIds; "the second one", "the last one" -> Ordinal; "it", "that one" -> Recent;
    "the groceries task", "buy milk" -> ByTitle; "all of them" -> Everything.
    """
    text = LIST_TAIL.sub("", unquote(" ".join(text.split())))
    if (task_id := _task_id(text)) is not None:
        return ById(task_id)
    if (task_ids := _task_ids(text)) is not None:
        return ById(task_ids[0]) if len(task_ids) == 1 else ByIds(task_ids)
    if match := _ORDINAL.fullmatch(text):
        if match["n"] is not None:
            return Ordinal(int(match["n"]) - 1) if int(match["n"]) > 0 else None
        return Ordinal(_ORDINAL_WORDS[match["ordinal"].lower()])
    if _RECENT.fullmatch(text):
        return Recent()
    if _EVERYTHING.fullmatch(text):
        return Everything()
    title = _TITLE_LEAD.sub("", text)
    title = _TITLE_NAMED.sub("", title)
    title = unquote(_TITLE_TAIL.sub("", title))
    if not title_words(title):
        return None
    return ByTitle(title)


def _task_id(text: str) -> int | None:
    if match := _BY_ID.fullmatch(text):
        number = match["id"].lower()
        return _NUMBER_WORDS.get(number) or int(number)
    return None


def _task_ids(text: str) -> tuple[int, ...] | None:
    parts = _ID_LIST_SEPARATOR.split(_ID_LIST_LEAD.sub("", text))
    if len(parts) < 2:
        return None
    task_ids = [_task_id(part) for part in parts]
    if None in task_ids:
        return None
    # "2 and 2" is task 2, once.
    return tuple(dict.fromkeys(task_id for task_id in task_ids if task_id is not None))


_MENTION = rx(r"(?:\btasks?\s*#?\s*|#\s*|\bnumber\s+)(\d{1,18})\b")


def mentioned_ids(text: str) -> tuple[int, ...]:
    """The task numbers `text` names, whatever else it says ("make task 2 urgent" -> 2)."""
    match parse_reference(text):
        case ById(task_id):
            return (task_id,)
        case ByIds(task_ids):
            return task_ids
    return tuple(dict.fromkeys(int(number) for number in _MENTION.findall(text)))


_STOP_WORDS: Final = frozenset(
    "a an the my to of for on in at with and task tasks todo one thing item reminder".split()
)
IRREGULAR_PAST: Final = {
    "paid": "pay", "bought": "buy", "went": "go", "sent": "send", "wrote": "write",
    "took": "take", "made": "make", "got": "get", "met": "meet", "sold": "sell",
    "fed": "feed", "gave": "give", "did": "do", "brought": "bring", "found": "find",
}  # fmt: skip


def _stem(word: str) -> str:
    # Crude on purpose: both sides of a comparison are stemmed alike, so "calling mom"
    # and "called mom" find "call mom", and "groceries" finds "grocery", with no dictionary.
    if word in IRREGULAR_PAST:
        return IRREGULAR_PAST[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ing") and len(word) > 5:
        return word[:-3]
    if word.endswith("ed") and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def title_words(text: str) -> tuple[str, ...]:
    """The meaningful words of a title, lowercased and stemmed, in order."""
    words = re.findall(r"[^\W_]+", text.lower())
    return tuple(_stem(word) for word in words if word not in _STOP_WORDS)
