"""Export and import over HTTP: a streamed export imports into another user unchanged,
twice adds nothing, a broken file is a 422 naming its line with nothing half-written,
the import's own body limit, and a ChatGPT export's tree and head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatledger.store import Connector
from chatledger.testing import CallTool, Say, ScriptedAgent
from tests.api.conftest import Server, auth
from tests.factories import CHATGPT_EXPORT, snapshot, without_ids


async def test_an_export_streams_and_imports_into_another_user_unchanged(
    make_server: Callable[..., Any], connector: Connector
) -> None:
    agent = ScriptedAgent(
        [CallTool("add_task", {"title": "milk"}), Say("added"), Say("hello"), Say("again")]
    )
    async with make_server(agent) as server:
        first = await server.chat("alice", "add milk")
        conversation_id = first.json()["conversation_id"]
        await server.chat("alice", "hi", conversation_id=conversation_id)
        edited = await server.client.post(
            f"/api/alice/conversations/{conversation_id}/messages/5/edit",
            json={"message": "hi there"},
            headers=auth("alice"),
        )
        assert edited.status_code == 200, edited.text
        exported = await server.client.get("/api/alice/export", headers=auth("alice"))
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        imported = await server.client.post(
            "/api/bob/import", content=exported.content, headers=auth("bob")
        )
        assert imported.status_code == 200, imported.text
        assert imported.json()["conversations_imported"] == 1
        assert imported.json()["tasks_imported"] == exported.text.count('"type":"task"') > 0
        back = await server.client.get("/api/bob/export", headers=auth("bob"))
        assert without_ids(back.text) == without_ids(exported.text)
        rows = await snapshot(connector, "bob")
        again = await server.client.post(
            "/api/bob/import", content=exported.content, headers=auth("bob")
        )
        assert again.status_code == 200 and again.json()["conversations_present"] == 1
        assert await snapshot(connector, "bob") == rows
        # Bob's copy reads as Alice's does: the edited branch is the head.
        [copy] = imported.json()["conversations"]
        branches = [
            await server.client.get(
                f"/api/{user}/conversations/{conversation}/messages", headers=auth(user)
            )
            for user, conversation in (("alice", conversation_id), ("bob", copy["id"]))
        ]
        alices, bobs = ([(m["seq"], m["content"]) for m in b.json()["items"]] for b in branches)
        assert bobs == alices and ("hi there" in dict(bobs).values())


async def test_a_broken_file_is_422_naming_the_line_and_writes_nothing_of_it(
    server: Server, connector: Connector
) -> None:
    await server.chat("alice", "one")
    exported = (await server.client.get("/api/alice/export", headers=auth("alice"))).text
    lines = exported.splitlines(keepends=True)
    lines[3] = lines[3].replace('"parent_seq":1', '"parent_seq":2')
    response = await server.client.post(
        "/api/bob/import", content="".join(lines), headers=auth("bob")
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "import_incomplete" and body["message"].startswith("line 4:")
    assert body["report"]["failures"][0]["line"] == 4
    rows = await snapshot(connector, "bob")
    assert rows["conversations"] == rows["messages"] == []  # its task went in
    for bad in (b"", b"[1, 2]", b"\x00\x01", b'{"format": "chatledger.export"}\n'):
        refused = await server.client.post("/api/bob/import", content=bad, headers=auth("bob"))
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["code"] == "not_an_export"
    cut = await server.client.post(
        "/api/bob/import", content="".join(lines[:2]), headers=auth("bob")
    )
    assert cut.status_code == 422 and "0 of its 4 messages" in cut.json()["message"]
    assert (await snapshot(connector, "bob"))["conversations"] == []


async def test_an_import_has_a_body_limit_of_its_own(make_server: Callable[..., Any]) -> None:
    async with make_server(ScriptedAgent([Say("hi")]), max_import_bytes=4096) as server:
        # Over the import's limit: 413 before anything is read.
        big = b"x" * 5000
        response = await server.client.post("/api/bob/import", content=big, headers=auth("bob"))
        assert response.status_code == 413
        # Bigger than any other request may be is fine for an import within its limit.
        async with make_server(ScriptedAgent([Say("hi")])) as other:
            header = (
                b'{"format":"chatledger.export","version":1,'
                b'"exported_at":"2026-01-01T00:00:00+00:00"}\n'
            )
            padding = b"\n" * (1024 * 1024 + 10)
            end = b'{"type":"end","conversations":0,"messages":0,"tasks":0}\n'
            accepted = await other.client.post(
                "/api/bob/import", content=header + padding + end, headers=auth("bob")
            )
            assert accepted.status_code == 200, accepted.text


async def test_a_chatgpt_export_imports_with_its_tree_and_current_node(server: Server) -> None:
    data = CHATGPT_EXPORT.read_bytes()
    response = await server.client.post(
        "/api/alice/import?format=chatgpt", content=data, headers=auth("alice")
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["conversations_imported"] == 2
    again = await server.client.post(
        "/api/alice/import?format=chatgpt", content=data, headers=auth("alice")
    )
    assert again.json()["conversations_present"] == 2
    ids = {c["source_id"]: c["id"] for c in report["conversations"]}
    trip = ids["chatgpt:6740a1b2-0000-4000-8000-00000000a001"]
    get = await server.client.get(f"/api/alice/conversations/{trip}", headers=auth("alice"))
    assert get.json()["title"] == "Trip to Lisbon"
    page = await server.client.get(
        f"/api/alice/conversations/{trip}/messages", headers=auth("alice")
    )
    items = page.json()["items"]
    # The current node's branch: the edited question and the second answer to it.
    assert [(m["role"], m["content"]) for m in items] == [
        ("user", "Plan 3 days in Lisbon"),
        ("assistant", "Day 1: Alfama.\nDay 2: Belém.\nDay 3: Sintra."),
        ("user", "Make day 3 a beach day instead"),
        ("assistant", "Day 3: Cascais beaches."),
    ]
    assert [m["sibling_count"] for m in items] == [1, 1, 2, 2]  # an edit; a regeneration
    # The first version of the edit and the first answer to it are siblings, kept.
    other = await server.client.get(
        f"/api/alice/conversations/{trip}/messages?head=4", headers=auth("alice")
    )
    assert [m["content"] for m in other.json()["items"]][-2:] == [
        "Make day 3 a museum day",
        "Day 3: Gulbenkian and MAAT.",
    ]
    quick = ids["chatgpt:6740a1b2-0000-4000-8000-00000000a002"]
    page = await server.client.get(
        f"/api/alice/conversations/{quick}/messages", headers=auth("alice")
    )
    # Text parts only (the image is left out), its carriage return a newline.
    assert [m["content"] for m in page.json()["items"]] == ["What is 2+2?\nThanks", "4"]
    listed = await server.client.get(
        "/api/alice/conversations?archived=true", headers=auth("alice")
    )
    assert [c["id"] for c in listed.json()["items"]] == [quick]
