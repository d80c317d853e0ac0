"""The tokens a user's turns used."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Query

from chatledger.api.dependencies import CurrentUser, Store
from chatledger.api.openapi import AUTHENTICATED, errors
from chatledger.api.schemas import UsagePublic
from chatledger.errors import ValidationError
from chatledger.usage import check_period

router = APIRouter(tags=["usage"], responses=AUTHENTICATED)

# The period when none is asked for: the last 30 days, today included.
DEFAULT_DAYS: Final = 30
_ISO_DAY: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day(name: str, value: str) -> date:
    # Only YYYY-MM-DD: `date.fromisoformat` would also take week dates and 20260301.
    if _ISO_DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(
        f"{name} must be a date as YYYY-MM-DD, such as 2026-03-01", field=name, code="invalid_date"
    )


@router.get("/api/{user_id}/usage", response_model=UsagePublic, responses=errors(422))
async def get_usage(
    user_id: CurrentUser,
    store: Store,
    first: Annotated[
        str | None,
        Query(
            alias="from",
            description=f"The first day (UTC, YYYY-MM-DD), included; by default "
            f"{DEFAULT_DAYS - 1} days before `to`.",
        ),
    ] = None,
    last: Annotated[
        str | None,
        Query(
            alias="to", description="The last day (UTC, YYYY-MM-DD), included; by default today."
        ),
    ] = None,
) -> UsagePublic:
    """Tokens the user's turns used, in all, per day (UTC) and per conversation, from `from`
    to `to`, both included (at most 366 days; by default the last 30)."""
    last_day = datetime.now(UTC).date() if last is None else _day("to", last)
    if first is None:
        # Never before the first day a date can be (asked for `to=0001-01-05`).
        first_day = last_day - min(timedelta(days=DEFAULT_DAYS - 1), last_day - date.min)
    else:
        first_day = _day("from", first)
    first_day, last_day = check_period(first_day, last_day, names=("from", "to"))
    report = await store.token_usage(user_id, first_day=first_day, last_day=last_day)
    return UsagePublic.of(report)
