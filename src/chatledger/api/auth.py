"""JWT verification: who is calling, checked before anything else happens.

Tokens are verified with PyJWT against exactly the configured algorithms: HS256 (or
HS384/HS512) with a shared secret, or RS*/ES*/PS* with keys from a JWKS URL. The two
families are never mixed, since a server that accepts both can be fooled into checking
an HMAC made with its own public key. `exp` and `sub` are required; `aud` and `iss` are
checked when configured.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt

from chatledger.errors import AuthenticationError, ConfigurationError, UnavailableError
from chatledger.settings import Settings

__all__ = ["Authenticator", "bearer_token"]

LEEWAY: Final = timedelta(seconds=30)
MIN_SECRET_BYTES: Final = 32
# Real tokens are a few hundred bytes; anything this large is refused before parsing.
MAX_TOKEN_CHARS: Final = 8192

_HMAC = {"HS256", "HS384", "HS512"}
_PUBLIC_KEY = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header.

    Raises:
        AuthenticationError: the header is missing or not a bearer token.
    """
    if not authorization:
        raise AuthenticationError("missing bearer token", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("expected 'Authorization: Bearer <token>'")
    return token


class Authenticator:
    """Verifies tokens and, with a shared secret, issues them (dev sign-in, `chatledger token`).

    Args:
        secret: the HMAC secret, at least 32 bytes (for HS* algorithms).
        algorithms: the algorithms accepted; one family only, never "none".
        audience: required `aud`, when set.
        issuer: required `iss`, when set.
        jwks_url: where RS*/ES*/PS* public keys are fetched (cached, with a refetch
            cooldown so unknown key ids cannot make the server hammer the key server).

    Raises:
        ConfigurationError: the combination is unsafe or incomplete; the server must
            not start with it.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        algorithms: list[str],
        audience: str | None = None,
        issuer: str | None = None,
        jwks_url: str | None = None,
    ) -> None:
        chosen = set(algorithms)
        if not chosen:
            raise ConfigurationError("configure at least one JWT algorithm")
        unknown = chosen - _HMAC - _PUBLIC_KEY
        if unknown:
            raise ConfigurationError(f"unsupported JWT algorithm(s): {', '.join(sorted(unknown))}")
        if chosen & _HMAC and chosen & _PUBLIC_KEY:
            raise ConfigurationError(
                "JWT algorithms mix HMAC (HS*) and public-key (RS*/ES*/PS*) families"
            )
        self._jwks: jwt.PyJWKClient | None = None
        if chosen & _HMAC:
            if secret is None:
                raise ConfigurationError("set CHATLEDGER_JWT_SECRET (or run with --dev)")
            if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes long"
                )
        else:
            if jwks_url is None:
                raise ConfigurationError(f"{', '.join(sorted(chosen))} needs CHATLEDGER_JWKS_URL")
            try:
                self._jwks = jwt.PyJWKClient(
                    jwks_url, cache_jwk_set=True, lifespan=300, cooldown_duration=30, timeout=5
                )
            except jwt.PyJWKClientError:
                # PyJWKClient refuses any scheme but http(s) (a file:// URL would read local
                # files); that is a setting to refuse like the others, not a crash at startup.
                raise ConfigurationError("CHATLEDGER_JWKS_URL must be an http(s) URL") from None
        self._secret = secret
        self._algorithms = sorted(chosen)
        self._audience = audience
        self._issuer = issuer

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The authenticator `settings` describe (raises `ConfigurationError` if unsafe)."""
        return cls(
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            algorithms=settings.jwt_algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            jwks_url=settings.jwks_url,
        )

    async def verify(self, token: str) -> str:
        """Return the verified subject (`sub`) of `token`.

        Raises:
            AuthenticationError: the token is malformed, expired, not yet valid, signed
                with another key or algorithm, or lacks a string `sub`.
            UnavailableError: the JWKS URL cannot be reached to fetch the key.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError("token is too large")
        try:
            key: Any = self._secret
            if self._jwks is not None:
                # PyJWKClient fetches with urllib, which blocks: keep it off the event loop.
                key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWKClientConnectionError:
            # Our dependency failed, not the caller: they may retry, and must not be told
            # their (perhaps valid) token is bad.
            raise UnavailableError("the key server is unavailable") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthenticationError("the token is not valid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("the token has no subject")
        return subject

    def issue(self, user_id: str, *, ttl: timedelta) -> tuple[str, datetime]:
        """A token for `user_id`, valid for `ttl`; returns it with its expiry.

        Raises:
            ConfigurationError: the authenticator has no shared secret to sign with.
        """
        if self._secret is None:
            raise ConfigurationError("tokens can only be issued with a shared secret")
        now = datetime.now(UTC)
        expires = now + ttl
        claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": expires}
        if self._audience is not None:
            claims["aud"] = self._audience
        if self._issuer is not None:
            claims["iss"] = self._issuer
        return jwt.encode(claims, self._secret, algorithm=self._algorithms[0]), expires
