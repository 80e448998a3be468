"""Base-load forecasts: measured cable load in, available capacity and reallocated budgets out.

A refresh reads every cable's history from the timeseries store in one go (the server aggregates
to 15 minutes), subtracts the EV usage CPOs reported, forecasts with the pure `forecasts` package,
and then, per cable in its own transaction, stores the forecast and reallocates the horizon with
it. One failing cable never stops the others. A failed refresh keeps the last good forecast for
the blocks it covers; later blocks fall back to the historical peak (see `baseload`).
"""

import dataclasses
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd

import forecasts
from service.domain.blocks import BLOCK, block_floor, block_starts
from service.domain.errors import InvalidInput, NotFound
from service.domain.model import Cable
from service.domain.units import ZERO, Unit, ceil_grid, floor_grid
from service.monitoring import names
from service.store import DecisionRecord, Repository
from service.timeseries import Point, TimeseriesError, TimeseriesStore
from service.usecases.baseload import Source, base_loads
from service.usecases.context import Context
from service.usecases.grid import reallocate_cable
from service.usecases.measurements import conversion

log = logging.getLogger("gridcap.forecasts")

KEEP_PAST = timedelta(days=1)  # forecast rows of blocks older than this are dropped
DEADBAND_SHARE = Decimal("0.02")  # of the rated limit: smaller drops of a block's base load wait
USAGE_WRITTEN_BACK = timedelta(days=1)  # reported usage this far back is (re)written for monitoring


# --- rounding ----------------------------------------------------------------------------------


def _up(value: float) -> Decimal:
    """A base load for allocation: rounded up to the grid (erring on the safe side), never below 0."""
    return max(ZERO, ceil_grid(Decimal(repr(float(value)))))


def _down(value: float) -> Decimal:
    return max(ZERO, floor_grid(Decimal(repr(float(value)))))


# --- history ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """The base-load history of each cable in its own unit, ready to forecast."""

    base_load: pd.DataFrame  # columns: cable ids; index: UTC block starts
    quality: dict[str, forecasts.QualityReport]


def read_history(
    ctx: Context, store: TimeseriesStore, cables: Sequence[Cable], *, start: datetime, end: datetime
) -> History:
    """Measured load less reported EV usage, per cable and block of [start, end), in each cable's
    unit. Raises TimeseriesError when the store cannot be read."""
    layout = store.layout
    per_phase = [c.id for c in cables if c.unit is Unit.AMPERE]  # an A limit holds on every phase
    total = [c.id for c in cables if c.unit is not Unit.AMPERE]
    frames = [store.read_load(per_phase, start, end, highest_phase=True)] if per_phase else []
    frames += [store.read_load(total, start, end)] if total else []
    measured = pd.concat(frames, axis=1)
    with ctx.db.read() as session:
        usage = Repository(session).usage_totals([c.id for c in cables], start, end)
    base_load: dict[str, pd.Series] = {}
    clamped: dict[str, int] = {}
    for cable in cables:
        one_phase = bool(layout.phase_tag) and cable.unit is Unit.AMPERE
        factor = conversion(layout.unit, cable.unit.value, cable, per_phase=one_phase, power_factor=ctx.power_factor)
        load = measured[cable.id] * factor
        ev = pd.Series({s: float(v) for s, v in usage[cable.id].items()}, dtype="float64").reindex(load.index)
        # Reported usage above what was measured is a reporting error; taking it off would lower
        # the base load below zero and hand out capacity that is not there.
        too_much = ev > load.clip(lower=0)
        clamped[cable.id] = int(too_much.sum())
        ev = ev.where(~too_much, load.clip(lower=0)).dropna()
        base_load[cable.id] = forecasts.base_load_history(load, ev if len(ev) else None)
    # Checked after the EV usage is out: a real charging session is no measurement spike.
    cleaned, quality = forecasts.check_histories(pd.DataFrame(base_load, index=measured.index))
    for cable_id, blocks in clamped.items():
        if blocks:
            note = f"{blocks} blocks with more EV usage reported than measured: counted as the measured load"
            quality[cable_id] = dataclasses.replace(quality[cable_id], issues=(*quality[cable_id].issues, note))
    return History(cleaned, quality)


