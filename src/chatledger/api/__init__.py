"""The chat server: `create_app(settings)` builds the FastAPI application.

`create_app` is imported on first use, not with the package: the commands that need only
a part of it (`chatledger token` and `chatledger.api.auth`) would otherwise pay for
importing the whole server, the Agents SDK and ChatKit (seconds, in every process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatledger.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from chatledger.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
