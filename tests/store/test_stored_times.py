"""How SQLite's stored time text is read back (`schema.utc_of_text`): every form the column
may hold becomes the aware UTC time it means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from chatledger.store.schema import utc_of_text


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        # As UTCDateTime writes it, the fast path.
        ("2026-12-07 16:16:52.498173", datetime(2026, 12, 7, 16, 16, 52, 498173, tzinfo=UTC)),
        # Written by plain SQL: no microseconds, a date alone, an offset (an aware datetime
        # bound by the driver), another offset.
        ("2026-12-07 16:16:52", datetime(2026, 12, 7, 16, 16, 52, tzinfo=UTC)),
        ("2000-01-01", datetime(2000, 1, 1, tzinfo=UTC)),
        ("2026-12-07 16:16:52.498173+00:00", datetime(2026, 12, 7, 16, 16, 52, 498173, tzinfo=UTC)),
        (
            "2026-12-07 18:16:52+02:00",
            datetime(2026, 12, 7, 18, 16, 52, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_every_form_of_a_stored_time_reads_as_the_utc_time_it_means(
    text: str, meant: datetime
) -> None:
    read = utc_of_text(text)
    assert read == meant and read.tzinfo is UTC
