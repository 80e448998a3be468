"""Forecasts per cable: selection, p50, the recalibrated band, and the fallbacks.

One issue time, many cables, processed in chunks of `CHUNK` cables (memory stays flat):

1. Each cable's history before the block containing `issued_at` is checked: no values, too short
   (`min_history_days`), or fewer than half the blocks of the last `min_history_days` measured is a
   ForecastError for that cable only.
2. gbm is a candidate for a cable when it has `gbm_min_fit_days` of training targets before its
   calibration window and at most `max_gap_share` missing blocks in its recent 6 weeks. One global
   model is trained on a sample of those cables' rows before the calibration window, so the
   residuals in the window are out of sample.
3. Every candidate predicts the calibration window (every `calibration_stride`-th block of the last
   `calibration_days`) and the horizon. On the window, each cable keeps the candidate with the lowest
   MAE; a more complex one must beat a simpler one by `selection_tolerance`.
4. The band is p50 + the conformal quantiles of the chosen model's residuals in the window, per local
   time-of-day bucket (see `calibration`). With fewer than `min_calibration_blocks` residuals the band
   is the historical range [min, peak] instead: no evidence, no optimism.
5. A horizon block the chosen model cannot predict (a NaN in its lags) takes mean_weeks, then the mean
   of its UTC slot over the last 28 days; `filled_blocks` counts them.

The horizon starts at the block containing `issued_at` (that block is still being measured, so the
history ends before it).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from forecasts import models as fm
from forecasts.calibration import bucket_bounds
from forecasts.config import BLOCKS_PER_DAY, BLOCKS_PER_WEEK, MODELS, ForecastConfig
from forecasts.errors import ForecastError
from forecasts.models import GbmModel, Panel, pairs
from forecasts.quality import QualityReport, summary_of
from forecasts.timegrid import BLOCK, block_floor, block_range, iso, on_grid, positions, utc_index, utc_moment

CHUNK = 512  # cables per chunk
MIN_TRAIN_ROWS = 200  # eligible cables have >= gbm_min_fit_days of rows; this only catches a degenerate sample
GBM_RECENT_WEEKS = 2  # gbm's longest lag: its recent window is the calibration window plus this
LAST_WEEK, MEAN_WEEKS, GBM = range(3)


@dataclass(frozen=True, eq=False)
class CableForecast:
    """A cable's base-load forecast over the horizon, in the unit of its history."""

    issued_at: datetime  # UTC
    model: str  # last_week | mean_weeks | gbm
    starts: pd.DatetimeIndex  # UTC block starts; the first is the block containing issued_at
    p50: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    margin: np.ndarray | float  # upper - p50
    peak: float  # the historical peak of the history used (the service's fallback)
    quality: QualityReport
    calibration_blocks: int = 0  # residuals behind the band; below min_calibration_blocks: [min, peak]
    filled_blocks: int = 0  # horizon blocks whose p50 came from a fallback model
    mae: dict[str, float] = field(default_factory=dict)  # per candidate on the calibration window

    def frame(self) -> pd.DataFrame:
        """p50, lower and upper indexed by the block starts."""
        return pd.DataFrame({"p50": self.p50, "lower": self.lower, "upper": self.upper}, index=self.starts)


@dataclass
class PanelForecast:
    """Outputs for the cables of one panel: arrays (cables, horizon) and per-cable figures."""

    chosen: np.ndarray  # codes into MODELS
    p50: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    calibrated: np.ndarray  # residual count
    filled: np.ndarray
    mae: np.ndarray  # (3, cables)
    peak: np.ndarray
    extra: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # model -> p50, lower, upper


# --- checks -----------------------------------------------------------------------------------------


