"""The 15-minute UTC block grid, tz checks and local calendar features.

Everything inside the package is UTC (nanosecond resolution, also in results) on a grid of
15-minute blocks (block starts are multiples of 15 minutes since the epoch). Local time appears only
in calendar features and the backtest's issue time. Offsets of real time zones are whole quarter
hours, so the local and UTC grids coincide.
"""

from collections.abc import Iterable
from datetime import date, datetime

import numpy as np
import pandas as pd

from forecasts.errors import ForecastError

BLOCK = pd.Timedelta(minutes=15)
BLOCK_NS = 15 * 60 * 1_000_000_000


def utc_index(index: pd.Index, what: str) -> pd.DatetimeIndex:
    """The index as a UTC DatetimeIndex (ns); ForecastError unless it is a tz-aware DatetimeIndex."""
    if not isinstance(index, pd.DatetimeIndex):
        raise ForecastError(f"{what} must be indexed by timestamps (a DatetimeIndex), not {type(index).__name__}")
    if index.tz is None:
        raise ForecastError(
            f"{what} has naive timestamps; say which time zone they are in, e.g. series.tz_localize('UTC') "
            "(or 'Europe/Amsterdam' for local wall-clock times)"
        )
    return index.tz_convert("UTC").as_unit("ns")


def utc_moment(moment: datetime, what: str) -> pd.Timestamp:
    """A tz-aware datetime as a UTC Timestamp (ns); ForecastError for a naive one."""
    if not isinstance(moment, datetime):
        raise ForecastError(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ForecastError(f"{what} is naive ({moment.isoformat()}); pass a tz-aware datetime, e.g. with tzinfo=UTC")
    return pd.Timestamp(moment).tz_convert("UTC").as_unit("ns")


def block_floor(moment: pd.Timestamp) -> pd.Timestamp:
    return moment.floor(BLOCK)


def on_grid(index: pd.DatetimeIndex) -> bool:
    return bool((index.asi8 % BLOCK_NS == 0).all())


def positions(index: pd.DatetimeIndex, origin: pd.Timestamp) -> np.ndarray:
    """Block numbers of grid timestamps counted from `origin` (int64)."""
    out: np.ndarray = (index.asi8 - origin.as_unit("ns").value) // BLOCK_NS
    return out


def block_range(first: pd.Timestamp, count: int) -> pd.DatetimeIndex:
    return pd.date_range(first, periods=count, freq=BLOCK, unit="ns")


def iso(moment: pd.Timestamp | datetime) -> str:
    """A UTC time for messages, e.g. 2025-03-30T01:00Z."""
    return str(pd.Timestamp(moment).tz_convert("UTC").strftime("%Y-%m-%dT%H:%MZ"))


def calendar_features(starts: pd.DatetimeIndex, tz: str, holidays: Iterable[date] = ()) -> pd.DataFrame:
    """Local calendar of block starts: `slot` (local quarter of the day, 0-95, hour * 4 + minute // 15),
    `weekday` (Monday 0), `holiday` (1 on the given local dates). On the spring DST day slots 8-11
    do not exist; on the autumn day they occur twice."""
    local = utc_index(starts, "block starts").tz_convert(tz)
    wall = local.tz_localize(None)  # local wall-clock time: the day people live by
    days = wall.normalize().to_numpy()
    holiday_days = np.array(sorted(np.datetime64(d, "ns") for d in holidays), dtype="datetime64[ns]")
    return pd.DataFrame(
        {
            "slot": (wall.hour * 4 + wall.minute // 15).to_numpy(dtype=np.int16),
            "weekday": wall.day_of_week.to_numpy(dtype=np.int16),
            "holiday": np.isin(days, holiday_days).astype(np.int16),
        },
        index=starts,
    )
