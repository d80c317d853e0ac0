"""Prometheus metrics of one app, safe to expose.

Every label comes from a fixed set (route templates, a known HTTP method or `other`, a
status code, a tool name, an error code), so no client can grow the series without
bound. Under `chatledger serve --workers N` the workers share one view: `serve` gives them
a directory for prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`), and a
scrape of any worker adds up all of them. Otherwise each app keeps a registry of its own,
so apps in one process (tests) don't mix.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROCESS_DIR", "Metrics", "method_label"]

# The variable prometheus_client reads, at import, to keep values in shared files.
MULTIPROCESS_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """An HTTP method as a label: one of the methods HTTP defines for resources, or other."""
    return method if method in _METHODS else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._shared_dir = os.environ.get(MULTIPROCESS_DIR)
        self.requests = Counter(
            "chatledger_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chatledger_http_request_duration_seconds",
            "Time to the end of the response, by route template and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.turns = Counter(
            "chatledger_turns",
            "Chat turns by outcome (completed, replayed, or the error code).",
            ["outcome"],
            registry=self.registry,
        )
        self.agent_errors = Counter(
            "chatledger_agent_errors",
            "Turns the agent failed, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "chatledger_tool_calls",
            "Tool calls made by agents, by tool and result (ok or the error code).",
            ["tool", "result"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format. Blocking (it reads files under --workers): call it
        off the event loop."""
        if self._shared_dir is None:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker, path=self._shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker)
