"""Settings, read from the environment once, at the edge (the CLI or the app factory).

Every variable has the `CHATLEDGER_` prefix. For compatibility with the seeds' deployments
the unprefixed `DATABASE_URL` and `BETTER_AUTH_SECRET` are honoured too, and the OpenAI
SDK's own `OPENAI_API_KEY` and `OPENAI_BASE_URL`: nothing else in chatledger reads the
environment.

`CHATLEDGER_APP` (`serve --app`) names a factory `package.module:function` that returns
the agent and tools to serve (`chatledger.compose.AgentSetup`); `CHATLEDGER_MCP_SERVERS`
names a JSON file of MCP servers whose tools the agent may call, in the format MCP hosts
use (`{"mcpServers": {...}}`); `CHATLEDGER_TOOL_TIMEOUT` bounds each call to a tool
outside chatledger's database.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATLEDGER_", extra="ignore", populate_by_name=True
    )

    database_url: str = Field(
        default="sqlite:///./chatledger.db",
        validation_alias=AliasChoices("CHATLEDGER_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CHATLEDGER_JWT_SECRET", "BETTER_AUTH_SECRET", "jwt_secret"),
    )
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256"]
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwks_url: str | None = None
    agent: Literal["rules", "openai"] | None = None
    app: str | None = None
    model: str = "gpt-4o-mini"
    openai_api: Literal["chat_completions", "responses"] = "chat_completions"
    # The OpenAI SDK's own variable names, so an environment set up for it works as is.
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OPENAI_API_KEY", "CHATLEDGER_OPENAI_API_KEY", "openai_api_key"
        ),
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OPENAI_BASE_URL", "CHATLEDGER_OPENAI_BASE_URL", "openai_base_url"
        ),
    )
    mcp_servers: str | None = None
    tool_timeout: float = Field(default=30.0, gt=0)
    cors_origins: Annotated[list[str], NoDecode] = []
    context_tokens: int = Field(default=8000, ge=256)
    max_message_chars: int = Field(default=32_000, ge=1)
    agent_timeout: float = Field(default=60.0, gt=0)
    stop_poll_interval: float = Field(default=0.5, gt=0)
    lease_seconds: float = Field(default=10.0, gt=0)
    max_tool_calls_per_turn: int = Field(default=10, ge=1)
    log_level: str = "info"
    metrics_token: SecretStr | None = None
    request_header_timeout: float = Field(default=10.0, gt=0)
    request_body_timeout: float = Field(default=30.0, gt=0)
    # The largest body `POST /api/{user_id}/import` takes (every other request: 1 MiB).
    max_import_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_concurrent_requests: int = Field(default=1000, ge=1)
    max_streams_per_user: int = Field(default=8, ge=1)
    rate_limit_turns: int | None = Field(default=None, ge=1)
    rate_limit_seconds: float = Field(default=60.0, gt=0)
    retention_days: float | None = Field(default=None, gt=0)
    retention_interval: float = Field(default=3600.0, gt=0)

    @field_validator("jwt_algorithms", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # "HS256,RS256" in the environment, a list when built in code.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
