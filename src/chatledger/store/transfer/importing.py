"""Import: `Importer` writes what `checking` passed, one conversation per transaction, under
ids of the importing user's own; tasks are numbered on from the user's counter."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, Final

from sqlalchemy import Connection, func, insert, select

from chatledger.chatgpt import ChatGPTError, chatgpt_records
from chatledger.domain import Message
from chatledger.errors import ValidationError
from chatledger.store.core import check_user_id, new_id
from chatledger.store.engine import Connector
from chatledger.store.ledger import insert_messages
from chatledger.store.schema import (
    conversations,
    summaries,
    task_counters,
    tasks,
)
from chatledger.store.transfer.checking import (
    CheckedConversation,
    CheckedMessage,
    CheckedTask,
    ConversationReader,
    LineError,
    check_end,
    check_header,
    checked_task,
)
from chatledger.store.transfer.lines import PAGE, Located, Unreadable
from chatledger.store.transfer.report import ImportedConversation, ImportFailure, ImportReport
from chatledger.tokens import TokenCounter, count_message_tokens

__all__ = ["Importer", "imported_conversation_id"]

# Ids derived from (importing user, id in the file): the same pair always gives the same
# id, so a second import finds the first; two users never get the same one.
_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://chatledger.invalid/import")

_c = conversations.c
_t = tasks.c


def imported_conversation_id(user_id: str, source_id: str) -> str:
    """The id a conversation with id `source_id` in a file gets when `user_id` imports it."""
    return str(uuid.uuid5(_NAMESPACE, f"{user_id}\x00{source_id}"))


class Importer:
    """The import side of `Transfer`, which adds the export; its arguments are `Transfer`'s."""

    def __init__(self, db: Connector, *, max_message_chars: int, token_counter: TokenCounter):
        self._db = db
        self._max_chars = max_message_chars
        self._token_counter = token_counter

    @property
    def max_line_bytes(self) -> int:
        """The longest line an import reads: a message at its longest, every character
        escaped, with metadata as long."""
        return 12 * 2 * self._max_chars + 64 * 1024

    async def import_records(
        self,
        user_id: str,
        records: AsyncIterable[Located],
        *,
        header: bool = True,
    ) -> ImportReport:
        """Import records (a header first, when `header`), one conversation per
        transaction; see `chatledger.store.transfer`. Raises `ValidationError` only when
        the file is not an export at all (no header, another format or version)."""
        user_id = check_user_id(user_id)
        report = ImportReport()
        current: ConversationReader | None = None
        pending_tasks: list[CheckedTask] = []
        seen = {"conversations": 0, "messages": 0, "tasks": 0}
        first = header
        ended = False

        async def close_conversation() -> None:
            nonlocal current
            if current is not None:
                reader, current = current, None
                await self._write_conversation(user_id, reader, report)

        async for line, record in records:
            if first:
                first = False
                check_header(line, record)
                continue
            if ended:
                report.failures.append(ImportFailure(line, "a line after the end line"))
                report.complete = False
                break
            if isinstance(record, Unreadable):
                error = LineError(line, record.message)
                if current is not None:
                    current.fail(error)
                else:
                    report.failures.append(ImportFailure(line, error.message))
                continue
            kind = record.get("type")
            if kind in ("message", "summary"):
                if kind == "message":
                    seen["messages"] += 1
                if current is None:
                    report.failures.append(
                        ImportFailure(line, f"a {kind} line outside any conversation")
                    )
                else:
                    current.add(line, record, kind)
                continue
            await close_conversation()
            if kind == "conversation":
                seen["conversations"] += 1
                current = ConversationReader(line, record, self._max_chars)
            elif kind == "task":
                seen["tasks"] += 1
                try:
                    pending_tasks.append(checked_task(line, record))
                except LineError as error:
                    report.failures.append(ImportFailure(error.line, error.message))
                if len(pending_tasks) >= PAGE:
                    await self._write_tasks(user_id, pending_tasks, report)
                    pending_tasks = []
            elif kind == "end":
                ended = True
                report.complete = check_end(line, record, seen, report)
            else:
                report.failures.append(ImportFailure(line, "a line of no known type"))
        if first:
            raise ValidationError("the file is empty", field="body", code="not_an_export")
        await close_conversation()
        if pending_tasks:
            await self._write_tasks(user_id, pending_tasks, report)
        return report

    async def import_chatgpt(self, user_id: str, data: bytes) -> ImportReport:
        """Import a ChatGPT `conversations.json` (see `chatledger.chatgpt`); a failure's
        `line` is the conversation's place in the file.

        Raises:
            ValidationError: `data` is not a JSON array (nothing is written).
        """
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            raise ValidationError(
                "a ChatGPT conversations.json must be JSON", field="body", code="not_an_export"
            ) from None
        try:
            converted = list(chatgpt_records(decoded))
        except ChatGPTError as error:
            raise ValidationError(error.message, field="body", code="not_an_export") from None

        async def records() -> AsyncIterator[Located]:
            for place, record in converted:
                yield (
                    place,
                    Unreadable(record.message) if isinstance(record, ChatGPTError) else record,
                )

        return await self.import_records(user_id, records(), header=False)

    async def _write_conversation(
        self, user_id: str, reader: ConversationReader, report: ImportReport
    ) -> None:
        try:
            checked = reader.finish()
        except LineError as error:
            report.failures.append(ImportFailure(error.line, error.message, reader.source_id))
            return
        target = imported_conversation_id(user_id, checked.source_id)
        prepared = [
            (m, count_message_tokens(m.message, self._token_counter)) for m in checked.messages
        ]
        summary_rows = [
            {
                "user_id": user_id,
                "conversation_id": target,
                "upto_seq": upto,
                "content": content,
                "token_count": self._token_counter(content),
                "updated_at": updated,
            }
            for upto, content, updated in checked.summaries
        ]
        present = await self._db.write(
            lambda conn: _insert_conversation(
                conn, self._db, user_id, target, checked, prepared, summary_rows
            )
        )
        report.conversations.append(
            ImportedConversation(checked.line, checked.source_id, target, present)
        )

    async def _write_tasks(
        self, user_id: str, batch: list[CheckedTask], report: ImportReport
    ) -> None:
        lock_counter = (
            self._db.upsert(task_counters)
            .values(user_id=user_id, next_id=1)
            .on_conflict_do_update(
                index_elements=[task_counters.c.user_id],
                set_={"next_id": task_counters.c.next_id},
            )
        )

        def work(conn: Connection) -> tuple[int, int]:
            # The user's task counter is locked before the tasks are looked at, so that
            # of two imports of one file at once (two replicas), the second sees the
            # first's tasks and adds none of them again.
            conn.execute(lock_counter)
            times = {task.row["created_at"] for task in batch}
            have = {
                (row.title, row.created_at)
                for row in conn.execute(
                    select(_t.title, _t.created_at).where(
                        _t.user_id == user_id, _t.created_at.in_(times)
                    )
                )
            }
            new = []
            for task in batch:
                key = (task.row["title"], task.row["created_at"])
                if key not in have:
                    have.add(key)
                    new.append(task)
            if not new:
                return 0, len(batch)
            counter = (
                self._db.upsert(task_counters)
                .values(user_id=user_id, next_id=len(new) + 1)
                .on_conflict_do_update(
                    index_elements=[task_counters.c.user_id],
                    set_={"next_id": task_counters.c.next_id + len(new)},
                )
                .returning(task_counters.c.next_id)
            )
            first_id = conn.execute(counter).scalar_one() - len(new)
            conn.execute(
                insert(tasks),
                [
                    {"user_id": user_id, "id": first_id + offset, **task.row}
                    for offset, task in enumerate(new)
                ],
            )
            return len(new), len(batch) - len(new)

        imported, present = await self._db.write(work)
        report.tasks_imported += imported
        report.tasks_present += present


