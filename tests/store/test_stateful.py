"""The store against an in-memory model, under random sequences of operations by two users.

After every step: each user's conversations, titles, listing order and messages equal the
model's, and nothing one user does is visible to the other.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from chatledger.domain import ChatMessage
from chatledger.errors import NotFoundError, ValidationError
from chatledger.store import SQLAlchemyStore
from tests.conftest import empty_postgres
from tests.factories import examples

USERS = st.sampled_from(["alice", "bob"])
# Text people write: anything storable but control characters other than newline and tab
# (those are refused; test_limits covers the refusal).
SAFE_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n\t"),
    max_size=40,
)


@dataclass
class ModelConversation:
    owner: str
    title: str | None
    touched: int
    messages: list[str] = field(default_factory=list)


class StoreMachine(RuleBasedStateMachine):
    conversations = Bundle("conversations")

    def __init__(self, database_url: str, template: Path | None) -> None:
        super().__init__()
        if template is not None:
            shutil.copy(template, database_url.removeprefix("sqlite:///"))
        self.loop = asyncio.new_event_loop()
        if template is None:
            self.loop.run_until_complete(empty_postgres(database_url))
        self.store = SQLAlchemyStore.from_url(database_url)
        self.model: dict[str, ModelConversation] = {}
        self.clock = 0

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def touch(self, conversation: ModelConversation) -> None:
        self.clock += 1
        conversation.touched = self.clock

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()

    @rule(target=conversations, user=USERS, title=st.one_of(st.none(), SAFE_TEXT))
    def create(self, user: str, title: str | None) -> str:
        created = self.run(self.store.create_conversation(user, title=title))
        self.clock += 1
        self.model[created.id] = ModelConversation(user, (title or "").strip() or None, self.clock)
        return created.id

    @rule(
        conversation_id=conversations,
        user=USERS,
        contents=st.lists(SAFE_TEXT, min_size=1, max_size=4),
    )
    def append(self, conversation_id: str, user: str, contents: list[str]) -> None:
        target = self.model.get(conversation_id)
        batch = [ChatMessage.user(text) for text in contents]
        if target is None or target.owner != user:
            with pytest.raises(NotFoundError):
                self.run(self.store.append(user, conversation_id, batch))
            return
        stored = self.run(self.store.append(user, conversation_id, batch))
        first = len(target.messages) + 1
        assert [m.seq for m in stored] == list(range(first, first + len(contents)))
        target.messages.extend(contents)
        self.touch(target)

    @rule(
        conversation_id=conversations,
        user=USERS,
        contents=st.lists(SAFE_TEXT, min_size=1, max_size=4),
        bad=st.integers(0, 3),
    )
    def append_invalid_batch(
        self, conversation_id: str, user: str, contents: list[str], bad: int
    ) -> None:
        batch = [ChatMessage.user(text) for text in contents]
        batch.insert(min(bad, len(batch)), ChatMessage.user("nul\x00"))
        with pytest.raises((NotFoundError, ValidationError)):
            self.run(self.store.append(user, conversation_id, batch))

    @rule(
        conversation_id=conversations,
        user=USERS,
        limit=st.integers(1, 6),
        before=st.one_of(st.none(), st.integers(1, 12)),
    )
    def read_page(self, conversation_id: str, user: str, limit: int, before: int | None) -> None:
        target = self.model.get(conversation_id)
        if target is None or target.owner != user:
            with pytest.raises(NotFoundError):
                self.run(self.store.history(user, conversation_id, limit=limit, before_seq=before))
            return
        page = self.run(self.store.history(user, conversation_id, limit=limit, before_seq=before))
        end = len(target.messages) if before is None else min(before - 1, len(target.messages))
        start = max(0, end - limit)
        assert [m.content for m in page] == target.messages[start:end]
        assert [m.seq for m in page] == list(range(start + 1, end + 1))

    @rule(conversation_id=conversations, user=USERS, title=SAFE_TEXT)
    def rename(self, conversation_id: str, user: str, title: str) -> None:
        target = self.model.get(conversation_id)
        if target is None or target.owner != user:
            with pytest.raises(NotFoundError):
                self.run(self.store.update_conversation(user, conversation_id, title=title))
            return
        renamed = self.run(self.store.update_conversation(user, conversation_id, title=title))
        target.title = title.strip() or None
        assert renamed.title == target.title
        self.touch(target)

    @rule(conversation_id=consumes(conversations), user=USERS)
    def delete(self, conversation_id: str, user: str) -> None:
        target = self.model.get(conversation_id)
        if target is None or target.owner != user:
            with pytest.raises(NotFoundError):
                self.run(self.store.delete_conversation(user, conversation_id))
            return
        self.run(self.store.delete_conversation(user, conversation_id))
        del self.model[conversation_id]

    @invariant()
    def each_user_sees_exactly_their_own(self) -> None:
        for user in ("alice", "bob"):
            listed = self.run(self.store.list_conversations(user, limit=100)).items
            mine = sorted(
                ((cid, c) for cid, c in self.model.items() if c.owner == user),
                key=lambda item: item[1].touched,
                reverse=True,
            )
            assert [c.id for c in listed] == [cid for cid, _ in mine]
            assert [c.title for c in listed] == [c.title for _, c in mine]
            assert [c.message_count for c in listed] == [len(c.messages) for _, c in mine]


def test_store_matches_the_model(database_url: str, request: pytest.FixtureRequest) -> None:
    template = (
        request.getfixturevalue("sqlite_template") if database_url.startswith("sqlite") else None
    )
    run_state_machine_as_test(
        lambda: StoreMachine(database_url, template),
        settings=settings(
            max_examples=examples(30),
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
