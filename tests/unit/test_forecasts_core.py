"""forecast_core / forecast_many: input checks with clear messages, the horizon, no leakage, isolation."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from forecasts import (
    CableForecast,
    ForecastConfig,
    ForecastError,
    QualityReport,
    check_history,
    forecast_core,
    forecast_many,
)
from forecasts.synthetic import demo_measurements

Q = pd.Timedelta(minutes=15)
START = datetime(2025, 9, 1, tzinfo=UTC)
ISSUE = datetime(2025, 11, 3, 12, 7, tzinfo=UTC)  # inside the 12:00 block


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    """10 weeks of three demo cables, and more after the issue time (which must never matter)."""
    return demo_measurements(["a", "b", "c"], start=START, end=START + timedelta(weeks=11), seed=5).base_load


def test_the_horizon_starts_at_the_block_containing_the_issue_time(demo: pd.DataFrame) -> None:
    forecast = forecast_core(demo["a"], issued_at=ISSUE)
    assert forecast.issued_at == ISSUE
    assert forecast.starts[0] == pd.Timestamp("2025-11-03T12:00Z")
    assert len(forecast.starts) == 192
    assert (np.diff(forecast.starts.asi8) == Q.value).all()
    assert str(forecast.starts.tz) == "UTC"
    for values in (forecast.p50, forecast.lower, forecast.upper):
        assert values.dtype == np.float64
        assert values.shape == (192,)
        assert np.isfinite(values).all()
    assert (forecast.lower <= forecast.p50).all()
    assert (forecast.p50 <= forecast.upper).all()
    assert forecast.margin == pytest.approx(forecast.upper - forecast.p50)
    assert forecast.peak == pytest.approx(demo["a"][demo.index < pd.Timestamp("2025-11-03T12:00Z")].max())
    assert list(forecast.frame().columns) == ["p50", "lower", "upper"]
    assert forecast.frame().index.equals(forecast.starts)


def test_an_issue_time_in_another_zone_is_the_same_moment(demo: pd.DataFrame) -> None:
    local = ISSUE.astimezone(ZoneInfo("Europe/Amsterdam"))
    one = forecast_core(demo["a"], issued_at=ISSUE, model="mean_weeks")
    two = forecast_core(demo["a"], issued_at=local, model="mean_weeks")
    assert np.array_equal(one.p50, two.p50)
    assert one.starts.equals(two.starts)


def test_nothing_at_or_after_the_issue_time_is_used(demo: pd.DataFrame) -> None:
    """Change every value from the block containing the issue time on: the forecast stays the same."""
    before = forecast_core(demo["b"], issued_at=ISSUE)
    changed = demo["b"].copy()
    changed[changed.index >= pd.Timestamp("2025-11-03T12:00Z")] *= 5.0
    after = forecast_core(changed, issued_at=ISSUE)
    assert after.model == before.model
    for name in ("p50", "lower", "upper"):
        assert np.array_equal(getattr(before, name), getattr(after, name)), name
    # and the block before it is used (it ended before the issue time)
    changed.loc[pd.Timestamp("2025-11-03T11:45Z")] = 1e4
    assert forecast_core(changed, issued_at=ISSUE).peak == 1e4


def test_naive_timestamps_are_rejected(demo: pd.DataFrame) -> None:
    with pytest.raises(ForecastError, match="naive"):
        forecast_core(demo["a"], issued_at=datetime(2025, 11, 3, 12))  # noqa: DTZ001 - the point of the test
    naive = demo["a"].tz_localize(None)
    with pytest.raises(ForecastError, match="naive timestamps"):
        forecast_core(naive, issued_at=ISSUE)


def test_timestamps_that_do_not_increase_are_rejected(demo: pd.DataFrame) -> None:
    shuffled = demo["a"].iloc[::-1]
    with pytest.raises(ForecastError, match="timestamps must increase"):
        forecast_core(shuffled, issued_at=ISSUE)
    repeated = pd.concat([demo["a"].iloc[:10], demo["a"].iloc[9:]])
    with pytest.raises(ForecastError, match="timestamps must increase"):
        forecast_core(repeated, issued_at=ISSUE)


def test_timestamps_off_the_grid_are_rejected(demo: pd.DataFrame) -> None:
    shifted = demo["a"].set_axis(demo.index + pd.Timedelta(minutes=5))
    with pytest.raises(ForecastError, match="15-minute block starts"):
        forecast_core(shifted, issued_at=ISSUE)


def test_empty_short_and_missing_histories_are_rejected(demo: pd.DataFrame) -> None:
    with pytest.raises(ForecastError, match="empty"):
        forecast_core(pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float), issued_at=ISSUE)
    six_days = demo["a"].loc["2025-10-28T12:00Z":"2025-11-03T11:45Z"]
    with pytest.raises(ForecastError, match=r"too short: 6\.0 days .* at least 7"):
        forecast_core(six_days, issued_at=ISSUE)
    seven_days = demo["a"].loc["2025-10-27T12:00Z":"2025-11-03T11:45Z"]
    assert forecast_core(seven_days, issued_at=ISSUE).model == "last_week"
    with pytest.raises(ForecastError, match="no base-load values before 2025-11-03T12:07Z"):
        forecast_core(demo["a"] * np.nan, issued_at=ISSUE)
    with pytest.raises(ForecastError, match="no base-load values"):
        forecast_core(demo["a"], issued_at=START)  # nothing before the issue
    stale = demo["a"].copy()
    stale[(stale.index >= pd.Timestamp("2025-10-29T00:00Z")) & (stale.index < pd.Timestamp("2025-11-03T12:00Z"))] = (
        np.nan
    )
    with pytest.raises(ForecastError, match="too many gaps"):
        forecast_core(stale, issued_at=ISSUE)
    with pytest.raises(ForecastError, match="Series"):
        forecast_core(demo, issued_at=ISSUE)  # type: ignore[arg-type, unused-ignore]


def test_an_unknown_model_name_is_rejected(demo: pd.DataFrame) -> None:
    with pytest.raises(ForecastError, match="unknown model 'prophet'; choose one of last_week, mean_weeks, gbm"):
        forecast_core(demo["a"], issued_at=ISSUE, model="prophet")


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ForecastError, match="coverage"):
        ForecastConfig(coverage=1.2)
    with pytest.raises(ForecastError, match="horizon_blocks"):
        ForecastConfig(horizon_blocks=700)
    with pytest.raises(ForecastError, match="local_tz"):
        ForecastConfig(local_tz="Mars/Olympus")
    with pytest.raises(ForecastError, match="issue_time"):
        ForecastConfig(issue_time="12:05")
    with pytest.raises(ForecastError, match="margin_buckets"):
        ForecastConfig(margin_buckets=5)


def test_a_shorter_horizon(demo: pd.DataFrame) -> None:
    forecast = forecast_core(demo["a"], issued_at=ISSUE, config=ForecastConfig(horizon_blocks=8))
    assert len(forecast.starts) == len(forecast.p50) == 8


def test_forecast_many_isolates_a_broken_cable(demo: pd.DataFrame) -> None:
    frame = demo.copy()
    frame["dead"] = np.nan
    frame["short"] = frame["a"].where(frame.index >= pd.Timestamp("2025-10-30T00:00Z"))
    results = forecast_many(frame, issued_at=ISSUE, models={"c": "nonsense"})
    assert list(results) == ["a", "b", "c", "dead", "short"]
    assert isinstance(results["a"], CableForecast)
    assert isinstance(results["b"], CableForecast)
    assert isinstance(results["dead"], ForecastError)
    assert "no base-load values" in str(results["dead"])
    assert isinstance(results["short"], ForecastError)
    assert "too short" in str(results["short"])
    assert isinstance(results["c"], ForecastError)
    assert "unknown model 'nonsense'" in str(results["c"])


def test_forecast_many_gives_each_cable_what_forecast_core_gives_it(demo: pd.DataFrame) -> None:
    """With the model pinned to a per-cable one, vectorising changes nothing."""
    pinned = {"a": "last_week", "b": "mean_weeks", "c": "mean_weeks"}
    results = forecast_many(demo, issued_at=ISSUE, models=pinned)
    for name, model in pinned.items():
        alone = forecast_core(demo[name], issued_at=ISSUE, model=model)
        together = results[name]
        assert isinstance(together, CableForecast)
        assert together.model == model
        for field in ("p50", "lower", "upper"):
            assert np.allclose(getattr(alone, field), getattr(together, field)), (name, field)


def test_forecast_many_accepts_missing_rows_and_columns_starting_late(demo: pd.DataFrame) -> None:
    frame = demo.drop(demo.index[1000:1100])  # rows absent, not NaN
    frame["late"] = demo["a"].where(demo.index >= pd.Timestamp("2025-10-01T00:00Z"))
    results = forecast_many(frame, issued_at=ISSUE)
    assert all(isinstance(r, CableForecast) for r in results.values())
    late = results["late"]
    assert isinstance(late, CableForecast)
    assert late.quality.first == datetime(2025, 10, 1, tzinfo=UTC)


def test_the_quality_report_is_attached(demo: pd.DataFrame) -> None:
    raw = demo["a"].copy()
    raw.iloc[500:520] = np.nan
    cleaned, report = check_history(raw.dropna())
    given = forecast_core(cleaned, issued_at=ISSUE, quality=report)
    assert given.quality is report
    summary = forecast_core(cleaned, issued_at=ISSUE).quality
    assert isinstance(summary, QualityReport)
    assert (summary.gaps, summary.missing_blocks) == (1, 20)
    assert summary.last == datetime(2025, 11, 3, 11, 45, tzinfo=UTC)  # only what was used


def test_forecast_many_rejects_a_frame_it_cannot_read(demo: pd.DataFrame) -> None:
    with pytest.raises(ForecastError, match="naive"):
        forecast_many(demo.tz_localize(None), issued_at=ISSUE)
    with pytest.raises(ForecastError, match="numbers"):
        forecast_many(demo.assign(a="stuck"), issued_at=ISSUE)
    with pytest.raises(ForecastError, match="DataFrame"):
        forecast_many(demo["a"], issued_at=ISSUE)  # type: ignore[arg-type, unused-ignore]
