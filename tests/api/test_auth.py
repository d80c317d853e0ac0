"""Authentication: every way a bearer token can be wrong is a 401 (never a 500), a good token
for someone else is a 403, and settings that would make tokens forgeable stop the server.

Tokens are built by hand here (`signed`, `forged`) rather than with `jwt.encode`, so a test
can send exactly the malformed claims or headers an attacker would.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, cast

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from chatledger.api import create_app
from chatledger.errors import ConfigurationError
from chatledger.settings import Settings
from chatledger.testing import Say, ScriptedAgent
from tests.api.conftest import SECRET, Server, settings_for
from tests.factories import row_counts

OMIT: Final = object()
LEEWAY: Final = 30
AUDIENCE: Final = "chatledger-api"
ISSUER: Final = "https://auth.example"


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """Tokens are checked before any query is made, so SQLite alone is enough here."""
    path = tmp_path / "chatledger.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# Building tokens ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(sub: Any = "alice", **changes: Any) -> dict[str, Any]:
    """Valid claims for `sub`, with `changes` applied; a claim set to OMIT is left out."""
    now = int(time.time())
    values = {"sub": sub, "iat": now, "exp": now + 300, **changes}
    return {name: value for name, value in values.items() if value is not OMIT}


def forged(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT with exactly this header, payload and signature, valid or not."""
    parts = (json.dumps(header).encode(), json.dumps(payload).encode(), signature)
    return ".".join(_b64(part) for part in parts)


_DIGESTS: Final = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def signed(
    payload: dict[str, Any],
    *,
    key: bytes = SECRET.encode(),
    header: dict[str, Any] | None = None,
) -> str:
    """An HMAC token over `payload`, whatever its claims, signed with `key` using the
    algorithm the header names (HS256 by default)."""
    header = header or {"alg": "HS256", "typ": "JWT"}
    unsigned = forged(header, payload).removesuffix(".")
    mac = hmac.new(key, unsigned.encode("ascii"), _DIGESTS[header["alg"]]).digest()
    return f"{unsigned}.{_b64(mac)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Asking the server -------------------------------------------------------------------------


async def ask(server: Server, headers: dict[str, Any], user: str = "alice") -> list[httpx.Response]:
    """The same credentials on a read and on a chat turn."""
    return [
        await server.client.get(f"/api/{user}/conversations", headers=headers),
        await server.client.post(f"/api/{user}/chat", json={"message": "hi"}, headers=headers),
    ]


