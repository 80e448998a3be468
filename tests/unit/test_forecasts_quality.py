"""Dataset checks: check_history / check_histories count and mask what is wrong; base_load_history."""

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasts import ForecastError, base_load_history, check_histories, check_history

START = pd.Timestamp("2025-01-06T00:00Z")
Q = pd.Timedelta(minutes=15)


def grid(n: int, start: pd.Timestamp = START) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=Q)


def smooth(n: int, seed: int = 0) -> np.ndarray:
    """Feeder-like load: a daily wave with a little noise (no flat runs, no outliers)."""
    rng = np.random.default_rng(seed)
    return 100 + 20 * np.sin(np.arange(n) / 96 * 2 * np.pi) + rng.normal(0, 1, n)


def test_a_clean_regular_series_passes_unchanged() -> None:
    raw = pd.Series(smooth(500), index=grid(500))
    cleaned, report = check_history(raw)
    pd.testing.assert_series_equal(cleaned, raw, check_freq=False, check_index_type=False)
    assert (report.points, report.blocks, report.usable_blocks) == (500, 500, 500)
    assert report.gaps == report.duplicates == report.out_of_order == report.flatline_points == report.spikes == 0
    assert report.issues == ()
    assert report.first == datetime(2025, 1, 6, tzinfo=UTC)
    assert report.last == (START + 499 * Q).to_pydatetime()


def test_each_fault_is_counted_reported_and_masked() -> None:
    values = smooth(600)
    values[100] = 400.0  # spike
    values[300] = -150.0  # spike downwards
    values[200:210] = values[199]  # stuck sensor: 11 equal values (199..209)
    raw = pd.Series(values, index=grid(600))
    raw = raw.drop(raw.index[400:412])  # 12 blocks missing
    dup_equal = raw.iloc[[50]]  # same timestamp, same value: kept once
    dup_conflict = raw.iloc[[60]] + 5.0  # same timestamp, other value: dropped
    late = raw.iloc[[70, 71, 72]]  # these three arrive at the end: out of order
    raw = pd.concat([raw.drop(late.index), dup_equal, dup_conflict, late])

    cleaned, report = check_history(raw)

    assert report.points == 600 - 12 + 2
    assert (report.duplicates, report.conflicting) == (2, 1)
    assert report.out_of_order == 5  # the two repeats and the three late readings came after later ones
    assert (report.gaps, report.missing_blocks) == (1, 12)
    assert report.flatline_points == 11
    assert report.spikes == 2
    assert len(cleaned) == 600
    assert cleaned.isna().sum() == 12 + 11 + 2 + 1
    for masked in (100, 300, 60, *range(199, 210), *range(400, 412)):
        assert np.isnan(cleaned.iloc[masked]), masked
    assert cleaned.iloc[50] == pytest.approx(values[50])
    assert cleaned.iloc[70:73].to_numpy() == pytest.approx(values[70:73])  # sorted into place
    assert "12 blocks missing between 2025-01-10T04:00Z and 2025-01-10T07:00Z" in report.issues
    assert any("flat-line" in s and "11 blocks" in s for s in report.issues)
    json.dumps(report.as_dict())  # JSON-ready


def test_seven_equal_values_are_no_flatline_but_eight_are() -> None:
    values = smooth(300)
    values[100:107] = 42.0
    values[200:208] = 43.0
    _, report = check_history(pd.Series(values, index=grid(300)))
    assert report.flatline_points == 8


def test_a_step_is_not_a_spike() -> None:
    values = smooth(400)
    values[200:] += 60.0  # e.g. a switching operation moves load onto the cable
    _, report = check_history(pd.Series(values, index=grid(400)))
    assert report.spikes == 0


def test_irregular_readings_are_averaged_per_block() -> None:
    index = pd.date_range("2025-01-06T00:00:30Z", periods=60, freq="1min")  # 4 blocks of 1-minute readings
    raw = pd.Series(np.arange(60, dtype=float), index=index)
    cleaned, report = check_history(raw)
    assert list(cleaned.index) == list(grid(4))
    # block 0 holds minutes 0..14 (values 0..14), etc.
    assert cleaned.to_numpy() == pytest.approx([7.0, 22.0, 37.0, 52.0])
    assert report.points == 60
    assert report.first == datetime(2025, 1, 6, 0, 0, 30, tzinfo=UTC)


def test_local_timestamps_come_out_in_utc() -> None:
    index = pd.date_range("2025-03-30T00:00", periods=20, freq=Q, tz="Europe/Amsterdam")
    cleaned, _ = check_history(pd.Series(smooth(20), index=index))
    assert str(cleaned.index.tz) == "UTC"
    assert cleaned.index[0] == pd.Timestamp("2025-03-29T23:00Z")


