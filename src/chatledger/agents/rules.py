"""`RulesAgent`: the offline default agent, a task manager run by rules instead of a model.

It reads the last user message with `chatledger.agents.rules_grammar`, acts through the
toolbox exactly as a model's tool calls would, and phrases its reply from the tools'
results. It needs no network, no model and no randomness (call ids aside), so the chat
server works out of the box and its tests are exact.

What it knows of the conversation comes only from the history it is given: the tool calls
and results of earlier turns, and its own summaries of older turns, whose format
`chatledger.agents.rules_summary` documents. `summarize` writes them; `run` reads them
back from a system message, so "what did I add earlier?" or "mark it done" still work
once the turns they refer to have been summarized away.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from chatledger.agents.base import (
    AgentEvent,
    AssistantMessage,
    TextDelta,
    Toolbox,
    ToolCallFinished,
    ToolCallStarted,
)
from chatledger.agents.rules_commands import (
    Add,
    ById,
    ByIds,
    ByTitle,
    Command,
    Complete,
    Delete,
    Everything,
    Help,
    ListTasks,
    MissingTitle,
    Ordinal,
    Recall,
    Recent,
    Reference,
    SmallTalk,
    Unknown,
    Unnamed,
    Update,
)
from chatledger.agents.rules_grammar import parse
from chatledger.agents.rules_references import mentioned_ids, parse_reference, title_words
from chatledger.agents.rules_summary import ADD_OFFER, QUESTION, SUMMARY_HEADER, Ledger
from chatledger.domain import ChatMessage, Role, TaskFilter, ToolCall
from chatledger.tokens import TokenCounter, approximate_tokens
from chatledger.usage import estimate_usage

__all__ = ["HELP_TEXT", "MODEL_NAME", "SUMMARY_HEADER", "RulesAgent"]

# The model name its turns record: there is no model, and this says so.
MODEL_NAME: Final = "rules"

HELP_TEXT: Final = "\n".join(
    (
        "I keep your task list. You can say things like:",
        '- add a task: "add buy milk", "remind me to call mom"; put a description after a'
        ' colon ("add buy milk: 2 litres, organic") or after "with description"',
        '- see tasks: "show my tasks", "what\'s pending?", "what have I completed?"',
        '- finish one: "mark task 3 as done", "done with buy milk"',
        '- delete one: "delete task 3", "remove the groceries task"',
        '- change one: "rename task 2 to call dad", "update task 2: call dad",'
        ' "add a description to task 3: bring ID"',
        '- several at once: "mark 2 and 3 done", "delete tasks 5, 6 and 7"',
        '- "it" or "that" means the task we just talked about: "add buy milk and mark it done";'
        ' "the second one" counts in the list I showed you last',
        '- several commands at once, joined by "and", "then" or commas: "add eggs, then show'
        ' my tasks"',
        '- "what did I add earlier?" recaps this conversation',
    )
)

# Longer than any real command (a 200-character title and a 1000-character description);
# reading more would only spend time on text that is not a command.
_MAX_COMMAND_CHARS: Final = 2000
# One message runs at most this many commands: more is a paste gone wrong, not a request,
# and must not turn into hundreds of tool calls.
_MAX_COMMANDS: Final = 10

# What the agent asks to do, in its questions; `QUESTION` recognises them.
_ACTIONS: Final = {Complete: "mark as done", Delete: "delete", Update: "update"}
_DOING: Final = {
    Complete: "mark task {task_id} as done",
    Delete: "delete task {task_id}",
    Update: "update task {task_id}",
}
# Words that never make a task title on their own: a message holding one is talking to
# the agent ("tell me a joke", "undo that", "what's up?"), so offering to add it is wrong.
_NOT_A_TITLE: Final = re.compile(
    r"\?|\b(?:i|me|you|your|we|us|it|that|this|them|what|why|how|who|when|where|which)\b",
    re.IGNORECASE,
)
_MAX_OFFERED_WORDS: Final = 8
_YES: Final = re.compile(
    r"(?:yes|yeah|yep|yup|y|sure|ok|okay|please do|do it|go ahead|add it|yes please)[.!]*",
    re.IGNORECASE,
)


class RulesAgent:
    """The offline task-manager `Agent`: rules instead of a model.

    It understands adding, listing, completing, deleting and updating tasks, by number (one
    or several), by title, by place in the list it showed last, "it"/"that" for the task
    just talked about, several commands in one message, and answers to its own questions;
    `HELP_TEXT` is what it tells users. It never acts on a guess: a title that matches
    several tasks, or a message no rule reads, gets a question and no tool call.

    It has no model, so no model reports its usage: each run reports our estimate
    (`estimated`, model `"rules"`) of what a model would have been sent and said for the
    same exchange, so that usage means the same whichever agent served a turn.

    Args:
        token_counter: counts the tokens of a text, for the estimate.
    """

    def __init__(self, *, token_counter: TokenCounter = approximate_tokens) -> None:
        self._token_counter = token_counter

    async def run(
        self, messages: Sequence[ChatMessage], toolbox: Toolbox
    ) -> AsyncIterator[AgentEvent]:
        """Answer the last user message of `messages`, calling tools through `toolbox`."""
        ledger = Ledger()
        ledger.fold(messages)
        turn = _Turn(toolbox, ledger)
        produced: list[ChatMessage] = []
        async for event in turn.play(messages):
            if isinstance(event, ToolCallFinished):
                produced.append(ChatMessage.assistant(tool_calls=[event.call]))
            yield event
        for index, line in enumerate(turn.lines):
            yield TextDelta(line if index == len(turn.lines) - 1 else line + "\n")
        reply = "\n".join(turn.lines)
        yield AssistantMessage(reply)
        produced.append(ChatMessage.assistant(reply))
        yield estimate_usage(messages, produced, model=MODEL_NAME, counter=self._token_counter)

    async def summarize(self, messages: Sequence[ChatMessage], previous: str | None) -> str:
        """Fold the task changes and open questions of `messages` into `previous`.

        Returns:
            A summary in the format `chatledger.agents.rules_summary` documents, which `run`
            understands when it comes back as a system message.
        """
        ledger = Ledger.parse(previous or "")
        ledger.fold(messages)
        return ledger.render()


class _Turn:
    """One run: the commands of the last user message, played against the toolbox."""

    def __init__(self, toolbox: Toolbox, ledger: Ledger) -> None:
        self._toolbox = toolbox
        self._ledger = ledger
        self.lines: list[str] = []
        self._asked = False
        # Results of the async generators below, which cannot return values.
        self._result: dict[str, Any] = {}
        self._target: int | None = None

    async def play(self, messages: Sequence[ChatMessage]) -> AsyncIterator[AgentEvent]:
        text = next((m.content for m in reversed(messages) if m.role is Role.USER), None)
        if text is None or not text.strip():
            self.lines.append(HELP_TEXT)
            return
        if len(text) > _MAX_COMMAND_CHARS:
            self.lines.append(
                "That message is too long for me to read as a command."
                " Please send one short request at a time."
            )
            return
        commands = parse(text)
        if len(commands) > _MAX_COMMANDS:
            self.lines.append(
                f"That's {len(commands)} requests in one message; I take at most"
                f" {_MAX_COMMANDS} at a time. Please split it up."
            )
            return
        if (clarified := _clarified(text, commands, messages)) is not None:
            commands = [clarified]
        for index, command in enumerate(commands):
            async for event in self._play(command):
                yield event
            if self._asked:
                if index < len(commands) - 1:
                    self.lines.insert(-1, "I've held back the rest of your message for now.")
                return

    async def _play(self, command: Command) -> AsyncIterator[AgentEvent]:
        match command:
            case Add():
                arguments = {"title": command.title}
                if command.description:
                    arguments["description"] = command.description
                async for event in self._call("add_task", arguments):
                    yield event
                self._say_added(command)
            case ListTasks():
                async for event in self._call("list_tasks", {"status": command.status.value}):
                    yield event
                self._say_listed(command.status)
            case Complete() | Delete() | Update():
                async for event in self._change(command):
                    yield event
            case Recall():
                self._recall()
            case Help():
                self.lines.append(HELP_TEXT)
            case SmallTalk():
                self.lines.append(_SMALL_TALK_REPLIES[command.kind])
            case MissingTitle():
                self.lines.append('What should I add? For example: "add buy milk".')
            case Unknown():
                self._unsure(command.text)

    async def _call(self, name: str, arguments: dict[str, Any]) -> AsyncIterator[AgentEvent]:
        call = ToolCall(f"call_{uuid.uuid4().hex}", name, _json_object(arguments))
        yield ToolCallStarted(call)
        self._result = await self._toolbox.call(call)
        self._ledger.observe(name, self._result)
        yield ToolCallFinished(call, self._result)

    def _ask(self, question: str) -> None:
        self.lines.append(question)
        self._asked = True

    def _unsure(self, text: str) -> None:
        """Answer a message no rule matched: ask, never act on a guess."""
        ref = parse_reference(text)
        task_ids = mentioned_ids(text) or self._named_by(ref)
        if task_ids:
            named = _naming(task_ids)
            self.lines.append(
                f'What should I do with {named}? For example: "mark {named} as done",'
                f' "delete {named}" or "rename task {task_ids[0]} to …".'
            )
        elif (
            isinstance(ref, ByTitle)
            and len(text.split()) <= _MAX_OFFERED_WORDS
            and not _NOT_A_TITLE.search(text)
        ):
            self._ask(
                f'I\'m not sure what you mean by "{text}".'
                f" Should I add {_json_string(text)} as a new task?"
            )
        else:
            self.lines.append(_not_understood(text))

    def _named_by(self, ref: Reference | None) -> tuple[int, ...]:
        """The task a bare "the second one" or "it" points at, when it points at one."""
        shown, focus = self._ledger.shown, self._ledger.focus
        if isinstance(ref, Ordinal) and -len(shown) <= ref.index < len(shown):
            return (shown[ref.index],)
        if isinstance(ref, Recent) and focus is not None:
            return (focus[0],)
        return ()

    async def _change(self, command: Complete | Delete | Update) -> AsyncIterator[AgentEvent]:
        if isinstance(command.ref, ByIds):
            for one in command.ref.task_ids:
                async for event in self._change(dataclasses.replace(command, ref=ById(one))):
                    yield event
            return
        action = _ACTIONS[type(command)]
        prefer_pending = isinstance(command, Complete)
        async for event in self._resolve(command.ref, action, prefer_pending=prefer_pending):
            yield event
        task_id = self._target
        if task_id is None:
            return
        arguments: dict[str, Any] = {"task_id": task_id}
        if isinstance(command, Update):
            name = "update_task"
            if command.title:
                arguments["title"] = command.title
            if command.description is not None:
                arguments["description"] = command.description
        else:
            name = "complete_task" if isinstance(command, Complete) else "delete_task"
        async for event in self._call(name, arguments):
            yield event
        result = self._result
        if "error" in result:
            doing = _DOING[type(command)].format(task_id=task_id)
            self.lines.append(_explain(result, doing, task_id))
        elif isinstance(command, Complete):
            self.lines.append(f'Marked task {task_id} "{result["title"]}" as done.')
        elif isinstance(command, Delete):
            self.lines.append(f'Deleted task {task_id} "{result["title"]}".')
        else:
            self.lines.append(_updated(command, task_id, result["title"]))

    async def _resolve(
        self, ref: Reference, action: str, *, prefer_pending: bool
    ) -> AsyncIterator[AgentEvent]:
        """Set `_target` to the task `ref` means, or say why there is none."""
        self._target = None
        match ref:
            case ById():
                self._target = ref.task_id
            case Ordinal():
                self._resolve_ordinal(ref.index, action)
            case Recent() if self._ledger.focus is not None:
                self._target = self._ledger.focus[0]
            case Recent() | Unnamed():
                self._ask(f"Which task should I {action}? Tell me its number or its title.")
            case Everything():
                self._ask(f"I change one task at a time. Which task should I {action}?")
            case ByTitle():
                async for event in self._call("list_tasks", {"status": TaskFilter.ALL.value}):
                    yield event
                if "error" in self._result:
                    self.lines.append(_explain(self._result, "look up your tasks", None))
                    return
                found = _matching(ref.text, self._result["tasks"], prefer_pending=prefer_pending)
                if len(found) == 1:
                    self._target = found[0]["task_id"]
                elif found:
                    options = ", ".join(f"#{t['task_id']} {t['title']}" for t in found)
                    self._ask(
                        f'More than one task matches "{ref.text}": {options}.'
                        f" Which one should I {action}?"
                    )
                elif self._result.get("omitted"):
                    self.lines.append(
                        f'I couldn\'t find a task matching "{ref.text}" among the first'
                        f" {len(self._result['tasks'])} of your {self._result['total']} tasks."
                        " Tell me its number."
                    )
                else:
                    self.lines.append(
                        f'I couldn\'t find a task matching "{ref.text}".'
                        ' Say "show my tasks" to see them all.'
                    )

    def _resolve_ordinal(self, index: int, action: str) -> None:
        shown = self._ledger.shown
        if -len(shown) <= index < len(shown):
            self._target = shown[index]
        elif not shown and index == -1 and self._ledger.focus is not None:
            # No list yet: "the last one" is the task talked about last.
            self._target = self._ledger.focus[0]
        elif not shown:
            self._ask(
                f"Which task should I {action}? I haven't shown you a list in this"
                " conversation: tell me its number or its title."
            )
        else:
            plural = "" if len(shown) == 1 else "s"
            self._ask(
                f"The last list I showed you has only {len(shown)} task{plural}."
                f" Which one should I {action}?"
            )

    def _say_added(self, command: Add) -> None:
        result = self._result
        if "error" in result:
            self.lines.append(_explain(result, "add that task", None))
            return
        line = f'Added task {result["task_id"]}: "{result["title"]}"'
        if command.description:
            line += f', with the description "{command.description}"'
        self.lines.append(line + ".")

    def _say_listed(self, status: TaskFilter) -> None:
        if "error" in self._result:
            self.lines.append(_explain(self._result, "list your tasks", None))
            return
        tasks: list[dict[str, Any]] = self._result["tasks"]
        if not tasks:
            self.lines.append(_NOTHING_LISTED[status])
            return
        kind = {TaskFilter.ALL: "", TaskFilter.PENDING: "pending ", TaskFilter.COMPLETED: "done "}
        total = self._result.get("total", len(tasks))
        plural = "" if total == 1 else "s"
        self.lines.append(f"You have {total} {kind[status]}task{plural}:")
        self._ledger.shown = tuple(task["task_id"] for task in tasks)
        for task in tasks:
            line = f"- #{task['task_id']} {task['title']}"
            if task["completed"] and status is TaskFilter.ALL:
                line += " (done)"
            if task["description"]:
                line += f": {task['description']}"
            self.lines.append(line)
        if omitted := self._result.get("omitted", 0):
            self.lines.append(f"…and {omitted} more, not shown here.")

    def _recall(self) -> None:
        ledger = self._ledger
        if not ledger.added:
            self.lines.append(
                "I don't see any tasks added in this conversation."
                ' Say "show my tasks" to see your whole list.'
            )
            return
        self.lines.append("Earlier in this conversation you added:")
        for task_id, title in ledger.added.items():
            line = f'- #{task_id} "{title}"'
            if ledger.updated.get(task_id, title) != title:
                line += f' (now "{ledger.updated[task_id]}")'
            if task_id in ledger.deleted:
                line += ", deleted since"
            elif task_id in ledger.completed:
                line += ", done since"
            self.lines.append(line)


_SMALL_TALK_REPLIES: Final = {
    "greeting": 'Hello! I keep your task list. Say "help" to see what I can do.',
    "thanks": "Glad to help.",
    "dismiss": "OK, I'll leave your tasks as they are.",
}
_NOTHING_LISTED: Final = {
    TaskFilter.ALL: "You have no tasks yet.",
    TaskFilter.PENDING: "Nothing pending: you're all done.",
    TaskFilter.COMPLETED: "You haven't completed any tasks yet.",
}


def _not_understood(text: str) -> str:
    text = text if len(text) <= 80 else text[:77] + "..."
    opening = f'Sorry, I didn\'t understand "{text}".' if text else "Sorry, I didn't get that."
    return f'{opening} I can add, list, complete, change and delete tasks: say "help" to see how.'


def _naming(task_ids: tuple[int, ...]) -> str:
    if len(task_ids) == 1:
        return f"task {task_ids[0]}"
    return "tasks " + ", ".join(map(str, task_ids[:-1])) + f" and {task_ids[-1]}"


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _json_object(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False)


def _matching(
    query: str, tasks: list[dict[str, Any]], *, prefer_pending: bool
) -> list[dict[str, Any]]:
    """The tasks whose titles hold every word of `query`; an exact title wins outright."""
    wanted = title_words(query)
    found = [t for t in tasks if set(wanted) <= set(title_words(t["title"]))]
    exact = [t for t in found if title_words(t["title"]) == wanted]
    if exact:
        return exact
    if prefer_pending and len(found) > 1:
        # "Mark milk done" cannot mean the milk task that is already done.
        return [t for t in found if not t["completed"]] or found
    return found


def _updated(command: Update, task_id: int, title: str) -> str:
    if command.title and command.description:
        return f'Updated task {task_id}: it is now "{title}", with the new description.'
    if command.title:
        return f'Renamed task {task_id} to "{title}".'
    if command.description:
        return f'Updated the description of task {task_id} "{title}".'
    return f'Cleared the description of task {task_id} "{title}".'


def _explain(result: dict[str, Any], doing: str, task_id: int | None) -> str:
    """A tool's `{"error", "code"}` result in plain words."""
    code = result.get("code")
    if code == "not_found" and task_id is not None:
        return f'I couldn\'t find task {task_id}. Say "show my tasks" to see their numbers.'
    if code == "invalid_id":
        return f"I couldn't {doing}: task numbers are whole numbers, starting at 1."
    return f"I couldn't {doing}: {result.get('error') or 'something went wrong'}."


