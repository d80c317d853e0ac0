"""/metrics is safe to leave open to the internet: its size is bounded whatever clients
send, rendering it never stalls other requests, and it can ask for a token of its own."""

from __future__ import annotations

import asyncio
import random
import string
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from chatledger.testing import ScriptedAgent


def families(text: str) -> dict[str, set[tuple[str, str]]]:
    """Each sample's name, with the label pairs it carries."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, _, rest = line.partition("{")
        labels = rest.rpartition("}")[0]
        for pair in labels.split(","):
            key, _, value = pair.partition("=")
            seen.setdefault(name, set()).add((key, value.strip('"')))
    return seen


# Requests that never reach a database: one is enough. 3,000 made-up paths and methods
# would make the scrape many times its bound if any of them became a label.
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_three_thousand_requests_with_made_up_methods_and_paths_leave_metrics_small(
    make_server: Callable[..., Any],
) -> None:
    rng = random.Random(7)
    sent: set[str] = set()
    async with make_server(ScriptedAgent([])) as server:

        async def junk(count: int) -> None:
            for _ in range(count):
                method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
                path = "/" + "".join(rng.choices(string.ascii_lowercase, k=8))
                sent.update((method, path))
                await server.client.request(method, path)

        await asyncio.gather(*(junk(300) for _ in range(10)))
        scrape = await server.client.get("/metrics")
    assert scrape.status_code == 200
    assert len(scrape.content) < 64 * 1024, len(scrape.content)
    labels = families(scrape.text)
    methods = {value for key, value in labels["chatledger_http_requests_total"] if key == "method"}
    routes = {value for key, value in labels["chatledger_http_requests_total"] if key == "route"}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods
    assert len(routes) < 10, routes
    assert not [word for word in sent if f'"{word}"' in scrape.text]


class _Held(Collector):
    """A collector that takes as long to read as a test wants: until it is released."""

    def __init__(self) -> None:
        self.reading, self.release = threading.Event(), threading.Event()

    def collect(self) -> Iterator[CounterMetricFamily]:
        self.reading.set()
        self.release.wait(10)
        yield CounterMetricFamily("slow_to_read", "A collector that blocks.", value=1)


async def test_a_slow_scrape_does_not_hold_up_other_requests(
    make_server: Callable[..., Any],
) -> None:
    async with make_server(ScriptedAgent([])) as server:
        held = _Held()
        server.app.state.metrics.registry.register(held)
        scrape = asyncio.create_task(server.client.get("/metrics"))
        await asyncio.to_thread(held.reading.wait, 10)
        # The scrape is stuck in its collector; the server still answers.
        health = await server.client.get("/healthz")
        assert health.status_code == 200 and not scrape.done()
        held.release.set()
        assert "slow_to_read" in (await scrape).text


async def test_metrics_can_ask_for_a_token_of_their_own(
    make_server: Callable[..., Any],
) -> None:
    token = "metrics-token-" + "x" * 20
    async with make_server(ScriptedAgent([]), metrics_token=token) as server:
        missing = await server.client.get("/metrics")
        wrong = await server.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await server.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        health = await server.client.get("/healthz")
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"] == "unauthorized"
    assert "chatledger_http_requests" in right.text
    assert health.status_code == 200
