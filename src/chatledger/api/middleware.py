"""The outermost layer of every request: id, size limit, access log, metrics, last resort 500."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Sequence
from typing import Final

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatledger.api.errors import error_response, speaks_openai
from chatledger.api.metrics import Metrics, method_label

__all__ = ["MAX_BODY_BYTES", "RequestContextMiddleware"]

MAX_BODY_BYTES: Final = 1024 * 1024
# A client's X-Request-ID is echoed and logged, so only a safe, short one is honoured.
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS: Final = {"POST", "PUT", "PATCH", "DELETE"}
_API_REFUSED: Final = "/api/{user_id}/…"
_PROBES: Final = frozenset({"/healthz", "/metrics"})

log = structlog.get_logger("chatledger.api")


class _BodyTooLarge(HTTPException):
    # An HTTPException, because FastAPI re-raises those from body parsing (anything else
    # becomes a 400) and the app's handler renders it as the usual JSON error.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class _BodyTooSlow(HTTPException):
    def __init__(self, limit: float) -> None:
        super().__init__(408, f"the request body did not arrive within {limit:g} seconds")


def _route_template(scope: Scope) -> str:
    """The route a request matched, as a template (never the raw path: it holds ids)."""
    route = scope.get("route")
    # A mounted app's router (MCP's) sets its own route; the mount point is in root_path.
    mount = scope.get("root_path", "")
    if route is not None:
        return f"{mount}{route.path}"
    # A mounted app that routes by itself (the static files) sets none.
    if mount:
        return f"{mount}/{{path}}"
    # Refused before routing: its token is checked first (VerifyFirstMiddleware).
    return _API_REFUSED if scope.get("path", "").startswith("/api/") else "unmatched"


class RequestContextMiddleware:
    """Gives each request an id (an `X-Request-ID` of the client's, when sane), refuses
    bodies over `max_body_bytes` without reading them (on a path one of `body_limits`
    matches, its own limit: an import is larger than any other request) and bodies that
    take longer than `body_timeout` seconds to arrive, answers 503 beyond `max_requests`
    requests in progress, logs one line per request (user id and route template, never
    content), counts it in `metrics`, and turns an unexpected exception into a bare 500
    whose log line names only its type.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout: float = 30.0,
        max_requests: int = 1000,
        body_limits: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.body_limits = tuple(body_limits)
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.max_requests = max_requests
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Probes and scrapes are never shed: an orchestrator must see a busy process as
        # alive, not restart it for being busy.
        if self.in_progress >= self.max_requests and scope["path"] not in _PROBES:
            busy = error_response(
                503,
                "unavailable",
                "the server is too busy; try again",
                "too_busy",
                headers={"Retry-After": "1"},
                openai=speaks_openai(scope["path"]),
            )
            await busy(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self._handle(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500
        response_started = False
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        max_body_bytes = next(
            (limit for pattern, limit in self.body_limits if pattern.fullmatch(scope["path"])),
            self.max_body_bytes,
        )
        received = 0
        body_complete = False
        body_deadline = asyncio.get_running_loop().time() + self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:
                # After the body, receive() only waits for the client to disconnect, as
                # long as a stream lasts: no deadline.
                return await receive()
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow(self.body_timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    raise _BodyTooLarge(max_body_bytes)
                body_complete = not message.get("more_body", False)
            return message

        openai = speaks_openai(scope["path"])
        try:
            declared = headers.get(b"content-length", b"")
            if (
                scope["method"] in _BODY_METHODS
                and declared.isdigit()
                and int(declared) > max_body_bytes
            ):
                raise _BodyTooLarge(max_body_bytes)
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge as too_large:
            if not response_started:
                response = error_response(
                    413, "too_large", too_large.detail, "too_large", openai=openai
                )
                await response(scope, receive, send_with_id)
        except _BodyTooSlow as too_slow:
            if not response_started:
                # The rest of the body may still trickle in: the connection cannot be
                # reused, so it is closed once the answer is out.
                response = error_response(
                    408,
                    "request_timeout",
                    too_slow.detail,
                    "request_timeout",
                    headers={"Connection": "close"},
                    openai=openai,
                )
                await response(scope, receive, send_with_id)
        except Exception as error:
            log.error("unexpected error", error_type=type(error).__name__)
            if not response_started:
                response = error_response(
                    500, "internal", "internal server error", "internal", openai=openai
                )
                await response(scope, receive, send_with_id)
        finally:
            template = _route_template(scope)
            method = method_label(scope["method"])
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(elapsed)
            log.info(
                "request",
                method=method,
                route=template,
                status=status,
                user_id=scope.get("path_params", {}).get("user_id")
                or scope.get("state", {}).get("user_id"),
                duration_ms=round(elapsed * 1000, 1),
            )
            structlog.contextvars.unbind_contextvars("request_id")
