"""Structured logs: one JSON object per line on stderr, with the request id bound."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str = "info") -> None:
    """Log JSON lines at `level` and above. Message content is only ever logged at debug.

    The server logs with structlog; the library (`chatledger.service`, ...) with the
    standard `logging` module, as libraries should. Both come out as the same JSON lines,
    with the request id bound.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        )
    )
    library = logging.getLogger("chatledger")
    library.handlers = [handler]
    library.setLevel(numeric)
    library.propagate = False
