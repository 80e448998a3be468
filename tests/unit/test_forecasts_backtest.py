"""The day-ahead backtest: DST days, issue times, no look-ahead, metrics and baselines."""

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from forecasts import ForecastConfig, ForecastError, backtest, calendar_features, evaluate
from forecasts.synthetic import DemoData, demo_measurements

AMS = ZoneInfo("Europe/Amsterdam")


@pytest.fixture(scope="module")
def spring() -> DemoData:
    return demo_measurements(
        ["a"], start=datetime(2025, 1, 13, tzinfo=AMS), end=datetime(2025, 4, 7, tzinfo=AMS), seed=2
    )


@pytest.fixture(scope="module")
def autumn() -> DemoData:
    return demo_measurements(
        ["a"], start=datetime(2025, 8, 25, tzinfo=AMS), end=datetime(2025, 11, 3, tzinfo=AMS), seed=3
    )


def test_the_spring_dst_day_has_92_blocks_and_a_local_calendar(spring: DemoData) -> None:
    history = spring.base_load["a"]
    result = backtest(
        history, limit=100.0, start=datetime(2025, 3, 30, tzinfo=AMS), end=datetime(2025, 3, 31, tzinfo=AMS)
    )
    frame = result.frame
    assert len(frame) == 92
    assert result.days == 1
    assert frame.index[0] == pd.Timestamp("2025-03-29T23:00Z")  # local midnight, CET
    assert frame.index[-1] == pd.Timestamp("2025-03-30T21:45Z")  # 23:45 CEST
    assert (frame["issued_at"] == pd.Timestamp("2025-03-29T11:00Z")).all()  # 12:00 CET the day before
    calendar = calendar_features(frame.index, "Europe/Amsterdam")
    assert list(calendar["slot"]) == [*range(8), *range(12, 96)]  # 02:00-02:59 does not exist
    assert (calendar["weekday"] == 6).all()


def test_the_autumn_dst_day_has_100_blocks(autumn: DemoData) -> None:
    history = autumn.base_load["a"]
    result = backtest(
        history, limit=100.0, start=datetime(2025, 10, 26, tzinfo=AMS), end=datetime(2025, 10, 27, tzinfo=AMS)
    )
    frame = result.frame
    assert len(frame) == 100
    assert frame.index[0] == pd.Timestamp("2025-10-25T22:00Z")  # local midnight, CEST
    assert (frame["issued_at"] == pd.Timestamp("2025-10-25T10:00Z")).all()  # 12:00 CEST
    slots = calendar_features(frame.index, "Europe/Amsterdam")["slot"]
    assert list(slots) == [*range(12), *range(8, 96)]  # 02:00-02:59 twice
    assert np.isfinite(frame[["p50", "lower", "upper"]].to_numpy()).all()


def test_no_day_sees_data_after_its_issue_time(autumn: DemoData) -> None:
    history = autumn.base_load["a"]
    start, end = datetime(2025, 10, 20, tzinfo=AMS), datetime(2025, 10, 23, tzinfo=AMS)
    result = backtest(history, limit=100.0, start=start, end=end)
    first_issue = pd.Timestamp("2025-10-19T10:00Z")
    changed = history.copy()
    changed[changed.index >= first_issue] *= 3.0
    again = backtest(changed, limit=100.0, start=start, end=end)
    first_day = result.frame["issued_at"] == first_issue
    assert first_day.sum() == 96
    columns = ["p50", "lower", "upper"]
    assert np.array_equal(result.frame.loc[first_day, columns], again.frame.loc[first_day, columns])
    assert not np.array_equal(result.frame.loc[~first_day, columns], again.frame.loc[~first_day, columns])
    assert np.allclose(again.frame["actual"], 3 * result.frame["actual"])  # the actual values did change