def history_errors(panel: Panel, config: ForecastConfig, issue: pd.Timestamp) -> list[str | None]:
    """Per cable: why it cannot be forecast, or None."""
    valid = ~np.isnan(panel.ext[:, : panel.t])
    count = valid.sum(axis=1)
    first = np.where(count > 0, valid.argmax(axis=1), panel.t)
    span_days = (panel.t - first) / BLOCKS_PER_DAY
    recent = min(config.min_history_days * BLOCKS_PER_DAY, panel.t)
    recent_share = valid[:, panel.t - recent :].mean(axis=1) if recent > 0 else np.zeros(panel.n)
    out: list[str | None] = []
    for i in range(panel.n):
        if count[i] == 0:
            out.append(f"no base-load values before {iso(issue)}: the history is empty or all missing")
        elif span_days[i] < config.min_history_days:
            out.append(
                f"the history is too short: {span_days[i]:.1f} days before {iso(issue)}, at least "
                f"{config.min_history_days} needed (ForecastConfig.min_history_days)"
            )
        elif recent_share[i] < 0.5:
            out.append(
                f"too many gaps: only {recent_share[i]:.0%} of the {config.min_history_days} days before {iso(issue)} "
                "have a value; check the measurements (see check_history's report)"
            )
        else:
            out.append(None)
    return out


def gbm_eligible(panel: Panel, config: ForecastConfig) -> np.ndarray:
    """Cables with enough training targets before the calibration window and few recent gaps."""
    cal = config.calibration_days * BLOCKS_PER_DAY
    enough = fm.fit_count(panel, panel.t - cal) >= config.gbm_min_fit_days * BLOCKS_PER_DAY
    recent = min(cal + GBM_RECENT_WEEKS * BLOCKS_PER_WEEK, panel.t)
    missing = np.isnan(panel.ext[:, panel.t - recent : panel.t]).mean(axis=1) if recent else np.ones(panel.n)
    return np.asarray(enough & (missing <= config.max_gap_share))


# --- one panel ------------------------------------------------------------------------------------


def select_by_mae(mae: np.ndarray, gbm_ok: np.ndarray, config: ForecastConfig) -> np.ndarray:
    """Per cable: the simplest model unless a more complex one is better by the tolerance (NaN: no
    evidence, never better)."""
    keep = 1.0 - config.selection_tolerance
    rows = np.arange(mae.shape[1])
    best = np.where(mae[MEAN_WEEKS] < mae[LAST_WEEK] * keep, MEAN_WEEKS, LAST_WEEK)
    return np.where(gbm_ok & (mae[GBM] < mae[best, rows] * keep), GBM, best)