def assert_unauthorized(response: httpx.Response, *statuses: int) -> None:
    """A 401 (or one of `statuses`) with the JSON error body and a bearer challenge."""
    assert response.status_code in (statuses or (401,)), response.text
    body = response.json()
    assert set(body) == {"error", "message", "code"}, body
    if response.status_code == 401:
        assert body["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


def runs(server: Server) -> int:
    """How many turns the server's scripted agent has run."""
    return cast(ScriptedAgent, server.agent).runs


async def assert_refused(server: Server, headers: dict[str, Any], *statuses: int) -> None:
    """Both endpoints refuse the credentials, echo no part of them, and nothing runs or is
    stored."""
    store = server.app.state.store
    runs_before, stored = runs(server), await store.list_conversations("alice")
    credentials = headers.get("Authorization")
    for response in await ask(server, headers):
        assert_unauthorized(response, *statuses)
        if isinstance(credentials, str) and len(credentials) > 16:
            assert credentials.split()[-1] not in response.text
    assert runs(server) == runs_before
    assert await store.list_conversations("alice") == stored


async def assert_accepted(server: Server, headers: dict[str, Any], user: str = "alice") -> None:
    for response in await ask(server, headers, user):
        assert response.status_code == 200, response.text


# Bearer headers ----------------------------------------------------------------------------


async def test_a_valid_token_is_accepted_whatever_the_case_of_the_scheme(server: Server) -> None:
    token = signed(claims())
    await assert_accepted(server, bearer(token))
    await assert_accepted(server, {"Authorization": f"bearer {token}"})


async def test_no_authorization_header_is_401_with_a_bearer_challenge(server: Server) -> None:
    for response in await ask(server, {}):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {
            "error": "unauthorized",
            "message": "missing bearer token",
            "code": "missing_token",
        }
    assert runs(server) == 0


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic YWxpY2U6cGFzc3dvcmQ=", id="basic"),
        pytest.param("Bearer", id="bearer-alone"),
        pytest.param("Bearer    ", id="bearer-and-spaces"),
        pytest.param("Bearer garbage", id="garbage"),
        pytest.param("Bearer a.b.c", id="three-garbage-segments"),
        pytest.param("Bearer ...", id="empty-segments"),
        pytest.param("Token {valid}", id="valid-token-other-scheme"),
        pytest.param("{valid}", id="valid-token-no-scheme"),
        pytest.param("Bearer {valid}.extra", id="four-segments"),
        pytest.param("Bearer {valid} {valid}", id="two-tokens"),
        pytest.param(b"Bearer \xff\xfe\xc3\xa9\x80", id="non-ascii-bytes"),
        pytest.param(b"Bearer \xc3\xa9yJ\xe9.\xff.\x00", id="latin-1-in-segments"),
    ],
)
async def test_a_malformed_authorization_header_is_401(
    server: Server, authorization: str | bytes
) -> None:
    if isinstance(authorization, str):
        authorization = authorization.replace("{valid}", signed(claims()))
    await assert_refused(server, {"Authorization": authorization})


async def test_a_64_kb_header_is_refused_without_a_500(server: Server) -> None:
    padded = signed(claims(padding="x" * 64 * 1024))
    await assert_refused(server, bearer(padded), 401, 431)
    await assert_refused(server, bearer("e" * 64 * 1024), 401, 431)


# Time claims -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        pytest.param({"exp": -(LEEWAY + 30)}, 401, id="expired-beyond-leeway"),
        pytest.param({"exp": -(LEEWAY - 20)}, 200, id="expired-within-leeway"),
        pytest.param({"nbf": LEEWAY + 30}, 401, id="not-yet-valid-beyond-leeway"),
        pytest.param({"nbf": LEEWAY - 20}, 200, id="not-yet-valid-within-leeway"),
        pytest.param({"iat": 3600}, 401, id="issued-in-the-future"),
        pytest.param({"iat": LEEWAY - 20}, 200, id="issued-within-leeway"),
    ],
)
async def test_time_claims_are_checked_with_a_30_second_leeway(
    server: Server, changes: dict[str, int], status: int
) -> None:
    now = int(time.time())
    token = signed(claims(**{name: now + offset for name, offset in changes.items()}))
    if status == 200:
        await assert_accepted(server, bearer(token))
    else:
        await assert_refused(server, bearer(token))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": OMIT}, id="no-exp"),
        pytest.param({"exp": "tomorrow"}, id="exp-not-a-number"),
        pytest.param({"exp": 1e400}, id="exp-infinite"),
        pytest.param({"sub": OMIT}, id="no-sub"),
        pytest.param({"sub": 42}, id="sub-number"),
        pytest.param({"sub": ["alice"]}, id="sub-list"),
        pytest.param({"sub": {"id": "alice"}}, id="sub-object"),
        pytest.param({"sub": None}, id="sub-null"),
        pytest.param({"sub": ""}, id="sub-empty"),
    ],
)
async def test_a_correctly_signed_token_with_bad_claims_is_401(
    server: Server, changes: dict[str, Any]
) -> None:
    await assert_refused(server, bearer(signed(claims(**changes))))


# Signatures and algorithms -----------------------------------------------------------------


async def test_a_token_signed_with_another_key_is_401(server: Server) -> None:
    other_secret = b"another-secret-that-is-also-long-enough"
    await assert_refused(server, bearer(signed(claims(), key=other_secret)))


