"""The timeseries behaviour every back-end shares, on the embedded SQLite store and on the real influxd
(InfluxDB 1.6.7 over the v1 API) that tests/servers/with-servers.sh starts.

The 15-minute means are checked against pandas' own resample of the same raw points, so the server's
aggregation (InfluxQL GROUP BY time(15m) / SQL GROUP BY) is compared with an independent computation.
"""

import time as time_module
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from conftest import free_port

from service.settings import Settings
from service.timeseries import (
    LoadLayout,
    Point,
    TimeseriesError,
    TimeseriesStore,
    TimeseriesUnavailable,
    build_timeseries,
)
from service.timeseries import embedded as embedded_module
from service.timeseries import influx1 as influx1_module
from service.timeseries.embedded import EmbeddedStore
from service.timeseries.influx1 import Influx1Store

KW = LoadLayout("cable_load", "value", "cable", "", "KW")
START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
AMSTERDAM = ZoneInfo("Europe/Amsterdam")

OpenStore = Callable[..., TimeseriesStore]


@pytest.fixture(params=["embedded", pytest.param("influx1", marks=pytest.mark.influx)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """open_store(layout=KW) -> a store on an empty database of the back-end under test."""
    opened: list[TimeseriesStore] = []

    def open_(layout: LoadLayout = KW) -> TimeseriesStore:
        store: TimeseriesStore
        if request.param == "embedded":
            store = EmbeddedStore(tmp_path / f"timeseries-{len(opened)}.db", layout=layout)
        else:
            url, database = request.getfixturevalue("influx_url"), request.getfixturevalue("influx_database")
            store = Influx1Store(url, database, layout=layout, timeout_s=30)
        store.ensure_ready()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def minutes(start: datetime, count: int, values: list[float] | np.ndarray) -> pd.Series:
    index = pd.date_range(start, periods=count, freq="1min", unit="ns")
    return pd.Series(np.asarray(values, dtype=float), index=index)


def expected_means(raw: pd.Series, start: datetime, end: datetime) -> pd.Series:
    index = pd.date_range(start, end, freq="15min", inclusive="left", unit="ns")
    return raw.resample("15min").mean().reindex(index)


def test_round_trip_means_by_the_server_with_a_full_index(open_store: OpenStore) -> None:
    store = open_store()
    rng = np.random.default_rng(7)
    a = minutes(START, 120, rng.uniform(10, 90, 120).round(3))  # two hours of minute values
    b = minutes(START + timedelta(minutes=45), 30, rng.uniform(0, 5, 30).round(3))
    assert store.write_load("a", a) == 120
    assert store.write_load("b", b) == 30
    end = START + timedelta(hours=3)

    frame = store.read_load(["a", "b", "no-data"], START, end)

    assert list(frame.columns) == ["a", "b", "no-data"]
    assert len(frame) == 12
    assert frame.index.equals(pd.date_range(START, end, freq="15min", inclusive="left", unit="ns"))
    assert str(frame.index.tz) == "UTC"
    pd.testing.assert_series_equal(frame["a"], expected_means(a, START, end), check_names=False, check_freq=False)
    pd.testing.assert_series_equal(frame["b"], expected_means(b, START, end), check_names=False, check_freq=False)
    assert frame["b"].iloc[:3].isna().all()  # blocks before b's first point
    assert frame["a"].iloc[8:].isna().all()  # blocks after a's last point
    assert frame["no-data"].isna().all()


def test_read_load_of_a_window_and_of_no_cables(open_store: OpenStore) -> None:
    store = open_store()
    store.write_load("a", minutes(START, 60, np.arange(60)))
    frame = store.read_load(["a"], START + timedelta(minutes=15), START + timedelta(minutes=45))
    assert frame["a"].tolist() == [22.0, 37.0]  # means of 15..29 and 30..44: points outside [start, end) ignored
    empty = store.read_load([], START, START + timedelta(hours=1))
    assert empty.shape == (4, 0)


def test_read_raw_gives_the_points_sorted_in_utc(open_store: OpenStore) -> None:
    store = open_store()
    values = minutes(START, 30, np.arange(30) * 1.5)
    shuffled = values.sample(frac=1, random_state=3)
    local = shuffled.copy()
    local.index = local.index.tz_convert(AMSTERDAM)  # the same instants given in local time
    store.write_load("a", local)
    raw = store.read_raw("a", START + timedelta(minutes=5), START + timedelta(minutes=10))
    assert str(raw.index.tz) == "UTC"
    assert raw.index.is_monotonic_increasing
    pd.testing.assert_series_equal(raw, values.iloc[5:10], check_names=False, check_freq=False, check_index_type=False)


def test_sub_second_times_survive(open_store: OpenStore) -> None:
    store = open_store()
    index = pd.DatetimeIndex([START + timedelta(seconds=1, microseconds=250_000), START + timedelta(seconds=2)])
    store.write_load("a", pd.Series([1.0, 2.0], index=index))
    raw = store.read_raw("a", START, START + timedelta(minutes=1))
    assert list(raw.index) == list(index)


def test_a_point_written_twice_replaces_the_first(open_store: OpenStore) -> None:
    store = open_store()
    store.write_load("a", minutes(START, 15, [1.0] * 15))
    store.write_load("a", minutes(START, 15, [3.0] * 15))
    assert store.read_raw("a", START, START + timedelta(minutes=15)).tolist() == [3.0] * 15
    assert store.read_load(["a"], START, START + timedelta(minutes=15))["a"].tolist() == [3.0]


def test_nan_values_are_skipped(open_store: OpenStore) -> None:
    store = open_store()
    assert store.write_load("a", minutes(START, 4, [1.0, np.nan, 3.0, np.nan])) == 2
    assert store.read_raw("a", START, START + timedelta(minutes=4)).tolist() == [1.0, 3.0]


@pytest.mark.parametrize(("unit", "highest", "expected"), [("A", False, 30.0), ("KW", False, 60.0), ("KW", True, 30.0)])
def test_phases_are_combined_per_block(open_store: OpenStore, unit: str, highest: bool, expected: float) -> None:
    """A (or any unit with highest_phase): the highest phase's mean, as the limit holds per phase;
    KW: the sum of the phases' means. A block missing a phase is missing: it is not a low block."""
    store = open_store(LoadLayout("cable_load", "value", "cable", "phase", unit))
    # Block 1: L1 mean 10, L2 mean 20, L3 mean 30. Block 2: L1 5, L2 7 (no L3). Block 3: L1 only.
    store.write_load("c", minutes(START, 15, [8.0, 12.0] * 7 + [10.0]), phase="L1")
    store.write_load("c", minutes(START + timedelta(minutes=15), 30, [5.0] * 30), phase="L1")
    store.write_load("c", minutes(START, 30, [20.0] * 15 + [7.0] * 15), phase="L2")
    store.write_load("c", minutes(START, 15, [25.0, 35.0] * 7 + [30.0]), phase="L3")

    frame = store.read_load(["c"], START, START + timedelta(minutes=60), highest_phase=highest)

    assert frame["c"].iloc[0] == pytest.approx(expected)
    assert frame["c"].iloc[1:].isna().all()
    # Raw: one phase, or all combined per timestamp by the unit's rule.
    assert store.read_raw("c", START, START + timedelta(minutes=2), phase="L2").tolist() == [20.0, 20.0]
    combined = store.read_raw("c", START, START + timedelta(minutes=2))
    assert combined.tolist() == ([25.0, 35.0] if unit == "A" else [53.0, 67.0])  # L1 8|12, L2 20, L3 25|35


def test_phase_arguments_must_match_the_layout(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(TimeseriesError, match="load_phase_tag is empty"):
        store.write_load("a", minutes(START, 1, [1.0]), phase="L1")


def test_many_cables_are_read_in_batches(open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(influx1_module, "ROWS_PER_QUERY", 4 * 7)  # 7 cables per query
    monkeypatch.setattr(embedded_module, "_IN_BATCH", 7)
    store = open_store()
    cables = [f"cable-{i:03}" for i in range(40)]
    for i, cable_id in enumerate(cables[:-3]):  # the last three have no data
        store.write_load(cable_id, minutes(START, 60, [float(i)] * 20 + [i + 1.0] * 40))
    frame = store.read_load(cables, START, START + timedelta(hours=1))
    assert list(frame.columns) == cables
    for i, cable_id in enumerate(cables[:-3]):
        assert frame[cable_id].tolist() == pytest.approx([i, i + 2 / 3, i + 1, i + 1])
    assert frame[cables[-3:]].isna().all().all()


SPECIAL_IDS = [
    "with space",
    "comma,here",
    "equals=sign",
    "quote's",
    'double "quoted"',
    "back\\slash",
    "all of ,= \"'\\x",
    "ünïcødé ⚡",
    "OR 'x' = 'x",
]


def test_cable_ids_with_special_characters(open_store: OpenStore) -> None:
    store = open_store()
    for i, cable_id in enumerate(SPECIAL_IDS):
        store.write_load(cable_id, minutes(START, 15, [float(i)] * 15))
    frame = store.read_load([*SPECIAL_IDS, "with"], START, START + timedelta(minutes=15))
    assert frame.iloc[0].tolist()[:-1] == [float(i) for i in range(len(SPECIAL_IDS))]
    assert np.isnan(frame["with"].iloc[0])  # no prefix matching
    for i, cable_id in enumerate(SPECIAL_IDS):
        assert store.read_raw(cable_id, START, START + timedelta(minutes=15)).tolist() == [float(i)] * 15


@pytest.mark.parametrize(
    ("day", "blocks"), [(date(2026, 10, 25), 100), (date(2026, 3, 29), 92), (date(2026, 6, 1), 96)]
)
def test_a_local_day_across_dst_reads_back_exactly(open_store: OpenStore, day: date, blocks: int) -> None:
    """Europe/Amsterdam's last Sunday of October has 25 hours, its last Sunday of March 23."""
    store = open_store()
    start = datetime.combine(day, time(), tzinfo=AMSTERDAM)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=AMSTERDAM)
    index = pd.date_range(start, end, freq="15min", inclusive="left", unit="ns")
    assert len(index) == blocks
    store.write_load("a", pd.Series(np.arange(blocks) + 0.25, index=index))
    frame = store.read_load(["a"], start, end)
    assert len(frame) == blocks
    assert frame.index[0] == pd.Timestamp(start)
    assert frame.index[-1] == pd.Timestamp(end) - pd.Timedelta("15min")
    assert frame["a"].tolist() == list(np.arange(blocks) + 0.25)


def test_naive_and_misaligned_times_are_refused(open_store: OpenStore) -> None:
    store = open_store()
    naive = datetime(2026, 11, 2)  # noqa: DTZ001 - the point of the test
    with pytest.raises(TimeseriesError, match="no UTC offset"):
        store.read_load(["a"], naive, START + timedelta(hours=1))
    with pytest.raises(TimeseriesError, match="no UTC offset"):
        store.read_raw("a", START, naive + timedelta(hours=1))
    with pytest.raises(TimeseriesError, match="naive timestamps"):
        store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([naive])))
    with pytest.raises(TimeseriesError, match="no UTC offset"):
        store.write_points([Point("gridcap_x", {}, {"v": 1.0}, naive)])
    with pytest.raises(TimeseriesError, match="not on a quarter hour"):
        store.read_load(["a"], START + timedelta(minutes=5), START + timedelta(hours=1))
    with pytest.raises(TimeseriesError, match="must be after"):
        store.read_load(["a"], START, START)
    with pytest.raises(TimeseriesError, match="tz-aware datetimes"):
        store.write_load("a", pd.Series([1.0, 2.0]))


def test_result_points_round_trip_and_merge_fields(open_store: OpenStore) -> None:
    store = open_store()
    issued = "2026-11-01T12:00:00+00:00"
    later = START + timedelta(minutes=15)
    points = [
        Point("gridcap_forecast", {"cable": "a b", "issued_at": issued}, {"p50": 10.5, "p95": 14.0}, START),
        Point("gridcap_forecast", {"cable": "a b", "issued_at": issued}, {"p50": 11.0, "p95": 15.25}, later),
        Point("gridcap_forecast", {"cable": "c", "issued_at": issued}, {"p50": 1.0, "p95": 2.0}, START),
        Point("gridcap_status", {"cable": "c"}, {"ok": True, "count": 3, "note": 'says "hi"\\', "ratio": 2.0}, START),
    ]
    store.write_points(points)
    # The same series and time again: the new field wins, the other stays (InfluxDB's merge).
    store.write_points([Point("gridcap_forecast", {"cable": "c", "issued_at": issued}, {"p50": 1.5}, START)])

    forecast = store.read_points("gridcap_forecast", START, START + timedelta(hours=1))
    assert [(p.time, dict(p.tags), dict(p.fields)) for p in forecast] == [
        (START, {"cable": "a b", "issued_at": issued}, {"p50": 10.5, "p95": 14.0}),
        (START, {"cable": "c", "issued_at": issued}, {"p50": 1.5, "p95": 2.0}),
        (later, {"cable": "a b", "issued_at": issued}, {"p50": 11.0, "p95": 15.25}),
    ]
    only_c = store.read_points("gridcap_forecast", START, START + timedelta(hours=1), tags={"cable": "c"})
    assert [dict(p.fields) for p in only_c] == [{"p50": 1.5, "p95": 2.0}]
    (status,) = store.read_points("gridcap_status", START, START + timedelta(hours=1))
    assert dict(status.fields) == {"ok": True, "count": 3, "note": 'says "hi"\\', "ratio": 2.0}
    assert type(status.fields["count"]) is int
    assert type(status.fields["ratio"]) is float
    assert status.time.tzinfo is not None


def test_ensure_ready_twice_and_ping(open_store: OpenStore) -> None:
    store = open_store()
    store.ensure_ready()
    store.ping()


@pytest.mark.parametrize("backend", ["influx1", "influx2"])
def test_a_dead_influxdb_is_unavailable_at_once(backend: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
    settings = Settings(
        timeseries_backend=backend,
        influx_url=url,
        influx_username="u",
        influx_password="pw",  # noqa: S106
        influx_token="t0ken",  # noqa: S106
        influx_org="dso",
    )
    store = build_timeseries(settings)
    for action in (
        store.ping,
        store.ensure_ready,
        lambda: store.read_load(["a"], START, START + timedelta(hours=1)),
        lambda: store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([START]))),
    ):
        started = time_module.monotonic()
        with pytest.raises(TimeseriesUnavailable) as caught:
            action()
        assert time_module.monotonic() - started < 2
        assert str(caught.value) == (
            f"InfluxDB at {url} did not answer (connection refused); check influx_url and that influxd runs"
        )
    store.close()
