"""A ChatGPT data export's `conversations.json`, read as chatledger export records.

The file is a JSON array of conversations, each with `title`, `create_time`,
`update_time` (seconds since the epoch), `current_node` and `mapping`: node id ->
`{id, message, parent, children}`, a tree whose branches are the edits and regenerations
made in ChatGPT. A message has `author.role`, `content` (`content_type` and `parts`),
`create_time`, `recipient` and `metadata`.

What is kept: user and assistant messages with text, as the tree they form; system and
tool messages, hidden ones (`is_visually_hidden_from_conversation`), an assistant's calls
to its own tools (`recipient` other than `all`) and empty nodes are left out, and their
children hang from the nearest message kept above them, so the tree stays connected.
The current node (or the nearest kept message above it) becomes the head. Messages are
numbered in the order they were written, a parent always before its children. Text
parts are joined with a newline (images and files are not imported); carriage returns
become newlines, and other control characters, which chatledger never stores in what
people write, are dropped.

Pure functions over decoded JSON: the store imports the records like those of an export.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["ChatGPTError", "chatgpt_records"]

# Control characters but newline and tab (see `chatledger.domain.check_written_text`).
_CONTROLS: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_TITLE_CHARS: Final = 200
_ID_CHARS: Final = 255
_KEPT_ROLES: Final = frozenset({"user", "assistant"})


class ChatGPTError(Exception):
    """A conversation of the file that cannot be read (its `message` says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _text(value: str) -> str:
    return _CONTROLS.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def _time(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _message_text(message: Mapping[str, Any]) -> str | None:
    """The text of a message to keep, or None to leave it out."""
    author = message.get("author")
    role = author.get("role") if isinstance(author, Mapping) else None
    if role not in _KEPT_ROLES:
        return None
    metadata = message.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("is_visually_hidden_from_conversation"):
        return None
    if message.get("recipient", "all") != "all":
        return None  # the assistant calling one of ChatGPT's own tools
    content = message.get("content")
    if not isinstance(content, Mapping):
        return None
    parts = content.get("parts")
    if isinstance(parts, list):
        text = "\n".join(part for part in parts if isinstance(part, str))
    elif isinstance(content.get("text"), str):
        text = content["text"]
    else:
        return None
    text = _text(text)
    return text if text.strip() else None


def _conversation(conversation: object) -> list[dict[str, Any]]:
    if not isinstance(conversation, Mapping):
        raise ChatGPTError("a conversation must be a JSON object")
    mapping = conversation.get("mapping")
    if not isinstance(mapping, Mapping):
        raise ChatGPTError("a conversation must have a mapping of its messages")
    nodes: dict[str, Mapping[str, Any]] = {}
    for node_id, node in mapping.items():
        if not isinstance(node, Mapping):
            raise ChatGPTError(f"node {node_id[:64]!r} is not a JSON object")
        nodes[node_id] = node
    source = conversation.get("conversation_id") or conversation.get("id")
    if not isinstance(source, str) or not source or len(source) > _ID_CHARS - 8:
        # An export without ids: the content itself names the conversation, so that
        # importing the same file again still finds it.
        canonical = json.dumps(conversation, sort_keys=True, ensure_ascii=False, default=str)
        source = hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()
    started = _time(conversation.get("create_time")) or datetime.fromtimestamp(0, UTC)
    updated = _time(conversation.get("update_time")) or started

    texts = {
        node_id: text
        for node_id, node in nodes.items()
        if isinstance(node.get("message"), Mapping)
        and (text := _message_text(node["message"])) is not None
    }
    kept_above: dict[str, str | None] = {}

    def nearest_kept(node_id: str | None) -> str | None:
        """The nearest kept node at or above `node_id` (None: none)."""
        walked: list[str] = []
        seen: set[str] = set()
        while node_id is not None and node_id not in kept_above:
            if node_id in seen:
                raise ChatGPTError("its nodes' parents form a cycle")
            seen.add(node_id)
            if node_id in texts:
                kept_above[node_id] = node_id
                break
            walked.append(node_id)
            parent = nodes.get(node_id, {}).get("parent")
            node_id = parent if isinstance(parent, str) and parent in nodes else None
        found = None if node_id is None else kept_above[node_id]
        for step in walked:
            kept_above[step] = found
        return found

    parent_of: dict[str, str | None] = {}
    children: dict[str | None, list[str]] = {}
    for node_id in texts:
        parent = nodes[node_id].get("parent")
        kept_parent = nearest_kept(parent if isinstance(parent, str) else None)
        parent_of[node_id] = kept_parent
        children.setdefault(kept_parent, []).append(node_id)

    order = {node_id: index for index, node_id in enumerate(nodes)}

    def written(node_id: str) -> tuple[float, int]:
        at = _time(nodes[node_id]["message"].get("create_time"))
        return (at.timestamp() if at else 0.0, order[node_id])

    # In the order they were written, each parent before its children.
    seqs: dict[str, int] = {}
    ready = [(written(n), n) for n in children.get(None, [])]
    heapq.heapify(ready)
    while ready:
        _, node_id = heapq.heappop(ready)
        seqs[node_id] = len(seqs) + 1
        for child in children.get(node_id, []):
            heapq.heappush(ready, (written(child), child))

    if len(seqs) != len(texts):
        raise ChatGPTError("its messages' parents form a cycle")
    current = conversation.get("current_node")
    head = nearest_kept(current) if isinstance(current, str) and current in nodes else None
    if head is None and seqs:
        head = max(seqs, key=seqs.__getitem__)
    title = conversation.get("title")
    archived = conversation.get("is_archived")
    records: list[dict[str, Any]] = [
        {
            "type": "conversation",
            "id": f"chatgpt:{source}",
            "title": _text(title).strip()[:_TITLE_CHARS] or None
            if isinstance(title, str)
            else None,
            "metadata": {"source": "chatgpt"},
            "created_at": started.isoformat(),
            "updated_at": updated.isoformat(),
            "expires_at": None,
            "pinned": False,
            "archived": archived if isinstance(archived, bool) else False,
            "head_seq": None if head is None else seqs[head],
            "message_count": len(seqs),
        }
    ]
    for node_id in sorted(seqs, key=seqs.__getitem__):
        message = nodes[node_id]["message"]
        parent = parent_of[node_id]
        message_id = message.get("id")
        records.append(
            {
                "type": "message",
                "conversation_id": f"chatgpt:{source}",
                "seq": seqs[node_id],
                "parent_seq": None if parent is None else seqs[parent],
                "id": message_id if isinstance(message_id, str) and message_id else node_id,
                "role": message["author"]["role"],
                "content": texts[node_id],
                "tool_calls": [],
                "tool_call_id": None,
                "name": None,
                "metadata": {},
                "created_at": (_time(message.get("create_time")) or started).isoformat(),
            }
        )
    return records


def chatgpt_records(data: object) -> Iterator[tuple[int, dict[str, Any] | ChatGPTError]]:
    """The records of an export for each conversation of `data` (the decoded file), each
    with the conversation's place in the file (from 1), or why it cannot be read; then
    an `end` record.

    Raises:
        ChatGPTError: `data` is not a list of conversations.
    """
    if not isinstance(data, list):
        raise ChatGPTError("a ChatGPT conversations.json is a JSON array of conversations")
    counts = {"conversations": 0, "messages": 0, "tasks": 0}
    for place, conversation in enumerate(data, 1):
        try:
            records = _conversation(conversation)
        except ChatGPTError as error:
            yield place, error
            continue
        counts["conversations"] += 1
        counts["messages"] += len(records) - 1
        for record in records:
            yield place, record
    yield len(data) + 1, {"type": "end", **counts}
