"""The chat page: plain HTML, CSS and ES modules in `static/`, served by the API; and the
API's documentation at `/docs`, Swagger UI vendored under `static/vendor/`.

No build step and nothing from a CDN: the files here are what the browser runs. The server
tells the page one thing, whether dev sign-in exists, in a meta tag of the HTML it serves
at `/`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

__all__ = ["DOCS_HEADERS", "SECURITY_HEADERS", "mount_web"]

STATIC: Final = Path(__file__).parent / "static"
_DEV_LOGIN_OFF: Final = '<meta name="chatledger-dev-login" content="false">'
_DEV_LOGIN_ON: Final = '<meta name="chatledger-dev-login" content="true">'

SECURITY_HEADERS: Final = {
    # The page loads only its own files and talks only to its own origin. It sets user and
    # model text as text, never as markup; this policy is the second line of defence.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate on every load, so a browser never runs an upgraded page with stale modules.
    "Cache-Control": "no-cache",
}


# Swagger UI sets styles inline; it runs no inline script, and reaches nothing but this
# origin (its validator is turned off in docs.js).
DOCS_HEADERS: Final = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


class _StaticFiles(StaticFiles):
    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_web(app: FastAPI, *, dev_login: bool) -> None:
    """Serve the chat page at `/` and its files under `/static/`.

    Args:
        app: the chat server.
        dev_login: whether POST /auth/dev-token exists, so the page offers dev sign-in.
    """
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if _DEV_LOGIN_OFF not in page:
        raise RuntimeError("index.html lost its chatledger-dev-login meta tag")
    if dev_login:
        page = page.replace(_DEV_LOGIN_OFF, _DEV_LOGIN_ON)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    docs = (STATIC / "docs.html").read_text(encoding="utf-8")

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(docs, headers=DOCS_HEADERS)

    app.mount("/static", _StaticFiles(directory=STATIC), name="static")
