"""Branches in the store: edits and regenerations add siblings, the head says which branch
the next turn continues, a fork copies one branch; nothing is ever rewritten.

A Hypothesis state machine checks every read against an in-memory tree; the examples
check each operation, the summaries per branch, and that reading a branch costs the same
at any depth.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chatledger.domain import Branch, ChatMessage, Message, Role
from chatledger.errors import ConflictError, NotFoundError, ValidationError
from chatledger.storage import Lease
from chatledger.store import SQLAlchemyStore
from tests.conftest import empty_postgres
from tests.factories import assert_invariants, count_statements, examples, tool_exchange, whole_turn

MINUTE = timedelta(minutes=1)


async def turn(
    store: SQLAlchemyStore,
    conversation_id: str,
    message: str | None,
    reply: str,
    *,
    branch: Branch | None = None,
    user: str = "alice",
) -> list[Message]:
    return await whole_turn(
        store, user, conversation_id, message, lambda _: [ChatMessage.assistant(reply)],
        branch=branch,
    )  # fmt: skip


def contents(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


async def test_an_edit_is_a_sibling_and_the_next_turn_sees_only_its_branch(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "hi", "hello")
    await turn(store, conversation.id, "milk?", "added milk")  # seqs 3, 4
    await turn(store, conversation.id, "edited: bread?", "added bread", branch=Branch(3, edit=True))

    history = await store.history("alice", conversation.id)
    assert contents(history) == ["hi", "hello", "edited: bread?", "added bread"]
    assert [m.seq for m in history] == [1, 2, 5, 6]
    assert [m.parent_seq for m in history] == [None, 1, 2, 5]
    # The first version stays, readable as its own branch.
    old = await store.history("alice", conversation.id, leaf=4)
    assert contents(old) == ["hi", "hello", "milk?", "added milk"]
    assert (await store.get_conversation("alice", conversation.id)).head_seq == 6
    _, context = await store.load_context("alice", conversation.id, limit=100)
    assert contents(context) == contents(history)
    versions = await store.siblings("alice", conversation.id, history)
    assert versions == {1: [1], 2: [2], 5: [3, 5], 6: [6]}


async def test_editing_the_first_message_starts_a_second_root(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "hi", "hello")
    await turn(store, conversation.id, "hey", "hey there", branch=Branch(1, edit=True))
    history = await store.history("alice", conversation.id)
    assert [(m.seq, m.parent_seq) for m in history] == [(3, None), (4, 3)]
    assert await store.siblings("alice", conversation.id, history[:1]) == {3: [1, 3]}


async def test_a_regeneration_answers_the_same_message_again(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "hi", "hello")
    messages = await turn(store, conversation.id, None, "hello again", branch=Branch(1, edit=False))
    assert [m.seq for m in messages] == [1, 3]  # the same user message, a new reply
    history = await store.history("alice", conversation.id)
    assert contents(history) == ["hi", "hello again"]
    assert await store.siblings("alice", conversation.id, history) == {1: [1], 3: [2, 3]}
    assert (await store.get_conversation("alice", conversation.id)).message_count == 3


async def test_only_a_users_message_of_this_conversation_can_be_branched_from(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "hi", "hello")
    bobs = await store.create_conversation("bob")
    for seq in (2, 99):
        for edit in (True, False):
            with pytest.raises((ValidationError, NotFoundError)) as refused:
                await turn(
                    store, conversation.id, "x" if edit else None, "y", branch=Branch(seq, edit)
                )
            if seq == 2:
                assert refused.value.code == "not_a_user_message"
    with pytest.raises(NotFoundError):
        await turn(store, bobs.id, "x", "y", branch=Branch(1, edit=True), user="alice")
    with pytest.raises(NotFoundError):  # alice's conversation id, bob's name
        await turn(store, conversation.id, "x", "y", branch=Branch(1, edit=True), user="bob")
    # Nothing of it was written: the head and the messages are as they were.
    after = await store.get_conversation("alice", conversation.id)
    assert (after.message_count, after.head_seq, after.running_turn_id) == (2, 2, None)


async def test_a_running_turn_keeps_edits_and_head_moves_out(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "hi", "hello")
    lease = Lease.new(MINUTE)
    await store.turns.start(
        "alice", conversation.id, ChatMessage.user("busy"),
        turn_id=lease.id, lease_expires_at=lease.expires_at,
    )  # fmt: skip
    for attempt in (
        turn(store, conversation.id, "x", "y", branch=Branch(1, edit=True)),
        turn(store, conversation.id, None, "y", branch=Branch(1, edit=False)),
        store.set_head("alice", conversation.id, 2),
        store.remove_from_branch("alice", conversation.id, 2),
    ):
        with pytest.raises(ConflictError) as busy:
            await attempt
        assert busy.value.code == "conversation_busy"
    assert (await store.get_conversation("alice", conversation.id)).head_seq == 3


async def test_the_head_moves_to_the_newest_leaf_below_and_stays(
    store: SQLAlchemyStore, database_url: str
) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "a", "a1")  # 1, 2
    await turn(store, conversation.id, "b", "b1")  # 3, 4
    await turn(store, conversation.id, "B", "B1", branch=Branch(3, edit=True))  # 5, 6
    assert await store.set_head("alice", conversation.id, 3) == 4
    # Durable: another store (another replica) continues from there.
    other = SQLAlchemyStore.from_url(database_url)
    try:
        await turn(other, conversation.id, "c", "c1")  # 7, 8 under 4
    finally:
        await other.close()
    assert contents(await store.history("alice", conversation.id)) == [
        "a", "a1", "b", "b1", "c", "c1",
    ]  # fmt: skip
    assert await store.set_head("alice", conversation.id, 1) == 8  # newest leaf below 1
    assert await store.set_head("alice", conversation.id, 6) == 6  # a leaf is its own
    assert contents(await store.history("alice", conversation.id)) == ["a", "a1", "B", "B1"]
    with pytest.raises(NotFoundError):
        await store.set_head("alice", conversation.id, 9)
    with pytest.raises(NotFoundError):
        await store.set_head("bob", conversation.id, 1)


async def test_rewind_moves_the_head_to_exactly_one_message_or_before_all(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "a", "a1")  # 1, 2
    await turn(store, conversation.id, "b", "b1")  # 3, 4
    await store.rewind("alice", conversation.id, to_seq=3)  # not down to the leaf 4
    assert contents(await store.history("alice", conversation.id)) == ["a", "a1", "b"]
    await store.append("alice", conversation.id, [ChatMessage.assistant("b2")])  # 5, under 3
    assert contents(await store.history("alice", conversation.id)) == ["a", "a1", "b", "b2"]
    await store.rewind("alice", conversation.id, to_seq=None)
    assert await store.history("alice", conversation.id) == []
    assert (await store.get_conversation("alice", conversation.id)).head_seq is None
    appended = await store.append("alice", conversation.id, [ChatMessage.user("new root")])
    assert (appended[0].seq, appended[0].parent_seq) == (6, None)
    # Nothing was deleted: every branch is still there.
    assert contents(await store.history("alice", conversation.id, leaf=4)) == [
        "a", "a1", "b", "b1",
    ]  # fmt: skip
    assert (await store.get_conversation("alice", conversation.id)).message_count == 6
    for bad in (0, -1, True, "3"):
        with pytest.raises(ValidationError):
            await store.rewind("alice", conversation.id, to_seq=bad)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await store.rewind("alice", conversation.id, to_seq=7)
    with pytest.raises(NotFoundError):
        await store.rewind("bob", conversation.id, to_seq=None)
    lease = Lease.new(MINUTE)
    await store.turns.start(
        "alice", conversation.id, ChatMessage.user("busy"),
        turn_id=lease.id, lease_expires_at=lease.expires_at,
    )  # fmt: skip
    with pytest.raises(ConflictError) as busy:
        await store.rewind("alice", conversation.id, to_seq=1)
    assert busy.value.code == "conversation_busy"
    assert contents(await store.history("alice", conversation.id)) == ["new root", "busy"]


async def test_pop_head_steps_back_one_message_at_a_time_without_deleting(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    assert await store.pop_head("alice", conversation.id) is None
    await turn(store, conversation.id, "a", "a1")  # 1, 2
    popped = await store.pop_head("alice", conversation.id)
    assert popped is not None and (popped.seq, popped.content) == (2, "a1")
    assert contents(await store.history("alice", conversation.id)) == ["a"]
    # Concurrent pops each take a different message; the head ends before the first.
    await store.append("alice", conversation.id, [ChatMessage.assistant("a2")])  # 3
    both = await asyncio.gather(*(store.pop_head("alice", conversation.id) for _ in range(3)))
    assert sorted(m.seq for m in both if m is not None) == [1, 3]
    assert both.count(None) == 1
    assert await store.history("alice", conversation.id) == []
    assert (await store.get_conversation("alice", conversation.id)).message_count == 3
    with pytest.raises(NotFoundError):
        await store.pop_head("bob", conversation.id)


async def test_paging_back_along_a_branch_visits_it_exactly_once(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    for n in range(6):
        await turn(store, conversation.id, f"q{n}", f"r{n}")
    for seq in (11, 7, 3):  # three edits, each further back: four runs on the branch
        await turn(store, conversation.id, f"e{seq}", f"f{seq}", branch=Branch(seq, edit=True))
        await store.append("alice", conversation.id, [ChatMessage.user(f"after {seq}")])
    whole = await store.history("alice", conversation.id, limit=100)
    seen: list[Message] = []
    before = None
    while page := await store.history("alice", conversation.id, limit=3, before_seq=before):
        seen = page + seen
        before = page[0].seq
    assert seen == whole
    assert [m.seq for m in whole] == sorted(m.seq for m in whole)
    for m, parent in zip(whole[1:], whole, strict=False):
        assert m.parent_seq == parent.seq


async def test_removing_a_message_makes_a_new_version_of_the_rest_of_the_branch(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await store.append(
        "alice",
        conversation.id,
        [
            ChatMessage.user("a"),
            *tool_exchange("c1", "add_task", "done"),  # seqs 2 and 3
            ChatMessage.assistant("b"),
        ],
    )
    with pytest.raises(ValidationError) as split:
        await store.remove_from_branch("alice", conversation.id, 2)
    assert split.value.code == "would_split_tool_call"
    # Replaced by a version that keeps its call: the result still answers it.
    kept_call = (await store.history("alice", conversation.id))[1]
    replacement = ChatMessage.assistant("thinking", tool_calls=kept_call.tool_calls)
    await store.remove_from_branch("alice", conversation.id, 2, replacement=replacement)
    history = await store.history("alice", conversation.id)
    assert [m.seq for m in history] == [1, 5, 6, 7]
    assert contents(history) == ["a", "thinking", "done", "b"]
    assert_invariants(history, branch=True)
    # The newest message comes off by itself: nothing is copied.
    await store.remove_from_branch("alice", conversation.id, 7)
    assert [m.seq for m in await store.history("alice", conversation.id)] == [1, 5, 6]
    for gone in (7, 2, 99, 0, -1):  # off the branch, or never there
        with pytest.raises(NotFoundError):
            await store.remove_from_branch("alice", conversation.id, gone)
    with pytest.raises(NotFoundError):
        await store.remove_from_branch("bob", conversation.id, 1)
    # Every version is kept.
    assert (await store.get_conversation("alice", conversation.id)).message_count == 7


async def test_a_call_id_reused_by_a_later_turn_does_not_hold_an_earlier_call_in_place(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    # Two turns whose model numbered its calls from zero each time.
    await store.append(
        "alice",
        conversation.id,
        [
            ChatMessage.user("a"),
            *tool_exchange("call_0"),  # seqs 2, 3
            ChatMessage.assistant("done"),
            ChatMessage.user("b"),
            *tool_exchange("call_0"),  # seqs 6, 7
            ChatMessage.assistant("done again"),
        ],
    )
    await store.remove_from_branch("alice", conversation.id, 3)  # the first result
    history = await store.history("alice", conversation.id)
    first_call = history[1]
    assert first_call.seq == 2 and first_call.tool_calls[0].id == "call_0"
    # The later result answers the later call: the first one may go now.
    await store.remove_from_branch("alice", conversation.id, 2)
    assert contents(await store.history("alice", conversation.id)) == [
        "a", "done", "b", "", '{}', "done again",
    ]  # fmt: skip


async def test_a_summary_stands_in_only_for_its_own_branch(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    for n in range(3):
        await turn(store, conversation.id, f"q{n}", f"r{n}")  # 1..6
    assert await store.summaries.save("alice", conversation.id, content="up to 4", upto_seq=4)
    summary, window = await store.load_context("alice", conversation.id, limit=100)
    assert summary is not None and summary.upto_seq == 4
    assert [m.seq for m in window] == [5, 6]

    await turn(store, conversation.id, "new q1", "new r1", branch=Branch(3, edit=True))  # 7, 8
    summary, window = await store.load_context("alice", conversation.id, limit=100)
    assert summary is None  # it summarised what this branch replaced
    assert contents(window) == ["q0", "r0", "new q1", "new r1"]

    await turn(store, conversation.id, "q3", "r3", branch=Branch(5, edit=True))  # under 4
    summary, window = await store.load_context("alice", conversation.id, limit=100)
    assert summary is not None and summary.upto_seq == 4  # an edit after it keeps it
    assert contents(window) == ["q3", "r3"]
    assert not await store.summaries.save("alice", conversation.id, content="x", upto_seq=4)


async def test_a_fork_copies_one_branch_renumbered_with_its_summary(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation(
        "alice", title="Groceries", metadata={"tag": "home"}
    )
    await turn(store, conversation.id, "a", "a1")
    await store.append("alice", conversation.id, [ChatMessage.user("b"), *tool_exchange("c1")])
    await store.append("alice", conversation.id, [ChatMessage.assistant("b1")])  # 1..6
    await turn(store, conversation.id, "B", "B1", branch=Branch(3, edit=True))  # 7, 8
    await store.summaries.save("alice", conversation.id, content="about a", upto_seq=2)
    await store.summaries.save("alice", conversation.id, content="other branch", upto_seq=5)

    copy = await store.fork("alice", conversation.id)
    assert (copy.title, dict(copy.metadata), copy.message_count) == (
        "Groceries",
        {"tag": "home"},
        4,
    )
    forked = await store.history("alice", copy.id)
    assert contents(forked) == ["a", "a1", "B", "B1"]
    assert [(m.seq, m.parent_seq) for m in forked] == [(1, None), (2, 1), (3, 2), (4, 3)]
    summary, _ = await store.load_context("alice", copy.id, limit=10)
    assert summary is not None and (summary.upto_seq, summary.content) == (2, "about a")

    older = await store.fork("alice", conversation.id, upto_seq=6)
    copied = await store.history("alice", older.id)
    assert contents(copied)[:3] == ["a", "a1", "b"]
    assert_invariants(copied)
    with pytest.raises(ValidationError) as split:
        await store.fork("alice", conversation.id, upto_seq=4)  # the call, not its result
    assert split.value.code == "would_split_tool_call"
    with pytest.raises(NotFoundError):
        await store.fork("bob", conversation.id)
    # The source is as it was.
    assert contents(await store.history("alice", conversation.id)) == ["a", "a1", "B", "B1"]


async def test_reading_a_branch_costs_the_same_at_any_depth(store: SQLAlchemyStore) -> None:
    statements: list[int] = []
    for length in (100, 20_000):
        conversation = await store.create_conversation("alice")
        for start in range(0, length, 2_000):
            await store.append(
                "alice",
                conversation.id,
                [ChatMessage.user(str(n)) for n in range(start, min(length, start + 2_000))],
            )
        await turn(store, conversation.id, "deep edit", "ok", branch=Branch(length - 9, edit=True))
        async with count_statements(store.sync_engine) as sent:
            window = await store.history("alice", conversation.id, limit=50)
            _, context = await store.load_context("alice", conversation.id, limit=50)
        assert len(window) == len(context) == 50
        assert window[-2].content == "deep edit"
        statements.append(len(sent))
    assert statements[0] == statements[1]


# -- against a model ------------------------------------------------------------------


@dataclass
class Tree:
    """A conversation as the model sees it: each message's parent and text, the head."""

    parent: dict[int, int | None] = field(default_factory=dict)
    role: dict[int, Role] = field(default_factory=dict)
    text: dict[int, str] = field(default_factory=dict)
    head: int | None = None

    def add(self, role: Role, text: str, parent: int | None) -> int:
        seq = len(self.parent) + 1
        self.parent[seq], self.role[seq], self.text[seq] = parent, role, text
        self.head = seq
        return seq

    def path(self, leaf: int | None) -> list[int]:
        seqs = []
        while leaf is not None:
            seqs.append(leaf)
            leaf = self.parent[leaf]
        return seqs[::-1]

    def newest_leaf_below(self, seq: int) -> int:
        below = {seq}
        for child in sorted(self.parent):
            if self.parent[child] in below:
                below.add(child)
        return max(below)


