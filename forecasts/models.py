"""The three base-load models, vectorised over cables.

All work on a `Panel`: the histories of some cables before one issue time, as an array
(cables x blocks) whose column `t` is the block containing the issue time, extended by the horizon
with NaN. A model only ever reads that array, so it cannot see anything measured at or after the
issue time. Every model reads only blocks at least `horizon` blocks before the one it predicts, so
its error at a block does not depend on when, within the horizon, the forecast was issued: the
residuals of the last `calibration_days` are exactly those of a rolling-origin forecast.

- `last_week`: the same UTC slot 7 x 24 h earlier (seasonal naive). Across a DST switch this is one
  local hour off for a week; UTC is kept because it is what a fixed lag means on the block grid, and
  the gbm's calendar features are local and correct it.
- `mean_weeks`: the mean of the same UTC slot in each of the last `mean_weeks` weeks, ignoring NaN.
- `gbm`: ONE global LightGBM model across cables (median / L1 objective). Targets and lag features
  are divided by each row's own scale: the mean absolute load of the 7 days ending `horizon` blocks
  before the target. That makes cables of any size (and a level that drifts with the season) look
  alike, so one model trained on a sample of 200,000 rows serves 10,000 cables; a model per cable
  would cost 10,000 trainings. Features: local slot of the day, weekday, holiday (calendar, local
  time); the same slot 2 days (the smallest whole-day lag >= the horizon), 1 and 2 weeks earlier
  (the weekly ones smoothed over +-30 min); the mean of that slot over the 7 latest known days; the
  mean level of the latest known day and of the day a week before it (weather-like persistence).
  Lags stop at 2 weeks so that 8 weeks of history leave training rows before the calibration window.
  Training uses 1 thread and fixed seeds: same input, same model, whatever the machine load.
"""

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from forecasts.config import BLOCKS_PER_DAY, BLOCKS_PER_WEEK
from forecasts.timegrid import block_range, calendar_features

