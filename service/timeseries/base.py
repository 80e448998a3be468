"""What every timeseries back-end shares: errors, the load layout, result points, the protocol and the
15-minute block grid the server-side aggregates are poured into."""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from service.settings import Settings

BLOCK_S = 900  # seconds in a 15-minute block
BLOCK_NS = BLOCK_S * 1_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimeseriesError(Exception):
    """Something about the timeseries store is wrong; the message says what and how to fix it."""


class TimeseriesUnavailable(TimeseriesError):
    """The server did not answer: down, unreachable, timed out or failing (5xx)."""


class TimeseriesRejected(TimeseriesError):
    """The server answered and refused: credentials, unknown database or bucket, bad query or data."""

    def __init__(self, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when there was one
        self.detail = detail or message  # the server's own words, when it gave some


@dataclass(frozen=True)
class LoadLayout:
    """Where measured cable load lives: measurement, field, tags, and the unit of the values."""

    measurement: str
    field: str
    cable_tag: str
    phase_tag: str  # "" = one series per cable
    unit: str  # "KW" | "A"

    @classmethod
    def from_settings(cls, settings: Settings) -> "LoadLayout":
        return cls(
            measurement=settings.load_measurement,
            field=settings.load_field,
            cable_tag=settings.load_cable_tag,
            phase_tag=settings.load_phase_tag,
            unit=settings.load_unit,
        )

    def __post_init__(self) -> None:
        if self.unit not in {"KW", "A"}:
            raise TimeseriesError(f"load_unit must be KW or A, got {self.unit!r}")
        for name in ("measurement", "field", "cable_tag"):
            if not getattr(self, name):
                raise TimeseriesError(f"load_{name} is empty; name the {name.replace('_', ' ')} of the load data")
        if self.phase_tag and self.phase_tag == self.cable_tag:
            raise TimeseriesError(f"load_phase_tag and load_cable_tag are both {self.cable_tag!r}; they must differ")


@dataclass(frozen=True)
class Point:
    """One point written back for monitoring (Grafana reads these later)."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, float | int | bool | str]
    time: datetime  # tz-aware


class TimeseriesStore(Protocol):
    name: str  # "embedded" | "influx1" | "influx2", for messages
    layout: LoadLayout

    def ping(self) -> None:
        """Raise TimeseriesUnavailable if the server is down."""

    def read_load(
        self, cable_ids: Sequence[str], start: datetime, end: datetime, *, highest_phase: bool = False
    ) -> pd.DataFrame:
        """15-minute means per cable, aggregated by the server; see the package docstring. With
        `highest_phase`, phases combine by their highest value whatever the unit (for cables whose
        limit holds per phase)."""

    def read_raw(self, cable_id: str, start: datetime, end: datetime, *, phase: str | None = None) -> pd.Series:
        """Raw points in [start, end), time-sorted, UTC index; see the package docstring for phases."""

    def write_load(self, cable_id: str, values: pd.Series, *, phase: str | None = None) -> int:
        """Write measured load (in layout.unit); returns the points written (NaN values are skipped)."""

    def write_points(self, points: Sequence[Point]) -> None:
        """Write result points for monitoring."""

    def read_points(
        self, measurement: str, start: datetime, end: datetime, *, tags: Mapping[str, str] | None = None
    ) -> list[Point]:
        """Result points of `measurement` in [start, end) (optionally only those with `tags`), time-sorted."""

    def ensure_ready(self) -> None:
        """Create the database / file / tables if missing, or say how to."""

    def close(self) -> None: ...


def short_reason(exc: BaseException) -> str:
    """Why a request failed, briefly: the innermost OS error ("connection refused") when there is one,
    not the client library's paragraph with the whole URL in it."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(cause))
        if match:
            return match.group(1).strip().lower()
        reason = getattr(cause, "reason", None)  # urllib3 wraps the socket error in .reason
        cause = reason if isinstance(reason, BaseException) else (cause.__cause__ or cause.__context__)
    return type(exc).__name__


# --- time ---------------------------------------------------------------------------------------


def to_utc(moment: datetime, what: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TimeseriesError(f"{what} must be a datetime with a UTC offset, got {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TimeseriesError(
            f"{what} {moment.isoformat()} has no UTC offset; give a tz-aware datetime, e.g. datetime(..., tzinfo=UTC)"
        )
    return moment.astimezone(UTC)


def epoch_ns(moment: datetime) -> int:
    """Integer nanoseconds since the epoch, exact (no float detour)."""
    delta = moment - EPOCH
    return (delta // timedelta(microseconds=1)) * 1000


def from_epoch_ns(ns: int) -> datetime:
    """A UTC datetime (microseconds: the resolution of datetime)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def time_range(start: datetime, end: datetime) -> tuple[int, int]:
    """[start, end) as epoch nanoseconds, with both ends tz-aware and start < end."""
    start_ns, end_ns = epoch_ns(to_utc(start, "start")), epoch_ns(to_utc(end, "end"))
    if start_ns >= end_ns:
        raise TimeseriesError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    return start_ns, end_ns


def block_range(start: datetime, end: datetime) -> tuple[int, int]:
    """[start, end) in epoch seconds; both must be on a quarter hour so the blocks are whole."""
    start_ns, end_ns = time_range(start, end)
    for what, moment, ns in (("start", start, start_ns), ("end", end, end_ns)):
        if ns % BLOCK_NS:
            raise TimeseriesError(
                f"{what} {moment.isoformat()} is not on a quarter hour; 15-minute blocks start at :00, :15, :30, :45"
            )
    return start_ns // 1_000_000_000, end_ns // 1_000_000_000


def series_epoch_ns(values: pd.Series, what: str) -> npt.NDArray[np.int64]:
    """The index of `values` as epoch nanoseconds; it must be tz-aware datetimes."""
    index = values.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TimeseriesError(f"{what} must be indexed by tz-aware datetimes, got a {type(index).__name__}")
    if index.tz is None:
        raise TimeseriesError(f"{what} has naive timestamps; localize them first, e.g. values.tz_localize('UTC')")
    if index.hasnans:
        raise TimeseriesError(f"{what} has missing timestamps (NaT); drop them first")
    return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)


def load_values(values: pd.Series, what: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(epoch ns, float values) of a load series, without NaN values; infinities are refused."""
    times = series_epoch_ns(values, what)
    try:
        numbers = np.asarray(values.to_numpy(dtype="float64", na_value=np.nan), dtype=np.float64)
    except (TypeError, ValueError):
        raise TimeseriesError(f"{what} must hold numbers, got dtype {values.dtype}") from None
    if np.isinf(numbers).any():
        raise TimeseriesError(f"{what} holds an infinite value; measured load must be finite")
    keep = ~np.isnan(numbers)
    return times[keep], numbers[keep]


def utc_index(times_ns: npt.NDArray[np.int64], name: str = "time") -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(times_ns, unit="ns", utc=True), name=name)


def check_cable_ids(cable_ids: Sequence[str]) -> list[str]:
    if isinstance(cable_ids, str):
        raise TimeseriesError(f"cable_ids must be a list of cable ids, got the string {cable_ids!r}")
    unique = list(dict.fromkeys(cable_ids))
    for cable_id in unique:
        if not isinstance(cable_id, str) or not cable_id:
            raise TimeseriesError(f"a cable id must be a non-empty string, got {cable_id!r}")
    return unique


def check_phase(layout: LoadLayout, phase: str | None) -> str:
    """The phase tag value to write or filter on ("" when the layout has no phases)."""
    if phase is None:
        return ""
    if not layout.phase_tag:
        raise TimeseriesError(
            f"phase {phase!r} given, but load_phase_tag is empty (one series per cable); set load_phase_tag "
            "to store per-phase load, or leave the phase out"
        )
    if not isinstance(phase, str) or not phase:
        raise TimeseriesError(f"phase must be a non-empty string such as L1, got {phase!r}")
    return phase


# --- combining phases ---------------------------------------------------------------------------


class BlockGrid:
    """A blocks x cables matrix of 15-minute values, filled series by series.

    A cell written twice (a second phase of the same cable) is combined: the highest phase when
    `highest` (the limit holds per phase), else the sum of the phases. A cell with fewer phases
    than its cable shows elsewhere is missing, not low: a phase without data is no phase without load.
    """

    def __init__(self, start_s: int, end_s: int, cable_ids: Sequence[str], *, highest: bool) -> None:
        self.start_s = start_s
        self.end_s = end_s
        self.blocks = (end_s - start_s) // BLOCK_S
        self.cable_ids = list(cable_ids)
        self.columns = {cable_id: i for i, cable_id in enumerate(self.cable_ids)}
        self.combine = np.fmax if highest else np.add
        self.values = np.full((self.blocks, len(self.cable_ids)), np.nan)
        self.series = np.zeros((self.blocks, len(self.cable_ids)), dtype=np.int16)

    def add(self, cable_id: str, block_starts_s: npt.ArrayLike, means: npt.ArrayLike) -> None:
        column = self.columns.get(cable_id)
        if column is None:  # a cable nobody asked for (e.g. a regex-like tag match); ignore it
            return
        rows = (np.asarray(block_starts_s, dtype=np.int64) - self.start_s) // BLOCK_S
        values = np.asarray(means, dtype=np.float64)
        inside = (rows >= 0) & (rows < self.blocks) & ~np.isnan(values)
        rows, values = rows[inside], values[inside]
        current = self.values[rows, column]
        empty = np.isnan(current)
        self.values[rows, column] = np.where(empty, values, self.combine(np.where(empty, 0.0, current), values))
        self.series[rows, column] += 1

    @classmethod
    def for_load(
        cls, layout: LoadLayout, cable_ids: Sequence[str], start: datetime, end: datetime, *, highest_phase: bool
    ) -> "BlockGrid":
        """The grid read_load fills: checked cable ids and range; phases combined by the highest for
        A (or when asked), by the sum for KW."""
        start_s, end_s = block_range(start, end)
        return cls(start_s, end_s, check_cable_ids(cable_ids), highest=highest_phase or layout.unit == "A")

    def query_groups(self, layout: LoadLayout, max_cables: int, max_rows: int) -> list[list[str]]:
        """The cables in groups whose answers stay under `max_rows` rows (phases count thrice)."""
        rows_per_cable = self.blocks * (3 if layout.phase_tag else 1)
        size = max(1, min(max_cables, max_rows // max(1, rows_per_cable)))
        return [self.cable_ids[i : i + size] for i in range(0, len(self.cable_ids), size)]

    def frame(self) -> pd.DataFrame:
        phases = self.series.max(axis=0, initial=0)
        values = np.where(self.series < phases, np.nan, self.values)
        index = pd.date_range(
            start=pd.Timestamp(self.start_s, unit="s", tz=UTC),
            periods=self.blocks,
            freq="15min",
            unit="ns",
            name="time",
        )
        return pd.DataFrame(values, index=index, columns=pd.Index(self.cable_ids, dtype=object, name="cable"))


def combine_phase_points(times_ns: npt.NDArray[np.int64], values: npt.NDArray[np.float64], unit: str) -> pd.Series:
    """Raw points of several phases as one series: per timestamp the highest phase (A) or the sum (KW)."""
    series = pd.Series(values, index=times_ns, dtype="float64")
    grouped = series.groupby(level=0, sort=True)
    combined = grouped.max() if unit == "A" else grouped.sum()
    return pd.Series(combined.to_numpy(), index=utc_index(np.asarray(combined.index, dtype=np.int64)), dtype="float64")


def raw_series(
    layout: LoadLayout,
    cable_id: str,
    phase: str | None,
    times_ns: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
) -> pd.Series:
    """Raw points as read_raw returns them: time-sorted, or all phases combined when none was named."""
    if layout.phase_tag and phase is None:
        return combine_phase_points(times_ns, values, layout.unit).rename(cable_id)
    order = np.argsort(times_ns, kind="stable")
    return pd.Series(values[order], index=utc_index(times_ns[order]), name=cable_id, dtype="float64")