async def test_a_token_with_a_borrowed_signature_is_401(server: Server) -> None:
    # Bob's genuine signature under a payload that says "alice".
    bobs = signed(claims("bob"))
    alices_payload = signed(claims()).split(".")[1]
    head, _, signature = bobs.split(".")
    await assert_refused(server, bearer(f"{head}.{alices_payload}.{signature}"))


async def test_a_token_with_a_truncated_signature_is_401(server: Server) -> None:
    await assert_refused(server, bearer(signed(claims())[:-4]))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_an_unsigned_token_is_401_however_none_is_spelled(server: Server, alg: str) -> None:
    await assert_refused(server, bearer(forged({"alg": alg, "typ": "JWT"}, claims())))


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
async def test_a_token_in_an_algorithm_not_configured_is_401(server: Server, alg: str) -> None:
    # Signed with the server's own secret: only the algorithm is wrong.
    await assert_refused(server, bearer(signed(claims(), header={"alg": alg, "typ": "JWT"})))


# Audience and issuer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        pytest.param({}, 200, id="right-aud-and-iss"),
        pytest.param({"aud": ["other", AUDIENCE]}, 200, id="aud-list-with-ours"),
        pytest.param({"aud": "other-api"}, 401, id="wrong-aud"),
        pytest.param({"aud": OMIT}, 401, id="no-aud"),
        pytest.param({"aud": AUDIENCE.upper()}, 401, id="aud-other-case"),
        pytest.param({"iss": "https://evil.example"}, 401, id="wrong-iss"),
        pytest.param({"iss": OMIT}, 401, id="no-iss"),
        pytest.param({"iss": ISSUER + ".evil"}, 401, id="iss-with-a-suffix"),
        pytest.param({"iss": ISSUER[:-2]}, 401, id="iss-prefix"),
    ],
)
async def test_audience_and_issuer_are_required_when_configured(
    make_server: Callable[..., Any], changes: dict[str, Any], status: int
) -> None:
    token = signed(claims(**{"aud": AUDIENCE, "iss": ISSUER, **changes}))
    agent = ScriptedAgent([Say("ok")])
    async with make_server(agent, jwt_audience=AUDIENCE, jwt_issuer=ISSUER) as server:
        if status == 200:
            await assert_accepted(server, bearer(token))
        else:
            await assert_refused(server, bearer(token))


# Whose token -------------------------------------------------------------------------------


async def test_a_token_for_another_user_is_403(server: Server, connector: Any) -> None:
    for response in await ask(server, bearer(signed(claims("bob")))):
        assert response.status_code == 403
        assert response.json() == {
            "error": "forbidden",
            "message": "this token is for another user",
            "code": "forbidden",
        }
    assert runs(server) == 0
    assert set((await row_counts(connector, "alice")).values()) == {0}
    assert set((await row_counts(connector, "bob")).values()) == {0}


NFC: Final = unicodedata.normalize("NFC", "ren\u00e9e")
NFD: Final = unicodedata.normalize("NFD", "ren\u00e9e")


@pytest.mark.parametrize(
    ("subject", "path_user"),
    [
        pytest.param("Alice", "alice", id="token-capitalised"),
        pytest.param("alice", "Alice", id="path-capitalised"),
        pytest.param("ALICE", "alice", id="token-upper"),
        pytest.param(NFD, NFC, id="token-nfd-path-nfc"),
        pytest.param(NFC, NFD, id="token-nfc-path-nfd"),
        pytest.param("alice ", "alice", id="trailing-space"),
    ],
)
async def test_the_subject_must_equal_the_path_exactly(
    server: Server, subject: str, path_user: str
) -> None:
    assert subject != path_user
    for response in await ask(server, bearer(signed(claims(subject))), path_user):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "forbidden"
    # The same spelling on both sides is accepted, so the 403 above is about equality.
    await assert_accepted(server, bearer(signed(claims(path_user))), path_user)


