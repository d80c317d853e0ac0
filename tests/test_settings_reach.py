"""Every setting reaches every entry point that uses it: the server (`create_app`) and the
terminal chat build their turn through `chatledger.compose`, and each setting that shapes
a turn arrives in the `ChatService` they get. A new setting must be placed here, in the
turn's table with a probe or among the others with where it is used, or this test fails."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from chatledger.api.app import create_app
from chatledger.compose import compose
from chatledger.service import ChatService
from chatledger.settings import Settings

# A setting that shapes a turn: a value unlike its default, and what the service holds.
TURN: dict[str, tuple[Any, Callable[[ChatService], Any], Any]] = {
    "context_tokens": (1234, lambda s: s._context_tokens, 1234),
    "agent_timeout": (7.5, lambda s: s._agent_timeout, 7.5),
    "stop_poll_interval": (0.25, lambda s: s._stop_poll_interval, 0.25),
    "max_tool_calls_per_turn": (3, lambda s: s._max_tool_calls, 3),
    "tool_timeout": (4.0, lambda s: s._tool_timeout, 4.0),
    "max_message_chars": (99, lambda s: s._max_message_chars, 99),
    "lease_seconds": (3.0, lambda s: s._lease_ttl, timedelta(seconds=3)),
    "rate_limit_turns": (5, lambda s: s._turn_limit[0], 5),
    "rate_limit_seconds": (30.0, lambda s: s._turn_limit[1], timedelta(seconds=30)),
}
# The agent and its tools: which built-in agent, its model and endpoint, or yours.
AGENT = {
    "agent", "app", "model", "openai_api", "openai_api_key", "openai_base_url",
    "mcp_servers",
}  # fmt: skip
# Everything else is the server's own (authentication, HTTP limits, metrics, logs, the
# database, retention) or the command line's; tests/api and tests/process cover each.
SERVER = {
    "database_url", "jwt_secret", "jwt_algorithms", "jwt_audience", "jwt_issuer",
    "jwks_url", "cors_origins", "log_level", "metrics_token", "request_header_timeout",
    "request_body_timeout", "max_concurrent_requests", "max_streams_per_user",
    "retention_days", "retention_interval", "max_import_bytes",
}  # fmt: skip


def test_every_setting_is_placed() -> None:
    assert set(Settings.model_fields) == set(TURN) | AGENT | SERVER
    assert not (set(TURN) & AGENT or set(TURN) & SERVER or AGENT & SERVER)


def turn_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        agent="rules",
        jwt_secret="a-secret-long-enough-for-the-settings-reach-test",
        **{name: value for name, (value, _, _) in TURN.items()},
    )


def assert_reached(service: ChatService) -> None:
    for name, (_, held, expected) in TURN.items():
        assert held(service) == expected, name


async def test_turn_settings_reach_the_service_chat_composes(database_url: str) -> None:
    # `chatledger chat` runs its turns on `compose(settings).service`.
    async with compose(turn_settings(database_url)) as parts:
        assert_reached(parts.service)


async def test_turn_settings_reach_the_server(database_url: str) -> None:
    app = create_app(turn_settings(database_url))
    async with app.router.lifespan_context(app):
        assert_reached(app.state.service)
