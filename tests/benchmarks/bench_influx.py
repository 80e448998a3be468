"""read_load of 1,000 cables x 8 weeks from the real influxd, against baselines.

Seeds 1,000 cables with 8 weeks of 15-minute points (5.4 M points) into the influxd that
tests/servers/with-servers.sh starts (seeding time printed, not part of the target), then times
Influx1Store.read_load for all cables over the 8 weeks: 15-minute means computed by the server,
parsed into one blocks x cables frame. Target <= 30 s. Beside it: the server alone answering one
unbatched GROUP BY query (no parsing), a raw count(*) over the same points, read_load with one
query at a time, and the embedded SQLite store reading the same data. Prints figures; asserts only
that the answers are right. Run with `make bench` (or pytest --benchmarks under with-servers.sh).
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from service.timeseries import LoadLayout
from service.timeseries.embedded import EmbeddedStore
from service.timeseries.influx1 import Influx1Store

CABLES = 1000
WEEKS = 8
START = datetime(2026, 9, 7, tzinfo=UTC)
END = START + timedelta(weeks=WEEKS)
KW = LoadLayout("cable_load", "value", "cable", "", "KW")


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def seed(store: Influx1Store | EmbeddedStore, cables: list[str], index: pd.DatetimeIndex) -> int:
    rng = np.random.default_rng(2026)
    written = 0
    for cable_id in cables:
        written += store.write_load(cable_id, pd.Series(rng.uniform(5, 95, len(index)).round(3), index=index))
    return written


def test_read_load_of_1000_cables_over_8_weeks(influx_url: str, influx_database: str, tmp_path: Path) -> None:
    cables = [f"cable-{i:04}" for i in range(CABLES)]
    index = pd.date_range(START, END, freq="15min", inclusive="left", unit="ns")
    points = len(index) * CABLES
    store = Influx1Store(influx_url, influx_database, layout=KW, timeout_s=300)

    seed_s, written = timed(lambda: seed(store, cables, index))
    assert written == points

    read_s, frame = timed(lambda: store.read_load(cables, START, END))
    assert frame.shape == (len(index), CABLES)
    assert frame.notna().all().all()

    one_at_a_time = Influx1Store(influx_url, influx_database, layout=KW, timeout_s=300, workers=1)
    serial_s, _ = timed(lambda: one_at_a_time.read_load(cables, START, END))
    one_at_a_time.close()

    def server_only() -> int:
        statement = (
            f'SELECT mean("value") FROM "cable_load" WHERE time >= {int(START.timestamp())}s '  # noqa: S608
            f'AND time < {int(END.timestamp())}s GROUP BY time(15m), "cable" fill(none)'
        )
        response = requests.post(
            f"{influx_url}/query", params={"db": influx_database, "epoch": "s"}, data={"q": statement}, timeout=600
        )
        response.raise_for_status()
        return len(response.content)

    server_s, body_bytes = timed(server_only)

    def count_all() -> int:
        statement = f'SELECT count("value") FROM "cable_load" WHERE time >= {int(START.timestamp())}s'  # noqa: S608
        response = requests.post(
            f"{influx_url}/query", params={"db": influx_database}, data={"q": statement}, timeout=600
        )
        response.raise_for_status()
        return int(response.json()["results"][0]["series"][0]["values"][0][1])

    count_s, counted = timed(count_all)
    assert counted == points
    store.close()

    embedded = EmbeddedStore(tmp_path / "timeseries.db", layout=KW)
    embedded_seed_s, _ = timed(lambda: seed(embedded, cables, index))
    embedded_s, embedded_frame = timed(lambda: embedded.read_load(cables, START, END))
    pd.testing.assert_frame_equal(embedded_frame, frame, check_exact=False, rtol=1e-9)

    print(f"\nread_load: {CABLES} cables x {WEEKS} weeks of 15-minute points = {points:,} points (influxd 1.6.7)")
    print(f"  seeding influxd (write_load, 5,000 lines/request) : {seed_s:6.1f} s  ({points / seed_s:,.0f} points/s)")
    print(
        f"  influx1 read_load (2 queries at a time)            : {read_s:6.1f} s  ({points / read_s:,.0f} points/s)"
        f"  target <= 30 s: {'met' if read_s <= 30 else 'NOT met'}"
    )
    print(f"  influx1 read_load, one query at a time             : {serial_s:6.1f} s")
    print(
        f"  baseline: server alone, one unbatched GROUP BY     : {server_s:6.1f} s  "
        f"({body_bytes / 1e6:,.0f} MB JSON, not parsed)"
    )
    print(f"  baseline: server, raw count() over all points      : {count_s:6.1f} s")
    print(
        f"  embedded SQLite read_load of the same data         : {embedded_s:6.1f} s  (seeding {embedded_seed_s:.1f} s)"
    )
