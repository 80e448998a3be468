"""The models on data whose right answer is known, the selection between them, and the band."""

import numpy as np
import pandas as pd
import pytest

import forecasts.models as fm
from forecasts import ForecastConfig, ForecastError, forecast_core, forecast_many, select_model
from forecasts.calibration import bucket_bounds, conformal_quantiles
from forecasts.config import MODELS
from forecasts.core import select_by_mae

MONDAY = pd.Timestamp("2025-01-06T00:00Z")
Q = pd.Timedelta(minutes=15)
WEEK = 672
DAY = 96


def series(values: np.ndarray, start: pd.Timestamp = MONDAY) -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq=Q))


def weekly(weeks: int, seed: int = 0) -> tuple[pd.Series, np.ndarray]:
    """A random pattern repeated exactly every week."""
    pattern = np.random.default_rng(seed).uniform(20, 80, WEEK)
    return series(np.tile(pattern, weeks)), pattern


def after(history: pd.Series) -> pd.Timestamp:
    """The issue time right after the last block of the history."""
    return history.index[-1] + Q


def test_last_week_repeats_a_weekly_pattern_exactly() -> None:
    history, pattern = weekly(3)
    forecast = forecast_core(history, issued_at=after(history), model="last_week")
    assert forecast.model == "last_week"
    assert forecast.p50 == pytest.approx(pattern[:192])
    # every residual in the calibration window is 0, so is the margin
    assert forecast.lower == pytest.approx(forecast.p50)
    assert forecast.upper == pytest.approx(forecast.p50)
    assert forecast.calibration_blocks > 0


def test_selection_keeps_the_simplest_of_equally_good_models() -> None:
    history, _ = weekly(10)
    assert select_model(history, issued_at=after(history)) == "last_week"


def test_a_more_complex_model_must_win_by_the_tolerance() -> None:
    # columns are cables; rows: MAE of last_week, mean_weeks, gbm on the calibration window
    mae = np.array(
        [
            [1.00, 1.00, 1.00, 1.00, 1.00, 1.00],
            [0.99, 0.97, 0.97, 0.97, 0.97, np.nan],
            [0.50, 0.96, 0.90, 0.90, np.nan, 0.5],
        ]
    )
    gbm_ok = np.array([False, True, True, False, True, True])
    chosen = select_by_mae(mae, gbm_ok, ForecastConfig(selection_tolerance=0.02))
    assert [MODELS[c] for c in chosen] == ["last_week", "mean_weeks", "gbm", "mean_weeks", "mean_weeks", "gbm"]


def test_mean_weeks_is_the_mean_of_the_same_slot_in_the_last_weeks() -> None:
    history, pattern = weekly(6)
    offsets = np.repeat([0.0, 0.0, 40.0, 10.0, 20.0, 30.0], WEEK)  # the last 4 weeks: +40, +10, +20, +30
    history += offsets
    forecast = forecast_core(history, issued_at=after(history), model="mean_weeks")
    assert forecast.p50 == pytest.approx(pattern[:192] + 25.0)


def test_mean_weeks_ignores_missing_values() -> None:
    history, pattern = weekly(4)
    history += np.repeat([10.0, 20.0, 30.0, 40.0], WEEK)
    values = history.to_numpy().copy()
    values[3 * WEEK : 3 * WEEK + 10] = np.nan  # the latest week's first 10 slots are missing
    forecast = forecast_core(series(values), issued_at=after(history), model="mean_weeks")
    assert forecast.p50[:10] == pytest.approx(pattern[:10] + 20.0)  # mean of 10, 20, 30
    assert forecast.p50[10:192] == pytest.approx(pattern[10:192] + 25.0)
    assert forecast.filled_blocks == 0


def test_gbm_learns_a_weekly_pattern() -> None:
    history, pattern = weekly(10)
    forecast = forecast_core(history, issued_at=after(history), model="gbm")
    assert forecast.model == "gbm"
    error = np.mean(np.abs(forecast.p50 - pattern[:192])) / pattern.mean()
    assert error < 0.02