class BranchMachine(RuleBasedStateMachine):
    def __init__(self, database_url: str, template: Path | None) -> None:
        super().__init__()
        if template is not None:
            shutil.copy(template, database_url.removeprefix("sqlite:///"))
        self.loop = asyncio.new_event_loop()
        if template is None:
            self.loop.run_until_complete(empty_postgres(database_url))
        self.store = SQLAlchemyStore.from_url(database_url)
        self.id = self.loop.run_until_complete(self.store.create_conversation("alice")).id
        self.tree = Tree()
        self.texts = 0

    def teardown(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()

    def run(self, work):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(work)

    def _text(self) -> str:
        self.texts += 1
        return f"m{self.texts}"

    def _users(self) -> list[int]:
        return [seq for seq, role in self.tree.role.items() if role is Role.USER]

    @rule(count=st.integers(1, 3))
    def append(self, count: int) -> None:
        texts = [self._text() for _ in range(count)]
        self.run(self.store.append("alice", self.id, [ChatMessage.user(t) for t in texts]))
        for text in texts:
            self.tree.add(Role.USER, text, self.tree.head)

    @rule()
    def ask(self) -> None:
        question, answer = self._text(), self._text()
        self.run(turn(self.store, self.id, question, answer))
        self.tree.add(Role.ASSISTANT, answer, self.tree.add(Role.USER, question, self.tree.head))

    @precondition(lambda self: self._users())
    @rule(data=st.data())
    def edit(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self._users()))
        question, answer = self._text(), self._text()
        self.run(turn(self.store, self.id, question, answer, branch=Branch(seq, edit=True)))
        asked = self.tree.add(Role.USER, question, self.tree.parent[seq])
        self.tree.add(Role.ASSISTANT, answer, asked)

    @precondition(lambda self: self._users())
    @rule(data=st.data())
    def regenerate(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self._users()))
        answer = self._text()
        self.run(turn(self.store, self.id, None, answer, branch=Branch(seq, edit=False)))
        self.tree.add(Role.ASSISTANT, answer, seq)

    @precondition(lambda self: self.tree.parent)
    @rule(data=st.data())
    def switch(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.tree.parent)))
        head = self.run(self.store.set_head("alice", self.id, seq))
        assert head == self.tree.newest_leaf_below(seq)
        self.tree.head = head

    @precondition(lambda self: self.tree.parent)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.tree.parent)))
        copy = self.run(self.store.fork("alice", self.id, upto_seq=seq))
        forked = self.run(self.store.history("alice", copy.id, limit=1000))
        assert contents(forked) == [self.tree.text[s] for s in self.tree.path(seq)]

    @precondition(lambda self: self.tree.head is not None)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        path = self.tree.path(self.tree.head)
        seq = data.draw(st.sampled_from(path))
        self.run(self.store.remove_from_branch("alice", self.id, seq))
        self.tree.head = self.tree.parent[seq]
        for later in path[path.index(seq) + 1 :]:
            self.tree.add(self.tree.role[later], self.tree.text[later], self.tree.head)

    @invariant()
    def every_branch_reads_as_the_model(self) -> None:
        path = self.tree.path(self.tree.head)
        history = self.run(self.store.history("alice", self.id, limit=1000))
        assert [m.seq for m in history] == path
        assert contents(history) == [self.tree.text[s] for s in path]
        _, context = self.run(self.store.load_context("alice", self.id, limit=4))
        assert [m.seq for m in context] == path[-4:]
        versions = self.run(self.store.siblings("alice", self.id, history))
        for m in history:
            expected = [s for s, p in self.tree.parent.items() if p == m.parent_seq]
            assert versions[m.seq] == expected
        for after in (0, *path[len(path) // 2 : len(path) // 2 + 1]):
            oldest = self.run(
                self.store.history("alice", self.id, limit=3, after_seq=after, oldest_first=True)
            )
            assert [m.seq for m in oldest] == [s for s in path if s > after][:3]
        for leaf in list(self.tree.parent)[-3:]:
            old = self.run(self.store.history("alice", self.id, leaf=leaf, limit=3))
            assert [m.seq for m in old] == self.tree.path(leaf)[-3:]
        # Nothing is ever rewritten: every message is still there, as first written.
        count = self.run(self.store.get_conversation("alice", self.id)).message_count
        assert count == len(self.tree.parent)


def test_branches_match_the_model(database_url: str, request: pytest.FixtureRequest) -> None:
    template = (
        request.getfixturevalue("sqlite_template") if database_url.startswith("sqlite") else None
    )
    run_state_machine_as_test(
        lambda: BranchMachine(database_url, template),
        settings=settings(
            max_examples=examples(25),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


async def test_an_edit_closes_a_dead_turn_first_and_branches_from_where_asked(
    store: SQLAlchemyStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "hi", "hello")  # 1, 2
    dead = Lease.new(-MINUTE)
    await store.turns.start(
        "alice", conversation.id, ChatMessage.user("lost"),
        turn_id=dead.id, lease_expires_at=dead.expires_at,
    )  # fmt: skip
    await turn(store, conversation.id, "hi again", "hello again", branch=Branch(1, edit=True))
    closed = await store.history("alice", conversation.id, leaf=4)
    assert [(m.content, m.metadata.get("status")) for m in closed] == [
        ("hi", None), ("hello", None), ("lost", None), ("", "interrupted"),
    ]  # fmt: skip
    assert contents(await store.history("alice", conversation.id)) == ["hi again", "hello again"]


async def test_a_forks_messages_are_found_by_search(store: SQLAlchemyStore) -> None:
    conversation = await store.create_conversation("alice")
    await turn(store, conversation.id, "the landlord called", "about the rent")
    copy = await store.fork("alice", conversation.id)
    found = {
        (hit.conversation_id, hit.seq) for hit in (await store.search("alice", "landlord")).items
    }
    assert found == {(conversation.id, 1), (copy.id, 1)}
