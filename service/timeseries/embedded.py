"""The embedded timeseries store: one SQLite file, for `make run` and small installations.

Raw load points keyed (cable, phase, time) so a point written twice replaces the first, as in
InfluxDB; 15-minute means computed in SQL. Result points keyed (measurement, sorted tags, time);
writing the same series and time again merges the fields, again as InfluxDB does. Times are
integer nanoseconds since the epoch (UTC). One connection per call, so any thread may use the store.
"""

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from service.settings import Settings
from service.timeseries.base import (
    BLOCK_NS,
    BlockGrid,
    LoadLayout,
    Point,
    TimeseriesError,
    check_cable_ids,
    check_phase,
    combine_phase_points,
    epoch_ns,
    from_epoch_ns,
    load_values,
    time_range,
    to_utc,
    utc_index,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS load (
    cable TEXT NOT NULL,
    phase TEXT NOT NULL,  -- '' when the layout has no phase tag
    time INTEGER NOT NULL,  -- ns since the epoch, UTC
    value REAL NOT NULL,
    PRIMARY KEY (cable, phase, time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,  -- JSON object, keys sorted: one text per series
    time INTEGER NOT NULL,
    fields TEXT NOT NULL,  -- JSON object
    PRIMARY KEY (measurement, tags, time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_IN_BATCH = 500  # cables per SELECT: far below SQLite's limit on bound parameters


class EmbeddedStore:
    """Measured load and result points in a local SQLite file."""

    name = "embedded"

    def __init__(self, path: str | Path, *, layout: LoadLayout) -> None:
        self.path = Path(path)
        self.layout = layout
        self._ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "EmbeddedStore":
        return cls(settings.timeseries_path, layout=LoadLayout.from_settings(settings))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.ensure_ready()
        try:
            conn = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise TimeseriesError(
                f"cannot open the timeseries file {self.path} ({exc}); check timeseries_path"
            ) from None
        try:
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, fast commits
            with conn:
                yield conn
        except sqlite3.Error as exc:
            raise TimeseriesError(f"the timeseries file {self.path} failed: {exc}") from None
        finally:
            conn.close()

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute("SELECT 1").fetchone()

    def ensure_ready(self) -> None:
        with self._lock:
            if self._ready:
                return
            try:
                if not self.path.parent.exists():
                    self.path.parent.mkdir(parents=True, mode=0o700)
                # Created 0600 before SQLite opens it (SQLite gives -wal and -shm the same mode).
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
                conn = sqlite3.connect(self.path, timeout=30)
            except (OSError, sqlite3.Error) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise TimeseriesError(
                    f"cannot create the timeseries file {self.path} ({reason}); check timeseries_path"
                ) from None
            try:
                conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
                conn.executescript(_SCHEMA)
                with conn:
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('unit', ?)", (self.layout.unit,))
                (unit,) = conn.execute("SELECT value FROM meta WHERE key = 'unit'").fetchone()
            except sqlite3.Error as exc:
                raise TimeseriesError(
                    f"{self.path} is not a usable timeseries file ({exc}); point timeseries_path at a new file"
                ) from None
            finally:
                conn.close()
            if unit != self.layout.unit:
                raise TimeseriesError(
                    f"the timeseries file {self.path} holds load in {unit}, but load_unit is {self.layout.unit}; "
                    f"set load_unit={unit} or use a new timeseries_path"
                )
            self._ready = True

    def read_load(
        self, cable_ids: Sequence[str], start: datetime, end: datetime, *, highest_phase: bool = False
    ) -> pd.DataFrame:
        grid = BlockGrid.for_load(self.layout, cable_ids, start, end, highest_phase=highest_phase)
        cables, start_s, end_s = grid.cable_ids, grid.start_s, grid.end_s
        with self._connect() as conn:
            for offset in range(0, len(cables), _IN_BATCH):
                group = cables[offset : offset + _IN_BATCH]
                rows = conn.execute(
                    f"SELECT cable, phase, time / {BLOCK_NS} AS block, avg(value) FROM load "  # noqa: S608 - placeholders only
                    f"WHERE cable IN ({','.join('?' * len(group))}) AND time >= ? AND time < ? "
                    "GROUP BY cable, phase, block ORDER BY cable, phase",
                    [*group, start_s * 1_000_000_000, end_s * 1_000_000_000],
                ).fetchall()
                if not rows:
                    continue
                frame = pd.DataFrame(rows, columns=["cable", "phase", "block", "mean"])
                for (cable, _phase), part in frame.groupby(["cable", "phase"], sort=False):
                    grid.add(str(cable), part["block"].to_numpy() * (BLOCK_NS // 1_000_000_000), part["mean"])
        return grid.frame()

    def read_raw(self, cable_id: str, start: datetime, end: datetime, *, phase: str | None = None) -> pd.Series:
        check_cable_ids([cable_id])
        start_ns, end_ns = time_range(start, end)
        tag = check_phase(self.layout, phase)
        query = "SELECT time, value FROM load WHERE cable = ? AND time >= ? AND time < ?"
        params: list[object] = [cable_id, start_ns, end_ns]
        if phase is not None:
            query += " AND phase = ?"
            params.append(tag)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY time", params).fetchall()
        times = np.array([r[0] for r in rows], dtype=np.int64)
        values = np.array([r[1] for r in rows], dtype=np.float64)
        if self.layout.phase_tag and phase is None:
            return combine_phase_points(times, values, self.layout.unit).rename(cable_id)
        return pd.Series(values, index=utc_index(times), name=cable_id, dtype="float64")

    def write_load(self, cable_id: str, values: pd.Series, *, phase: str | None = None) -> int:
        check_cable_ids([cable_id])
        tag = check_phase(self.layout, phase)
        times_ns, numbers = load_values(values, f"the load of cable {cable_id!r}")
        rows = zip([cable_id] * len(times_ns), [tag] * len(times_ns), times_ns.tolist(), numbers.tolist(), strict=True)
        with self._connect() as conn:
            conn.executemany("INSERT OR REPLACE INTO load VALUES (?, ?, ?, ?)", rows)
        return len(times_ns)

    def write_points(self, points: Sequence[Point]) -> None:
        rows = []
        for point in points:
            if not point.fields:
                raise TimeseriesError(f"a point of {point.measurement!r} has no fields; give at least one")
            tags = {k: v for k, v in sorted(point.tags.items()) if v != ""}
            moment = epoch_ns(to_utc(point.time, f"time of a {point.measurement!r} point"))
            rows.append((point.measurement, _json(tags), moment, _json(dict(point.fields))))
        with self._connect() as conn:
            # Same series and time again: new fields replace old ones, others stay (as in InfluxDB).
            conn.executemany(
                "INSERT INTO points VALUES (?, ?, ?, ?) ON CONFLICT (measurement, tags, time) "
                "DO UPDATE SET fields = json_patch(fields, excluded.fields)",
                rows,
            )

    def read_points(
        self, measurement: str, start: datetime, end: datetime, *, tags: Mapping[str, str] | None = None
    ) -> list[Point]:
        start_ns, end_ns = time_range(start, end)
        wanted = dict(tags or {})
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT tags, time, fields FROM points WHERE measurement = ? AND time >= ? AND time < ? "
                "ORDER BY time, tags",
                (measurement, start_ns, end_ns),
            ).fetchall()
        points = []
        for tag_text, moment, field_text in rows:
            series_tags = json.loads(tag_text)
            if all(series_tags.get(k) == v for k, v in wanted.items()):
                points.append(Point(measurement, series_tags, json.loads(field_text), from_epoch_ns(moment)))
        return points

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""


def _json(value: Mapping[str, object]) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise TimeseriesError(f"a point holds NaN or an infinite value ({value}); leave such fields out") from None