def two_day_rhythm(weeks: int, seed: int = 0) -> tuple[pd.Series, np.ndarray]:
    """Days alternate between two shapes: the same slot 2 days earlier is the answer. A week is 7 days,
    so last week's slot (and the mean of the last 4 weeks') belongs to the other shape or a mix."""
    rng = np.random.default_rng(seed)
    two_days = rng.uniform(20, 80, 2 * DAY)
    days = weeks * 7
    return series(np.tile(two_days, days // 2 + 1)[: days * DAY]), two_days


def test_gbm_finds_a_rhythm_the_naive_models_miss_and_is_selected() -> None:
    history, two_days = two_day_rhythm(10)
    truth = np.tile(two_days, 2)[:192]  # 70 days: the next block starts the two-day cycle again
    forecast = forecast_core(history, issued_at=after(history))
    assert forecast.model == "gbm"
    assert forecast.mae["gbm"] < 0.2 * min(forecast.mae["last_week"], forecast.mae["mean_weeks"])
    assert np.mean(np.abs(forecast.p50 - truth)) / truth.mean() < 0.03


def test_one_global_gbm_serves_cables_of_any_size() -> None:
    """forecast_many trains one model on scale-free rows: a cable 10x the size of another (same rhythm)
    gets 10x its forecast, and a cable with another rhythm is learnt as well."""
    small, two_days = two_day_rhythm(10, seed=1)
    other, other_days = two_day_rhythm(10, seed=2)
    frame = pd.DataFrame({"small": small, "large": 10 * small, "other": other})
    results = forecast_many(frame, issued_at=after(small))
    forecasts = {name: results[name] for name in frame.columns}
    for name, forecast in forecasts.items():
        assert not isinstance(forecast, ForecastError)
        assert forecast.model == "gbm", name
    truth = {"small": np.tile(two_days, 2)[:192], "other": np.tile(other_days, 2)[:192]}
    for name, expected in truth.items():
        assert np.mean(np.abs(forecasts[name].p50 - expected)) / expected.mean() < 0.03, name  # type: ignore[union-attr]
    assert forecasts["large"].p50 == pytest.approx(10 * forecasts["small"].p50, rel=1e-3)  # type: ignore[union-attr]


def test_gbm_learns_only_from_before_its_calibration_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The residuals that select the model and size the band must be out of sample."""
    seen: list[tuple[int, int]] = []
    original = fm.training_rows

    def spy(panel: fm.Panel, fit_end: int, *args: object) -> tuple[np.ndarray, np.ndarray]:
        seen.append((panel.t, fit_end))
        return original(panel, fit_end, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(fm, "training_rows", spy)
    history, _ = two_day_rhythm(10)
    forecast_core(history, issued_at=after(history), model="gbm")
    assert seen == [(len(history), len(history) - 28 * DAY)]


def test_gbm_is_deterministic() -> None:
    history, _ = two_day_rhythm(9, seed=3)
    one = forecast_core(history, issued_at=after(history), model="gbm")
    two = forecast_core(history, issued_at=after(history), model="gbm")
    assert np.array_equal(one.p50, two.p50)
    assert np.array_equal(one.upper, two.upper)


def test_short_history_falls_back_to_a_naive_model() -> None:
    history, _ = two_day_rhythm(3)  # 21 days: gbm needs 7 days of training before its 28-day window
    forecast = forecast_core(history, issued_at=after(history))
    assert forecast.model in {"last_week", "mean_weeks"}
    assert "gbm" not in forecast.mae
    with pytest.raises(ForecastError, match="gbm needs 7 days"):
        forecast_core(history, issued_at=after(history), model="gbm")


def test_gappy_history_falls_back_to_a_naive_model() -> None:
    history, _ = two_day_rhythm(10)
    values = history.to_numpy().copy()
    rng = np.random.default_rng(0)
    recent = np.arange(len(values) - 6 * WEEK, len(values))
    values[rng.choice(recent, int(0.3 * len(recent)), replace=False)] = np.nan  # 30 % > max_gap_share
    gappy = series(values)
    assert select_model(gappy, issued_at=after(gappy)) != "gbm"
    relaxed = ForecastConfig(max_gap_share=0.5)
    assert select_model(gappy, issued_at=after(gappy), config=relaxed) == "gbm"


def test_a_missing_lag_is_filled_by_a_fallback_and_counted() -> None:
    history, pattern = weekly(5)
    values = history.to_numpy().copy()
    values[4 * WEEK : 4 * WEEK + 8] = np.nan  # last week's first 8 slots
    forecast = forecast_core(series(values), issued_at=after(history), model="last_week")
    assert forecast.filled_blocks == 8
    assert forecast.p50[:8] == pytest.approx(pattern[:8])  # mean_weeks had them
    assert np.isfinite(forecast.p50).all()


def noisy_weekly(cables: int, weeks: int, sigma: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    pattern = rng.uniform(50, 100, (WEEK, cables))
    values = np.tile(pattern, (weeks, 1)) + rng.normal(0.0, sigma, (weeks * WEEK, cables))
    frame = pd.DataFrame(values, index=pd.date_range(MONDAY, periods=weeks * WEEK, freq=Q))
    frame.columns = [f"c{i}" for i in range(cables)]
    return frame, pattern


@pytest.mark.parametrize("coverage", [0.95, 0.8])
def test_the_band_covers_the_nominal_share_out_of_sample(coverage: float) -> None:
    """last_week on weekly pattern + N(0, sigma) noise: residuals are N(0, 2 sigma^2), so the band is
    +-z sqrt(2) sigma, and fresh noise over the horizon falls inside it `coverage` of the time."""
    sigma, cables = 2.0, 300
    frame, pattern = noisy_weekly(cables, 6, sigma, seed=1)
    config = ForecastConfig(coverage=coverage)
    results = forecast_many(
        frame, issued_at=frame.index[-1] + Q, config=config, models=dict.fromkeys(frame, "last_week")
    )
    future = pattern[:192] + np.random.default_rng(2).normal(0.0, sigma, (192, cables))
    inside, margins = [], []
    for i, name in enumerate(frame.columns):
        forecast = results[name]
        assert not isinstance(forecast, ForecastError)
        inside.append((forecast.lower <= future[:, i]) & (future[:, i] <= forecast.upper))
        margins.append(np.mean(forecast.margin))
    z = {0.95: 1.96, 0.8: 1.2816}[coverage]
    assert np.mean(inside) == pytest.approx(coverage, abs=0.015)
    assert np.mean(margins) == pytest.approx(z * np.sqrt(2) * sigma, rel=0.06)


def test_without_enough_residuals_the_band_is_the_historical_range() -> None:
    history, _ = weekly(2)
    history = history.iloc[: 8 * DAY] * np.linspace(1.0, 1.2, 8 * DAY)  # 8 days: 1 day of residuals
    forecast = forecast_core(history, issued_at=after(history))
    assert forecast.calibration_blocks < ForecastConfig().min_calibration_blocks
    assert forecast.upper == pytest.approx(np.maximum(forecast.p50, history.max()))
    assert forecast.lower == pytest.approx(np.minimum(forecast.p50, history.min()))


def test_conformal_ranks_on_a_small_sample() -> None:
    residuals = np.arange(1.0, 20.0)[None, :]  # 19 residuals 1..19
    low, high, count = conformal_quantiles(residuals, 0.9)
    # upper: ceil(20 * 0.95) = 19th smallest; lower: the mirror rank 20 - 19 = 1st
    assert (low[0], high[0], count[0]) == (1.0, 19.0, 19)
    low, high, _ = conformal_quantiles(residuals, 0.5)
    assert (low[0], high[0]) == (5.0, 15.0)  # ceil(20 * 0.75) = 15; 20 - 15 = 5
    low, high, count = conformal_quantiles(np.array([[np.nan, 3.0, np.nan, 1.0, 2.0]]), 0.5)
    assert (low[0], high[0], count[0]) == (1.0, 3.0, 3)


def test_buckets_get_their_own_bounds_and_small_ones_the_pooled_bound() -> None:
    rng = np.random.default_rng(0)
    night, day = rng.normal(0, 1, 400), rng.normal(0, 10, 400)
    residuals = np.concatenate([night, day, [50.0] * 5])[None, :]
    buckets = np.concatenate([np.zeros(400), np.ones(400), np.full(5, 2)]).astype(int)
    low, high, count = bucket_bounds(residuals, buckets, 3, 0.95)
    assert count[0] == 805
    assert high[0, 0] == pytest.approx(1.96, abs=0.4)
    assert high[0, 1] == pytest.approx(19.6, abs=4.0)
    pooled_low, pooled_high, _ = conformal_quantiles(residuals, 0.95)
    assert (low[0, 2], high[0, 2]) == (pooled_low[0], pooled_high[0])  # 5 residuals: too few on their own
