"""The OpenAPI schema tells the truth: schemathesis sends requests generated from it (valid
and invalid) to the app, in-process, and every answer must be a documented status with a
body of the documented shape, and never a 5xx.

Requests go out as one user with that user's valid token, so the generated inputs reach the
handlers instead of stopping at authentication (which `test_auth.py` covers), and half the
generated conversation ids name a conversation that exists, so they get past the 404 too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, Final, cast

import hypothesis
import jwt
import pytest
import schemathesis
from hypothesis import strategies as st
from starlette.types import ASGIApp, Receive, Scope, Send

from chatledger.api import create_app
from chatledger.domain import ChatMessage
from chatledger.store import SQLAlchemyStore
from chatledger.testing import CallTool, Say, ScriptedAgent
from tests.api.conftest import SECRET, Server, auth, settings_for, token_for
from tests.factories import examples

USER: Final = "alice"
CHECKS: Final = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "authenticated_as_the_user",
]


class CurrentApp:
    """The running test's app behind one ASGI callable the schema can hold on to, and a
    conversation of the user's in its database."""

    app: ASGIApp | None = None
    conversation_id: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no app: is the `app` fixture in use?"
        await self.app(scope, receive, send)


current = CurrentApp()


@schemathesis.serializer("application/x-ndjson")
def _json_lines(context: schemathesis.SerializationContext, value: Any) -> bytes:
    # An import's body: whatever was generated, sent as the text of JSON Lines.
    return (value if isinstance(value, str) else json.dumps(value)).encode()


# The schema is read once, from an app that never starts (the schema needs no database);
# each test then gets an app of its own on a fresh database.
schema = schemathesis.openapi.from_dict(create_app(settings_for("sqlite://")).openapi())
schema.app = current
schema.config.update(parameters={"path.user_id": USER})
schema.config.checks.update(included_check_names=CHECKS)
schema.config.generation.update(max_examples=examples(25), deterministic=True, database="none")


# A fresh token for every request (a token made at import could expire before the test
# runs), and no retry on 401: a refusal must fail the test, not be papered over.
@schema.auth(refresh_interval=None, retry_on=[])
class AsTheUser:
    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return token_for(USER)

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.check
def authenticated_as_the_user(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A 401 or 403 to a request with the user's valid token means it never reached a
    handler: the other checks would pass without having tested anything. (Schemathesis
    also sends requests with no token or a made-up one, to see them refused, as the
    schema's security scheme invites it to: those are right to be 401.)"""
    sent = {name.lower(): value for name, value in response.request.headers.items()}
    scheme, _, token = sent.get("authorization", "").partition(" ")
    ours = scheme == "Bearer" and _is_the_users(token)
    if response.status_code in (401, 403) and ours:
        raise AssertionError(f"{response.status_code}: the request was not authenticated")
    return None


def _is_the_users(token: str) -> bool:
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        return False
    return bool(claims.get("sub") == USER)


@schema.hook
def before_generate_path_parameters(
    context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    def existing(parameters: Any) -> Any:
        if isinstance(parameters, dict) and "conversation_id" in parameters:
            return {**parameters, "conversation_id": current.conversation_id}
        return parameters

    return st.one_of(strategy, strategy.map(existing))


async def _seed(database_url: str) -> str:
    store = SQLAlchemyStore.from_url(database_url)
    try:
        conversation = await store.create_conversation(USER, title="seeded")
        turn = [ChatMessage.user("add milk"), ChatMessage.assistant("Added milk.")]
        await store.append(USER, conversation.id, turn)
        return conversation.id
    finally:
        await store.close()


@pytest.fixture
def app(database_url: str) -> Iterator[None]:
    agent = ScriptedAgent([CallTool("add_task", {"title": "from a test"}), Say("Added it.")])
    current.app = create_app(settings_for(database_url), agent=agent)
    current.conversation_id = asyncio.run(_seed(database_url))
    yield
    current.app = None


@pytest.mark.usefixtures("app")
@schema.parametrize()
@hypothesis.settings(
    # The app and its database are per test on purpose: examples share them, as a real
    # client's requests share a server.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)
def test_every_answer_is_documented(case: schemathesis.Case) -> None:
    case.call_and_validate()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"message": "caf\xe9"}', id="latin-1-not-utf-8"),
        pytest.param(b"\xff\xfe\x00", id="binary"),
        pytest.param(b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="too-deep"),
    ],
)
async def test_a_body_that_cannot_be_parsed_is_the_documented_422(
    server: Server, body: bytes
) -> None:
    # FastAPI's own answer would be an undocumented 400 (found by the test above).
    for url in ("/api/alice/chat", "/api/alice/conversations"):
        response = await server.client.post(
            url, content=body, headers={**auth(USER), "Content-Type": "application/json"}
        )
        assert (response.status_code, response.json()) == (
            422,
            {
                "error": "invalid",
                "message": "the request body is not valid JSON",
                "code": "invalid",
                "field": "body",
            },
        )
    assert cast(ScriptedAgent, server.agent).runs == 0