def _insert_conversation(
    conn: Connection,
    db: Connector,
    user_id: str,
    target: str,
    checked: CheckedConversation,
    prepared: Sequence[tuple[CheckedMessage, int]],
    summary_rows: list[dict[str, Any]],
) -> bool:
    """Write one checked conversation; True when it is there already (imported before,
    or the user's own: its id in the file is one of theirs)."""
    mine = select(func.count()).where(_c.user_id == user_id, _c.id.in_({target, checked.source_id}))
    if conn.execute(mine).scalar_one():
        return True
    run_start = [0] * (len(prepared) + 1)
    for m, _ in prepared:
        parent = m.parent_seq
        run_start[m.seq] = (
            run_start[parent] if parent is not None and parent == m.seq - 1 else m.seq
        )
    head = checked.row["head_seq"]
    head_run = run_start[head] if head is not None else None
    statement = (
        db.upsert(conversations)
        .values(
            user_id=user_id,
            id=target,
            next_seq=len(prepared) + 1,
            head_run_start=head_run,
            head_run_parent=None if head_run is None else prepared[head_run - 1][0].parent_seq,
            **checked.row,
        )
        .on_conflict_do_nothing()
    )
    if not conn.execute(statement).rowcount:
        return True  # another import of the same file got there first
    insert_messages(
        conn, user_id, [(_stored(target, m, tokens), run_start[m.seq]) for m, tokens in prepared]
    )
    if summary_rows:
        conn.execute(insert(summaries), summary_rows)
    return False


def _stored(conversation_id: str, m: CheckedMessage, tokens: int) -> Message:
    """The message as stored, with an id of the importer's own."""
    message = m.message
    return Message(
        conversation_id=conversation_id,
        seq=m.seq,
        id=new_id(),
        role=message.role,
        content=message.content,
        tool_calls=tuple(message.tool_calls),
        tool_call_id=message.tool_call_id,
        name=message.name,
        metadata=message.metadata,
        token_count=tokens,
        created_at=m.created_at,
        parent_seq=m.parent_seq,
    )
