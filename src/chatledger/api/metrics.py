"""Prometheus metrics of one app, in a registry of its own (so apps in one process don't mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        return generate_latest(self.registry)
