"""A PostgreSQL server of a test's own, to stop and start under load.

The shared server at 127.0.0.1:5432 serves every other test (and other test runs on the
machine), so a test that shuts PostgreSQL down runs its own: `initdb` into a temporary
directory, `pg_ctl start` on a free port of 127.0.0.1, and `pg_ctl stop -m fast` — the
shutdown an operator or a failover does, which ends running statements with SQLSTATE
57P01 and refuses new connections while it lasts. The binaries are Debian's, the same
installation the shared server runs; as root they run as the `postgres` user, as
PostgreSQL requires.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import tempfile
from pathlib import Path
from typing import Final, Self

from tests.process.servers import free_port

_BINARIES: Final = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


class PrivatePostgres:
    """`async with PrivatePostgres() as pg:` a running server; `pg.url` reaches it."""

    def __init__(self) -> None:
        if not _BINARIES:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
        self._bin = Path(_BINARIES[-1])
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="chatledger-pg-"))
        self._data = self._root / "data"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self._root, account.pw_uid, account.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def __aenter__(self) -> Self:
        await self._run(
            "initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self._root, ignore_errors=True)

    async def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._root}"
            " -c fsync=off -c max_connections=100"
        )
        await self._run(
            "pg_ctl", "-D", str(self._data), "-o", options,
            "-l", str(self._root / "log"), "-w", "start",
        )  # fmt: skip

    async def stop(self) -> None:
        """A fast shutdown: running statements end with 57P01, clients are cut off."""
        await self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")

    async def _run(self, program: str, *arguments: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *self._as_postgres,
            str(self._bin / program),
            *arguments,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{program} failed: {output.decode(errors='replace')}")
