"""Request and response bodies of the HTTP API.

Requests forbid unknown fields, so a typo (or a smuggled `user_id`) is a 422, not a
silently ignored value. Responses are built from domain objects, never from rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from chatledger.domain import Conversation, Message, SearchHit, Task, TurnResult
from chatledger.usage import UsageReport, UsageTotals

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ConversationCreate",
    "ConversationDetail",
    "ConversationPage",
    "ConversationPublic",
    "ConversationUpdate",
    "ConversationUsagePublic",
    "DayUsagePublic",
    "DevTokenRequest",
    "ErrorBody",
    "MessagePage",
    "MessagePublic",
    "SearchHitPublic",
    "SearchPage",
    "StopResponse",
    "TaskPage",
    "TaskPublic",
    "TokenResponse",
    "ToolCallPublic",
    "UsagePublic",
    "UsageTotalsPublic",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatRequest(_Request):
    conversation_id: str | None = Field(
        default=None, description="Continue this conversation; omit to start a new one."
    )
    message: str = Field(description="What the user says.")

    @field_validator("conversation_id", mode="before")
    @classmethod
    def _numbers_are_ids_too(cls, value: object) -> object:
        # Clients written for the seeds' autoincrement ids send numbers: such an id is
        # simply not found (404), rather than a malformed request (422).
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value


class ToolCallPublic(BaseModel):
    id: str
    name: str
    arguments: Any = Field(description="The arguments as JSON (or the raw text if invalid).")
    result: dict[str, Any] = Field(description="The tool's result, or {error, code}.")


class ChatResponse(BaseModel):
    conversation_id: str
    response: str
    tool_calls: list[ToolCallPublic]
    stopped: bool | None = Field(
        default=None, description="Present, true, when the turn was stopped on request."
    )
    interrupted: bool | None = Field(
        default=None,
        description="Present, true, when the turn ended unfinished (its server failed or "
        "died): the answer to a retry under its idempotency key, with what it did.",
    )

    @classmethod
    def of(cls, result: TurnResult) -> ChatResponse:
        return cls.model_validate(result.to_dict())


class ConversationCreate(_Request):
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    temporary: bool = Field(
        default=False, description="Delete it a day after it is created, however active."
    )


class ConversationUpdate(_Request):
    """Only the fields present change; `"title": null` clears the title."""

    title: str | None = None
    metadata: dict[str, Any] | None = None
    pinned: StrictBool | None = Field(default=None, description="Listed first.")
    archived: StrictBool | None = Field(
        default=None, description="Listed only with `?archived=true`."
    )


class ConversationPublic(BaseModel):
    id: str
    title: str | None
    metadata: dict[str, Any]
    message_count: int
    created_at: datetime
    updated_at: datetime
    running: bool = Field(description="A turn is running: follow it at `…/stream`.")
    turn_id: str | None = Field(description="The running turn's id (null: none is running).")
    expires_at: datetime | None = Field(
        description="When it will be deleted (a temporary conversation); null: never."
    )
    pinned: bool
    archived: bool
    head_seq: int | None = Field(
        description="The message the next turn continues from (null: no messages yet)."
    )

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationPublic:
        return cls(
            id=conversation.id,
            title=conversation.title,
            metadata=dict(conversation.metadata),
            message_count=conversation.message_count,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
            running=conversation.running_turn_id is not None,
            turn_id=conversation.running_turn_id,
            expires_at=conversation.expires_at,
            pinned=conversation.pinned,
            archived=conversation.archived,
            head_seq=conversation.head_seq,
        )


class ConversationDetail(ConversationPublic):
    context_tokens: int = Field(
        description="Tokens the next turn would send the agent, before its new message."
    )
    summary_upto_seq: int | None = Field(
        description="The summary stands in for messages up to this seq (null: no summary)."
    )


class ConversationPage(BaseModel):
    items: list[ConversationPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class StoredToolCall(BaseModel):
    id: str
    name: str
    arguments: str = Field(description="JSON text, exactly as the model produced it.")


class MessagePublic(BaseModel):
    id: str
    seq: int = Field(description="Order of writing in the conversation, every branch: 1, 2, 3, ...")
    parent_seq: int | None = Field(description="The message it follows (null: the first).")
    sibling_count: int = Field(
        description="How many versions of it there are (edits or regenerations), itself included."
    )
    sibling_index: int = Field(description="Which version it is: 0 for the first written.")
    sibling_seqs: list[int] = Field(
        description="The seq of every version, oldest first: `PUT …/head` one to show its branch."
    )
    role: str
    content: str
    tool_calls: list[StoredToolCall]
    tool_call_id: str | None
    name: str | None
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, message: Message, versions: Sequence[int]) -> MessagePublic:
        return cls(
            parent_seq=message.parent_seq,
            sibling_count=len(versions),
            sibling_index=versions.index(message.seq),
            sibling_seqs=list(versions),
            id=message.id,
            seq=message.seq,
            role=message.role.value,
            content=message.content,
            tool_calls=[
                StoredToolCall(id=c.id, name=c.name, arguments=c.arguments)
                for c in message.tool_calls
            ],
            tool_call_id=message.tool_call_id,
            name=message.name,
            metadata=dict(message.metadata),
            created_at=message.created_at,
        )


class MessagePage(BaseModel):
    items: list[MessagePublic] = Field(description="The branch, oldest first.")
    has_more: bool = Field(description="Older messages exist: pass the first seq as `before`.")


class EditRequest(_Request):
    message: str = Field(description="The new version of the message.")


# The largest seq a database column holds: a larger one is a 422, not a database error.
MAX_SEQ = 2**63 - 1


class HeadUpdate(_Request):
    seq: StrictInt = Field(
        ge=1,
        le=MAX_SEQ,
        description="A message of the branch to continue: the head becomes the newest"
        " message at or below it.",
    )


class ForkRequest(_Request):
    upto_seq: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_SEQ,
        description="The last message to copy, with its branch (default: the head).",
    )


class SearchHitPublic(BaseModel):
    conversation_id: str
    title: str | None = Field(description="The conversation's title.")
    seq: int = Field(description="The message's position in its conversation.")
    role: str = Field(description="user or assistant (tool with `tools=true`).")
    snippet: str = Field(
        description="Plain text around the first match, whitespace collapsed, with … where "
        "text is left out. Show it as text, never as HTML."
    )
    marks: list[tuple[int, int]] = Field(
        description="[start, end) offsets into `snippet`, in Unicode code points, of the "
        "words that matched: highlight by slicing the text."
    )

    @classmethod
    def of(cls, hit: SearchHit) -> SearchHitPublic:
        return cls(
            conversation_id=hit.conversation_id,
            title=hit.title,
            seq=hit.seq,
            role=hit.role.value,
            snippet=hit.snippet,
            marks=list(hit.marks),
        )


class SearchPage(BaseModel):
    items: list[SearchHitPublic] = Field(description="Most relevant first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class TaskPublic(BaseModel):
    id: int
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: Task) -> TaskPublic:
        return cls(
            id=task.id,
            title=task.title,
            description=task.description,
            completed=task.completed,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )


class TaskPage(BaseModel):
    items: list[TaskPublic] = Field(description="In id order.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    has_more: bool = Field(description="More tasks follow this page.")


class StopResponse(BaseModel):
    stopping: bool = Field(
        description="A turn was running and will stop in a moment (false: none was)."
    )


class UsageTotalsPublic(BaseModel):
    input_tokens: int = Field(
        description="Tokens sent to the model, over the turns that recorded usage."
    )
    output_tokens: int = Field(description="Tokens the model produced.")
    turns: int = Field(description="Turns that ended, whether or not they recorded usage.")
    estimated_turns: int = Field(
        description="Turns whose counts are (partly) our estimate, not the model's report."
    )
    unknown_turns: int = Field(
        description="Turns with no usage recorded (from before usage was recorded, or whose "
        "server died mid-turn): in `turns`, in neither token sum."
    )

    @classmethod
    def fields_of(cls, totals: UsageTotals) -> dict[str, int]:
        return {
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "turns": totals.turns,
            "estimated_turns": totals.estimated_turns,
            "unknown_turns": totals.unknown_turns,
        }


class DayUsagePublic(UsageTotalsPublic):
    day: date = Field(description="A day (UTC): turns count on the day they started.")


class ConversationUsagePublic(UsageTotalsPublic):
    conversation_id: str
    title: str | None


class UsagePublic(BaseModel):
    from_: date = Field(alias="from", description="The first day, included.")
    to: date = Field(description="The last day, included.")
    total: UsageTotalsPublic
    days: list[DayUsagePublic] = Field(description="Only days with turns, oldest first.")
    conversations: list[ConversationUsagePublic] = Field(
        description="Only conversations with turns in the period, most tokens first. A "
        "deleted conversation's usage is deleted with it."
    )

    @classmethod
    def of(cls, report: UsageReport) -> UsagePublic:
        return cls.model_validate(
            {
                "from": report.first_day,
                "to": report.last_day,
                "total": UsageTotalsPublic.fields_of(report.total),
                "days": [
                    {"day": day.day, **UsageTotalsPublic.fields_of(day.totals)}
                    for day in report.days
                ],
                "conversations": [
                    {
                        "conversation_id": c.conversation_id,
                        "title": c.title,
                        **UsageTotalsPublic.fields_of(c.totals),
                    }
                    for c in report.conversations
                ],
            }
        )


class DevTokenRequest(_Request):
    user_id: str = Field(min_length=1, max_length=255)


class TokenResponse(BaseModel):
    token: str
    user_id: str
    expires_at: datetime


class ErrorBody(BaseModel):
    error: str = Field(description="The kind of error, e.g. not_found, invalid, conflict.")
    message: str = Field(description="What went wrong, for people.")
    code: str = Field(description="A stable machine-readable code, e.g. conversation_busy.")
    field: str | None = Field(default=None, description="The offending input field.")
    conversation_id: str | None = Field(
        default=None, description="For agent failures: the conversation the turn is in."
    )


class ImportedConversationPublic(BaseModel):
    line: int = Field(description="The line of its `conversation` record in the file.")
    source_id: str = Field(description="Its id in the file.")
    id: str = Field(description="Its id here.")
    present: bool = Field(description="It was there already (imported before): not added.")


class ImportFailurePublic(BaseModel):
    line: int = Field(
        description="The line at fault (a ChatGPT export: the conversation's place in it)."
    )
    conversation_id: str | None = Field(description="The conversation's id in the file.")
    message: str


class ImportReportPublic(BaseModel):
    conversations_imported: int
    conversations_present: int
    conversations_failed: int
    tasks_imported: int
    tasks_present: int
    complete: bool = Field(description="The file's end was read: it was not cut short.")
    conversations: list[ImportedConversationPublic]
    failures: list[ImportFailurePublic]


class ImportRefusal(ErrorBody):
    report: ImportReportPublic | None = Field(
        default=None,
        description="What went in regardless: every conversation that could be imported"
        " was, each whole; the failures name the lines of those that were not.",
    )