# Public keys from a JWKS -------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    algorithm: str
    kid: str
    private: Any
    public_pem: bytes
    jwk: dict[str, Any]

    def sign(self, payload: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            payload, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header}
        )


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    made = {}
    for algorithm, private, to_jwk in (
        ("RS256", rsa_key, RSAAlgorithm.to_jwk),
        ("ES256", ec_key, ECAlgorithm.to_jwk),
    ):
        kid = f"{algorithm.lower()}-key-1"
        public = private.public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        jwk = {**to_jwk(public, as_dict=True), "kid": kid, "use": "sig", "alg": algorithm}
        made[algorithm] = SigningKey(algorithm, kid, private, pem, jwk)
    return made


@dataclass
class KeyServer:
    """A JWKS endpoint on 127.0.0.1 that counts how often it is fetched."""

    url: str = ""
    fetches: int = 0


@contextlib.contextmanager
def serve_jwks(jwks: dict[str, Any]) -> Iterator[KeyServer]:
    served = KeyServer()
    body = json.dumps(jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.fetches += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}/.well-known/jwks.json"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def key_server(keys: dict[str, SigningKey]) -> Iterator[KeyServer]:
    with serve_jwks({"keys": [key.jwk for key in keys.values()]}) as served:
        yield served


@contextlib.asynccontextmanager
async def public_key_server(
    make_server: Callable[..., Any], algorithm: str, jwks_url: str
) -> AsyncIterator[Server]:
    agent = ScriptedAgent([Say("ok")])
    async with make_server(
        agent, jwt_secret=None, jwt_algorithms=[algorithm], jwks_url=jwks_url
    ) as server:
        yield server


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_a_token_signed_with_a_key_from_the_jwks_is_accepted(
    make_server: Callable[..., Any],
    keys: dict[str, SigningKey],
    key_server: KeyServer,
    algorithm: str,
) -> None:
    async with public_key_server(make_server, algorithm, key_server.url) as server:
        await assert_accepted(server, bearer(keys[algorithm].sign(claims())))
        for response in await ask(server, bearer(keys[algorithm].sign(claims("bob")))):
            assert response.status_code == 403
    assert key_server.fetches == 1  # cached, not fetched per request


@pytest.mark.parametrize(("configured", "signed_with"), [("RS256", "ES256"), ("ES256", "RS256")])
async def test_a_jwks_key_of_another_algorithm_is_401(
    make_server: Callable[..., Any],
    keys: dict[str, SigningKey],
    key_server: KeyServer,
    configured: str,
    signed_with: str,
) -> None:
    async with public_key_server(make_server, configured, key_server.url) as server:
        await assert_refused(server, bearer(keys[signed_with].sign(claims())))


async def test_an_unknown_key_id_is_401_without_refetching_during_the_cooldown(
    make_server: Callable[..., Any], keys: dict[str, SigningKey], key_server: KeyServer
) -> None:
    rs256 = keys["RS256"]
    async with public_key_server(make_server, "RS256", key_server.url) as server:
        await assert_accepted(server, bearer(rs256.sign(claims())))
        assert key_server.fetches == 1
        for n in range(5):
            await assert_refused(server, bearer(rs256.sign(claims(), kid=f"rotated-{n}")))
        # Ten requests with unknown key ids, and the key server was not asked again.
        assert key_server.fetches == 1


