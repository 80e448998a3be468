"""Line protocol and InfluxQL/Flux text, the phase rules of the block grid, and choosing a back-end.

The escaping rules are also proven end to end against the real influxd in
tests/integration/test_timeseries_stores.py (cable ids with spaces, commas, quotes, '=', backslashes).
"""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.settings import Settings
from service.timeseries import LoadLayout, Point, TimeseriesError, build_timeseries
from service.timeseries import lineprotocol as lp
from service.timeseries.base import BlockGrid, epoch_ns, short_reason
from service.timeseries.embedded import EmbeddedStore
from service.timeseries.influx1 import Influx1Store, display_url
from service.timeseries.influx2 import Influx2Store, flux_string, flux_time, mean_flux
from service.timeseries.influxql import ident, literal, mean_query, raw_query

T = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "spelled"),
    [
        ("cable_load", "cable_load"),
        ("with space", "with\\ space"),
        ("a,b", "a\\,b"),
        ("a=b", "a=b"),  # '=' needs no escape in a measurement
        ('q"uote', 'q"uote'),
        ("back\\slash", "back\\slash"),  # a lone backslash is literal
    ],
)
def test_measurement_escaping(name: str, spelled: str) -> None:
    assert lp.measurement(name) == spelled


@pytest.mark.parametrize(
    ("name", "spelled"),
    [
        ("plain", "plain"),
        ("a b", "a\\ b"),
        ("a,b", "a\\,b"),
        ("a=b", "a\\=b"),
        ('it\'s "x"', 'it\'s\\ "x"'),
        ("c:\\dir", "c:\\dir"),
        ("ünï ⚡", "ünï\\ ⚡"),
    ],
)
def test_tag_and_field_key_escaping(name: str, spelled: str) -> None:
    assert lp.key(name) == spelled


@pytest.mark.parametrize("name", ["end\\", "a\\ b", "a\\,b", "a\\=b", "line\nbreak", "cr\r", ""])
def test_names_line_protocol_cannot_spell_are_refused(name: str) -> None:
    with pytest.raises(TimeseriesError):
        lp.key(name)


def test_a_measurement_cannot_look_like_a_comment() -> None:
    with pytest.raises(TimeseriesError, match="comment"):
        lp.measurement("#results")


def test_field_values_by_type() -> None:
    assert lp.field_value(True, "f") == "true"
    assert lp.field_value(False, "f") == "false"
    assert lp.field_value(3, "f") == "3i"
    assert lp.field_value(np.int64(-4), "f") == "-4i"
    assert lp.field_value(2.0, "f") == "2.0"
    assert lp.field_value(np.float64(0.1), "f") == "0.1"
    assert lp.field_value(1e-7, "f") == "1e-07"
    assert lp.field_value('say "hi" \\ bye', "f") == '"say \\"hi\\" \\\\ bye"'
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TimeseriesError, match="finite"):
            lp.field_value(bad, "f")
    with pytest.raises(TimeseriesError, match="float, int, bool or str"):
        lp.field_value(None, "f")  # type: ignore[arg-type]


def test_a_point_line_sorts_tags_drops_empty_ones_and_uses_integer_nanoseconds() -> None:
    moment = datetime(2026, 11, 2, 13, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1)))
    point = Point("gridcap forecast", {"z": "1", "cable": "a,b", "empty": ""}, {"p 50": 1.5, "n": 2}, moment)
    assert lp.point_line(point) == ("gridcap\\ forecast,cable=a\\,b,z=1 p\\ 50=1.5,n=2i 1793620800250000000")
    with pytest.raises(TimeseriesError, match="no fields"):
        lp.point_line(Point("m", {}, {}, T))


def test_load_lines_pick_seconds_when_they_can() -> None:
    head = lp.series_key("cable_load", {"cable": "a b"})
    whole = np.array([epoch_ns(T), epoch_ns(T) + 60_000_000_000], dtype=np.int64)
    lines, precision = lp.load_lines(head, "value", whole, np.array([1.0, 2.5]))
    assert precision == "s"
    assert lines == ["cable_load,cable=a\\ b value=1.0 1793620800", "cable_load,cable=a\\ b value=2.5 1793620860"]
    lines, precision = lp.load_lines(head, "value", whole + 1, np.array([1.0, 2.5]))
    assert precision == "ns"
    assert lines[0].endswith(" 1793620800000000001")


def test_batches_cut_at_the_size() -> None:
    assert [b.count("\n") + 1 for b in lp.batches([f"m v={i}" for i in range(12)], size=5)] == [5, 5, 2]


def test_epoch_ns_is_exact_far_from_the_epoch() -> None:
    moment = datetime(2262, 4, 11, 23, 47, 16, 854_775, tzinfo=UTC)
    assert epoch_ns(moment) == 9_223_372_036_854_775_000  # a float detour would be off by hundreds


@pytest.mark.parametrize(
    ("text", "ident_", "literal_"),
    [
        ("cable", '"cable"', "'cable'"),
        ('say "x"', '"say \\"x\\""', "'say \"x\"'"),
        ("it's", '"it\'s"', "'it\\'s'"),
        ("back\\slash", '"back\\\\slash"', "'back\\\\slash'"),
        ("end\\", '"end\\\\"', "'end\\\\'"),
        ("x' OR '1'='1", "\"x' OR '1'='1\"", "'x\\' OR \\'1\\'=\\'1'"),
    ],
)
def test_influxql_quoting(text: str, ident_: str, literal_: str) -> None:
    assert ident(text) == ident_
    assert literal(text) == literal_


