"""Request and response bodies of the HTTP API.

Requests forbid unknown fields, so a typo (or a smuggled `user_id`) is a 422, not a
silently ignored value. Responses are built from domain objects, never from rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from chatledger.domain import Conversation, Message, SearchHit, Task, TurnResult

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ConversationCreate",
    "ConversationDetail",
    "ConversationPage",
    "ConversationPublic",
    "ConversationUpdate",
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
    seq: int = Field(description="Position in the conversation: 1, 2, 3, ...")
    role: str
    content: str
    tool_calls: list[StoredToolCall]
    tool_call_id: str | None
    name: str | None
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, message: Message) -> MessagePublic:
        return cls(
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
    items: list[MessagePublic] = Field(description="Oldest first.")
    has_more: bool = Field(description="Older messages exist: pass the first seq as `before`.")


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
