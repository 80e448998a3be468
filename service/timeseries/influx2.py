"""InfluxDB 2.x (OSS or Cloud) through `influxdb-client`: Flux queries, line protocol writes, token auth.

Not for 1.x (no /api/v2 data endpoints; use influx1) nor 3.x (no Flux; use influx1 through its v1
compatibility API). Tested on recorded server responses (tests/contract/influx2), not on a live 2.x.
"""

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.flux_csv_parser import FluxCsvParserException, FluxQueryException
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from influxdb_client.service.ping_service import PingService

from service.settings import Settings
from service.timeseries import lineprotocol as lp
from service.timeseries.base import (
    BlockGrid,
    LoadLayout,
    Point,
    TimeseriesError,
    TimeseriesRejected,
    TimeseriesUnavailable,
    check_cable_ids,
    check_phase,
    epoch_ns,
    from_epoch_ns,
    raw_series,
    short_reason,
    time_range,
)
from service.timeseries.influx1 import MAX_CABLES_PER_QUERY, ROWS_PER_QUERY, display_url

_PRECISION = {"s": WritePrecision.S, "ns": WritePrecision.NS}
_PING_SERVICE: Any = PingService  # untyped generated code


def flux_string(value: str) -> str:
    """A Flux string literal: backslash, quote and the interpolation opener `${` escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


def flux_time(ns: int) -> str:
    """An RFC 3339 time literal (UTC, nanoseconds when there are any)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction:09d}Z" if fraction else f"{text}Z"


def _column(name: str) -> str:
    return f"r[{flux_string(name)}]"


def mean_flux(bucket: str, layout: LoadLayout, cable_ids: Sequence[str], start_s: int, end_s: int) -> str:
    """15-minute means per cable (and phase), computed by the server."""
    keys = [layout.cable_tag] + ([layout.phase_tag] if layout.phase_tag else [])
    cables = " or ".join(f"{_column(layout.cable_tag)} == {flux_string(c)}" for c in cable_ids)
    columns = ", ".join(flux_string(k) for k in keys)
    # group() first: one mean over all series of a cable (other tags do not split it); timeSrc
    # "_start" stamps each window with its start, as the blocks are named (the default is its stop).
    return (
        f"from(bucket: {flux_string(bucket)})\n"
        f"  |> range(start: {flux_time(start_s * 1_000_000_000)}, stop: {flux_time(end_s * 1_000_000_000)})\n"
        f"  |> filter(fn: (r) => r._measurement == {flux_string(layout.measurement)}"
        f" and r._field == {flux_string(layout.field)})\n"
        f"  |> filter(fn: (r) => {cables})\n"
        f"  |> group(columns: [{columns}])\n"
        '  |> aggregateWindow(every: 15m, fn: mean, createEmpty: false, timeSrc: "_start")\n'
        f'  |> keep(columns: ["_time", "_value", {columns}])\n'
    )


def raw_flux(bucket: str, layout: LoadLayout, cable_id: str, phase: str | None, span_ns: tuple[int, int]) -> str:
    start_ns, end_ns = span_ns
    where = f"{_column(layout.cable_tag)} == {flux_string(cable_id)}"
    if phase is not None:
        where += f" and {_column(layout.phase_tag)} == {flux_string(phase)}"
    return (
        f"from(bucket: {flux_string(bucket)})\n"
        f"  |> range(start: {flux_time(start_ns)}, stop: {flux_time(end_ns)})\n"
        f"  |> filter(fn: (r) => r._measurement == {flux_string(layout.measurement)}"
        f" and r._field == {flux_string(layout.field)})\n"
        f"  |> filter(fn: (r) => {where})\n"
        '  |> keep(columns: ["_time", "_value"])\n'
    )


def points_flux(bucket: str, measurement: str, tags: Mapping[str, str], start_ns: int, end_ns: int) -> str:
    where = "".join(f" and {_column(k)} == {flux_string(v)}" for k, v in sorted(tags.items()))
    return (
        f"from(bucket: {flux_string(bucket)})\n"
        f"  |> range(start: {flux_time(start_ns)}, stop: {flux_time(end_ns)})\n"
        f"  |> filter(fn: (r) => r._measurement == {flux_string(measurement)}{where})\n"
    )


