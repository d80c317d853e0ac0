"""What stands between the internet and the routes: a token checked before any body is
read, and a cap on the streams one user may hold open.

Both answer with the API's usual JSON errors. The cap is per process: an open stream
lives in the process that serves it.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chatledger.api.auth import Authenticator, bearer_token
from chatledger.api.errors import CHATKIT_PATH, domain_error_response, speaks_openai
from chatledger.errors import ChatLedgerError, PermissionDeniedError, RateLimitedError

__all__ = ["StreamLimiter", "StreamPlace", "VerifyFirstMiddleware"]

# Seconds a client told "too many streams" waits before trying again.
_STREAMS_RETRY_AFTER: Final = 5.0


class VerifyFirstMiddleware:
    """Checks the bearer token of every `/api/{user_id}/…`, `/v1/…` and `/chatkit` request
    before the route runs (under `/v1` and at `/chatkit` the user is the token's subject;
    under `/v1` errors are OpenAI's).

    FastAPI reads a request's body before it resolves the route's dependencies, the token
    check among them: an unauthenticated client could hold a connection for as long as
    it took to trickle a body in. Refused here, it gets its 401 (or 403) at once. The
    verified user is left in the request's state for the route's own check.
    """

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        # A CORS preflight carries no token by design; the CORS middleware answers it.
        openai = speaks_openai(path)
        by_token = openai or path == CHATKIT_PATH  # the user is whoever the token says
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not (by_token or path.startswith("/api/"))
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        try:
            subject = await self.authenticator.verify(
                bearer_token(None if authorization is None else authorization.decode("latin-1"))
            )
            if not by_token and subject != path.split("/")[2]:
                raise PermissionDeniedError("this token is for another user")
        except ChatLedgerError as error:
            refusal = domain_error_response(error, openai=openai)
            if b"content-length" in headers or b"transfer-encoding" in headers:
                # The body is left unread: the connection cannot carry another request.
                refusal.headers["Connection"] = "close"
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["user_id"] = subject
        await self.app(scope, receive, send)


class StreamLimiter:
    """Counts each user's open streams (server-sent events) in this process.

    Args:
        per_user: streams one user may hold open at once; one more is 429.
    """

    def __init__(self, per_user: int) -> None:
        self._per_user = per_user
        self._open: Counter[str] = Counter()

    def hold(self, user_id: str) -> StreamPlace:
        """Take one of the user's places, before the stream starts.

        Raises:
            RateLimitedError: the user has `per_user` streams open already.
        """
        if self._open[user_id] >= self._per_user:
            raise RateLimitedError(
                f"no more than {self._per_user} streams open at once",
                code="too_many_streams",
                retry_after=_STREAMS_RETRY_AFTER,
            )
        self._open[user_id] += 1
        return StreamPlace(self, user_id)

    def _release(self, user_id: str) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]


class StreamPlace:
    """One open stream of a user: given back once, by `release` or when the response
    `respond` wraps is over."""

    def __init__(self, limiter: StreamLimiter, user_id: str) -> None:
        self._limiter = limiter
        self._user_id = user_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter._release(self._user_id)

    def respond(self, response: Response) -> Response:
        return _Held(response, self)


class _Held(Response):
    """A response that gives its place back when it is over, however it ends: sent whole,
    cut off by the client, or cancelled. (A generator's `finally` would not run for a
    stream the client left before it began.)"""

    def __init__(self, response: Response, place: StreamPlace) -> None:
        self._response = response
        self._place = place
        self.status_code = response.status_code
        self.background = response.background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._response.background = self.background
        try:
            await self._response(scope, receive, send)
        finally:
            self._place.release()
