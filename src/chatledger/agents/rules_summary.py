"""What `RulesAgent` remembers of a conversation, and the summary it writes of it.

A `Ledger` is read from the history an agent is given (tool calls and results, and
earlier summaries in system messages) and written as a summary that a `Ledger` reads
back exactly:

    Conversation summary (chatledger rules v1)
    Added: #9 "buy stamps", #10 "post the letters"
    Completed: #9 "buy stamps"
    Updated: #10 "post the letters today"
    Deleted: #3 "buy groceries"
    Last task mentioned: #10 "post the letters today"
    Open question: "delete milk" -> "More than one task matches ... Which one should I delete?"

One line per kind of change, each task as `#id "title"` with the title as a JSON string,
so any title reads back exactly. A long line keeps its first 5 and latest 20 tasks and
says how many it leaves out between them (`… 12 more …`), so the summary stays small.
"Last task mentioned" is what "it" refers to. "Open question" pairs a request with the
question the agent asked about it (which task it means, or whether to add it as a task),
as long as the user has not replied; a question's options are what "the second one"
counts in afterwards. The last full listing is not kept: after a summary, "the second
one" without an open question gets a question back. Lines it does not
know are ignored, and text before the header (another agent's summary, say) is kept as it
is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from chatledger.domain import ChatMessage, Role

__all__ = ["ADD_OFFER", "QUESTION", "SUMMARY_HEADER", "Ledger", "shown_ids"]

SUMMARY_HEADER: Final = "Conversation summary (chatledger rules v1)"

# The one shape of every question RulesAgent asks about a task: how a later turn knows
# the user is answering it, and how a summary knows it is still open.
QUESTION: Final = re.compile(r"Which (?:one|task) should I (mark as done|delete|update)\?")
# The question RulesAgent asks instead of guessing that a message it did not understand is
# a task to add; the title is a JSON string, so "yes" adds exactly what was offered.
ADD_OFFER: Final = re.compile(r'Should I add ("(?:[^"\\]|\\.)*") as a new task\?')
_LISTED_LINE = re.compile(r"^- #(\d+) ", re.MULTILINE)
_OPTION = re.compile(r"#(\d+)")

_ELIDED = re.compile(r"… (\d+) more …")
_ENTRY = re.compile(r'#(\d+) ("(?:[^"\\]|\\.)*")')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass
class Ledger:
    """What the conversation has done to tasks: read from history, written as a summary."""

    added: dict[int, str] = field(default_factory=dict)
    completed: dict[int, str] = field(default_factory=dict)
    updated: dict[int, str] = field(default_factory=dict)
    deleted: dict[int, str] = field(default_factory=dict)
    focus: tuple[int, str] | None = None
    # The tasks of the list the agent showed last, in order: what "the second one" counts.
    shown: tuple[int, ...] = ()
    questions: list[tuple[str, str]] = field(default_factory=list)
    preamble: str = ""
    # Per kind of change, how many tasks an earlier summary left out of its list.
    elided: dict[str, int] = field(default_factory=dict)

    def _sections(self) -> dict[str, dict[int, str]]:
        return {
            "Added": self.added,
            "Completed": self.completed,
            "Updated": self.updated,
            "Deleted": self.deleted,
        }

    @classmethod
    def parse(cls, text: str) -> Ledger:
        """Read a summary in the format of the module docstring."""
        head, header, body = text.partition(SUMMARY_HEADER)
        ledger = cls(preamble=head.strip())
        if not header:
            return ledger
        sections = ledger._sections()
        # split("\n"), not splitlines(): a title may hold U+2028, which JSON leaves as is.
        for line in body.split("\n"):
            label, _, rest = line.partition(": ")
            entries = [
                (int(m[1]), title)
                for m in _ENTRY.finditer(rest)
                if (title := _string(m[2])) is not None
            ]
            if label in sections:
                for task_id, title in entries:
                    _record(sections[label], task_id, title)
                ledger.elided[label] = sum(int(n) for n in _ELIDED.findall(rest))
            elif label == "Last task mentioned" and entries:
                ledger.focus = entries[-1]
            elif label == "Open question":
                texts = [_string(text) for text in _JSON_STRING.findall(rest)]
                if len(texts) == 2 and texts[0] is not None and texts[1] is not None:
                    ledger.questions.append((texts[0], texts[1]))
                    ledger.shown = shown_ids(texts[1]) or ledger.shown
        return ledger

    def render(self) -> str:
        """The summary text; `Ledger.parse` reads it back (but for elided entries)."""
        body = [
            f"{label}: {_listing(entries, self.elided.get(label, 0))}"
            for label, entries in self._sections().items()
            if entries
        ]
        if self.focus is not None:
            body.append(f"Last task mentioned: {_entry(*self.focus)}")
        body += [f"Open question: {_json(r)} -> {_json(q)}" for r, q in self.questions]
        head = [self.preamble] if self.preamble else []
        return "\n".join([*head, SUMMARY_HEADER, *(body or ["No tasks changed yet."])])

    def fold(self, messages: Sequence[ChatMessage]) -> None:
        """Take in, in order, what `messages` did: summaries, tool results, questions."""
        tool_names: dict[str, str] = {}
        request = ""
        for message in messages:
            if message.role is Role.SYSTEM and SUMMARY_HEADER in message.content:
                self._merge(Ledger.parse(message.content))
            elif message.role is Role.USER:
                request = message.content
                # Whatever the user says next answers (or drops) the open questions.
                self.questions.clear()
            elif message.role is Role.ASSISTANT:
                tool_names.update((call.id, call.name) for call in message.tool_calls)
                if QUESTION.search(message.content) or ADD_OFFER.search(message.content):
                    self.questions.append((request, message.content))
                self.shown = shown_ids(message.content) or self.shown
            elif message.role is Role.TOOL:
                name = message.name or tool_names.get(message.tool_call_id or "", "")
                try:
                    result = json.loads(message.content)
                except ValueError:
                    continue
                if isinstance(result, dict):
                    self.observe(name, result)

    def observe(self, tool: str, result: dict[str, Any]) -> None:
        """Take in one tool result; the task it names becomes the one "it" refers to."""
        if "error" in result:
            return
        if tool == "list_tasks":
            tasks = result.get("tasks")
            # A listing of exactly one task makes "mark it done" unambiguous.
            if isinstance(tasks, list) and len(tasks) == 1 and isinstance(tasks[0], dict):
                result = tasks[0]
            else:
                return
        task_id, title = result.get("task_id"), result.get("title")
        if not isinstance(task_id, int) or not isinstance(title, str):
            return
        section = {
            "created": self.added,
            "completed": self.completed,
            "updated": self.updated,
            "deleted": self.deleted,
        }.get(result.get("status", ""))
        if section is not None:
            _record(section, task_id, title)
        self.focus = (task_id, title)

    def _merge(self, other: Ledger) -> None:
        for label, entries in other._sections().items():
            for task_id, title in entries.items():
                _record(self._sections()[label], task_id, title)
        for label, count in other.elided.items():
            self.elided[label] = self.elided.get(label, 0) + count
        self.focus = other.focus or self.focus
        self.shown = other.shown or self.shown
        self.questions = list(other.questions)


def shown_ids(reply: str) -> tuple[int, ...]:
    """The tasks an agent reply showed the user, in order: the lines of a listing, or the
    options of a question ("#1 buy milk, #6 buy oat milk. Which one ...?")."""
    if "#" not in reply:
        return ()  # most replies name no task by number: skip the patterns
    listed = _LISTED_LINE.findall(reply)
    if not listed and QUESTION.search(reply):
        listed = _OPTION.findall(reply)
    return tuple(int(task_id) for task_id in listed)


def _record(section: dict[int, str], task_id: int, title: str) -> None:
    # Re-inserting moves the task to the end: the summary lists changes in order.
    section.pop(task_id, None)
    section[task_id] = title


def _string(literal: str) -> str | None:
    # A summary comes back from the database and may have been edited or cut short: a
    # broken entry is skipped, never a reason to fail the turn.
    try:
        value = json.loads(literal)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _entry(task_id: int, title: str) -> str:
    return f"#{task_id} {_json(title)}"


# A summary must stay small whatever the conversation's length: it takes budget from the
# messages it stands in for. Each kind lists its first and latest tasks, counting the rest.
_FIRST_LISTED: Final = 5
_LATEST_LISTED: Final = 20


def _listing(entries: dict[int, str], elided: int) -> str:
    # `entries` are the first tasks, then (after the `elided` ones no longer known) the rest.
    items = [_entry(task_id, title) for task_id, title in entries.items()]
    head, rest = items[:_FIRST_LISTED], items[_FIRST_LISTED:]
    tail = rest[-_LATEST_LISTED:]
    hidden = elided + len(rest) - len(tail)
    return ", ".join([*head, f"… {hidden} more …", *tail] if hidden else items)
