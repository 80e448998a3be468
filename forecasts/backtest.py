"""Day-ahead rolling-origin backtest of one cable, beside its baselines.

For each local day D in [start, end): issue at `config.issue_time` local on D - 1, forecast with only
the blocks that ended by then, and keep D's blocks (92 on the spring DST day, 100 on the autumn one).
Selection and the conformal band are redone every issue, as in service; the global gbm is refit every
`refit_days` (on data before that refit's issue and before its calibration window, so the residuals
that select and calibrate stay out of sample). Baselines over the same blocks: last_week and
mean_weeks with their own recalibrated bands, and static, the fixed budget limit - historical peak
before the first issue (as a forecast: p50 = upper = that peak, lower = the historical minimum).
A day whose history fails the checks (e.g. a meter outage before it) is skipped and listed in
`skipped`; only when no day can be forecast is that a ForecastError.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd

from forecasts.config import MODELS, ForecastConfig
from forecasts.core import PanelForecast, forecast_panel, gbm_eligible, history_errors, train_gbm
from forecasts.errors import ForecastError
from forecasts.metrics import evaluate, handed_out
from forecasts.models import GbmModel, Panel
from forecasts.timegrid import BLOCK, block_floor, block_range, iso, on_grid, utc_index, utc_moment

BASELINES = ("last_week", "mean_weeks")
DEFAULT_DAYS = 28


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Metrics of the selected forecasts and of the baselines over the same blocks."""

    model: str  # the model chosen on most days (selection is redone every issue; see frame.model)
    metrics: dict[str, float]  # mae, rmae, pinball, coverage, overload_rate, utilisation
    baselines: dict[str, dict[str, float]]  # last_week, mean_weeks, static
    frame: pd.DataFrame  # per block: actual, p50, lower, upper, limit, available, model, issued_at
    choices: dict[str, int] = field(default_factory=dict)  # days each model was chosen
    days: int = 0  # days forecast
    skipped: dict[str, str] = field(default_factory=dict)  # local date -> why that day could not be forecast

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (NaN as None)."""

        def clean(metrics: dict[str, float]) -> dict[str, float | None]:
            return {k: (None if np.isnan(v) else float(v)) for k, v in metrics.items()}

        return {
            "model": self.model,
            **clean(self.metrics),
            "baselines": {name: clean(m) for name, m in self.baselines.items()},
            "days": self.days,
            "choices": dict(self.choices),
            "skipped": dict(self.skipped),
        }


def _local_midnight(day: date, tz: str) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize(tz, nonexistent="shift_forward", ambiguous=True).tz_convert("UTC")


def _issue(day: date, config: ForecastConfig) -> pd.Timestamp:
    hour, minute = config.issue_hour_minute()
    local = pd.Timestamp(datetime.combine(day - timedelta(days=1), time(hour, minute)))
    return local.tz_localize(config.local_tz, nonexistent="shift_forward", ambiguous=True).tz_convert("UTC")


def _days(
    start: datetime | None, end: datetime | None, grid: pd.DatetimeIndex, first_valid: int, config: ForecastConfig
) -> list[date]:
    """Whole local days in [start, end); by default the last 28 with enough history before their issue."""
    tz = config.local_tz
    stop = (utc_moment(end, "end") if end is not None else grid[-1] + BLOCK).tz_convert(tz)
    last = stop.normalize().date()  # exclusive: days end by `stop`
    if start is not None:
        begin = utc_moment(start, "start").tz_convert(tz)
        first = begin.date() if begin == begin.normalize() else begin.date() + timedelta(days=1)
    else:
        enough = grid[first_valid] + pd.Timedelta(days=config.min_history_days)
        first = last - timedelta(days=DEFAULT_DAYS)
        while first < last and _issue(first, config) < enough:
            first += timedelta(days=1)
    days = [first + timedelta(days=i) for i in range((last - first).days)]
    if not days:
        raise ForecastError(
            f"no whole local day ({tz}) to backtest between {first} and {last}: give a longer history or a wider "
            "[start, end)"
        )
    return days


def _limits(limit: float | pd.Series, starts: pd.DatetimeIndex) -> np.ndarray:
    if isinstance(limit, pd.Series):
        aligned = pd.Series(limit.to_numpy(dtype=np.float64), index=utc_index(limit.index, "the limit"))
        values: np.ndarray = aligned.reindex(starts).to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            missing = starts[np.isnan(values)]
            raise ForecastError(
                f"the limit is missing for {len(missing)} backtest blocks (first {iso(missing[0])}); "
                "give a value for every block, or one number"
            )
        return values
    return np.full(len(starts), float(limit))


def _dense(history: pd.Series) -> tuple[pd.DatetimeIndex, np.ndarray]:
    if not isinstance(history, pd.Series):
        raise ForecastError(f"the history must be a pandas Series of base load per block, not {type(history).__name__}")
    index = utc_index(history.index, "the history")
    if len(index) == 0:
        raise ForecastError("the history is empty: a backtest needs weeks of base load per 15-minute block")
    if not (index.is_monotonic_increasing and index.is_unique):
        raise ForecastError("the history: timestamps must increase (sorted, no duplicates); run check_history first")
    if not on_grid(index):
        raise ForecastError("the history: timestamps must be 15-minute block starts; run check_history first")
    grid = block_range(index[0], int((index[-1] - index[0]) // BLOCK) + 1)
    values = history.to_numpy(dtype=np.float64, na_value=np.nan)
    dense = pd.Series(values, index=index).reindex(grid).to_numpy()
    return grid, dense


def backtest(
    history: pd.Series,
    *,
    limit: float | pd.Series,
    config: ForecastConfig = ForecastConfig(),  # noqa: B008 - frozen, shared safely
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Day-ahead backtest over the whole local days in [start, end) (default: the last 28 days that have
    `min_history_days` of history before their issue). `limit` is one number or a value per block."""
    grid, values = _dense(history)
    valid = np.flatnonzero(~np.isnan(values))
    if len(valid) == 0:
        raise ForecastError("the history has no values: nothing to backtest")
    days = _days(start, end, grid, int(valid[0]), config)
    horizon = config.horizon_blocks
    origin = grid[0]
    parts: list[dict[str, np.ndarray]] = []
    choices: dict[str, int] = {}
    gbm: GbmModel | None = None
    fitted_at: pd.Timestamp | None = None
    skipped: dict[str, str] = {}
    last_end = _span(days[-1], origin, config)[2]
    calendar = Panel.calendar(origin, max(last_end, len(values)) + horizon, config.local_tz, config.holidays)
    before_start = values[: max(_span(days[0], origin, config)[0], 0)]
    static = (float(np.fmin.reduce(before_start, initial=np.nan)), float(np.fmax.reduce(before_start, initial=np.nan)))
    for done, day in enumerate(days, start=1):
        if progress is not None and done > 1:
            progress(done - 1, len(days))
        issue = _issue(day, config)
        t, a, b = _span(day, origin, config)
        if b - t > horizon:
            raise ForecastError(
                f"horizon_blocks={horizon} does not reach the end of {day} from its issue at {config.issue_time} "
                f"the day before; a day-ahead backtest needs at least {b - t}"
            )
        panel = Panel(values[None, : max(t, 0)], horizon, origin, calendar)
        message = history_errors(panel, config, issue)[0] if t > 0 else "no history before the issue"
        if message is not None:  # e.g. a meter outage: that day cannot be forecast, the others can
            skipped[day.isoformat()] = f"backtest day {day} (issued {iso(issue)}): {message}"
            continue
        can = gbm_eligible(panel, config)
        if can[0] and (gbm is None or fitted_at is None or issue - fitted_at >= pd.Timedelta(days=config.refit_days)):
            gbm, fitted_at = train_gbm([(panel, can)], config, total_cables=1), issue
        out = forecast_panel(panel, config, gbm=gbm, gbm_ok=can, forced=np.array([-1]), extra=BASELINES)
        choices[MODELS[out.chosen[0]]] = choices.get(MODELS[out.chosen[0]], 0) + 1
        parts.append(_day_part(out, values, (a, b, t), issue))
    if progress is not None:
        progress(len(days), len(days))
    if not parts:
        raise ForecastError(next(iter(skipped.values())))
    return _result(parts, grid, limit, config, choices=choices, static=static, days=len(parts), skipped=skipped)


