"""The grammar of `RulesAgent`: a user message in, the task commands it asks for out.

Pure text work, no I/O: `parse` turns a message into `Command`s (defined in
`chatledger.agents.rules_commands`), naming tasks with the references that
`chatledger.agents.rules_references` reads. Resolving a reference against the user's real
tasks is the agent's job, since it needs the tools.

Conventions, which the agent's help text states to users:

- A description follows the title after a colon and a space ("add buy milk: 2 litres,
  organic") or after "with description" / "with a note" ("add call Bob with description
  ask about Sunday"). "5:30" has no space after its colon, so times stay in titles. After
  a task named by number or pronoun, a colon introduces the new title instead ("update
  task 2: call grandma").
- One message may hold several commands, split at "and", "then", ",", ";" or ". ", but
  only where the next part starts with a command ("add milk and show my tasks"), so a
  title such as "buy bread and butter" stays whole. Verbs that are common inside titles
  (finish, remove, change, ...) only start a new command when they name their task
  explicitly: "finish task 3", "remove it". After "delete"/"complete", a bare number
  continues the command: "delete task 5 and task 7". Quoted text is never split.
- "it", "that", "the one I just added" refer to the task most recently added or
  mentioned in the conversation; "the second one" counts in the list shown last. The
  agent resolves both from the history.
- What matches no rule is `Unknown`: the agent asks about it rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from chatledger.agents.rules_commands import (
    Add,
    ById,
    Command,
    Complete,
    Delete,
    Help,
    ListTasks,
    MissingTitle,
    Recall,
    Recent,
    Reference,
    SmallTalk,
    Unknown,
    Unnamed,
    Update,
)
from chatledger.agents.rules_references import (
    IRREGULAR_PAST,
    LIST_PHRASE,
    LIST_TAIL,
    parse_reference,
    rx,
    unquote,
)
from chatledger.domain import TaskFilter

__all__ = ["parse"]


# --- cleaning ---------------------------------------------------------------------------

_LEADING = rx(
    r"^(?:(?:please|pls|plz|kindly|hey|hi|hello|ok|okay|so|also|and|then|now|actually|oh|"
    r"oops|um|uh|well|just|alright|right|cool|great|next|finally|after that|lastly)\b[\s,!.]*)+"
)
_POLITE = rx(
    r"^(?:(?:can|could|would|will) you(?: please)?|i(?:'d| would) like you to|i want you to|"
    r"go ahead and|be sure to)\s+"
)
_VERB = (
    r"(?:add|create|new|put|show|list|display|view|see|mark|complete|finish|delete|remove|"
    r"cancel|drop|rename|change|update|edit|set|check|tick|cross|get|take|forget|clear)\b"
)
_WANT = rx(rf"^(?:(?:i(?:'d| would) like to|i want to|let'?s|let me)\s+(?={_VERB})|let me know\s+)")
# One word or phrase at a time (see `_clean`): a pattern that took them all at once would
# backtrack over every run of ", , , ," and spend seconds on a long message.
_TRAILING = rx(r"(?<![^\s,])(?:please|pls|thanks|thank you|thx|for me|now|again|and|then|also)$")


def _clean(text: str) -> str:
    text = " ".join(text.replace("\u2019", "'").split())
    for pattern in (_LEADING, _POLITE, _WANT):
        text = pattern.sub("", text, count=1)
    text = text.rstrip(" ,.!?")
    while trailing := _TRAILING.search(text):
        text = text[: trailing.start()].rstrip(" ,.!?")
    return text


# Words that look like past tenses but do not say a task is finished ("I added", "I need").
_NOT_DONE_PAST = r"(?:added|created|need|needed|wanted|started|forgot|tried|asked|wondered)"

# --- commands ---------------------------------------------------------------------------

_HELP = rx(
    r"(?:help|\?|commands|usage|options|menu|help me|i need help|how can you help(?: me)?|"
    r"what can (?:you|i) (?:do|say|ask)(?: here)?|what do you (?:do|understand|know)|"
    r"how (?:does this|do you) work|how do i use (?:this|you)|what are (?:your|the) commands)"
    r"(?:\s+(?:please|me|out|with (?:this|that|my tasks|tasks)))?"
)
_SMALL_TALK = {
    "greeting": rx(
        r"(?:hi|hello|hey|hiya|yo|howdy|greetings|good (?:morning|afternoon|evening))"
        r"(?: there)?"
    ),
    "thanks": rx(
        r"(?:thanks|thank you|thx|cheers|great|cool|ok|okay|perfect|nice|awesome|got it)"
        r"(?:[\s,!.]+(?:thanks|thank you|a lot|so much|very much))*"
    ),
    "dismiss": rx(r"never ?mind|forget it|no|nope|nothing|none|no thanks|not now|leave it"),
}
_RECALL = rx(
    r"(?:(?:what|which)(?:\s+tasks?)?\s+(?:did|have)\s+(?:i|we)\s+(?:just\s+|already\s+)?"
    r"(?:add|added|create|created|put)|(?:remind|tell|show) me what (?:i|we) (?:have )?"
    r"(?:added|add|created)|what (?:was|has been|got) added)\b.*"
)

_PENDING_WORDS = rx(
    r"\b(?:pending|open|remaining|left|outstanding|incomplete|unfinished|undone|"
    r"uncompleted|not (?:yet )?(?:done|finished|completed)|(?:haven'?t|have not|didn'?t|"
    r"did not)(?: yet)? (?:done|finished|completed|do|finish|complete)|still|next|due|"
    r"(?:have|need|got) to do|to be done|on (?:my|the) (?:plate|agenda))\b"
)
_COMPLETED_WORDS = rx(
    r"\b(?:done|completed|complete|finished|checked off|ticked off|crossed off|closed|"
    r"accomplished|did i (?:do|finish|complete|get done))\b"
)
_TASK_WORDS = rx(
    r"\b(?:tasks?|todos?|to-dos?|to do|list|pending|left|remaining|outstanding|open|done|"
    r"completed?|finish(?:ed)?|unfinished|incomplete|plate|agenda|due|next)\b"
)
_LIST_VERB = rx(
    r"^(?:show|list|display|view|print|read(?: out)?|give me|get(?! rid)|see|pull up|bring up|"
    r"let me see|tell me)\b(?P<rest>.*)$"
)
_LIST_QUESTION = rx(
    r"^(?:what|what'?s|whats|which|how many|do i have|are there|is there|any|anything)\b"
)
_LIST_BARE = rx(
    r"(?:my\s+|all\s+(?:my\s+)?)?(?:(?:pending|open|completed|done|finished|remaining|"
    r"current|unfinished|outstanding)\s+)?(?:tasks?|to-?dos?|(?:to do|todo|to-do|task) list|list)"
)
_LIST_OBJECT = rx(r"\b(?:everything|all|them|it all|what)\b")


def _status(text: str) -> TaskFilter:
    if _PENDING_WORDS.search(text):
        return TaskFilter.PENDING
    if _COMPLETED_WORDS.search(text):
        return TaskFilter.COMPLETED
    return TaskFilter.ALL


def _list(text: str) -> Command | None:
    if match := _LIST_VERB.match(text):
        rest = match["rest"].strip()
        if not rest or rest.lower() in ("me", "all") or _TASK_WORDS.search(rest):
            return ListTasks(_status(rest))
        if _LIST_OBJECT.search(rest) and len(rest.split()) <= 4:
            return ListTasks(_status(rest))
        return None
    if (_LIST_QUESTION.match(text) and _TASK_WORDS.search(text)) or _LIST_BARE.fullmatch(text):
        return ListTasks(_status(text))
    return None


_DESCRIPTION_NOUN = r"(?:description|note|notes|details?|desc)"
_WITH_DESCRIPTION = (
    rf",?\s+with\s+(?:a\s+|the\s+)?{_DESCRIPTION_NOUN}(?:\s+(?:of|saying|that says))?\s*:?"
)
_DESCRIPTION_SPLIT = rx(rf":\s+|{_WITH_DESCRIPTION}\s+")
_DESCRIPTION_LEAD = rx(rf"^(?:\s*[:,-]|{_WITH_DESCRIPTION})?\s*")
_LIST_LEAD = rx(rf"^\s+{LIST_PHRASE}")


def _title_and_description(text: str) -> tuple[str, str | None]:
    """Split "buy milk: 2 litres" or "buy milk with description 2 litres"."""
    text = text.strip()
    quoted = _QUOTED.match(text)
    if quoted is not None:
        # A quoted title may hold colons; the description is whatever follows it.
        rest = _LIST_LEAD.sub("", text[quoted.end() :])
        rest = _DESCRIPTION_LEAD.sub("", rest, count=1)
        return unquote(quoted.group()), unquote(rest) or None
    parts = _DESCRIPTION_SPLIT.split(text, maxsplit=1)
    if len(parts) == 2 and parts[0].strip():
        return unquote(LIST_TAIL.sub("", parts[0])), unquote(parts[1]) or None
    return unquote(LIST_TAIL.sub("", text)), None


_TASK_NOUN = r"(?:task|todo|to-do|to do|item|reminder|entry)s?"
_ADD = rx(
    r"^(?:add|create|insert|jot down|write down|note down|"
    rf"(?:make|new)(?=\s+(?:(?:a|an|another|one)\s+)?(?:new\s+)?{_TASK_NOUN}\b))\b(?:\s*:)?"
    rf"(?:\s+(?:(?:a|an|another|one|the)\s+)?(?:new\s+)?{_TASK_NOUN}\b"
    r"(?:\s*(?::|to\b|for\b|called\b|named\b|titled\b|saying\b|that says\b|about\b))?)?"
    rf"(?:\s+{LIST_PHRASE}\s*:?)?(?P<rest>.*)$"
)
_ADD_LABEL = rx(rf"^(?:new\s+)?(?:{_TASK_NOUN}|to-?do)\s*:\s*(?P<rest>.+)$")
_PUT = rx(rf"^put\s+(?P<rest>.+?)\s+{LIST_PHRASE}$")
# "make task 2 urgent" names a task that exists: whatever it asks, it is not a new task.
_NAMES_EXISTING = rx(rf"^(?:add|create|make|new)\s+(?:the\s+)?{_TASK_NOUN}\s*(?:number\s*)?#?\s*\d")
_REMIND = rx(
    r"^(?:remind me|don'?t let me forget|do not let me forget|don'?t forget|do not forget|"
    r"remember|make sure (?:i|to)|(?:i|we)\s+(?:still\s+|really\s+|also\s+)?(?:need|have|"
    r"'ve got|have got|got|ought)\s+to|(?:i|we)'ve got(?:ta| to)|(?:i|we)(?:'ll| will) "
    r"(?:have|need) to|i (?:must|should|gotta)|(?:need|have|got)\s+to|gotta)"
    r"(?:\s+(?:that\s+)?(?:i\s+(?:need|have)\s+)?(?:to|about)\b)?\s+(?P<rest>.+)$"
)


def _add(text: str) -> Command | None:
    if _NAMES_EXISTING.match(text):
        return None
    match = _ADD_LABEL.match(text) or _PUT.match(text) or _ADD.match(text) or _REMIND.match(text)
    if match is None:
        return None
    title, description = _title_and_description(match["rest"])
    return Add(title, description) if title else MissingTitle()


@dataclass(frozen=True, slots=True)
class _Rule:
    """A pattern with a `ref` group, and how to build the command once the ref parses."""

    pattern: re.Pattern[str]
    make: Callable[[Reference, re.Match[str]], Command]

    def apply(self, text: str) -> Command | None:
        match = self.pattern.fullmatch(text)
        if match is None or (ref := parse_reference(match["ref"])) is None:
            return None
        return self.make(ref, match)


def _ref_then(pattern: str, make: Callable[[Reference, re.Match[str]], Command]) -> _Rule:
    return _Rule(rx(pattern), make)


def _describe(ref: Reference, match: re.Match[str]) -> Command:
    return Update(ref, description=unquote(match["value"]))


def _clears(ref: Reference, match: re.Match[str]) -> Command:
    return Update(ref, description="")


def _completes(ref: Reference, match: re.Match[str]) -> Command:
    return Complete(ref)


def _deletes(ref: Reference, match: re.Match[str]) -> Command:
    return Delete(ref)


def _retitle(ref: Reference, match: re.Match[str]) -> Command:
    title, description = _title_and_description(match["value"])
    return Update(ref, title=title or None, description=description)


_N = _DESCRIPTION_NOUN
_DONE = (
    r"(?:done|complete|completed|finished|checked(?: off)?|ticked off|crossed off|closed|"
    r"taken care of|sorted|handled|paid)"
)
_DELETE = (
    r"(?:delete|remove|cancel|drop|erase|trash|scrap|scratch|discard|forget(?: about)?|"
    r"get rid of|throw away|ditch|clear)"
)
_CHANGE = r"(?:change|update|edit|modify|set|replace)"
_RETITLE = r"(?:change|update|edit|modify|replace)"
_I_DID = r"(?:i|we)(?:'ve| have)?(?: just| already| finally)? (?:did|done|finished|completed)"
# A task named by number or pronoun, after which a colon brings a new title, not a
# description: "update task 2: call grandma". After a title ("edit buy milk: 2 litres")
# the colon could mean either, so that is left to the other rules, or to a question.
_EXPLICIT_REF = r"(?:(?:task|todo|item|number)\s*)?#?\s*\d{1,18}|it|that|this|that one|this one"

# Order matters (see `_command`). Edits start with their own verb and come first, so that
# "add a description to task 3" is not an add. Status rules come after listing and adding,
# since those that start with free text would take "show me what is done" or "add get the
# car washed and done" for "<task> done".
_EDIT_RULES = (
    _ref_then(
        rf"(?:add|put|attach|write|give|set) (?:a |an |the |this |some )?{_N} "
        r"(?:to|for|on|of) (?P<ref>.+?)\s*:\s+(?P<value>.+)",
        _describe,
    ),
    _ref_then(
        rf"(?:add|put|attach|write|give|set) (?:a |an |the |this |some )?{_N} "
        r"(?:to|for|on|of) (?P<ref>.+?) (?:saying|that says|as|to) (?P<value>.+)",
        _describe,
    ),
    _ref_then(
        rf"{_CHANGE} (?:the )?{_N} (?:of|for|on) (?P<ref>.+?)"
        r"(?:\s*:\s+| (?:to say|to read|to|as) )(?P<value>.+)",
        _describe,
    ),
    _ref_then(
        rf"{_CHANGE} (?P<ref>.+?)(?:'s|s')? {_N}(?:\s*:\s+| (?:to|as) )(?P<value>.+)", _describe
    ),
    _ref_then(r"describe (?P<ref>.+?) as (?P<value>.+)", _describe),
    _ref_then(
        rf"(?:remove|delete|clear|drop|erase) (?:the )?{_N} (?:of|from|on|for) (?P<ref>.+)", _clears
    ),
    _ref_then(r"rename (?P<ref>.+?) (?:to|as|into) (?P<value>.+)", _retitle),
    _ref_then(r"rename (?P<ref>.+?) (?P<value>(?:\"[^\"]+\"|'[^']+'))", _retitle),
    _ref_then(
        rf"{_CHANGE} (?:the )?(?:title|name) (?:of|for) (?P<ref>.+?) (?:to|as) (?P<value>.+)",
        _retitle,
    ),
    _ref_then(
        rf"{_CHANGE} (?P<ref>.+?)(?:'s|s')? (?:title|name) (?:to|as) (?P<value>.+)", _retitle
    ),
    _ref_then(
        rf"{_RETITLE} (?P<ref>.+?) (?:to say|to read|so it says|so it reads|to|into|with) "
        r"(?P<value>.+)",
        _retitle,
    ),
    _ref_then(rf"{_RETITLE} (?P<ref>{_EXPLICIT_REF})\s*:\s+(?P<value>.+)", _retitle),
    _ref_then(r"make (?P<ref>.+?) (?:say|read) (?P<value>.+)", _retitle),
)
_STATUS_RULES = (
    _ref_then(rf"(?:mark|set) (?P<ref>.+?) (?:as |to )?(?:being )?{_DONE}", _completes),
    _ref_then(
        r"(?:complete|finish|close|tick|check|cross)(?: off)? (?P<ref>.+?)(?: off)?"
        rf"(?: as done)?(?: {LIST_PHRASE})?",
        _completes,
    ),
    _ref_then(rf"{_I_DID} (?P<ref>.+)", _completes),
    _ref_then(
        r"(?:(?:i'?m|i am|we'?re|we are) )?(?:all )?(?:done|finished) with (?P<ref>.+)", _completes
    ),
    _ref_then(r"(?:finished|completed|done)\s*[:,]?\s+(?P<ref>.+)", _completes),
    _ref_then(
        rf"(?P<ref>.+?)(?: (?:is|are|was|has been|have been)|'s) (?:now )?(?:all )?{_DONE}",
        _completes,
    ),
    _ref_then(rf"(?P<ref>.+?)\s*[:,-]? {_DONE}", _completes),
    _ref_then(rf"{_DELETE} (?P<ref>.+?)(?: {LIST_PHRASE})?", _deletes),
    _ref_then(r"take (?P<ref>.+?) off (?:my|the) (?:(?:todo|to-do|to do|task) )?list", _deletes),
    _ref_then(
        r"(?:i|we) (?:don'?t|do not|no longer) (?:really )?(?:need|have|want) (?:to )?"
        r"(?!forget\b)(?P<ref>.+?)(?: any ?more| after all)?",
        _deletes,
    ),
    _ref_then(r"(?P<ref>.+?) should (?:say|read|be called|be named) (?P<value>.+)", _retitle),
    # "I called mom", "I paid the rent": a past tense names the task it finished. Last, so
    # that every more specific reading wins.
    _ref_then(
        rf"(?:i|we)(?:'ve| have)? (?:just |already |finally )?(?P<ref>(?!{_NOT_DONE_PAST}\b)"
        rf"(?:[a-z]+ed|{'|'.join(IRREGULAR_PAST)})\b.*)",
        _completes,
    ),
)
_BARE_DONE = rx(r"(?:all )?(?:done|finished|completed)|(?:i )?did it|(?:i'?ve )?done it")
_STATUS_QUESTION = rx(rf"^(?:is|are|was|were|has|have|did) .*{_DONE}\b")
_BARE_VERB = rx(r"(?P<complete>complete|finish|mark(?: as)? done)|delete|remove|cancel")


def _apply(rules: tuple[_Rule, ...], text: str) -> Command | None:
    return next((c for rule in rules if (c := rule.apply(text)) is not None), None)


def _command(text: str) -> Command:
    """One clause, already cleaned, as a command."""
    if not text:
        return Unknown(text)
    if _HELP.fullmatch(text):
        return Help()
    if _RECALL.fullmatch(text):
        return Recall()
    if _BARE_DONE.fullmatch(text):
        return Complete(Recent())
    if bare := _BARE_VERB.fullmatch(text):
        return Complete(Unnamed()) if bare["complete"] else Delete(Unnamed())
    if _STATUS_QUESTION.match(text):
        # "Is task 3 done?" asks; it must not mark anything. The listing answers it.
        return ListTasks()
    return (
        _apply(_EDIT_RULES, text)
        or _list(text)
        or _add(text)
        or _apply(_STATUS_RULES, text)
        or Unknown(text)
    )


# --- splitting --------------------------------------------------------------------------

_SEPARATOR = rx(
    r"\s*(?:[,;]|\.(?=\s))\s*(?:(?:and\s+)?(?:then|also|after that)\s+|and\s+|plus\s+)?"
    r"|\s+(?:and\s+then|and\s+also|and|then|also|plus|after that)\s+"
)
_QUOTED = re.compile(
    "\"[^\"]*\"|\u201c[^\u201d]*\u201d|\u2018[^\u2019]*\u2019|(?<!\\w)'[^']+'(?!\\w)"
)
_STRONG_START = rx(
    r"^(?:add|create|new task|put|show|list|display|mark|delete|rename|remind me|remember to|"
    r"don'?t (?:let me )?forget|do not (?:let me )?forget|i (?:also )?(?:need|have) to|"
    r"what'?s|whats|what|which|how many|i(?:'ve| have)? (?:did|done|finished|completed))\b"
)
_WEAK_START = rx(
    rf"^(?:{_DELETE}|{_CHANGE}|complete|finish|close|check off|tick off|cross off|take)\s+"
    r"(?:it|that|this|them|task\s+\S+|#\s*\d+|number\s+\S+|the\s+[\w\s]+?\s+task)\b"
)
_BARE_ID = rx(r"^(?:task\s+|#\s*|number\s+)?\d+\b")


def _starts_command(text: str) -> bool:
    # Only the start matters, and cleaning all of a long remainder at every separator
    # would make splitting quadratic.
    text = _clean(text[:100])
    return bool(_STRONG_START.match(text) or _WEAK_START.match(text))


def _continue(previous: Command, clause: str) -> Command:
    command = _command(_clean(clause))
    if isinstance(command, Unknown) and isinstance(previous, Complete | Delete):
        if isinstance(ref := parse_reference(command.text), ById):
            return type(previous)(ref)
    return command


def parse(text: str) -> list[Command]:
    """The commands in one user message, in the order they were given."""
    # Small talk is judged on the whole message: cleaning would strip "hi" or "ok" away.
    whole = " ".join(text.replace("\u2019", "'").split()).rstrip(".!?,").strip()
    for kind, pattern in _SMALL_TALK.items():
        if pattern.fullmatch(whole):
            return [SmallTalk(kind)]
    quoted = [match.span() for match in _QUOTED.finditer(text)]
    commands: list[Command] = []
    start = 0
    for separator in _SEPARATOR.finditer(text):
        if any(a < separator.start() < b for a, b in quoted):
            continue
        rest = text[separator.end() :]
        starts, continues = _starts_command(rest), _BARE_ID.match(rest) is not None
        if not (starts or continues):
            continue
        clause = text[start : separator.start()]
        current = _continue(commands[-1], clause) if commands else _command(_clean(clause))
        # "delete task 5 and task 7": a bare number continues a delete or a complete.
        if starts or isinstance(current, Complete | Delete):
            if not isinstance(current, Unknown):
                commands.append(current)
                start = separator.end()
    last = text[start:]
    commands.append(_continue(commands[-1], last) if commands else _command(_clean(last)))
    return commands