SMOOTH = 2  # blocks either side for the smoothed weekly lags
PROFILE_DAYS = 7
SCALE_MIN_BLOCKS = 2 * BLOCKS_PER_DAY  # a row's scale needs two days of values in its week
FEATURES = (
    "slot",
    "weekday",
    "holiday",
    "lag_recent_day",
    "lag_week",
    "lag_week_smooth",
    "lag_2weeks_smooth",
    "profile_7days",
    "level_recent_day",
    "level_day_week_before",
)
GBM_PARAMS: dict[str, Any] = {
    "objective": "l1",  # the median: the forecast is a P50
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
GBM_ROUNDS = 60  # small trees, few rounds: prediction over 10,000 cables' calibration windows dominates


class Panel:
    """Histories of n cables before an issue: `values` (n, t), NaN where unknown; positions t.. are the horizon."""

    def __init__(self, values: np.ndarray, horizon: int, origin: pd.Timestamp, calendar: pd.DataFrame):
        """`values` (n, t) may be a view (it is copied); `calendar`: calendar_features of the t + horizon
        block starts from `origin` (shared by the chunks of one call)."""
        n, t = values.shape
        self.n, self.t, self.horizon, self.origin = n, t, horizon, origin
        self.ext = np.full((n, t + horizon), np.nan)
        self.ext[:, :t] = values
        self.slot = calendar["slot"].to_numpy()
        self.weekday = calendar["weekday"].to_numpy()
        self.holiday = calendar["holiday"].to_numpy()

    @staticmethod
    def calendar(origin: pd.Timestamp, blocks: int, tz: str, holidays: frozenset[Any]) -> pd.DataFrame:
        return calendar_features(block_range(origin, blocks), tz, holidays)

    @classmethod
    def build(
        cls, values: np.ndarray, horizon: int, origin: pd.Timestamp, tz: str, holidays: frozenset[Any]
    ) -> "Panel":
        return cls(values, horizon, origin, cls.calendar(origin, values.shape[1] + horizon, tz, holidays))

    def _cumulative(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((self.n, self.t + 1))
        np.cumsum(values, axis=1, out=out[:, 1:])
        return out

    # prefix sums for window means, made on first use (naive models never need them)
    @cached_property
    def counts(self) -> np.ndarray:
        return self._cumulative(~np.isnan(self.ext[:, : self.t]))

    @cached_property
    def sums(self) -> np.ndarray:
        return self._cumulative(np.nan_to_num(self.ext[:, : self.t], nan=0.0))

    @cached_property
    def abs_sums(self) -> np.ndarray:
        return self._cumulative(np.abs(np.nan_to_num(self.ext[:, : self.t], nan=0.0)))

    def take(self, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Values at (row, position) pairs; NaN outside the panel."""
        inside = (pos >= 0) & (pos < self.t + self.horizon)
        out: np.ndarray = self.ext[rows, np.clip(pos, 0, self.t + self.horizon - 1)]
        out[~inside] = np.nan
        return out

    def window_mean(
        self, rows: np.ndarray, end: np.ndarray, width: int, min_count: int, *, absolute: bool = False
    ) -> np.ndarray:
        """Mean over positions [end - width + 1, end] of the known history, ignoring NaN; NaN below min_count."""
        hi = np.clip(end + 1, 0, self.t)
        lo = np.clip(end + 1 - width, 0, self.t)
        sums = self.abs_sums if absolute else self.sums
        count = self.counts[rows, hi] - self.counts[rows, lo]
        total = sums[rows, hi] - sums[rows, lo]
        return np.where(count >= max(min_count, 1), total / np.maximum(count, 1), np.nan)


def pairs(rows: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, position) combination, row-major: reshape results to (len(rows), len(pos))."""
    return np.repeat(rows, len(pos)), np.tile(pos, len(rows))


def _nanmean(stack: list[np.ndarray]) -> np.ndarray:
    """Mean ignoring NaN; NaN where all are NaN (without numpy's warning)."""
    total = np.zeros_like(stack[0])
    count = np.zeros_like(stack[0])
    for values in stack:
        known = ~np.isnan(values)
        total += np.where(known, values, 0.0)
        count += known
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def last_week(panel: Panel, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return panel.take(rows, pos - BLOCKS_PER_WEEK)


def mean_weeks(panel: Panel, rows: np.ndarray, pos: np.ndarray, weeks: int) -> np.ndarray:
    return _nanmean([panel.take(rows, pos - k * BLOCKS_PER_WEEK) for k in range(1, weeks + 1)])


def slot_profile(panel: Panel, rows: np.ndarray, pos: np.ndarray, days: int) -> np.ndarray:
    """Mean of the same UTC slot over the last `days` days before the issue (the last-resort fallback)."""
    back = (pos - panel.t) // BLOCKS_PER_DAY + 1  # whole days back to the first known copy of the slot
    return _nanmean([panel.take(rows, pos - (back + k) * BLOCKS_PER_DAY) for k in range(days)])


def recent_lag(horizon: int) -> int:
    """The smallest whole-day lag (in blocks) that is known at issue time for every horizon step."""
    return -(-horizon // BLOCKS_PER_DAY) * BLOCKS_PER_DAY


def gbm_scale(panel: Panel, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Each row's normaliser: mean |load| of the week ending `horizon` blocks before the target."""
    scale = panel.window_mean(rows, pos - panel.horizon, BLOCKS_PER_WEEK, SCALE_MIN_BLOCKS, absolute=True)
    return np.where(scale > 1e-9, scale, np.nan)


def gbm_features(panel: Panel, rows: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, one row per pair, columns FEATURES) and each row's scale."""
    scale = gbm_scale(panel, rows, pos)
    lag = recent_lag(panel.horizon)
    known = pos - panel.horizon  # the latest block every feature may read
    week = BLOCKS_PER_WEEK
    smooth = 2 * SMOOTH + 1
    columns = [
        panel.slot[np.clip(pos, 0, None)],
        panel.weekday[np.clip(pos, 0, None)],
        panel.holiday[np.clip(pos, 0, None)],
        panel.take(rows, pos - lag) / scale,
        panel.take(rows, pos - week) / scale,
        panel.window_mean(rows, pos - week + SMOOTH, smooth, 1) / scale,
        panel.window_mean(rows, pos - 2 * week + SMOOTH, smooth, 1) / scale,
        _nanmean([panel.take(rows, pos - lag - k * BLOCKS_PER_DAY) for k in range(PROFILE_DAYS)]) / scale,
        panel.window_mean(rows, known, BLOCKS_PER_DAY, BLOCKS_PER_DAY // 2) / scale,
        panel.window_mean(rows, known - week, BLOCKS_PER_DAY, BLOCKS_PER_DAY // 2) / scale,
    ]
    return np.column_stack(columns).astype(np.float32), scale


@dataclass(frozen=True)
class GbmModel:
    """A fitted global model and what it was fitted on."""

    booster: lgb.Booster
    rows: int  # training rows
    cables: int  # cables that contributed rows

    def predict(self, panel: Panel, rows: np.ndarray, pos: np.ndarray, threads: int) -> np.ndarray:
        features, scale = gbm_features(panel, rows, pos)
        out = np.full(len(rows), np.nan)
        ok = ~np.isnan(scale)
        if ok.any():
            out[ok] = self.booster.predict(features[ok], num_threads=threads) * scale[ok]
        return out


def training_rows(
    panel: Panel, fit_end: int, per_cable: int, rng: np.random.Generator, cables: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_cable` random targets per listed cable from positions [0, fit_end): features, normalised target."""
    chosen_rows: list[np.ndarray] = []
    chosen_pos: list[np.ndarray] = []
    if fit_end <= 0:
        return np.empty((0, len(FEATURES)), np.float32), np.empty(0)
    span = np.arange(fit_end)
    for row in cables:
        target_known = ~np.isnan(panel.ext[row, :fit_end])
        candidates = span[target_known]
        if len(candidates) > per_cable:
            candidates = np.sort(rng.choice(candidates, per_cable, replace=False))
        chosen_rows.append(np.full(len(candidates), row))
        chosen_pos.append(candidates)
    rows, pos = np.concatenate(chosen_rows), np.concatenate(chosen_pos)
    features, scale = gbm_features(panel, rows, pos)
    target = panel.take(rows, pos) / scale
    ok = np.isfinite(target)
    return features[ok], target[ok]


def fit_gbm(features: np.ndarray, target: np.ndarray, *, seed: int, cables: int) -> GbmModel:
    params = {**GBM_PARAMS, "seed": seed}
    data = lgb.Dataset(features, target, feature_name=list(FEATURES), categorical_feature=["weekday"])
    booster = lgb.train(params, data, num_boost_round=GBM_ROUNDS)
    return GbmModel(booster, len(target), cables)


def fit_count(panel: Panel, fit_end: int) -> np.ndarray:
    """Per cable: training targets available before `fit_end` that have a scale (what gbm can learn from)."""
    if fit_end <= 0:
        return np.zeros(panel.n, dtype=np.int64)
    rows, pos = pairs(np.arange(panel.n), np.arange(fit_end))
    ok = ~np.isnan(panel.take(rows, pos)) & ~np.isnan(gbm_scale(panel, rows, pos))
    counts: np.ndarray = ok.reshape(panel.n, fit_end).sum(axis=1)
    return counts
