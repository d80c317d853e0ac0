"""The OpenAPI schema as the tools that read it need it: valid, with the bearer scheme on
every operation that takes a token (so Swagger UI has its Authorize button and generated
clients send the token), errors only where they can happen, readable operation ids, event
streams described; and /docs served whole from the package."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate

from chatledger.api import create_app
from tests.api.conftest import Server, auth, settings_for

SPEC: dict[str, Any] = create_app(settings_for("sqlite://")).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, operations in SPEC["paths"].items()
    for method, operation in operations.items()
]


def test_the_schema_is_valid_openapi() -> None:
    validate(SPEC)


def test_every_operation_that_takes_a_token_says_so() -> None:
    assert SPEC["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT whose subject is the path's user id.",
    }
    for method, path, operation in OPERATIONS:
        takes_token = path.startswith("/api/")
        assert (operation.get("security") == [{"HTTPBearer": []}]) == takes_token, (method, path)
        if takes_token:
            assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)


IMPORT = "/api/{user_id}/import"


def test_errors_are_listed_only_where_they_can_happen() -> None:
    responses = {(m, p): set(op["responses"]) for m, p, op in OPERATIONS}
    assert responses["GET", "/healthz"] == {"200"}
    assert responses["GET", "/readyz"] == {"200", "503"}
    assert responses["GET", "/metrics"] == {"200", "401"}
    for method, path, operation in OPERATIONS:
        codes = set(operation["responses"])
        has_body = "requestBody" in operation
        assert ({"408", "413"} <= codes) == has_body, (method, path)
        answers = path.endswith(("/chat", "/edit", "/regenerate"))
        is_turn = answers or path.endswith("/chat/stream")
        # A turn can find its conversation busy, and so can moving the head.
        assert ("409" in codes) == (is_turn or path.endswith("/head")), (method, path)
        assert ({"502", "504"} <= codes) == answers, (method, path)
        for code, response in operation["responses"].items():
            if code >= "400":
                schema = response["content"]["application/json"]["schema"]
                # An import refused in part says what went in regardless.
                body = "ImportRefusal" if (path, code) == (IMPORT, "422") else "ErrorBody"
                assert schema == {"$ref": f"#/components/schemas/{body}"}, (method, path, code)
    assert "HTTPValidationError" not in str(SPEC)


def test_operation_ids_are_readable() -> None:
    ids = [operation["operationId"] for _, _, operation in OPERATIONS]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", operation_id) for operation_id in ids), ids
    assert {
        "chat",
        "chat_stream",
        "list_conversations",
        "attach_stream",
        "list_tasks",
        "get_usage",
    } <= set(ids)


def test_event_streams_describe_each_event() -> None:
    for path in (
        "/api/{user_id}/chat/stream",
        "/api/{user_id}/conversations/{conversation_id}/stream",
    ):
        method = "post" if path.endswith("chat/stream") else "get"
        content = SPEC["paths"][path][method]["responses"]["200"]["content"]
        events = content["text/event-stream"]["schema"]["oneOf"]
        names = [event["properties"]["event"]["const"] for event in events]
        assert names == ["conversation", "delta", "tool_call", "tool_result", "done", "error"]
        done = events[names.index("done")]["properties"]["data"]["contentSchema"]
        assert {"conversation_id", "response", "tool_calls", "message_ids"} <= set(
            done["properties"]
        )


async def test_a_client_built_from_the_schema_sends_the_token(server: Server) -> None:
    # What a generated client does: for each operation, the credentials its security
    # requirement names, in the form its scheme says. Every GET that takes no other
    # input (but a required word, given one) then gets past authentication.
    token = auth("alice")["Authorization"].removeprefix("Bearer ")
    schemes = SPEC["components"]["securitySchemes"]
    answered = []
    for method, path, operation in OPERATIONS:
        if method != "GET" or "{conversation_id}" in path or not path.startswith("/api/"):
            continue
        headers = {}
        for requirement in operation["security"]:
            for name in requirement:
                assert (schemes[name]["type"], schemes[name]["scheme"]) == ("http", "bearer")
                headers["Authorization"] = f"Bearer {token}"
        required = {
            parameter["name"]: "word"
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "query" and parameter.get("required")
        }
        assert all(
            parameter["schema"]["type"] == "string"
            for parameter in operation.get("parameters", [])
            if parameter["name"] in required
        )
        response = await server.client.get(
            path.format(user_id="alice"), params=required, headers=headers
        )
        answered.append((path, response.status_code))
    assert answered and all(status == 200 for _, status in answered), answered


async def test_docs_load_nothing_from_elsewhere(server: Server) -> None:
    page = await server.client.get("/docs")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/static/") for source in sources), sources
    for source in sources:
        asset = await server.client.get(source)
        assert asset.status_code == 200, source
    script = (await server.client.get("/static/docs.js")).text
    assert 'url: "/openapi.json"' in script and "validatorUrl: null" in script
    assert (await server.client.get("/redoc")).status_code == 404
