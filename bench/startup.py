"""How long chatledger's processes take to start: every `chatledger` command is one, and
every replica, restart and test of a server starts one.

Contenders, each a fresh process per round, in interleaved rounds:

- `python -c pass`: the interpreter alone, the floor of any command;
- `chatledger token alice`: a command that needs no server (runs to its exit);
- the framework floor: uvicorn serving `bench.server:floor_app` (a bare FastAPI app),
  until it answers its first request;
- `chatledger serve` with the offline rules agent, and with the OpenAI agent (which
  imports the Agents SDK; no request reaches a model), until `/healthz` answers.

With `--baseline DIR` (the `src` directory of another checkout, e.g. a `git worktree` of
an earlier commit), the two chatledger commands run from it too, in the same rounds: its
package comes first on `PYTHONPATH`, the installed dependencies are shared.

Wall time until the process has exited or answered, and the CPU time it used until then
(from /proc, which a busy machine disturbs less than wall time). Bytecode caches are
written and kept, as on any installed system.

    python -m bench startup [--rounds N] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    cpu_seconds,
    free_port,
    interleaved,
    log,
    machine,
    markdown_table,
    median,
)

_SECRET = "a-benchmark-secret-that-is-long-enough-for-hs256"


@dataclass(frozen=True)
class Contender:
    name: str
    argv: tuple[str, ...]
    serves: bool  # answers HTTP until stopped, rather than running to its exit
    source: str | None = None  # a `src` directory put first on PYTHONPATH


@dataclass
class Timings:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def _answers(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            return conn.recv(12).startswith(b"HTTP/1.1")
    except OSError:
        return False


def _run(contender: Contender, directory: Path) -> tuple[float, float]:
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "",
        "CHATLEDGER_JWT_SECRET": _SECRET,
        "CHATLEDGER_DATABASE_URL": f"sqlite:///{directory / 'startup.db'}",
        # The OpenAI agent needs a key and a model address to start; it never calls them.
        "OPENAI_API_KEY": "unused",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    if contender.source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [contender.source, os.getcwd()]))
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in contender.argv]
    started = time.perf_counter()
    if not contender.serves:
        before = os.times()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        after = os.times()
        cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        return time.perf_counter() - started, cpu
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not _answers(port, "/healthz"):
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"{contender.name} exited: {error[-2000:]}")
            time.sleep(0.01)
        return time.perf_counter() - started, cpu_seconds(process.pid)
    finally:
        process.kill()
        process.wait()


def _contenders(baseline: str | None) -> list[Contender]:
    python = sys.executable
    serve = ("-m", "chatledger", "serve", "--host", "127.0.0.1", "--port", "{port}")
    floor = (python, "-m", "uvicorn", "bench.server:floor_app", "--factory")
    floor += ("--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning")
    contenders = [
        Contender("python -c pass", (python, "-c", "pass"), serves=False),
        Contender("FastAPI floor (uvicorn)", floor, serves=True),
    ]
    sources: list[tuple[str, str | None]] = [("", None)]
    if baseline is not None:
        sources.append((" (baseline)", str(Path(baseline).resolve())))
    for suffix, source in sources:
        contenders += [
            Contender(
                f"chatledger token{suffix}",
                (python, "-m", "chatledger", "token", "alice"),
                serves=False,
                source=source,
            ),
            Contender(
                f"chatledger serve, rules agent{suffix}",
                (python, *serve, "--agent", "rules"),
                serves=True,
                source=source,
            ),
            Contender(
                f"chatledger serve, OpenAI agent{suffix}",
                (python, *serve, "--agent", "openai"),
                serves=True,
                source=source,
            ),
        ]
    return contenders


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", help="the src directory of another checkout")
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    options = parser.parse_args(argv)
    rounds = 2 if options.quick else options.rounds
    contenders = _contenders(options.baseline)
    timings = {contender.name: Timings() for contender in contenders}
    with tempfile.TemporaryDirectory() as directory:
        # One start of each first, not timed: it writes the bytecode caches and migrates.
        for contender in contenders:
            _run(contender, Path(directory))
        for contender in interleaved(rounds, contenders):
            wall, cpu = _run(contender, Path(directory))
            timings[contender.name].wall.append(wall)
            timings[contender.name].cpu.append(cpu)
            log(f"startup: {contender.name}: {wall:.2f} s")
    rows = [
        [
            name,
            round(median(timing.wall), 2),
            f"{min(timing.wall):.2f} - {max(timing.wall):.2f}",
            round(median(timing.cpu), 2),
        ]
        for name, timing in timings.items()
    ]
    print(f"### Start-up ({rounds} rounds, medians)\n")
    print(machine() + "\n")
    print(markdown_table(["process", "until ready, s", "range, s", "CPU, s"], rows))
    print()
