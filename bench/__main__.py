"""Run the benchmarks and print their Markdown reports.

    python -m bench [options]          every benchmark, each given the options
    python -m bench store [options]    one benchmark; --help lists its options

A benchmark is a module `bench/<name>.py` with `main(argv)`; every one accepts --quick.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("store", "server", "context", "scrub", "search", "startup")


def main(argv: list[str]) -> None:
    if argv and argv[0] in BENCHMARKS:
        names, options = [argv[0]], argv[1:]
    elif argv and not argv[0].startswith("-"):
        sys.exit(f"unknown benchmark {argv[0]!r}; choose from: {', '.join(BENCHMARKS)}")
    else:
        names, options = list(BENCHMARKS), argv
    for name in names:
        importlib.import_module(f"bench.{name}").main(options)


if __name__ == "__main__":
    main(sys.argv[1:])
