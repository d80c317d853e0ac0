"""`chatledger export` and `chatledger import`, as processes, on files."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories import CHATGPT_EXPORT, without_ids
from tests.process.test_cli import child_env, run


async def test_export_then_import_into_another_database_and_user(tmp_path: Path) -> None:
    env = child_env(AGENT="rules")
    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    chatted = await run(
        "chat", "--user", "alice", "--database-url", source,
        cwd=tmp_path, env=env, stdin="add buy milk\nshow my tasks\n",
    )  # fmt: skip
    assert chatted.status == 0, chatted
    out = tmp_path / "alice.jsonl"
    exported = await run("export", "alice", "--out", str(out), "--database-url", source,
                         cwd=tmp_path, env=env)  # fmt: skip
    assert exported.status == 0, exported
    imported = await run("import", "bob", str(out), "--database-url", target, cwd=tmp_path, env=env)
    assert imported.status == 0, imported
    assert imported.stdout.startswith("imported 1 conversations (0 there already, 0 failed)")
    back = await run("export", "bob", "--database-url", target, cwd=tmp_path, env=env)
    assert without_ids(back.stdout) == without_ids(out.read_text())
    again = await run("import", "bob", str(out), "--database-url", target, cwd=tmp_path, env=env)
    assert again.status == 0 and "imported 0 conversations (1 there already" in again.stdout

    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(out.read_text().splitlines(keepends=True)[:3]))
    broken = await run("import", "carol", str(cut), "--database-url", target, cwd=tmp_path, env=env)
    assert broken.status == 1, broken
    assert broken.stderr.startswith("error: line 3: the conversation has 1 of its"), broken.stderr


async def test_import_a_chatgpt_export(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    imported = await run(
        "import", "alice", str(CHATGPT_EXPORT), "--format", "chatgpt", "--database-url", url,
        cwd=tmp_path, env=child_env(),
    )  # fmt: skip
    assert imported.status == 0, imported
    assert imported.stdout.startswith("imported 2 conversations")
    exported = await run("export", "alice", "--database-url", url, cwd=tmp_path, env=child_env())
    titles = [json.loads(line).get("title") for line in exported.stdout.splitlines()]
    assert {"Trip to Lisbon", "Quick question"} <= set(titles)
