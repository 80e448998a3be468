"""InfluxDB through its v1 HTTP API: line protocol on POST /write, InfluxQL on POST /query.

Works with InfluxDB 1.x, and with 2.x and 3.x through their v1 compatibility endpoints (the database
name is mapped to a bucket by a DBRP mapping there; CREATE DATABASE is refused, so create the
mapping yourself). Tested live against InfluxDB 1.6.7 only (Debian's `influxdb` package).
"""

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import pandas as pd
import requests

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
    from_epoch_ns,
    raw_series,
    short_reason,
    time_range,
)
from service.timeseries.influxql import ident, literal, mean_query, raw_query

ROWS_PER_QUERY = 250_000  # bounds one response (~5 MB of JSON) whatever the number of cables
MAX_CABLES_PER_QUERY = 200  # keeps the WHERE clause short
CHUNK_ROWS = 50_000  # chunked responses are not cut by the server's max-row-limit


def display_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class Influx1Store:
    """Measured load and result points in an InfluxDB database, over the v1 HTTP API."""

    name = "influx1"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        layout: LoadLayout,
        username: str = "",
        password: str = "",
        timeout_s: float = 30,
        workers: int = 2,
    ) -> None:
        if not database:
            raise TimeseriesError("influx_database is empty; name the InfluxDB database, e.g. gridcap")
        self.url = url.rstrip("/")
        self.shown_url = display_url(self.url)
        self.database = database
        self.layout = layout
        self.username = username
        self._password = password
        self.timeout = (min(10.0, timeout_s), timeout_s)  # (connect, read)
        self.workers = max(1, workers)
        self._idle: list[requests.Session] = []  # sessions (each a keep-alive pool) not in use
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "Influx1Store":
        return cls(
            settings.influx_url,
            settings.influx_database,
            layout=LoadLayout.from_settings(settings),
            username=settings.influx_username,
            password=settings.influx_password,
            timeout_s=settings.influx_timeout_s,
        )

    # --- HTTP ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[requests.Session]:
        """A session for one thread's use: read_load runs queries in parallel, and a pool of idle
        sessions (not one per thread) keeps their number at the most ever used at once."""
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is None:
            session = requests.Session()
            if self.username:
                session.auth = (self.username, self._password)  # HTTP Basic: never in a URL or a log
        try:
            yield session
        finally:
            with self._lock:
                if self._closed:
                    session.close()
                else:
                    self._idle.append(session)

    def _unavailable(self, reason: str) -> TimeseriesUnavailable:
        return TimeseriesUnavailable(
            f"InfluxDB at {self.shown_url} did not answer ({reason}); check influx_url and that influxd runs"
        )

    def _request(
        self, session: requests.Session, path: str, *, params: Mapping[str, str], data: Any, stream: bool = False
    ) -> requests.Response:
        try:
            response = session.post(f"{self.url}{path}", params=params, data=data, timeout=self.timeout, stream=stream)
        except requests.Timeout:
            raise self._unavailable(f"no answer within {self.timeout[1]:g} s (influx_timeout_s)") from None
        except requests.RequestException as exc:
            raise self._unavailable(short_reason(exc)) from None
        if response.status_code >= 300:
            try:
                self._raise_for_status(response)
            finally:
                response.close()
        return response

    @staticmethod
    def _server_message(response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        message = body.get("error") if isinstance(body, dict) else None
        if not message:
            message = response.text.strip()[:300] or response.reason or f"HTTP {response.status_code}"
        return str(message)

    def _raise_for_status(self, response: requests.Response) -> None:
        status, message = response.status_code, self._server_message(response)
        where = f"InfluxDB at {self.shown_url}"
        if status >= 500:
            raise self._unavailable(f"HTTP {status}: {message}")
        if status == 401:
            who = f"user {self.username!r}" if self.username else "requests without a user"
            raise TimeseriesRejected(
                f"{where} refused {who} ({message}); check influx_username and influx_password",
                status=status,
                detail=message,
            )
        if status == 403:
            raise TimeseriesRejected(
                f"{where}: user {self.username!r} may not do this ({message}); grant it READ/WRITE on database "
                f"{self.database!r}",
                status=status,
                detail=message,
            )
        if status == 404 and "database not found" in message:
            raise TimeseriesRejected(self._no_database(message), status=status, detail=message)
        if status == 404:
            raise TimeseriesRejected(
                f"{where} answered 404 ({message}); is it InfluxDB with the v1 API? check influx_url",
                status=status,
                detail=message,
            )
        raise TimeseriesRejected(
            f"{where} refused the request (HTTP {status}: {message})", status=status, detail=message
        )

    def _no_database(self, message: str) -> str:
        return (
            f"InfluxDB at {self.shown_url} has no database {self.database!r} ({message}); create it "
            f"(an admin runs CREATE DATABASE {ident(self.database)}) or set influx_database"
        )

    def _query(self, statement: str, *, epoch: str = "s") -> Iterator[dict[str, Any]]:
        """The series of one InfluxQL statement, streamed in chunks."""
        params = {"db": self.database, "epoch": epoch, "chunked": "true", "chunk_size": str(CHUNK_ROWS)}
        with (
            self._borrow() as session,
            self._request(session, "/query", params=params, data={"q": statement}, stream=True) as response,
        ):
            try:
                for line in response.iter_lines(chunk_size=1 << 20):  # default 512 B: quadratic on MB lines
                    if line:
                        yield from self._series(json.loads(line))
            except requests.RequestException as exc:
                raise self._unavailable(short_reason(exc)) from None
            except ValueError:
                raise TimeseriesRejected(
                    f"InfluxDB at {self.shown_url} sent an answer that is not InfluxDB JSON; check influx_url"
                ) from None

    def _series(self, body: Any) -> Iterator[dict[str, Any]]:
        if not isinstance(body, dict):
            raise ValueError("not an object")  # noqa: TRY004 - caught with json's ValueError below
        if body.get("error"):
            error = str(body["error"])
            raise TimeseriesRejected(f"InfluxDB at {self.shown_url} refused the query: {error}", detail=error)
        for result in body.get("results", []):
            error = result.get("error")
            if error:
                if str(error).startswith("database not found"):
                    raise TimeseriesRejected(self._no_database(str(error)), detail=str(error))
                raise TimeseriesRejected(f"InfluxDB at {self.shown_url} refused the query: {error}", detail=str(error))
            yield from result.get("series", [])

    def _statement(self, statement: str) -> None:
        for _ in self._query(statement):
            pass

    def _write(self, lines: Sequence[str], precision: str) -> None:
        with self._borrow() as session:
            for body in lp.batches(lines):
                params = {"db": self.database, "precision": precision}
                self._request(session, "/write", params=params, data=body.encode("utf-8")).close()

    # --- the store -----------------------------------------------------------------------------

    def ping(self) -> None:
        try:
            with self._borrow() as session:
                response = session.get(f"{self.url}/ping", timeout=self.timeout)
        except requests.Timeout:
            raise self._unavailable(f"no answer within {self.timeout[1]:g} s (influx_timeout_s)") from None
        except requests.RequestException as exc:
            raise self._unavailable(short_reason(exc)) from None
        with response:
            if response.status_code >= 300:
                self._raise_for_status(response)
            if "X-Influxdb-Version" not in response.headers:
                raise TimeseriesRejected(
                    f"{self.shown_url} answered /ping but is not InfluxDB (no X-Influxdb-Version header); "
                    "check influx_url"
                )

    def ensure_ready(self) -> None:
        try:
            self._statement(f"CREATE DATABASE {ident(self.database)}")  # a no-op when it exists
        except TimeseriesRejected as exc:
            if exc.status == 401:
                raise
            # Not an admin, or 2.x/3.x (databases come from DBRP mappings): it must exist already.
            try:
                self._statement(f"SHOW RETENTION POLICIES ON {ident(self.database)}")
            except TimeseriesRejected:
                raise TimeseriesRejected(
                    f"InfluxDB at {self.shown_url} has no database {self.database!r} and would not create it "
                    f"({exc.detail}); have an administrator run CREATE DATABASE {ident(self.database)} "
                    "(InfluxDB 2.x/3.x: create a bucket and a DBRP mapping for it), or set influx_database"
                ) from None

    def read_load(
        self, cable_ids: Sequence[str], start: datetime, end: datetime, *, highest_phase: bool = False
    ) -> pd.DataFrame:
        grid = BlockGrid.for_load(self.layout, cable_ids, start, end, highest_phase=highest_phase)
        start_s, end_s = grid.start_s, grid.end_s
        groups = grid.query_groups(self.layout, MAX_CABLES_PER_QUERY, ROWS_PER_QUERY)

        def fetch(group: list[str]) -> list[tuple[str, npt.NDArray[np.float64]]]:
            statement = mean_query(self.layout, group, start_s, end_s)
            return [(s.get("tags", {}).get(self.layout.cable_tag, ""), _pairs(s)) for s in self._query(statement)]

        # Two queries at a time: the server aggregates one while we parse the other.
        with ThreadPoolExecutor(max_workers=min(self.workers, len(groups) or 1)) as pool:
            for series in pool.map(fetch, groups):
                for cable_id, pairs in series:
                    grid.add(cable_id, pairs[:, 0], pairs[:, 1])
        return grid.frame()

    def read_raw(self, cable_id: str, start: datetime, end: datetime, *, phase: str | None = None) -> pd.Series:
        check_cable_ids([cable_id])
        start_ns, end_ns = time_range(start, end)
        tag = check_phase(self.layout, phase) or None
        times: list[npt.NDArray[np.int64]] = []
        values: list[npt.NDArray[np.float64]] = []
        for series in self._query(raw_query(self.layout, cable_id, tag, start_ns, end_ns), epoch="ns"):
            rows = series.get("values", [])
            times.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
            values.append(_floats([row[1] for row in rows]))
        all_times = np.concatenate(times) if times else np.empty(0, dtype=np.int64)
        all_values = np.concatenate(values) if values else np.empty(0, dtype=np.float64)
        return raw_series(self.layout, cable_id, tag, all_times, all_values)

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
        types = {
            row[0]: row[1]
            for series in self._query(f"SHOW FIELD KEYS FROM {ident(measurement)}")
            for row in series.get("values", [])
        }
        where = "".join(f" AND {ident(k)} = {literal(v)}" for k, v in sorted((tags or {}).items()))
        statement = (
            f"SELECT * FROM {ident(measurement)} "  # noqa: S608 - every name is quoted by ident/literal
            f"WHERE time >= {start_ns}ns AND time < {end_ns}ns{where} GROUP BY *"
        )
        points = []
        for series in self._query(statement, epoch="ns"):
            series_tags = {k: v for k, v in series.get("tags", {}).items() if v}
            columns = series["columns"]
            for row in series.get("values", []):
                fields = {
                    name: float(value) if types.get(name) == "float" else value
                    for name, value in zip(columns[1:], row[1:], strict=True)
                    if value is not None
                }
                points.append(Point(measurement, series_tags, fields, from_epoch_ns(int(row[0]))))
        points.sort(key=lambda p: (p.time, sorted(p.tags.items())))
        return points

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()


def _floats(values: list[Any]) -> npt.NDArray[np.float64]:
    try:
        return np.array(values, dtype=np.float64)  # None (no value) becomes NaN
    except (TypeError, ValueError):
        raise TimeseriesRejected(
            "the load field holds values that are not numbers; check load_measurement and load_field"
        ) from None


def _pairs(series: dict[str, Any]) -> npt.NDArray[np.float64]:
    """[[block start s, mean], ...] as an n x 2 array (epoch seconds are exact in float64)."""
    rows = series.get("values", [])
    if not rows:
        return np.empty((0, 2))
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), 2)
    except (TypeError, ValueError):
        raise TimeseriesRejected(
            "the load field holds values that are not numbers; check load_measurement and load_field"
        ) from None
