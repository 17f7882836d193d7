"""GPS time of LAS points as calendar dates."""

from __future__ import annotations

import datetime as dt

GPS_EPOCH = dt.datetime(1980, 1, 6, tzinfo=dt.timezone.utc)
ADJUSTED_GPS_OFFSET_S = 1e9
GPS_WEEK_SECONDS = 604_800


def gps_date(adjusted_gps_time: float) -> str:
    """The UTC date of an adjusted standard GPS time (leap seconds do not change a date)."""
    moment = GPS_EPOCH + dt.timedelta(seconds=float(adjusted_gps_time) + ADJUSTED_GPS_OFFSET_S)
    return moment.date().isoformat()
