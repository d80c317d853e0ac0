"""What SQLite's secure_delete costs chatledger: appends and conversation deletes, with the
pragma off and on, in interleaved rounds.

Rows shaped like chatledger's messages (400-character content), written in batches of 50
per transaction as turns write them, then deleted a conversation at a time, on a WAL
file with synchronous=NORMAL as the store opens it. secure_delete zeroes the freed space
of every page a delete touches, so only deletes should pay.

    python -m bench scrub [--rounds N] [--conversations N]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from pathlib import Path
from time import perf_counter

from bench.common import interleaved, log, machine, markdown_table, median

_CONTENT = "x" * 400


def _round(path: Path, *, secure: bool, conversations: int) -> tuple[float, float]:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA secure_delete={'ON' if secure else 'OFF'}")
        db.execute(
            "CREATE TABLE messages (user_id TEXT, conversation_id TEXT, seq INTEGER,"
            " content TEXT, PRIMARY KEY (user_id, conversation_id, seq))"
        )
        started = perf_counter()
        for conversation in range(conversations):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO messages VALUES ('u', ?, ?, ?)",
                [(str(conversation), seq, _CONTENT) for seq in range(50)],
            )
            db.execute("COMMIT")
        appended = perf_counter() - started
        started = perf_counter()
        for conversation in range(conversations):
            db.execute(
                "DELETE FROM messages WHERE user_id = 'u' AND conversation_id = ?",
                (str(conversation),),
            )
        deleted = perf_counter() - started
    finally:
        db.close()
    return appended, deleted


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scrub", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 50 conversations")
    options = parser.parse_args(argv)
    rounds, conversations = options.rounds, options.conversations
    if options.quick:
        rounds, conversations = 3, 50
    timings: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "scrub.db"
        for secure in interleaved(rounds, [False, True]):
            timings[secure].append(_round(path, secure=secure, conversations=conversations))
            log(f"scrub: secure_delete={secure} round done")
    rows = []
    for secure in (False, True):
        appended = median([a for a, _ in timings[secure]]) * 1000
        deleted = median([d for _, d in timings[secure]]) * 1000
        rows.append(["on" if secure else "off", round(appended, 1), round(deleted, 1)])
    ratio = rows[1][2] / rows[0][2] if rows[0][2] else float("nan")
    print(f"### SQLite secure_delete ({conversations} conversations of 50 messages)\n")
    print(machine() + "\n")
    print(markdown_table(["secure_delete", "append all, ms", "delete all, ms"], rows))
    print(f"\nDeletes with secure_delete on: {ratio:.2f}x the time with it off.\n")