def _band(
    panel: Panel,
    config: ForecastConfig,
    *,
    predicted: np.ndarray,
    actual: np.ndarray,
    cal_pos: np.ndarray,
    fallback: np.ndarray,
    extremes: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """p50, lower, upper (cables, horizon), residual count and filled count from one model's predictions
    over [calibration positions..., horizon...]."""
    m = len(cal_pos)
    p50 = predicted[:, m:].copy()
    missing = np.isnan(p50)
    p50 = np.where(missing, fallback, p50)
    per_bucket = BLOCKS_PER_DAY // config.margin_buckets
    low, high, count = bucket_bounds(
        actual - predicted[:, :m], panel.slot[cal_pos] // per_bucket, config.margin_buckets, config.coverage
    )
    hor_bucket = panel.slot[panel.t : panel.t + panel.horizon] // per_bucket
    lower = np.minimum(p50 + low[:, hor_bucket], p50)  # the band always contains p50
    upper = np.maximum(p50 + high[:, hor_bucket], p50)
    uncalibrated = count < config.min_calibration_blocks
    trough, peak = extremes
    lower[uncalibrated] = np.minimum(p50, trough[:, None])[uncalibrated]
    upper[uncalibrated] = np.maximum(p50, peak[:, None])[uncalibrated]
    return p50, lower, upper, count, missing.sum(axis=1)


def forecast_panel(
    panel: Panel,
    config: ForecastConfig,
    *,
    gbm: GbmModel | None,
    gbm_ok: np.ndarray,
    forced: np.ndarray,
    extra: Sequence[str] = (),
) -> PanelForecast:
    """Forecast every cable of the panel (which must all have passed `history_errors`).
    `forced`: a code into MODELS per cable, or -1 to select."""
    n, t, h = panel.n, panel.t, panel.horizon
    cal_blocks = min(config.calibration_days * BLOCKS_PER_DAY, t)
    cal_pos = np.arange(t - 1, t - cal_blocks - 1, -config.calibration_stride)[::-1]
    pos = np.concatenate([cal_pos, np.arange(t, t + h)])
    m = len(cal_pos)
    all_rows = np.arange(n)
    rows, at = pairs(all_rows, pos)
    predicted = np.full((len(MODELS), n, len(pos)), np.nan)
    predicted[LAST_WEEK] = fm.last_week(panel, rows, at).reshape(n, -1)
    predicted[MEAN_WEEKS] = fm.mean_weeks(panel, rows, at, config.mean_weeks).reshape(n, -1)
    gbm_ok = gbm_ok & (gbm is not None)
    if gbm is not None and gbm_ok.any():
        chosen_rows = np.flatnonzero(gbm_ok)
        g_rows, g_at = pairs(chosen_rows, pos)
        predicted[GBM, chosen_rows] = gbm.predict(panel, g_rows, g_at, config.predict_threads).reshape(
            len(chosen_rows), -1
        )
    actual = panel.take(*pairs(all_rows, cal_pos)).reshape(n, m)

    known = ~np.isnan(actual) & ~np.isnan(predicted[LAST_WEEK, :, :m]) & ~np.isnan(predicted[MEAN_WEEKS, :, :m])
    known &= ~np.isnan(predicted[GBM, :, :m]) | ~gbm_ok[:, None]
    counts = known.sum(axis=1)
    errors = np.where(known[None], np.abs(actual[None] - predicted[:, :, :m]), 0.0)
    mae = np.where(counts > 0, errors.sum(axis=2) / np.maximum(counts, 1), np.nan)
    mae[GBM, ~gbm_ok] = np.nan
    chosen = np.where(forced >= 0, forced, select_by_mae(mae, gbm_ok, config))

    values = panel.ext[:, :t]
    peak, trough = np.fmax.reduce(values, axis=1), np.fmin.reduce(values, axis=1)
    # fallback p50: mean_weeks, then the slot's mean over the last 28 days, then the last 28 days' mean
    h_rows, h_at = pairs(all_rows, np.arange(t, t + h))
    fallback = np.where(
        np.isnan(predicted[MEAN_WEEKS, :, m:]),
        fm.slot_profile(panel, h_rows, h_at, 28).reshape(n, h),
        predicted[MEAN_WEEKS, :, m:],
    )
    recent_mean = panel.window_mean(all_rows, np.full(n, t - 1), 28 * BLOCKS_PER_DAY, 1)
    fallback = np.where(np.isnan(fallback), recent_mean[:, None], fallback)
    selected = predicted[chosen, all_rows]
    p50, lower, upper, count, filled = _band(
        panel, config, predicted=selected, actual=actual, cal_pos=cal_pos, fallback=fallback, extremes=(trough, peak)
    )
    extras = {}
    for name in extra:
        code = MODELS.index(name)
        e_p50, e_lower, e_upper, _, _ = _band(
            panel,
            config,
            predicted=predicted[code],
            actual=actual,
            cal_pos=cal_pos,
            fallback=fallback,
            extremes=(trough, peak),
        )
        extras[name] = (e_p50, e_lower, e_upper)
    return PanelForecast(chosen, p50, lower, upper, count, filled, mae, peak, extras)


def train_gbm(
    panels: Iterable[tuple[Panel, np.ndarray]], config: ForecastConfig, *, total_cables: int
) -> GbmModel | None:
    """One global model from a sample of the eligible cables' rows before their calibration windows."""
    rng = np.random.default_rng(config.seed)
    per_cable = max(1, config.gbm_max_train_rows // max(total_cables, 1))
    features, targets, cables = [], [], 0
    for panel, eligible in panels:
        rows = np.flatnonzero(eligible)
        if len(rows) == 0:
            continue
        fit_end = panel.t - config.calibration_days * BLOCKS_PER_DAY
        f, y = fm.training_rows(panel, fit_end, per_cable, rng, rows)
        features.append(f)
        targets.append(y)
        cables += len(rows)
    if not cables or sum(len(y) for y in targets) < MIN_TRAIN_ROWS:
        return None
    return fm.fit_gbm(np.concatenate(features), np.concatenate(targets), seed=config.seed, cables=cables)


# --- the public functions ---------------------------------------------------------------------------


def _grid_values(frame: pd.DataFrame, what: str) -> tuple[pd.DatetimeIndex, np.ndarray]:
    index = utc_index(frame.index, what)
    if len(index) and not (index.is_monotonic_increasing and index.is_unique):
        raise ForecastError(
            f"{what}: timestamps must increase (sorted, no duplicates); run check_history on the measurements first"
        )
    if not on_grid(index):
        raise ForecastError(
            f"{what}: timestamps must be 15-minute block starts (hh:00, :15, :30, :45); run check_history first"
        )
    try:
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"{what} must hold numbers (A or kW): {exc}") from exc
    return index, values


def _model_codes(names: Sequence[str], models_: Mapping[str, str] | None) -> tuple[np.ndarray, dict[str, str]]:
    forced = np.full(len(names), -1)
    errors: dict[str, str] = {}
    for i, name in enumerate(names):
        wanted = (models_ or {}).get(name)
        if wanted is None:
            continue
        if wanted not in MODELS:
            errors[name] = f"unknown model {wanted!r}; choose one of {', '.join(MODELS)} (or None to select)"
        else:
            forced[i] = MODELS.index(wanted)
    return forced, errors


class _Prepared:
    """The histories of one call, on the full block grid up to the issue block."""

    def __init__(self, frame: pd.DataFrame, issue: pd.Timestamp, config: ForecastConfig, what: str):
        index, values = _grid_values(frame, what)
        self.issue = issue
        self.issue_block = block_floor(issue)
        self.config = config
        self.origin = index[0] if len(index) else self.issue_block
        self.t = max(int((self.issue_block - self.origin) // BLOCK), 0)
        before = index < self.issue_block
        self.pos = positions(index[before], self.origin)
        self.values = values[before]  # (blocks, cables): rows before the issue only
        self.dense = len(self.pos) == self.t
        horizon = config.horizon_blocks
        self.calendar = Panel.calendar(self.origin, self.t + horizon, config.local_tz, config.holidays)

    def panel(self, cables: slice) -> Panel:
        if self.dense:
            chunk = self.values[:, cables].T  # a view: Panel copies it once
        else:
            chunk = np.full((cables.stop - cables.start, self.t), np.nan)
            chunk[:, self.pos] = self.values[:, cables].T
        return Panel(chunk, self.config.horizon_blocks, self.origin, self.calendar)


def _check_chunk(
    prepared: _Prepared,
    chunk: slice,
    names: list[str],
    forced: np.ndarray,
    results: dict[str, CableForecast | ForecastError],
) -> tuple[np.ndarray, np.ndarray]:
    """History checks of a chunk's cables (errors go into `results`): which can be forecast, and which
    of those may use (and train) gbm."""
    config, issue = prepared.config, prepared.issue
    panel = prepared.panel(chunk)
    messages = history_errors(panel, config, issue)
    good = np.array([m is None and names[chunk.start + i] not in results for i, m in enumerate(messages)])
    for i, message in enumerate(messages):
        if message is not None:
            results.setdefault(names[chunk.start + i], ForecastError(message))
    pinned = forced[chunk]
    wants = good & ((pinned == -1) | (pinned == GBM))
    can = gbm_eligible(panel, config) & wants if wants.any() else np.zeros(len(good), dtype=bool)
    for k in np.flatnonzero(good & ~can & (pinned == GBM)):
        results[names[chunk.start + int(k)]] = ForecastError(
            f"gbm needs {config.gbm_min_fit_days} days of history before the last {config.calibration_days} days "
            "(its calibration window) and few gaps; this cable has less: use a naive model or let it select"
        )
    return good & ~((pinned == GBM) & ~can), can


def forecast_many(
    histories: pd.DataFrame,
    *,
    issued_at: datetime,
    config: ForecastConfig = ForecastConfig(),  # noqa: B008 - frozen, shared safely
    models: Mapping[str, str] | None = None,
    qualities: Mapping[str, QualityReport] | None = None,
) -> dict[str, CableForecast | ForecastError]:
    """Forecast every column (a cable id) of `histories` (base load per UTC block). One bad cable never
    stops the others: its entry is the ForecastError saying why. `models` pins a model per cable;
    `qualities` are the check_history reports to attach (else a summary of the history is attached)."""
    if not isinstance(histories, pd.DataFrame):
        raise ForecastError(
            f"forecast_many expects a DataFrame with a column per cable, not {type(histories).__name__}"
        )
    issue = utc_moment(issued_at, "issued_at")
    prepared = _Prepared(histories, issue, config, "the histories")
    names = [str(c) for c in histories.columns]
    forced, results_errors = _model_codes(names, models)
    results: dict[str, CableForecast | ForecastError] = {n: ForecastError(m) for n, m in results_errors.items()}
    if prepared.t == 0:
        for name in names:
            results.setdefault(name, ForecastError(f"no base-load values before {iso(issue)}"))
        return results

    chunks = [slice(s, min(s + CHUNK, len(names))) for s in range(0, len(names), CHUNK)]
    checked = [_check_chunk(prepared, chunk, names, forced, results) for chunk in chunks]
    # panels are rebuilt chunk by chunk: one chunk in memory at a time
    gbm = train_gbm(
        ((prepared.panel(c), e) for c, (_, e) in zip(chunks, checked, strict=True) if e.any()),
        config,
        total_cables=int(sum(e.sum() for _, e in checked)),
    )
    starts = block_range(prepared.issue_block, config.horizon_blocks)
    for chunk, (good, can) in zip(chunks, checked, strict=True):
        if gbm is None:  # no cable could train it: those pinned to gbm fail, the others select without it
            for k in np.flatnonzero(good & (forced[chunk] == GBM)):
                results[names[chunk.start + int(k)]] = ForecastError("gbm could not be trained on this history")
                good[k] = False
        if not good.any():
            continue
        panel = prepared.panel(chunk)
        out = forecast_panel(panel, config, gbm=gbm, gbm_ok=can, forced=forced[chunk])
        for k in np.flatnonzero(good):
            i = int(k)
            name = names[chunk.start + i]
            quality = (qualities or {}).get(name) or summary_of(panel.ext[i, : panel.t], panel.origin)
            results[name] = CableForecast(
                issued_at=issue.to_pydatetime(),
                model=MODELS[out.chosen[i]],
                starts=starts,
                p50=out.p50[i],
                lower=out.lower[i],
                upper=out.upper[i],
                margin=out.upper[i] - out.p50[i],
                peak=float(out.peak[i]),
                quality=quality,
                calibration_blocks=int(out.calibrated[i]),
                filled_blocks=int(out.filled[i]),
                mae={MODELS[j]: float(out.mae[j, i]) for j in range(len(MODELS)) if not np.isnan(out.mae[j, i])},
            )
    return {name: results[name] for name in names}


def _series_frame(history: pd.Series) -> pd.DataFrame:
    if not isinstance(history, pd.Series):
        raise ForecastError(f"the history must be a pandas Series of base load per block, not {type(history).__name__}")
    if len(history) == 0:
        raise ForecastError("the history is empty: forecasts need at least a week of base load per 15-minute block")
    return history.to_frame(name="cable")


def forecast_core(
    history: pd.Series,
    *,
    issued_at: datetime,
    config: ForecastConfig = ForecastConfig(),  # noqa: B008 - frozen, shared safely
    model: str | None = None,
    quality: QualityReport | None = None,
) -> CableForecast:
    """Forecast one cable from its base load per UTC block (the output of check_history and
    base_load_history). Only blocks that ended by `issued_at` are used. `model` None selects per cable
    (see the module docstring); a name pins it. ForecastError when the history cannot be used."""
    frame = _series_frame(history)
    result = forecast_many(
        frame,
        issued_at=issued_at,
        config=config,
        models={"cable": model} if model is not None else None,
        qualities={"cable": quality} if quality is not None else None,
    )["cable"]
    if isinstance(result, ForecastError):
        raise result
    return result


def select_model(
    history: pd.Series,
    *,
    issued_at: datetime,
    config: ForecastConfig = ForecastConfig(),  # noqa: B008 - frozen, shared safely
) -> str:
    """The model forecast_core would choose for this cable at `issued_at`."""
    return forecast_core(history, issued_at=issued_at, config=config).model
