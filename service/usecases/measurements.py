"""Measured cable load in and out of the timeseries store as CSV (`time`, `value`).

An import validates every row before it writes anything: a file with one bad row changes
nothing, and the error names the lines and says how to fix them.
"""

import csv
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TextIO

import pandas as pd

from service.domain.errors import InvalidInput
from service.domain.model import Cable
from service.domain.units import Unit
from service.store import Repository
from service.timeseries import TimeseriesStore
from service.usecases.context import Context

MAX_ERRORS_SHOWN = 10
MAX_ABS_VALUE = 1e7  # kW or A: far beyond any low-voltage cable, so surely a unit or typing error


def conversion(
    from_unit: str, to_unit: str, cable: Cable, *, per_phase: bool = False, power_factor: float = 1.0
) -> float:
    """The factor from one of KW and A to the other on this cable, erring on the safe side: kW to A
    divides by the lowest power factor expected (more current), A to kW assumes unity (more power).
    A value of one phase (`per_phase`) converts with that phase's voltage; a total as a balanced load."""
    if from_unit == to_unit:
        return 1.0
    volts = float(cable.voltage_v) * (1 if per_phase else cable.phases)
    if from_unit == Unit.KILOWATT.value:
        return 1000 / (volts * power_factor)
    return volts / 1000


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("it has no UTC offset; write e.g. 2026-03-29T18:00+02:00 or 2026-03-29T16:00Z")
    return moment.astimezone(UTC)


def _row(row: list[str], t_col: int, v_col: int, width: int, previous: datetime | None) -> tuple[datetime, float]:
    """One row's time and value; ValueError says what is wrong with it."""
    if len(row) <= max(t_col, v_col):
        raise ValueError(f"it has {len(row)} columns, the header {width}")
    try:
        moment = _parse_time(row[t_col])
    except ValueError as exc:
        raise ValueError(f"time {row[t_col]!r}: {exc}") from None
    try:
        value = float(row[v_col])
    except ValueError:
        raise ValueError(f"value {row[v_col]!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > MAX_ABS_VALUE:
        raise ValueError(f"value {row[v_col]!r} is not a finite load below {MAX_ABS_VALUE:g}")
    if previous is not None and moment <= previous:
        what = "repeats" if moment == previous else "goes back before"
        raise ValueError(f"time {row[t_col]} {what} the previous row's; times must increase")
    return moment, value


def parse_csv(lines: Iterable[str]) -> pd.Series:
    """The values of a CSV file with columns `time` (ISO 8601 with offset) and `value`, indexed by
    UTC time. Raises InvalidInput naming every bad line (up to ten) if any is bad."""
    reader = csv.reader(lines)
    header = [h.strip().lower() for h in next(reader, [])]
    if "time" not in header or "value" not in header:
        raise InvalidInput(f"the CSV file needs a header with columns time and value, got {','.join(header) or 'none'}")
    t_col, v_col = header.index("time"), header.index("value")
    times: list[datetime] = []
    values: list[float] = []
    errors: list[str] = []
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            moment, value = _row(row, t_col, v_col, len(header), times[-1] if times else None)
        except ValueError as exc:
            errors.append(f"line {reader.line_num}: {exc}")
            continue
        times.append(moment)
        values.append(value)
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise InvalidInput(
            f"nothing was imported: {len(errors)} bad rows{more}: " + "; ".join(errors[:MAX_ERRORS_SHOWN])
        )
    if not times:
        raise InvalidInput("nothing was imported: the CSV file has no rows")
    return pd.Series(values, index=pd.DatetimeIndex(times), dtype="float64")


def import_csv(
    ctx: Context, store: TimeseriesStore, cable_id: str, unit: str, file: TextIO, *, phase: str | None = None
) -> int:
    """Validate the whole file, convert it to the store's unit and write it; returns the points written."""
    if unit not in (Unit.AMPERE.value, Unit.KILOWATT.value):
        raise InvalidInput(f"unit must be KW or A, got {unit!r}")
    with ctx.db.read() as session:
        cable = Repository(session).cable(cable_id)
    values = parse_csv(file)
    store.ensure_ready()
    factor = conversion(unit, store.layout.unit, cable, per_phase=phase is not None, power_factor=ctx.power_factor)
    return store.write_load(cable_id, values * factor, phase=phase)


def export_csv(
    ctx: Context, store: TimeseriesStore, cable_id: str, start: datetime, end: datetime, *, unit: str | None = None
) -> Iterator[str]:
    """The cable's raw measurements in [start, end) as CSV lines, in `unit` (default: the store's)."""
    if start >= end:
        raise InvalidInput(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    with ctx.db.read() as session:
        cable = Repository(session).cable(cable_id)
    factor = conversion(store.layout.unit, unit or store.layout.unit, cable, power_factor=ctx.power_factor)
    raw = store.read_raw(cable_id, start, end)
    yield "time,value\n"
    for moment, value in raw.items():
        yield f"{pd.Timestamp(moment).isoformat()},{float(value) * factor:.10g}\n"