# --- refresh ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshReport:
    issued_at: datetime
    refreshed: dict[str, str] = field(default_factory=dict)  # cable id -> model used
    failed: dict[str, str] = field(default_factory=dict)  # cable id -> what went wrong
    warnings: dict[str, list[str]] = field(default_factory=dict)  # cable id (or "*") -> what to look at


def refresh(
    ctx: Context,
    store: TimeseriesStore,
    *,
    cable_ids: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> RefreshReport:
    """Forecast every cable (or those named), store the forecasts, reallocate, write results back.
    `stop` is asked between cables: a job that lost its lease ends early."""
    now = ctx.clock()
    with ctx.db.read() as session:
        repo = Repository(session)
        cables = [repo.cable(c) for c in cable_ids] if cable_ids is not None else repo.cables()
    report = RefreshReport(issued_at=now)
    if not cables:
        return report
    end = block_floor(now)  # the current block is still being measured
    try:
        history = read_history(ctx, store, cables, start=end - ctx.history, end=end)
        results = forecasts.forecast_many(history.base_load, issued_at=now, config=ctx.forecast_config)
    except Exception as exc:  # nothing was forecast: every cable keeps what it had, and says why
        what = "the timeseries store could not be read" if isinstance(exc, TimeseriesError) else "forecasting failed"
        if not isinstance(exc, TimeseriesError):
            log.exception("forecasting failed")
        for cable in cables:
            _failed(ctx, cable.id, now, f"{what}: {_short(exc)}", report)
        return report
    for done, cable in enumerate(cables, start=1):
        if stop():
            report.warnings.setdefault("*", []).append(f"stopped after {done - 1} of {len(cables)} cables")
            break
        if issues := history.quality[cable.id].issues:
            report.warnings[cable.id] = list(issues)
        _refresh_one(ctx, cable.id, results.get(cable.id), history.quality[cable.id], report)
        if progress is not None:
            progress(done, len(cables))
    try:
        write_results(ctx, store, [c.id for c in cables], results)
    except Exception as exc:  # monitoring output never fails the forecasts themselves
        if not isinstance(exc, TimeseriesError):
            log.exception("writing the results back failed")
        report.warnings.setdefault("*", []).append(f"results were not written to the timeseries store: {_short(exc)}")
    return report


def _refresh_one(
    ctx: Context,
    cable_id: str,
    result: "forecasts.CableForecast | forecasts.ForecastError | None",
    quality: forecasts.QualityReport,
    report: RefreshReport,
) -> None:
    if not isinstance(result, forecasts.CableForecast):
        _failed(ctx, cable_id, report.issued_at, str(result or "no forecast was made"), report)
        return
    try:
        _apply(ctx, cable_id, result, quality)
        report.refreshed[cable_id] = result.model
    except Exception as exc:  # one cable's failure never blocks the others
        log.exception("storing the forecast of cable %s failed", cable_id)
        _failed(ctx, cable_id, report.issued_at, f"storing the forecast failed: {_short(exc)}", report)


def _short(exc: Exception) -> str:
    """An error for people: its first line, without the SQL or traceback it may carry."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _failed(ctx: Context, cable_id: str, now: datetime, message: str, report: RefreshReport) -> None:
    report.failed[cable_id] = message
    try:
        with ctx.db.write((cable_id,)) as session:
            repo = Repository(session)
            if repo.cable_exists(cable_id):
                repo.save_forecast_run(cable_id, attempted_at=now, status="failed", message=message)
    except Exception:
        log.exception("recording the failed forecast of cable %s failed", cable_id)


def _apply(ctx: Context, cable_id: str, result: forecasts.CableForecast, quality: forecasts.QualityReport) -> None:
    """Store the forecast and reallocate the cable's blocks with it, in one transaction."""
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        cable = repo.cable(cable_id)
        blocks = {
            start.to_pydatetime(): (_up(p50), _down(lower), _up(upper))
            for start, p50, lower, upper in zip(result.starts, result.p50, result.lower, result.upper, strict=True)
            if math.isfinite(upper)
        }
        if not repo.save_forecast(
            cable_id, result.issued_at, result.model, blocks, keep_since=block_floor(now) - KEEP_PAST
        ):
            return  # a newer forecast was stored meanwhile (another refresh): it stands
        message = f"{result.model} forecast, band {ctx.forecast_config.coverage:.0%}"
        # The fallback once no forecast covers a block: never below what this forecast said.
        peak = max([_up(result.peak), *(upper for _, _, upper in blocks.values())])
        repo.save_forecast_run(
            cable_id,
            attempted_at=now,
            status="ok",
            message=message,
            issued_at=result.issued_at,
            model=result.model,
            peak=peak,
            quality=json.dumps(quality.as_dict(), default=str),
        )
        decision = DecisionRecord(
            now,
            "system",
            "base_load_forecast",
            f"base load of cable {cable_id} from a new {message}",
            cable_id=cable_id,
        )
        reallocate_cable(repo, ctx, cable, decision, deadband=floor_grid(cable.rated_limit * DEADBAND_SHARE))


# --- results for monitoring ---------------------------------------------------------------------


def write_results(
    ctx: Context,
    store: TimeseriesStore,
    cable_ids: Iterable[str],
    results: dict[str, "forecasts.CableForecast | forecasts.ForecastError"],
) -> None:
    """Forecasts (tagged with their issue time), capacity, budgets and congestion per block, and
    the usage CPOs reported, for Grafana."""
    prefix = ctx.results_prefix
    now = ctx.clock()
    h_start, h_end = ctx.horizon(now)
    points: list[Point] = []
    for cable_id, result in results.items():
        if isinstance(result, forecasts.CableForecast):
            issued = result.issued_at.isoformat()
            for start, p50, lower, upper in zip(result.starts, result.p50, result.lower, result.upper, strict=True):
                if not math.isfinite(p50 + lower + upper):
                    continue
                fields: dict[str, float | str] = {
                    names.FORECAST.p50: float(p50),
                    names.FORECAST.lower: float(lower),
                    names.FORECAST.upper: float(upper),
                    names.FORECAST.model: result.model,
                }
                tags = {names.FORECAST.cable: cable_id, names.FORECAST.issued_at: issued}
                points.append(Point(names.FORECAST.measurement(prefix), tags, fields, start))
    with ctx.db.read() as session:
        repo = Repository(session)
        for cable_id in cable_ids:
            if not repo.cable_exists(cable_id):
                continue
            cable = repo.cable(cable_id)
            book = repo.load_book(cable, h_start, h_end)
            minimums = sum((s.guaranteed_minimum for s in book.subscriptions.values()), ZERO)
            unit = cable.unit.value
            for start, block in sorted(book.blocks.items()):
                congested = bool(block.pending) or block.available < minimums
                capacity = {
                    names.CAPACITY.limit: float(block.limit),
                    names.CAPACITY.base_load: float(block.base_load),
                    names.CAPACITY.margin: float(block.margin),
                    names.CAPACITY.available: float(block.available),
                    names.CAPACITY.allocated: float(block.allocated),
                    names.CAPACITY.unallocated: float(block.unallocated),
                    names.CAPACITY.pending: len(block.pending),
                    names.CAPACITY.congested: congested,
                }
                tags = {names.CAPACITY.cable: cable_id, names.CAPACITY.unit: unit}
                points.append(Point(names.CAPACITY.measurement(prefix), tags, capacity, start))
                for cpo_id, budget in block.budgets.items():
                    tags = {names.BUDGET.cable: cable_id, names.BUDGET.cpo: cpo_id, names.BUDGET.unit: unit}
                    fields = {names.BUDGET.budget: float(budget)}
                    points.append(Point(names.BUDGET.measurement(prefix), tags, fields, start))
            for start, by_cpo in repo.usage(cable_id, h_start - USAGE_WRITTEN_BACK, h_end).items():
                for cpo_id, usage in by_cpo.items():
                    tags = {names.USAGE.cable: cable_id, names.USAGE.cpo: cpo_id, names.USAGE.unit: unit}
                    fields = {names.USAGE.usage: float(usage)}
                    points.append(Point(names.USAGE.measurement(prefix), tags, fields, start))
    store.write_points(points)


# --- reading forecasts back ----------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastBlock:
    start: datetime
    end: datetime
    base_load: Decimal  # what allocation uses
    source: Source
    p50: Decimal | None
    lower: Decimal | None
    upper: Decimal | None


@dataclass(frozen=True)
class ForecastView:
    cable_id: str
    unit: str
    status: str  # ok | failed | never: the last refresh
    message: str
    attempted_at: datetime | None
    issued_at: datetime | None  # of the forecast in use
    model: str | None
    peak: Decimal | None
    quality: dict[str, object] | None
    blocks: list[ForecastBlock]


def forecast(ctx: Context, cable_id: str) -> ForecastView:
    """The base load each horizon block gets, where it comes from, and the last refresh's outcome."""
    now = ctx.clock()
    h_start, h_end = ctx.horizon(now)
    starts = list(block_starts(h_start, h_end))
    with ctx.db.read() as session:
        repo = Repository(session)
        cable = repo.cable(cable_id)
        rows = {row.start: row for row in repo.forecast(cable_id, h_start, h_end)}
        loads = base_loads(repo, cable, starts)
        run = repo.forecast_run(cable_id)
    blocks = [
        ForecastBlock(
            s,
            s + BLOCK,
            loads[s][0],
            loads[s][1],
            rows[s].p50 if s in rows else None,
            rows[s].lower if s in rows else None,
            rows[s].upper if s in rows else None,
        )
        for s in starts
    ]
    if run is None:
        message = f"never forecast: every block uses the static base load {cable.base_load} {cable.unit} set on it"
        return ForecastView(cable_id, cable.unit.value, "never", message, None, None, None, None, None, blocks)
    return ForecastView(
        cable_id,
        cable.unit.value,
        run.status,
        run.message,
        run.attempted_at,
        run.issued_at,
        run.model,
        run.peak,
        json.loads(run.quality) if run.quality else None,
        blocks,
    )


# --- backtests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestRun:
    cable_id: str
    unit: str
    result: forecasts.BacktestResult
    quality: forecasts.QualityReport


def backtest(
    ctx: Context,
    store: TimeseriesStore,
    cable_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestRun:
    """Day-ahead backtest of the cable's forecasts over [start, end) (default: the last 4 weeks),
    with the history before it; the metrics are stored for GET /cables/{id}/forecast/metrics, and
    written per local day to the timeseries store for Grafana (a failed write is only logged)."""
    now = ctx.clock()
    stop = block_floor(now) if end is None else end
    first = stop - timedelta(weeks=4) if start is None else start
    if first >= stop:
        raise InvalidInput(f"the backtest must start before it ends ({first.isoformat()} >= {stop.isoformat()})")
    with ctx.db.read() as session:
        cable = Repository(session).cable(cable_id)
    history = read_history(ctx, store, [cable], start=first - ctx.history, end=stop)
    limit = pd.Series(
        [float(cable.limit_at(s)) for s in history.base_load.index], index=history.base_load.index, dtype="float64"
    )
    result = forecasts.backtest(
        history.base_load[cable_id], limit=limit, config=ctx.forecast_config, start=first, end=stop, progress=progress
    )
    with ctx.db.write((cable_id,)) as session:
        repo = Repository(session)
        if not repo.cable_exists(cable_id):
            raise NotFound(f"cable {cable_id} was deleted during the backtest")
        run = repo.forecast_run(cable_id)
        values: dict[str, object] = {
            "metrics": json.dumps({**result.as_dict(), "from": first.isoformat(), "to": stop.isoformat()})
        }
        if run is None:
            values |= {"attempted_at": now, "status": "never", "message": "not forecast yet"}
        repo.save_forecast_run(cable_id, metrics_at=now, **values)
    _write_quality(ctx, store, cable_id, result)
    return BacktestRun(cable_id, cable.unit.value, result, history.quality[cable_id])


def quality_points(
    cable_id: str, frame: pd.DataFrame, config: forecasts.ForecastConfig, prefix: str = names.DEFAULT_PREFIX
) -> list[Point]:
    """One point per local day of a backtest's `frame` that has measured blocks, at the day's start:
    the metrics of `forecasts.evaluate` over that day (NaN ones left out) and its model."""
    n = names.FORECAST_QUALITY
    points = []
    local_days = frame.index.tz_convert(config.local_tz).date
    for day, blocks in frame.groupby(local_days, sort=True):
        if blocks["actual"].isna().all():
            continue
        figures = forecasts.evaluate(
            blocks["actual"].to_numpy(dtype="float64"),
            blocks["p50"].to_numpy(dtype="float64"),
            blocks["lower"].to_numpy(dtype="float64"),
            blocks["upper"].to_numpy(dtype="float64"),
            blocks["limit"].to_numpy(dtype="float64"),
            coverage=config.coverage,
        )
        fields: dict[str, float | int | bool | str] = {
            name: float(figures[metric])
            for name, metric in (
                (n.rmae, "rmae"),
                (n.coverage, "coverage"),
                (n.mae, "mae"),
                (n.overload_rate, "overload_rate"),
            )
            if math.isfinite(figures[metric])
        }
        fields[n.model] = str(Counter(blocks["model"]).most_common(1)[0][0])
        # The local midnight as forecasts.backtest lays its days out (a DST gap shifts it forward).
        start = pd.Timestamp(day).tz_localize(config.local_tz, nonexistent="shift_forward", ambiguous=True)
        tags = {n.cable: cable_id}
        points.append(Point(n.measurement(prefix), tags, fields, start.tz_convert(UTC).to_pydatetime()))
    return points


def _write_quality(ctx: Context, store: TimeseriesStore, cable_id: str, result: forecasts.BacktestResult) -> None:
    """The backtest's quality per day, for Grafana; the backtest itself is stored whatever happens here."""
    try:
        store.write_points(quality_points(cable_id, result.frame, ctx.forecast_config, ctx.results_prefix))
    except TimeseriesError as exc:  # monitoring output never fails the backtest
        log.warning(
            "the forecast quality of cable %s was not written to the timeseries store: %s", cable_id, _short(exc)
        )
    except Exception:  # nor does a bug in it; said loudly
        log.exception("the forecast quality of cable %s was not written to the timeseries store", cable_id)


def metrics(ctx: Context, cable_id: str) -> tuple[datetime, dict[str, object]]:
    """The stored metrics of the cable's last backtest and when it ran."""
    with ctx.db.read() as session:
        repo = Repository(session)
        repo.cable(cable_id)
        run = repo.forecast_run(cable_id)
    if run is None or run.metrics is None or run.metrics_at is None:
        raise NotFound(
            f"cable {cable_id} has no backtest yet; run `gridcap forecast backtest --cable {cable_id}` "
            "or wait for the daily backtest job"
        )
    return run.metrics_at, json.loads(run.metrics)


def backtest_all(
    ctx: Context,
    store: TimeseriesStore,
    *,
    older_than: timedelta = timedelta(0),
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, str]:
    """Backtest every cable whose metrics are older than `older_than` (a job); returns the failures,
    cable by cable. `stop` is asked between cables."""
    now = ctx.clock()
    with ctx.db.read() as session:
        repo = Repository(session)
        due = []
        for cable in repo.cables():
            run = repo.forecast_run(cable.id)
            if run is None or run.metrics_at is None or run.metrics_at <= now - older_than:
                due.append(cable.id)
    failed: dict[str, str] = {}
    for cable_id in due:
        if stop():
            break
        try:
            backtest(ctx, store, cable_id)
        except Exception as exc:  # one cable's failure never blocks the others
            log.debug("backtest of cable %s failed", cable_id, exc_info=True)
            failed[cable_id] = _short(exc)
    return failed