def _clarified(
    text: str, commands: list[Command], messages: Sequence[ChatMessage]
) -> Command | None:
    """The command the user meant, when this message answers the agent's last question.

    "yes" after "Should I add "call grandma" as a new task?" adds it; "#6", "the oat milk
    one" or "the second one" after "Which one should I delete?" re-runs the request that
    was asked about, with the task now named.
    """
    says_yes = _YES.fullmatch(text.strip()) is not None
    unknown = commands[0] if len(commands) == 1 and isinstance(commands[0], Unknown) else None
    if not says_yes and unknown is None:
        return None  # a command of its own: no need to look back for a question
    pending = _pending_question(messages)
    if pending is None:
        return None
    request, question = pending
    if offer := ADD_OFFER.search(question):
        return Add(json.loads(offer[1])) if says_yes else None
    if unknown is None:
        return None
    match = QUESTION.search(question)
    assert match is not None  # _pending_question only returns questions it matched
    ref = parse_reference(unknown.text)
    if ref is None:
        return None
    for command in parse(request):
        if (
            isinstance(command, Complete | Delete | Update)
            and _ACTIONS[type(command)] == match[1]
            and not isinstance(command.ref, ById)
        ):
            return dataclasses.replace(command, ref=ref)
    return None


def _pending_question(messages: Sequence[ChatMessage]) -> tuple[str, str] | None:
    """The (request, question) the agent asked just before the last user message, if any."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role is Role.USER), 0)
    for index in range(last - 1, -1, -1):
        message = messages[index]
        if message.role is Role.USER:
            return None
        if message.role is Role.SYSTEM and SUMMARY_HEADER in message.content:
            questions = Ledger.parse(message.content).questions
            return questions[-1] if questions else None
        if message.role is Role.ASSISTANT and message.content:
            if not (QUESTION.search(message.content) or ADD_OFFER.search(message.content)):
                return None
            request = next(
                (m.content for m in reversed(messages[:index]) if m.role is Role.USER), ""
            )
            return request, message.content
    return None
