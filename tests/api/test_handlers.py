"""How the app's routes run, as FastAPI reads them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from typing import Any

from fastapi.routing import APIRoute

from chatledger.api import routes as route_modules
from chatledger.api.mcp import metadata_router
from tests.api.conftest import Server


def _calls(dependant: Any) -> Iterator[Any]:
    yield dependant.call
    for dependency in dependant.dependencies:
        yield from _calls(dependency)


def _runs_on_the_loop(call: Any) -> bool:
    # A dependency may be an object whose __call__ is a coroutine (HTTPBearer, say).
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


async def test_every_handler_and_dependency_runs_on_the_event_loop(server: Server) -> None:
    # FastAPI runs a plain function (an endpoint or a dependency) in its thread pool: a
    # thread hop on every request, and a thread started whenever the pool grows. A
    # profile of /chat under load found three such dependencies, each returning an
    # attribute of the app's state.
    routers = [
        *(
            importlib.import_module(f"{route_modules.__name__}.{module.name}").router
            for module in pkgutil.iter_modules(route_modules.__path__)
        ),
        metadata_router,
    ]
    routes = [
        route
        for route in [*server.app.routes, *(r for router in routers for r in router.routes)]
        if isinstance(route, APIRoute)
    ]
    assert set(server.app.openapi()["paths"]) <= {route.path for route in routes}
    in_threads = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', type(call).__qualname__)}"
            for route in routes
            for call in _calls(route.dependant)
            if call is not None and not _runs_on_the_loop(call)
        }
    )
    assert in_threads == []