def test_influxql_mean_query() -> None:
    layout = LoadLayout("cable load", "value", "cable", "phase", "A")
    assert mean_query(layout, ["a", "b'c"], 1_793_620_800, 1_793_624_400) == (
        'SELECT mean("value") FROM "cable load" WHERE ("cable" = \'a\' OR "cable" = \'b\\\'c\') '
        "AND time >= 1793620800s AND time < 1793624400s "
        'GROUP BY time(15m), "cable", "phase" fill(none)'
    )
    assert raw_query(layout, "a", "L1", 1, 2) == (
        'SELECT "value" FROM "cable load" WHERE "cable" = \'a\' AND "phase" = \'L1\' AND time >= 1ns AND time < 2ns'
    )


def test_flux_strings_and_times() -> None:
    assert flux_string('a "b" \\ ${x} $y') == '"a \\"b\\" \\\\ \\${x} $y"'
    assert flux_string("two\nlines") == '"two\\nlines"'
    assert flux_time(epoch_ns(T)) == "2026-11-02T12:00:00Z"
    assert flux_time(epoch_ns(T) + 5) == "2026-11-02T12:00:00.000000005Z"


def test_flux_mean_query_stamps_windows_with_their_start() -> None:
    layout = LoadLayout("cable_load", "value", "cable", "", "KW")
    flux = mean_flux("grid", layout, ["a", 'b"'], 1_793_620_800, 1_793_624_400)
    assert flux == (
        'from(bucket: "grid")\n'
        "  |> range(start: 2026-11-02T12:00:00Z, stop: 2026-11-02T13:00:00Z)\n"
        '  |> filter(fn: (r) => r._measurement == "cable_load" and r._field == "value")\n'
        '  |> filter(fn: (r) => r["cable"] == "a" or r["cable"] == "b\\"")\n'
        '  |> group(columns: ["cable"])\n'
        '  |> aggregateWindow(every: 15m, fn: mean, createEmpty: false, timeSrc: "_start")\n'
        '  |> keep(columns: ["_time", "_value", "cable"])\n'
    )


def test_the_grid_combines_phases_by_highest_or_sum_and_a_missing_phase_is_a_gap() -> None:
    start = int(T.timestamp())
    for highest, expected in ((True, [7.0, np.nan, np.nan]), (False, [12.0, np.nan, np.nan])):
        grid = BlockGrid(start, start + 3 * 900, ["c", "d"], highest=highest)
        grid.add("c", [start, start + 900], [5.0, 2.0])
        grid.add("c", [start], [7.0])  # the second phase has no value at start + 900: not a low block
        grid.add("c", [start + 900 * 5], [1.0])  # outside: ignored
        grid.add("x", [start], [1.0])  # not asked for: ignored
        frame = grid.frame()
        np.testing.assert_array_equal(frame["c"].to_numpy(), expected)
        assert frame["d"].isna().all()
        assert list(frame.index) == [pd.Timestamp(T + timedelta(minutes=15 * i)) for i in range(3)]


def test_a_cable_measured_without_phases_keeps_every_block() -> None:
    start = int(T.timestamp())
    grid = BlockGrid(start, start + 2 * 900, ["c"], highest=False)
    grid.add("c", [start, start + 900], [5.0, 2.0])
    np.testing.assert_array_equal(grid.frame()["c"].to_numpy(), [5.0, 2.0])


def test_layout_checks() -> None:
    with pytest.raises(TimeseriesError, match="KW or A"):
        LoadLayout("m", "f", "cable", "", "MW")
    with pytest.raises(TimeseriesError, match="must differ"):
        LoadLayout("m", "f", "cable", "cable", "A")
    assert LoadLayout.from_settings(Settings(load_phase_tag="phase", load_unit="A")) == LoadLayout(
        "cable_load", "value", "cable", "phase", "A"
    )


def test_build_timeseries_chooses_by_settings(tmp_path: Path) -> None:
    embedded = build_timeseries(Settings(timeseries_path=str(tmp_path / "ts.db")))
    assert isinstance(embedded, EmbeddedStore)
    assert embedded.name == "embedded"
    assert not (tmp_path / "ts.db").exists()  # nothing happens until it is used
    influx1 = build_timeseries(
        Settings(
            timeseries_backend="influx1", influx_url="http://db:8086/", influx_database="grid", influx_username="u"
        )
    )
    assert isinstance(influx1, Influx1Store)
    assert (influx1.name, influx1.url, influx1.database, influx1.username) == ("influx1", "http://db:8086", "grid", "u")
    influx2 = build_timeseries(Settings(timeseries_backend="influx2", influx_token="t", influx_org="dso"))  # noqa: S106
    assert isinstance(influx2, Influx2Store)
    assert (influx2.name, influx2.org, influx2.bucket) == ("influx2", "dso", "gridcap")
    for store in (embedded, influx1, influx2):
        store.close()
    with pytest.raises(TimeseriesError, match="influx_token is empty"):
        build_timeseries(Settings(timeseries_backend="influx2", influx_org="dso"))
    with pytest.raises(TimeseriesError, match="embedded, influx1 or influx2"):
        build_timeseries(Settings(timeseries_backend="influx9"))


def test_urls_in_messages_carry_no_credentials() -> None:
    assert display_url("http://user:secret@db.example:8086/") == "http://db.example:8086"
    assert display_url("https://db.example") == "https://db.example"


def test_short_reasons() -> None:
    wrapped = RuntimeError("HTTPConnectionPool(host='x', port=1): Max retries exceeded with url: /query?db=a")
    wrapped.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert short_reason(wrapped) == "connection refused"
    assert short_reason(RuntimeError("... [Errno -2] Name or service not known')")) == "name or service not known"
    assert short_reason(ValueError("x")) == "ValueError"