def test_naive_index_is_rejected() -> None:
    raw = pd.Series([1.0, 2.0], index=pd.date_range("2025-01-06", periods=2, freq=Q))
    with pytest.raises(ForecastError, match="naive"):
        check_history(raw)


def test_non_time_index_and_text_values_are_rejected() -> None:
    with pytest.raises(ForecastError, match="DatetimeIndex"):
        check_history(pd.Series([1.0, 2.0]))
    with pytest.raises(ForecastError, match="numbers"):
        check_history(pd.Series(["a", "b"], index=grid(2)))
    with pytest.raises(ForecastError, match="Series"):
        check_history([1.0, 2.0])  # type: ignore[arg-type, unused-ignore]


def test_no_readings_gives_an_empty_series_and_says_so() -> None:
    cleaned, report = check_history(pd.Series([np.nan, np.inf], index=grid(2)))
    assert cleaned.empty
    assert str(cleaned.index.tz) == "UTC"
    assert report.points == 0
    assert report.issues == ("no measurements",)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_shuffled_and_repeated_readings_give_the_same_series(data: st.DataObject) -> None:
    n = 120
    values = smooth(n, seed=1)
    regular = pd.Series(values, index=grid(n))
    order = data.draw(st.permutations(range(n)))
    repeats = data.draw(st.lists(st.integers(0, n - 1), max_size=10))
    raw = pd.concat([regular.iloc[list(order)], regular.iloc[repeats]])
    cleaned, report = check_history(raw)
    pd.testing.assert_series_equal(cleaned, regular, check_freq=False, check_index_type=False)
    stamps = raw.index.asi8
    assert report.out_of_order == sum(stamps[i] < stamps[:i].max() for i in range(1, len(stamps)))
    assert report.duplicates == len(repeats)
    assert report.conflicting == 0


def test_check_histories_agrees_with_check_history_column_by_column() -> None:
    n = 700
    a, b, c = smooth(n, 1), smooth(n, 2), smooth(n, 3)
    a[100] = 500.0
    b[300:320] = b[299]
    c[:50] = np.nan
    c[600:610] = np.nan
    frame = pd.DataFrame({"a": a, "b": b, "c": c}, index=grid(n))
    cleaned, reports = check_histories(frame)
    for name in frame.columns:
        one, report = check_history(frame[name].dropna())
        pd.testing.assert_series_equal(
            cleaned[name].loc[one.index], one, check_freq=False, check_names=False, check_index_type=False
        )
        assert reports[name] == report, name
    assert reports["a"].spikes == 1
    assert reports["b"].flatline_points == 21
    assert reports["c"].gaps == 1


def test_check_histories_on_an_irregular_frame_checks_each_column() -> None:
    index = grid(200).append(grid(1, START + 50 * Q))  # a duplicate timestamp
    frame = pd.DataFrame({"x": np.r_[smooth(200), 3.0]}, index=index)
    cleaned, reports = check_histories(frame)
    assert reports["x"].duplicates == 1
    assert reports["x"].conflicting == 1
    assert np.isnan(cleaned["x"].iloc[50])


def test_base_load_is_measured_less_reported_ev_usage() -> None:
    measured = pd.Series([10.0, 12.0, np.nan, 14.0], index=grid(4))
    ev = pd.Series([3.0, 1.0], index=grid(2, START + Q))  # blocks 1 and 2 only
    base = base_load_history(measured, ev)
    # block 0: no usage reported -> 0 (the safe side: the base load keeps the EV load)
    assert base.to_numpy() == pytest.approx([10.0, 9.0, np.nan, 14.0], nan_ok=True)
    assert base_load_history(measured, None).to_numpy() == pytest.approx(measured.to_numpy(), nan_ok=True)


def test_ev_usage_off_the_grid_is_averaged_per_block() -> None:
    measured = pd.Series([10.0, 10.0], index=grid(2))
    ev = pd.Series(
        [1.0, 3.0, 5.0], index=pd.DatetimeIndex(["2025-01-06T00:05Z", "2025-01-06T00:10Z", "2025-01-06T00:20Z"])
    )
    assert base_load_history(measured, ev).to_numpy() == pytest.approx([8.0, 5.0])


def test_base_load_rejects_naive_usage() -> None:
    measured = pd.Series([10.0], index=grid(1))
    with pytest.raises(ForecastError, match="EV usage has naive"):
        base_load_history(measured, pd.Series([1.0], index=pd.DatetimeIndex(["2025-01-06T00:00"])))
