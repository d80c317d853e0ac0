"""`RateLimitStore`: how many turns each user has started lately, shared by every replica.

A fixed window per user: one upsert counts a turn and says whether it is over the limit,
so replicas behind any load balancer share one count without talking to each other. At a
window's edge a user may start up to twice the limit within a short span; that is the
price of one row and one statement per turn, and the limit is a brake on abuse, not a
quota to bill by.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, case

from chatledger.errors import RateLimitedError
from chatledger.store.core import check_user_id, utcnow
from chatledger.store.engine import Connector
from chatledger.store.schema import rate_limits

__all__ = ["RateLimitStore"]

_r = rate_limits.c


class RateLimitStore:
    """Turn counts per user; reach it as `SQLAlchemyStore.rate_limits`."""

    def __init__(self, db: Connector) -> None:
        self._db = db

    async def take(self, user_id: str, *, limit: int, window: timedelta) -> None:
        """Count one turn for the user.

        Raises:
            RateLimitedError: the user has started `limit` turns in this window already;
                `retry_after` says when the next window begins. Inside a transaction,
                the refused turn's count goes with it.
        """
        user_id = check_user_id(user_id)
        now = utcnow()
        seconds = window.total_seconds()
        # Windows are aligned on the epoch, so every replica computes the same one.
        start = datetime.fromtimestamp(math.floor(now.timestamp() / seconds) * seconds, UTC)
        count = (
            self._db.upsert(rate_limits)
            .values(user_id=user_id, window_start=start, count=1)
            .on_conflict_do_update(
                index_elements=[_r.user_id],
                set_={
                    "count": case(
                        (_r.window_start == start, _r.count + 1),
                        else_=1,
                    ),
                    "window_start": start,
                },
            )
            .returning(_r.count)
        )

        def work(conn: Connection) -> int:
            return int(conn.execute(count).scalar_one())

        if await self._db.write(work) > limit:
            wait = (start + window - now).total_seconds()
            raise RateLimitedError(
                f"no more than {limit} turns every {seconds:g} seconds",
                code="rate_limited",
                retry_after=max(1.0, wait),
            )