_NOT_TAGS = {"result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement"}


class Influx2Store:
    """Measured load and result points in an InfluxDB 2 bucket, over Flux and /api/v2/write."""

    name = "influx2"

    def __init__(
        self, url: str, *, token: str, org: str, bucket: str, layout: LoadLayout, timeout_s: float = 30
    ) -> None:
        for setting, value in (("influx_token", token), ("influx_org", org), ("influx_bucket", bucket)):
            if not value:
                raise TimeseriesError(f"{setting} is empty; the influx2 back-end needs it (InfluxDB 2 API)")
        self.url = url.rstrip("/")
        self.shown_url = display_url(self.url)
        self.org = org
        self.bucket = bucket
        self.layout = layout
        self.timeout_s = timeout_s
        # Any: the client is only partly typed
        self._client: Any = InfluxDBClient(url=self.url, token=token, org=org, timeout=int(timeout_s * 1000))
        self._writer: Any = self._client.write_api(write_options=SYNCHRONOUS)
        self._reader: Any = self._client.query_api()

    @classmethod
    def from_settings(cls, settings: Settings) -> "Influx2Store":
        return cls(
            settings.influx_url,
            token=settings.influx_token,
            org=settings.influx_org,
            bucket=settings.influx_bucket,
            layout=LoadLayout.from_settings(settings),
            timeout_s=settings.influx_timeout_s,
        )

    # --- errors --------------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> TimeseriesError:  # noqa: PLR0911 - one answer per kind of failure
        where = f"InfluxDB at {self.shown_url}"
        if isinstance(exc, ApiException) and exc.status is not None:
            status = int(exc.status)
            message = str(getattr(exc, "message", None) or exc.reason or f"HTTP {status}")
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            if status >= 500:
                return self._unavailable(f"HTTP {status}: {message}")
            if status == 401:
                return TimeseriesRejected(f"{where} refused the token ({message}); check influx_token", status=status)
            if status == 403:
                return TimeseriesRejected(
                    f"{where}: the token may not do this ({message}); give it read/write access to bucket "
                    f"{self.bucket!r}",
                    status=status,
                )
            if status == 404:
                return TimeseriesRejected(
                    f"{where} found no such thing ({message}); check influx_org ({self.org!r}) and influx_bucket "
                    f"({self.bucket!r}), and create the bucket if missing: influx bucket create --name "
                    f"{self.bucket} --org {self.org}",
                    status=status,
                )
            return TimeseriesRejected(f"{where} refused the request (HTTP {status}: {message})", status=status)
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and isinstance(exc.reason, Exception):
            exc = exc.reason
        if isinstance(exc, urllib3.exceptions.NewConnectionError):  # before TimeoutError: it is one, oddly
            return self._unavailable(short_reason(exc))
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return self._unavailable(f"no answer within {self.timeout_s:g} s (influx_timeout_s)")
        if isinstance(exc, urllib3.exceptions.HTTPError):
            return self._unavailable(short_reason(exc))
        if isinstance(exc, FluxQueryException):
            return TimeseriesRejected(f"{where} refused the query: {exc.message}")
        if isinstance(exc, FluxCsvParserException | InfluxDBError):
            return TimeseriesRejected(f"{where} sent an answer the client cannot read ({exc}); check influx_url")
        return TimeseriesError(f"{where}: {exc}")

    def _unavailable(self, reason: str) -> TimeseriesUnavailable:
        return TimeseriesUnavailable(
            f"InfluxDB at {self.shown_url} did not answer ({reason}); check influx_url and that influxd runs"
        )

    def _records(self, flux: str) -> Iterator[dict[str, Any]]:
        try:
            tables = self._reader.query(flux, org=self.org)
        except (urllib3.exceptions.HTTPError, InfluxDBError, FluxQueryException, FluxCsvParserException) as exc:
            raise self._error(exc) from None
        for table in tables:
            for record in table.records:
                yield record.values

    def _write(self, lines: Sequence[str], precision: str) -> None:
        for body in lp.batches(lines):
            try:
                self._writer.write(self.bucket, self.org, record=body, write_precision=_PRECISION[precision])
            except (urllib3.exceptions.HTTPError, InfluxDBError) as exc:
                raise self._error(exc) from None

    # --- the store -----------------------------------------------------------------------------

    def ping(self) -> None:
        try:
            _PING_SERVICE(self._client.api_client).get_ping()
        except (urllib3.exceptions.HTTPError, InfluxDBError) as exc:
            raise self._error(exc) from None

    def ensure_ready(self) -> None:
        try:
            bucket = self._client.buckets_api().find_bucket_by_name(self.bucket)
        except (urllib3.exceptions.HTTPError, InfluxDBError) as exc:
            raise self._error(exc) from None
        if bucket is None:
            raise TimeseriesRejected(
                f"InfluxDB at {self.shown_url} has no bucket {self.bucket!r} the token can see; create it "
                f"(influx bucket create --name {self.bucket} --org {self.org}, or Load Data > Buckets in the UI) "
                "or set influx_bucket"
            )

    def read_load(
        self, cable_ids: Sequence[str], start: datetime, end: datetime, *, highest_phase: bool = False
    ) -> pd.DataFrame:
        grid = BlockGrid.for_load(self.layout, cable_ids, start, end, highest_phase=highest_phase)
        cable_tag, phase_tag = self.layout.cable_tag, self.layout.phase_tag
        for group in grid.query_groups(self.layout, MAX_CABLES_PER_QUERY, ROWS_PER_QUERY):
            flux = mean_flux(self.bucket, self.layout, group, grid.start_s, grid.end_s)
            series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
            for row in self._records(flux):
                if row.get("_value") is None:
                    continue
                key = (str(row.get(cable_tag)), str(row.get(phase_tag) or "") if phase_tag else "")
                times, values = series.setdefault(key, ([], []))
                times.append(epoch_ns(row["_time"]) // 1_000_000_000)
                values.append(float(row["_value"]))
            for (cable_id, _phase), (times, values) in series.items():
                grid.add(cable_id, np.array(times, dtype=np.int64), np.array(values, dtype=np.float64))
        return grid.frame()

    def read_raw(self, cable_id: str, start: datetime, end: datetime, *, phase: str | None = None) -> pd.Series:
        check_cable_ids([cable_id])
        start_ns, end_ns = time_range(start, end)
        tag = check_phase(self.layout, phase) or None
        rows = [
            (epoch_ns(row["_time"]), float(row["_value"]))
            for row in self._records(raw_flux(self.bucket, self.layout, cable_id, tag, (start_ns, end_ns)))
            if row.get("_value") is not None
        ]
        times = np.array([t for t, _ in rows], dtype=np.int64)
        values = np.array([v for _, v in rows], dtype=np.float64)
        return raw_series(self.layout, cable_id, tag, times, values)

    def write_load(self, cable_id: str, values: pd.Series, *, phase: str | None = None) -> int:
        lines, precision = lp.measured_load_lines(self.layout, cable_id, values, phase)
        self._write(lines, precision)
        return len(lines)

    def write_points(self, points: Sequence[Point]) -> None:
        self._write([lp.point_line(point) for point in points], "ns")

    def read_points(
        self, measurement: str, start: datetime, end: datetime, *, tags: Mapping[str, str] | None = None
    ) -> list[Point]:
        start_ns, end_ns = time_range(start, end)
        merged: dict[tuple[int, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
        for row in self._records(points_flux(self.bucket, measurement, tags or {}, start_ns, end_ns)):
            series_tags = tuple(
                sorted((k, str(v)) for k, v in row.items() if k not in _NOT_TAGS and v not in (None, ""))
            )
            fields = merged.setdefault((epoch_ns(row["_time"]), series_tags), {})
            fields[str(row["_field"])] = row["_value"]
        return [
            Point(measurement, dict(series_tags), fields, from_epoch_ns(ns))
            for (ns, series_tags), fields in sorted(merged.items())
        ]

    def close(self) -> None:
        self._writer.close()
        self._client.close()
