"""What an import did: the conversations it wrote or found there already, the lines it did
not import and why, and the tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ImportFailure", "ImportReport", "ImportedConversation"]


@dataclass(frozen=True, slots=True)
class ImportedConversation:
    """A conversation of the file: its line, its id there and here, and whether it was
    there already (imported before)."""

    line: int
    source_id: str
    id: str
    present: bool


@dataclass(frozen=True, slots=True)
class ImportFailure:
    """What was not imported: the line at fault (for a ChatGPT export, the conversation's
    place in its list), the conversation it belongs to, and why."""

    line: int
    message: str
    source_id: str | None = None


@dataclass(slots=True)
class ImportReport:
    """What an import did. `complete`: the file's end was read (a file cut short is not)."""

    conversations: list[ImportedConversation] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)
    tasks_imported: int = 0
    tasks_present: int = 0
    complete: bool = False

    @property
    def ok(self) -> bool:
        return self.complete and not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversations_imported": sum(not c.present for c in self.conversations),
            "conversations_present": sum(c.present for c in self.conversations),
            "conversations_failed": len({(f.source_id, f.line) for f in self.failures}),
            "tasks_imported": self.tasks_imported,
            "tasks_present": self.tasks_present,
            "complete": self.complete,
            "conversations": [
                {"line": c.line, "source_id": c.source_id, "id": c.id, "present": c.present}
                for c in self.conversations
            ],
            "failures": [
                {"line": f.line, "conversation_id": f.source_id, "message": f.message}
                for f in self.failures
            ],
        }