def _span(day: date, origin: pd.Timestamp, config: ForecastConfig) -> tuple[int, int, int]:
    """Block positions from `origin` of the day's issue block and of the day's [first, end) blocks."""
    issue = int((block_floor(_issue(day, config)) - origin) // BLOCK)
    first = int((_local_midnight(day, config.local_tz) - origin) // BLOCK)
    end = int((_local_midnight(day + timedelta(days=1), config.local_tz) - origin) // BLOCK)
    return issue, first, end


def _day_part(
    out: PanelForecast, values: np.ndarray, span: tuple[int, int, int], issue: pd.Timestamp
) -> dict[str, np.ndarray]:
    """The issued forecast's blocks of one day [a, b) (t: the issue block) with the baselines' bands."""
    a, b, t = span
    model = MODELS[out.chosen[0]]
    cut = slice(a - t, b - t)
    actual = np.full(b - a, np.nan)
    known = values[a : min(b, len(values))]
    actual[: len(known)] = known
    part = {
        "pos": np.arange(a, b),
        "actual": actual,
        "p50": out.p50[0, cut],
        "lower": out.lower[0, cut],
        "upper": out.upper[0, cut],
        "model": np.full(b - a, model, dtype=object),
        "issued_at": np.full(b - a, issue.to_pydatetime(), dtype=object),
    }
    for name in BASELINES:
        p50, lower, upper = out.extra[name]
        part |= {f"{name}_p50": p50[0, cut], f"{name}_lower": lower[0, cut], f"{name}_upper": upper[0, cut]}
    return part


def _result(
    parts: list[dict[str, np.ndarray]],
    grid: pd.DatetimeIndex,
    limit: float | pd.Series,
    config: ForecastConfig,
    *,
    choices: dict[str, int],
    static: tuple[float, float],
    days: int,
    skipped: dict[str, str],
) -> BacktestResult:
    data = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    starts = block_range(grid[0], int(data["pos"].max()) + 1)[data["pos"]].rename("start")
    limits = _limits(limit, starts)
    actual = data["actual"]
    metrics = evaluate(actual, data["p50"], data["lower"], data["upper"], limits, coverage=config.coverage)
    baselines = {
        name: evaluate(
            actual, data[f"{name}_p50"], data[f"{name}_lower"], data[f"{name}_upper"], limits, coverage=config.coverage
        )
        for name in BASELINES
    }
    low, peak = static
    flat = np.full(len(actual), peak)
    baselines["static"] = evaluate(actual, flat, np.full(len(actual), low), flat, limits, coverage=config.coverage)
    frame = pd.DataFrame(
        {
            "actual": actual,
            "p50": data["p50"],
            "lower": data["lower"],
            "upper": data["upper"],
            "limit": limits,
            "available": handed_out(limits, data["upper"]),
            "model": data["model"],
            "issued_at": pd.DatetimeIndex(list(data["issued_at"])),
        },
        index=starts,
    )
    model = max(choices, key=lambda name: (choices[name], -MODELS.index(name)))
    return BacktestResult(model, metrics, baselines, frame, choices, days, skipped)
