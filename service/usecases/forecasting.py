"""Base-load forecasts: measured cable load in, available capacity and reallocated budgets out.

A refresh reads every cable's history from the timeseries store in one go (the server aggregates
to 15 minutes), subtracts the EV usage CPOs reported, forecasts with the pure `forecasts` package,
and then, per cable in its own transaction, stores the forecast and reallocates the horizon with
it. One failing cable never stops the others. A failed refresh keeps the last good forecast for
the blocks it covers; later blocks fall back to the historical peak (see `baseload`).
"""

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import pandas as pd

import forecasts
from service.domain.blocks import BLOCK, block_floor, block_starts
from service.domain.errors import InvalidInput, NotFound
from service.domain.model import Cable
from service.domain.units import ZERO, ceil_grid, floor_grid
from service.store import DecisionRecord, Repository
from service.timeseries import Point, TimeseriesError, TimeseriesStore
from service.usecases.baseload import Source, base_loads
from service.usecases.context import Context
from service.usecases.grid import reallocate_cable
from service.usecases.measurements import conversion

log = logging.getLogger("gridcap.forecasts")

KEEP_PAST = timedelta(days=1)  # forecast rows of blocks older than this are dropped
USAGE_WRITTEN_BACK = timedelta(days=1)  # reported usage this far back is (re)written for monitoring


# --- units -------------------------------------------------------------------------------------


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
    """Measured load less reported EV usage, per cable and block of [start, end). Raises
    TimeseriesError when the store cannot be read."""
    measured = store.read_load([c.id for c in cables], start, end)
    with ctx.db.read() as session:
        usage = Repository(session).usage_totals([c.id for c in cables], start, end)
    base_load: dict[str, pd.Series] = {}
    for cable in cables:
        ev = pd.Series({s: float(v) for s, v in usage[cable.id].items()}, dtype="float64")
        in_cable_unit = measured[cable.id] * conversion(store.layout.unit, cable.unit.value, cable)
        base_load[cable.id] = forecasts.base_load_history(in_cable_unit, ev if len(ev) else None)
    # Checked after the EV usage is out: a real charging session is no measurement spike.
    cleaned, quality = forecasts.check_histories(pd.DataFrame(base_load, index=measured.index))
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
) -> RefreshReport:
    """Forecast every cable (or those named), store the forecasts, reallocate, write results back."""
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
    except TimeseriesError as exc:
        for cable in cables:
            _failed(ctx, cable.id, now, f"the timeseries store could not be read: {exc}", report)
        return report
    results = forecasts.forecast_many(history.base_load, issued_at=now, config=ctx.forecast_config)
    for done, cable in enumerate(cables, start=1):
        result = results.get(cable.id)
        issues = list(history.quality[cable.id].issues)
        if issues:
            report.warnings[cable.id] = issues
        if isinstance(result, forecasts.CableForecast):
            try:
                _apply(ctx, cable.id, result, history.quality[cable.id])
                report.refreshed[cable.id] = result.model
            except Exception as exc:  # one cable's failure never blocks the others
                log.exception("storing the forecast of cable %s failed", cable.id)
                _failed(ctx, cable.id, now, f"storing the forecast failed: {exc}", report)
        else:
            _failed(ctx, cable.id, now, str(result or "no forecast was made"), report)
        if progress is not None:
            progress(done, len(cables))
    try:
        write_results(ctx, store, [c.id for c in cables], results)
    except TimeseriesError as exc:
        report.warnings.setdefault("*", []).append(f"results were not written to the timeseries store: {exc}")
    return report


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
        repo.save_forecast(cable_id, result.issued_at, result.model, blocks, keep_since=block_floor(now) - KEEP_PAST)
        message = f"{result.model} forecast, band {ctx.forecast_config.coverage:.0%}"
        repo.save_forecast_run(
            cable_id,
            attempted_at=now,
            status="ok",
            message=message,
            issued_at=result.issued_at,
            model=result.model,
            peak=_up(result.peak),
            quality=json.dumps(quality.as_dict(), default=str),
        )
        decision = DecisionRecord(
            now,
            "system",
            "base_load_forecast",
            f"base load of cable {cable_id} from a new {message}",
            cable_id=cable_id,
        )
        reallocate_cable(repo, ctx, cable, decision)


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
                fields: dict[str, float | str] = {
                    "p50": float(p50),
                    "lower": float(lower),
                    "upper": float(upper),
                    "model": result.model,
                }
                points.append(Point(f"{prefix}forecast", {"cable": cable_id, "issued_at": issued}, fields, start))
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
                    "limit": float(block.limit),
                    "base_load": float(block.base_load),
                    "margin": float(block.margin),
                    "available": float(block.available),
                    "allocated": float(block.allocated),
                    "unallocated": float(block.unallocated),
                    "pending": len(block.pending),
                    "congested": congested,
                }
                points.append(Point(f"{prefix}capacity", {"cable": cable_id, "unit": unit}, capacity, start))
                for cpo_id, budget in block.budgets.items():
                    tags = {"cable": cable_id, "cpo": cpo_id, "unit": unit}
                    points.append(Point(f"{prefix}budget", tags, {"budget": float(budget)}, start))
            for start, by_cpo in repo.usage(cable_id, h_start - USAGE_WRITTEN_BACK, h_end).items():
                for cpo_id, usage in by_cpo.items():
                    tags = {"cable": cable_id, "cpo": cpo_id, "unit": unit}
                    points.append(Point(f"{prefix}usage", tags, {"usage": float(usage)}, start))
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
    with the history before it; the metrics are stored for GET /cables/{id}/forecast/metrics."""
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
    return BacktestRun(cable_id, cable.unit.value, result, history.quality[cable_id])


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


def backtest_all(ctx: Context, store: TimeseriesStore) -> dict[str, str]:
    """Backtest every cable (a daily job); returns the failures, cable by cable."""
    with ctx.db.read() as session:
        cable_ids = [c.id for c in Repository(session).cables()]
    failed: dict[str, str] = {}
    for cable_id in cable_ids:
        try:
            backtest(ctx, store, cable_id)
        except Exception as exc:  # one cable's failure never blocks the others
            log.debug("backtest of cable %s failed", cable_id, exc_info=True)
            failed[cable_id] = str(exc) or type(exc).__name__
    return failed
