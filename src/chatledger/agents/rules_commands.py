"""What a user can ask `RulesAgent` for: the commands its grammar produces, and the ways a
command can name a task (`Reference`).

Plain data: `chatledger.agents.rules_grammar` builds them from text and
`chatledger.agents.rules.RulesAgent` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatledger.domain import TaskFilter

__all__ = [
    "Add",
    "ById",
    "ByIds",
    "ByTitle",
    "Command",
    "Complete",
    "Delete",
    "Everything",
    "Help",
    "ListTasks",
    "MissingTitle",
    "Ordinal",
    "Recall",
    "Recent",
    "Reference",
    "SmallTalk",
    "Unknown",
    "Unnamed",
    "Update",
]


@dataclass(frozen=True, slots=True)
class ById:
    task_id: int


@dataclass(frozen=True, slots=True)
class ByIds:
    """Several tasks by number ("2 and 3", "tasks 5, 6 and 7"): the command runs for each."""

    task_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ordinal:
    """A place in the list the agent showed last ("the second one"); -1 is "the last one"."""

    index: int


@dataclass(frozen=True, slots=True)
class ByTitle:
    """Words of a title, as the user wrote them ("milk", "the dentist one" -> "dentist")."""

    text: str


@dataclass(frozen=True, slots=True)
class Recent:
    """A pronoun ("it", "that"): the task last added or mentioned in the conversation."""


@dataclass(frozen=True, slots=True)
class Unnamed:
    """No task at all ("complete", "delete"): the agent asks which one."""


@dataclass(frozen=True, slots=True)
class Everything:
    """All tasks ("everything"): the agent changes one task at a time and says so."""


Reference = ById | ByIds | Ordinal | ByTitle | Recent | Unnamed | Everything


@dataclass(frozen=True, slots=True)
class Add:
    title: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ListTasks:
    status: TaskFilter = TaskFilter.ALL


@dataclass(frozen=True, slots=True)
class Complete:
    ref: Reference


@dataclass(frozen=True, slots=True)
class Delete:
    ref: Reference


@dataclass(frozen=True, slots=True)
class Update:
    """A new title and/or description; a description of "" clears it."""

    ref: Reference
    title: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Recall:
    """A question about what was added earlier: answered from the conversation."""


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class SmallTalk:
    kind: str  # "greeting", "thanks" or "dismiss"


@dataclass(frozen=True, slots=True)
class MissingTitle:
    """An add command with no title ("add a task")."""


@dataclass(frozen=True, slots=True)
class Unknown:
    text: str


Command = (
    Add
    | ListTasks
    | Complete
    | Delete
    | Update
    | Recall
    | Help
    | SmallTalk
    | MissingTitle
    | Unknown
)
