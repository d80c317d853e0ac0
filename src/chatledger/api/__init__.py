"""The chat server: `create_app(settings)` builds the FastAPI application."""

from chatledger.api.app import create_app

__all__ = ["create_app"]
