"""Export and import: a user's conversations, summaries and tasks as JSON Lines.

The file is a header line, then per conversation one `conversation` line, its `message`
lines in seq order and its `summary` lines, then the `task` lines, then an `end` line
that counts what came before (a file without it was cut short):

    {"format": "chatledger.export", "version": 1, "exported_at": "..."}
    {"type": "conversation", "id": ..., "title": ..., "metadata": {...}, "created_at": ...,
     "updated_at": ..., "expires_at": ..., "pinned": ..., "archived": ...,
     "head_seq": ..., "message_count": n}
    {"type": "message", "conversation_id": ..., "seq": 1, "parent_seq": null, "id": ...,
     "role": ..., "content": ..., "tool_calls": [...], "tool_call_id": ..., "name": ...,
     "metadata": {...}, "created_at": ...}
    {"type": "summary", "conversation_id": ..., "upto_seq": ..., "content": ...,
     "updated_at": ...}
    {"type": "task", "id": ..., "title": ..., "description": ..., "completed": ...,
     "created_at": ..., "updated_at": ...}
    {"type": "end", "conversations": ..., "messages": ..., "tasks": ...}

What is derived is not in the file and is computed again on import: token counts, each
message's run and the head's. Operational rows (turns, their stream events, idempotency
keys, rate limits) are not exported.

An import is checked as the API checks what it is sent, and written one conversation per
transaction: a conversation with anything wrong in it is not written at all, and the
report names its line; the others go in. Ids are the importer's own: a conversation's is
derived from the importing user and the id in the file (so importing the same file again
finds it, and adds nothing), its messages get new ones. Tasks are numbered on from the
user's counter (a task id is never reused); a task with the same title and creation time
as one the user has is taken to be that one.

The modules: `lines` (the format's names and fields; reading a file as lines),
`checking` (what an import checks), `importing` (what it writes), `exporting`, and
`report` (what an import did). `Transfer` is the store's side of both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatledger.store.transfer.exporting import export_lines
from chatledger.store.transfer.importing import Importer, imported_conversation_id
from chatledger.store.transfer.lines import FORMAT, VERSION, read_lines
from chatledger.store.transfer.report import ImportedConversation, ImportFailure, ImportReport

__all__ = [
    "FORMAT",
    "VERSION",
    "ImportFailure",
    "ImportReport",
    "ImportedConversation",
    "Transfer",
    "imported_conversation_id",
    "read_lines",
]


class Transfer(Importer):
    """Exports and imports a user's data; reach it through `SQLAlchemyStore.export` and
    `SQLAlchemyStore.import_lines`. The import methods are `Importer`'s.

    Args:
        db: where statements run.
        max_message_chars: longest content or metadata an imported message may have.
        token_counter: counts each imported message's tokens (never taken from the file).
    """

    def export(self, user_id: str) -> AsyncIterator[str]:
        """The user's data as the file's lines (the user id is checked, and the data read,
        as the lines are iterated)."""
        return export_lines(self._db, user_id)
