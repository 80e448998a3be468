"""InfluxDB line protocol, written by hand: escaping, and integer timestamps we compute ourselves.

Escaping (the rules InfluxDB 1.x and 2.x parse): measurement names escape comma and space; tag keys,
tag values and field keys escape comma, space and '='; string field values escape '"' and backslash.
A backslash anywhere else is literal, so a name whose backslash comes right before a character that
must be escaped, or at its end, has no spelling at all: we refuse it instead of writing another name.
"""

import math
import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from service.timeseries.base import (
    LoadLayout,
    Point,
    TimeseriesError,
    check_cable_ids,
    check_phase,
    epoch_ns,
    load_values,
    to_utc,
)

BATCH_LINES = 5000  # lines per write request: small enough for any server's body limit, big enough to be fast

_MEASUREMENT = re.compile(r"([, ])")
_KEY = re.compile(r"([, =])")
_FORBIDDEN = re.compile(r"[\n\r]")


def _check(value: str, what: str, special: str) -> None:
    if not isinstance(value, str) or not value:
        raise TimeseriesError(f"{what} must be a non-empty string, got {value!r}")
    if _FORBIDDEN.search(value):
        raise TimeseriesError(f"{what} {value!r} holds a line break, which InfluxDB line protocol cannot carry")
    if value.endswith("\\") or any(f"\\{c}" in value for c in special):
        shown = " or ".join(repr(c) for c in special)
        raise TimeseriesError(
            f"{what} {value!r} cannot be written to InfluxDB: a backslash before {shown} or at the end has no "
            "escape in line protocol; rename it"
        )


def measurement(name: str) -> str:
    _check(name, "measurement", ", ")
    if name.startswith("#"):
        raise TimeseriesError(f"measurement {name!r} starts with '#', which line protocol reads as a comment")
    return _MEASUREMENT.sub(r"\\\1", name)


def key(name: str, what: str = "tag or field key") -> str:
    """A tag key, tag value or field key."""
    _check(name, what, ", =")
    return _KEY.sub(r"\\\1", name)


def string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_value(value: float | int | bool | str, what: str) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return f"{int(value)}i"
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            raise TimeseriesError(f"{what} is {number}; InfluxDB stores only finite numbers, leave the field out")
        return repr(number)
    if isinstance(value, str):
        return string_field(value)
    raise TimeseriesError(f"{what} must be a float, int, bool or str, got {type(value).__name__}")


def series_key(name: str, tags: Mapping[str, str]) -> str:
    """measurement[,tag=value...] with tags sorted by key (the order InfluxDB stores them in)."""
    parts = [measurement(name)]
    for tag in sorted(tags):
        value = tags[tag]
        if value == "":  # InfluxDB drops empty tag values; say nothing about them either
            continue
        parts.append(f"{key(tag, 'tag key')}={key(value, f'tag {tag!r} value')}")
    return ",".join(parts)


def point_line(point: Point) -> str:
    """One Point as a line with a nanosecond timestamp."""
    if not point.fields:
        raise TimeseriesError(f"a point of {point.measurement!r} has no fields; InfluxDB needs at least one")
    head = series_key(point.measurement, point.tags)
    fields = ",".join(
        f"{key(name, 'field key')}={field_value(value, f'field {name!r}')}" for name, value in point.fields.items()
    )
    return f"{head} {fields} {epoch_ns(to_utc(point.time, f'time of a {point.measurement!r} point'))}"


def load_lines(
    head: str, field: str, times_ns: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> tuple[list[str], str]:
    """Lines of one load series and the precision they use ("s" when every time is a whole second)."""
    field_key = key(field, "load_field")
    if len(times_ns) and not (times_ns % 1_000_000_000).any():
        stamps, precision = (times_ns // 1_000_000_000).tolist(), "s"
    else:
        stamps, precision = times_ns.tolist(), "ns"
    lines = [f"{head} {field_key}={value!r} {stamp}" for stamp, value in zip(stamps, values.tolist(), strict=True)]
    return lines, precision


def batches(lines: Sequence[str], size: int = BATCH_LINES) -> Iterator[str]:
    for offset in range(0, len(lines), size):
        yield "\n".join(lines[offset : offset + size])


def measured_load_lines(
    layout: LoadLayout, cable_id: str, values: pd.Series, phase: str | None
) -> tuple[list[str], str]:
    """The lines (and their precision) that write a cable's measured load."""
    check_cable_ids([cable_id])
    tags = {layout.cable_tag: cable_id}
    if tag := check_phase(layout, phase):
        tags[layout.phase_tag] = tag
    times_ns, numbers = load_values(values, f"the load of cable {cable_id!r}")
    return load_lines(series_key(layout.measurement, tags), layout.field, times_ns, numbers)