async def test_algorithm_confusion_with_the_public_key_is_401(
    make_server: Callable[..., Any], keys: dict[str, SigningKey], key_server: KeyServer
) -> None:
    rs256 = keys["RS256"]
    # The classic attack: an HMAC whose key is the server's own (public) RSA key.
    hs256_with_kid = {"alg": "HS256", "typ": "JWT", "kid": rs256.kid}
    attacks = [
        signed(claims(), key=rs256.public_pem, header=hs256_with_kid),
        signed(claims(), key=rs256.public_pem, header={"alg": "HS256", "typ": "JWT"}),
        signed(claims(), key=rs256.public_pem.strip(), header=hs256_with_kid),
        forged({"alg": "none", "typ": "JWT", "kid": rs256.kid}, claims()),
    ]
    async with public_key_server(make_server, "RS256", key_server.url) as server:
        for token in attacks:
            await assert_refused(server, bearer(token))


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_an_unreachable_key_server_is_503_not_a_bad_token(
    make_server: Callable[..., Any], keys: dict[str, SigningKey]
) -> None:
    url = f"http://127.0.0.1:{_unused_port()}/jwks.json"
    async with public_key_server(make_server, "RS256", url) as server:
        for response in await ask(server, bearer(keys["RS256"].sign(claims()))):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["code"] == "unavailable"
            assert "127.0.0.1" not in response.text
            assert "127.0.0.1" not in response.text and "jwks" not in response.text


# Settings the server refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"jwt_secret": "s" * 31}, id="secret-of-31-bytes"),
        pytest.param({"jwt_secret": None}, id="no-secret-with-hs256"),
        pytest.param(
            {"jwt_algorithms": ["HS256", "RS256"], "jwks_url": "https://idp.example/jwks"},
            id="hs256-and-rs256",
        ),
        pytest.param({"jwt_algorithms": ["none"]}, id="none"),
        pytest.param({"jwt_algorithms": ["HS256", "none"]}, id="hs256-and-none"),
        pytest.param({"jwt_algorithms": ["HS257"]}, id="unknown-algorithm"),
        pytest.param({"jwt_algorithms": []}, id="no-algorithm"),
        pytest.param({"jwt_secret": None, "jwt_algorithms": ["RS256"]}, id="rs256-without-jwks"),
        pytest.param(
            {"jwt_secret": None, "jwt_algorithms": ["ES256"], "jwks_url": "file:///etc/passwd"},
            id="jwks-url-not-http",
        ),
    ],
)
def test_unsafe_authentication_settings_stop_the_app(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'unused.db'}", **overrides)
    with pytest.raises(ConfigurationError):
        create_app(settings, agent=ScriptedAgent([Say("ok")]))


def test_a_secret_of_exactly_32_bytes_is_enough(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'unused.db'}", jwt_secret="s" * 32)
    assert create_app(settings, agent=ScriptedAgent([Say("ok")])).title == "chatledger"


@pytest.mark.slow
def test_serve_without_a_secret_exits_with_one_line_on_stderr(tmp_path: Path) -> None:
    database = tmp_path / "never-created.db"
    port = _unused_port()
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CHATLEDGER_JWT_SECRET", "BETTER_AUTH_SECRET")
    }
    chatledger = Path(sys.executable).with_name("chatledger")
    finished = subprocess.run(
        [str(chatledger), "serve", "--database-url", f"sqlite:///{database}", "--port", str(port)],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0
    assert finished.stderr.splitlines() == ["error: set CHATLEDGER_JWT_SECRET (or run with --dev)"]
    assert "serving" not in finished.stdout
    assert not database.exists()  # it stopped before migrating, let alone serving


async def test_the_seeds_better_auth_secret_is_honoured(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    seeds_secret = "the-seeds-better-auth-secret-value-0123456789"
    monkeypatch.delenv("CHATLEDGER_JWT_SECRET", raising=False)
    monkeypatch.setenv("BETTER_AUTH_SECRET", seeds_secret)
    settings = Settings(database_url=database_url)
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == seeds_secret

    app = create_app(settings, agent=ScriptedAgent([Say("ok")]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatledger") as client:
            ours = await client.get(
                "/api/alice/conversations",
                headers=bearer(signed(claims(), key=seeds_secret.encode())),
            )
            other = await client.get("/api/alice/conversations", headers=bearer(signed(claims())))
    assert ours.status_code == 200, ours.text
    assert other.status_code == 401
