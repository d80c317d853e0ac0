"""How the page is served: at /, from files in the package, under its security policy."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from chatledger.api import create_app
from chatledger.web import STATIC
from tests.api.conftest import settings_for


@asynccontextmanager
async def client(*, dev_login: bool) -> AsyncIterator[httpx.AsyncClient]:
    # Serving the page touches no database, so the app's lifespan is not needed.
    app = create_app(settings_for("sqlite:///never-opened.db"), dev_login=dev_login)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatledger") as http:
        yield http


@pytest.mark.parametrize("dev_login", [True, False])
async def test_the_page_tells_the_truth_about_dev_sign_in(dev_login: bool) -> None:
    async with client(dev_login=dev_login) as http:
        page = await http.get("/")
        dev_token = await http.post("/auth/dev-token", json={"user_id": "alice"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    flag = "true" if dev_login else "false"
    assert f'<meta name="chatledger-dev-login" content="{flag}">' in page.text
    assert dev_token.status_code == (200 if dev_login else 404)


async def test_everything_the_page_loads_comes_from_the_package() -> None:
    page = (STATIC / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert loaded == [
        "data:,",
        "/static/style.css",
        "/static/theme.css",
        "/static/list.css",
        "/static/theme-early.js",
        "/static/app.js",
    ]
    imports = {
        name
        for module in STATIC.glob("*.js")
        for name in re.findall(r'(?:from|import) "([^"]+)"', module.read_text())
    }
    assert imports and all(re.fullmatch(r"\./\w+\.js", name) for name in imports)

    async with client(dev_login=False) as http:
        for path in ["/", *loaded[1:], *(f"/static/{name[2:]}" for name in imports)]:
            response = await http.get(path)
            assert response.status_code == 200, path
            policy = response.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            if path.endswith(".js"):
                # Browsers run a module only when it is served as JavaScript.
                assert response.headers["content-type"].startswith("text/javascript"), path
        assert (await http.get("/static/nothing.js")).status_code == 404
        assert "/" not in (await http.get("/openapi.json")).json()["paths"]