def test_metrics_and_baselines_come_from_the_frame(autumn: DemoData) -> None:
    history = autumn.base_load["a"].copy()
    history.loc["2025-10-21T18:00Z"] = 2 * history.max()  # a new peak after the issue: static cannot know it
    calls: list[tuple[int, int]] = []
    start = datetime(2025, 10, 20, tzinfo=AMS)
    result = backtest(
        history,
        limit=autumn.limit_kw["a"],
        start=start,
        end=start + timedelta(days=3),
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    frame = result.frame
    assert list(frame.columns[:6]) == ["actual", "p50", "lower", "upper", "limit", "available"]
    assert frame["available"].to_numpy() == pytest.approx(np.maximum(0.0, frame["limit"] - frame["upper"]))
    expected = evaluate(frame["actual"], frame["p50"], frame["lower"], frame["upper"], frame["limit"], coverage=0.95)
    assert result.metrics == pytest.approx(expected)
    assert set(result.baselines) == {"last_week", "mean_weeks", "static"}
    peak = history[history.index < pd.Timestamp("2025-10-19T10:00Z")].max()
    static_handed = max(0.0, autumn.limit_kw["a"] - peak)
    free = np.maximum(0.0, autumn.limit_kw["a"] - frame["actual"]).sum()
    assert result.baselines["static"]["utilisation"] == pytest.approx(static_handed * len(frame) / free)
    assert result.model in result.choices
    assert sum(result.choices.values()) == 3
    summary = json.loads(json.dumps(result.as_dict()))
    for key in ("model", "mae", "rmae", "pinball", "coverage", "overload_rate", "utilisation", "baselines"):
        assert key in summary
    assert set(summary["baselines"]["static"]) == {"mae", "rmae", "pinball", "coverage", "overload_rate", "utilisation"}


def test_a_limit_per_block(autumn: DemoData) -> None:
    history = autumn.base_load["a"]
    limit = pd.Series(np.linspace(80, 120, len(history)), index=history.index)
    day = datetime(2025, 10, 21, tzinfo=AMS)
    frame = backtest(history, limit=limit, start=day, end=day + timedelta(days=1)).frame
    assert frame["limit"].to_numpy() == pytest.approx(limit.loc[frame.index].to_numpy())
    with pytest.raises(ForecastError, match="limit is missing for 96 backtest blocks"):
        backtest(history, limit=limit.iloc[:-2000], start=day, end=day + timedelta(days=1))


def test_the_default_is_the_last_28_days(autumn: DemoData) -> None:
    result = backtest(autumn.base_load["a"], limit=100.0)
    assert result.days == 28
    assert result.frame.index[-1] == pd.Timestamp("2025-11-02T22:45Z")  # the history ends at local midnight


def test_days_after_a_meter_outage_are_skipped_and_listed(autumn: DemoData) -> None:
    history = autumn.base_load["a"].copy()
    history.loc["2025-10-15T00:00Z":"2025-10-20T00:00Z"] = np.nan  # 5 days without data
    calls: list[tuple[int, int]] = []
    start, end = datetime(2025, 10, 19, tzinfo=AMS), datetime(2025, 10, 24, tzinfo=AMS)
    result = backtest(history, limit=100.0, start=start, end=end, progress=lambda d, t: calls.append((d, t)))
    # issued at noon the day before: the 19th still has 3.6 of its last 7 days, the 20th-23rd less than half
    assert list(result.skipped) == ["2025-10-20", "2025-10-21", "2025-10-22", "2025-10-23"]
    assert "too many gaps" in result.skipped["2025-10-20"]
    assert result.days == 1
    assert len(result.frame) == 96
    assert result.frame.index[0] == pd.Timestamp("2025-10-18T22:00Z")
    assert calls == [(i, 5) for i in range(1, 6)]
    assert json.loads(json.dumps(result.as_dict()))["skipped"]["2025-10-22"].startswith("backtest day 2025-10-22")


def test_what_cannot_be_backtested(autumn: DemoData) -> None:
    history = autumn.base_load["a"]
    with pytest.raises(ForecastError, match="does not reach the end of 2025-10-21"):
        backtest(
            history,
            limit=100.0,
            start=datetime(2025, 10, 21, tzinfo=AMS),
            end=datetime(2025, 10, 22, tzinfo=AMS),
            config=ForecastConfig(horizon_blocks=96),
        )
    with pytest.raises(ForecastError, match=r"backtest day 2025-08-28 .*too short"):
        backtest(history, limit=100.0, start=datetime(2025, 8, 28, tzinfo=AMS), end=datetime(2025, 8, 29, tzinfo=AMS))
    with pytest.raises(ForecastError, match="no whole local day"):
        backtest(
            history, limit=100.0, start=datetime(2025, 10, 21, 1, tzinfo=AMS), end=datetime(2025, 10, 22, tzinfo=AMS)
        )
    with pytest.raises(ForecastError, match="naive"):
        backtest(history, limit=100.0, start=datetime(2025, 10, 21))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ForecastError, match="timestamps must increase"):
        backtest(history.iloc[::-1], limit=100.0)
