"""Forecast refresh end to end: measurements in a real timeseries store (the embedded one, and a
real influxd), the EV usage CPOs reported, forecasts stored, blocks reallocated, results written
back; faults keep the last good forecast and then fall back to the historical peak, never zero.
On SQLite and on PostgreSQL."""

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import Clock, influx_query

from service.domain.blocks import BLOCK, block_floor
from service.domain.model import Binding, Cable, Cpo, Subscription
from service.domain.units import Unit
from service.settings import Settings
from service.timeseries import TimeseriesStore, build_timeseries
from service.usecases import Context, audit, capacity, cpos, forecasting, grid, oscp
from service.usecases.baseload import Source
from service.usecases.capacity import BlockQuantity

D = Decimal
WATTS_PER_AMP = 3 * 230  # the test cable: 3 phases at 230 V
POWER_FACTOR = 0.9  # the lowest expected (the default setting): measured kW count as this much more current
WEEKS = 4


def make_cable(cable_id: str = "c1") -> Cable:
    return Cable(cable_id, f"street {cable_id}", Unit.AMPERE, D(250), 3, D(230), margin=D(5), base_load=D(20))


def weekly_kw(index: pd.DatetimeIndex, *, noise: bool = True) -> np.ndarray:
    """A base load with a weekly pattern (an evening peak, lower at weekends) and measurement
    noise: without noise, the flat nights would rightly be masked as a stuck sensor."""
    hours = index.hour + index.minute / 60
    evening = 30 * np.exp(-(((hours - 18.5) / 2.5) ** 2))
    weekend = np.where(index.day_of_week >= 5, 0.8, 1.0)
    jitter = np.random.default_rng(42).normal(0, 0.5, len(index)) if noise else 0.0
    return np.asarray((40 + evening) * weekend + jitter, dtype="float64")


def history(now: datetime, weeks: int = WEEKS) -> pd.DatetimeIndex:
    end = block_floor(now)
    return pd.date_range(end - timedelta(weeks=weeks), end, freq="15min", inclusive="left", tz=UTC)


@pytest.fixture
def store(tmp_path: Path) -> TimeseriesStore:
    store = build_timeseries(Settings(timeseries_backend="embedded", timeseries_path=str(tmp_path / "ts.db")))
    store.ensure_ready()
    yield store
    store.close()


@pytest.fixture
def grid_ctx(ctx: Context) -> Context:
    grid.create_cable(ctx, make_cable("c1"), actor="eng")
    for cpo_id in ("a", "b"):
        cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", f"https://{cpo_id}.example/oscp", Binding.JSON)
        cpos.create_cpo(ctx, cpo, "a long enough password", actor="eng")
        grid.subscribe(ctx, Subscription("c1", cpo_id, D(1), D(10)), actor="eng")
    return ctx


def write_history(store: TimeseriesStore, ctx: Context, cable_id: str = "c1") -> pd.DatetimeIndex:
    """The weeks of measured load each test forecasts from, written to `store`; returns their blocks."""
    index = history(ctx.clock())
    store.write_load(cable_id, pd.Series(weekly_kw(index), index=index))
    return index


def horizon_loads(ctx: Context, cable_id: str = "c1") -> dict[datetime, D]:
    return {b.start: b.base_load for b in capacity.capacity(ctx, cable_id).blocks}


def expected_a(start: datetime) -> float:
    return float(weekly_kw(pd.DatetimeIndex([start]), noise=False)[0]) * 1000 / WATTS_PER_AMP / POWER_FACTOR


def test_a_refresh_stores_the_forecast_and_reallocates_with_it(grid_ctx: Context, store: TimeseriesStore) -> None:
    ctx = grid_ctx
    index = history(ctx.clock())
    store.write_load("c1", pd.Series(weekly_kw(index), index=index))  # kW; the cable is in A
    decisions = len(audit.decisions(ctx, limit=10_000))
    assert set(horizon_loads(ctx).values()) == {D(20)}  # the static base load so far

    report = forecasting.refresh(ctx, store)

    assert report.failed == {}
    assert set(report.refreshed) == {"c1"}
    view = forecasting.forecast(ctx, "c1")
    assert view.status == "ok"
    assert view.issued_at == ctx.clock()
    forecast_blocks = [b for b in view.blocks if b.source is Source.FORECAST]
    assert len(forecast_blocks) >= len(view.blocks) - 1  # the current block may keep its load
    for block in forecast_blocks:
        assert block.upper is not None
        assert block.p50 is not None
        assert block.lower is not None
        assert block.lower <= block.p50 <= block.upper == block.base_load
        assert math.isclose(float(block.p50), expected_a(block.start), rel_tol=0.05)
    loads = horizon_loads(ctx)
    for block in forecast_blocks:
        assert loads[block.start] == block.base_load  # allocation uses the forecast
    assert view.peak is not None
    assert float(view.peak) >= max(expected_a(s) for s in index) * 0.99
    assert view.peak >= max(b.upper for b in forecast_blocks if b.upper is not None)  # the fallback is no drop
    new = audit.decisions(ctx, limit=10_000)[decisions:]
    assert [d.action for d in new] == ["base_load_forecast"]
    assert {row["cpo_id"] for row in oscp.outbox(ctx)} == {"a", "b"}  # their budgets moved: pushes owed


def test_reported_ev_usage_is_not_base_load(grid_ctx: Context, store: TimeseriesStore) -> None:
    ctx = grid_ctx
    index = history(ctx.clock())
    ev_a = np.where((index.hour >= 17) & (index.hour < 22), 60.0, 0.0)  # A, reported by CPO a
    measured_kw = weekly_kw(index) + ev_a * WATTS_PER_AMP * POWER_FACTOR / 1000
    store.write_load("c1", pd.Series(measured_kw, index=index))
    usage = [
        BlockQuantity(s.to_pydatetime(), s.to_pydatetime() + BLOCK, D(v)) for s, v in zip(index, ev_a, strict=True)
    ]
    capacity.report_usage(ctx, "c1", "a", usage, actor="a")

    assert forecasting.refresh(ctx, store).failed == {}

    for block in forecasting.forecast(ctx, "c1").blocks:
        if block.p50 is not None:
            assert math.isclose(float(block.p50), expected_a(block.start), rel_tol=0.05)


def test_a_dead_store_keeps_the_last_forecast_then_falls_back_to_the_peak(
    grid_ctx: Context, store: TimeseriesStore, clock: Clock
) -> None:
    ctx = grid_ctx
    write_history(store, ctx)
    assert forecasting.refresh(ctx, store).failed == {}
    good = forecasting.forecast(ctx, "c1")
    dead = build_timeseries(Settings(timeseries_backend="influx1", influx_url="http://127.0.0.1:9", influx_timeout_s=2))

    clock.advance(timedelta(hours=1))
    report = forecasting.refresh(ctx, dead)

    assert set(report.failed) == {"c1"}
    assert "timeseries store could not be read" in report.failed["c1"]
    assert "127.0.0.1:9" in report.failed["c1"]
    after = forecasting.forecast(ctx, "c1")
    assert after.status == "failed"
    assert after.issued_at == good.issued_at  # the last good forecast is still the one in use
    still = {b.start: b for b in after.blocks}
    covered = [b for b in good.blocks if b.source is Source.FORECAST and b.start in still]
    assert covered
    assert all(still[b.start].base_load == b.base_load and still[b.start].source is Source.FORECAST for b in covered)

    clock.advance(timedelta(hours=48))  # past everything the last forecast covered
    capacity.roll_horizon(ctx)
    late = forecasting.forecast(ctx, "c1")
    assert {b.source for b in late.blocks} == {Source.PEAK}
    assert {b.base_load for b in late.blocks} == {good.peak}
    assert set(horizon_loads(ctx).values()) == {good.peak}
    assert good.peak is not None
    assert good.peak > 0


def test_a_cable_without_measurements_fails_alone_and_keeps_its_static_base_load(
    grid_ctx: Context, store: TimeseriesStore
) -> None:
    ctx = grid_ctx
    grid.create_cable(ctx, make_cable("c2"), actor="eng")
    write_history(store, ctx)

    report = forecasting.refresh(ctx, store)

    assert set(report.refreshed) == {"c1"}
    assert set(report.failed) == {"c2"}
    assert report.failed["c2"]  # says why
    view = forecasting.forecast(ctx, "c2")
    assert view.status == "failed"
    assert {b.source for b in view.blocks} == {Source.STATIC}
    assert set(horizon_loads(ctx, "c2").values()) == {D(20)}


def test_a_cable_never_forecast_says_so(grid_ctx: Context) -> None:
    view = forecasting.forecast(grid_ctx, "c1")
    assert view.status == "never"
    assert "static base load 20" in view.message
    assert {b.source for b in view.blocks} == {Source.STATIC}


def test_a_refresh_from_a_real_influxdb_writes_its_results_back(
    grid_ctx: Context, influx_url: str, influx_database: str
) -> None:
    ctx = grid_ctx
    settings = Settings(timeseries_backend="influx1", influx_url=influx_url, influx_database=influx_database)
    store = build_timeseries(settings)
    write_history(store, ctx)

    report = forecasting.refresh(ctx, store)
    store.close()

    assert report.failed == {}
    assert "*" not in report.warnings  # results were written
    forecast = influx_query(
        influx_url, 'SELECT count("upper") FROM "gridcap_forecast" GROUP BY "issued_at"', db=influx_database
    )
    (series,) = forecast["results"][0]["series"]  # type: ignore[index]
    assert series["tags"]["issued_at"] == report.issued_at.isoformat()  # tagged with its issue time
    assert series["values"][0][1] >= 190
    capacity_count = influx_query(influx_url, 'SELECT count("available") FROM "gridcap_capacity"', db=influx_database)
    budget_count = influx_query(influx_url, 'SELECT count("budget") FROM "gridcap_budget"', db=influx_database)
    assert capacity_count["results"][0]["series"][0]["values"][0][1] == 192  # type: ignore[index]
    assert budget_count["results"][0]["series"][0]["values"][0][1] == 2 * 192  # type: ignore[index]


def test_rest_shows_the_forecast_and_the_last_backtest(grid_ctx: Context, store: TimeseriesStore) -> None:
    from test_api_support import Client, assert_error, make_app

    ctx = grid_ctx
    client = Client(make_app(ctx))
    never = client.get("cables/c1/forecast")
    assert never["status"] == "never"
    assert {b["source"] for b in never["blocks"]} == {"static"}
    assert_error(client.call("GET", "cables/c1/forecast/metrics"), 404, "no backtest yet", "gridcap forecast backtest")
    assert_error(client.call("GET", "cables/nope/forecast"), 404, "nope")
    assert client.call("GET", "cables/c1/forecast", token=None).status_code == 401

    write_history(store, ctx)
    forecasting.refresh(ctx, store)
    forecasting.backtest(ctx, store, "c1", start=block_floor(ctx.clock()) - timedelta(days=7))

    body = client.get("cables/c1/forecast")
    assert body["status"] == "ok"
    assert body["model"]
    assert body["issued_at"] == ctx.clock().isoformat().replace("+00:00", "Z")
    assert len(body["blocks"]) == 192
    assert body["blocks"][-1]["source"] == "forecast"
    assert body["blocks"][-1]["base_load"] == body["blocks"][-1]["upper"]
    metrics = client.get("cables/c1/forecast/metrics")
    assert {"model", "mae", "rmae", "pinball", "coverage", "overload_rate", "utilisation", "baselines"} <= set(
        metrics["metrics"]
    )


def test_measured_kw_per_phase_give_an_a_cable_its_highest_phase_current(ctx: Context, tmp_path: Path) -> None:
    """One phase carries most of the load: the limit holds per phase, so that phase's current counts,
    at the lowest power factor expected (0.9), not the three phases' kW spread evenly."""
    grid.create_cable(ctx, make_cable("c1"), actor="eng")
    settings = Settings(timeseries_path=str(tmp_path / "phases.db"), load_phase_tag="phase", load_unit="KW")
    store = build_timeseries(settings)
    index = history(ctx.clock())
    heavy = weekly_kw(index) / 2  # kW on L1
    store.write_load("c1", pd.Series(heavy, index=index), phase="L1")
    for phase in ("L2", "L3"):
        store.write_load("c1", pd.Series(heavy / 10, index=index), phase=phase)

    assert forecasting.refresh(ctx, store).failed == {}
    store.close()

    for block in forecasting.forecast(ctx, "c1").blocks:
        if block.p50 is not None:
            l1_amps = float(weekly_kw(pd.DatetimeIndex([block.start]), noise=False)[0]) / 2 * 1000 / 230 / 0.9
            assert math.isclose(float(block.p50), l1_amps, rel_tol=0.05)


def test_usage_reported_above_the_measured_load_never_makes_base_load_negative(
    grid_ctx: Context, store: TimeseriesStore
) -> None:
    ctx = grid_ctx
    index = write_history(store, ctx)
    too_much = [BlockQuantity(s.to_pydatetime(), s.to_pydatetime() + BLOCK, D(500)) for s in index[-96:]]
    capacity.report_usage(ctx, "c1", "a", too_much, actor="a")  # 500 A: more than the whole cable measured

    report = forecasting.refresh(ctx, store)

    assert report.failed == {}
    assert any("more EV usage reported than measured" in issue for issue in report.warnings["c1"])
    view = forecasting.forecast(ctx, "c1")
    assert all(b.base_load >= 0 for b in view.blocks)
    assert view.peak is not None
    assert float(view.peak) >= max(expected_a(s) for s in index) * 0.99  # the clamped day did not lower it


def test_a_small_drop_in_the_forecast_moves_no_budget_and_a_large_one_does(
    grid_ctx: Context, store: TimeseriesStore
) -> None:
    ctx = grid_ctx
    index = write_history(store, ctx)
    forecasting.refresh(ctx, store)
    loads = horizon_loads(ctx)
    ledger = len(audit.ledger(ctx, limit=10_000))

    store.write_load("c1", pd.Series(weekly_kw(index) * 0.995, index=index))  # 0.5 % lower: inside the deadband
    assert forecasting.refresh(ctx, store).failed == {}
    assert horizon_loads(ctx) == loads
    assert len(audit.ledger(ctx, limit=10_000)) == ledger

    store.write_load("c1", pd.Series(weekly_kw(index) * 0.8, index=index))  # 20 % lower: taken
    assert forecasting.refresh(ctx, store).failed == {}
    lower = horizon_loads(ctx)
    assert sum(lower.values()) < sum(loads.values()) * D("0.9")
    assert len(audit.ledger(ctx, limit=10_000)) > ledger


def test_an_older_forecast_never_replaces_a_newer_one(grid_ctx: Context, store: TimeseriesStore, clock: Clock) -> None:
    ctx = grid_ctx
    write_history(store, ctx)
    assert forecasting.refresh(ctx, store).failed == {}
    newer = forecasting.forecast(ctx, "c1")

    clock.advance(timedelta(minutes=-20))  # a slow refresh that started earlier finishes now
    forecasting.refresh(ctx, store)

    assert forecasting.forecast(ctx, "c1").issued_at == newer.issued_at


def test_a_refresh_told_to_stop_leaves_every_cable_as_it_was(grid_ctx: Context, store: TimeseriesStore) -> None:
    ctx = grid_ctx
    write_history(store, ctx)

    report = forecasting.refresh(ctx, store, stop=lambda: True)

    assert report.refreshed == {}
    assert report.warnings["*"] == ["stopped after 0 of 1 cables"]
    assert forecasting.forecast(ctx, "c1").status == "never"


def test_blocks_entering_the_horizon_before_the_next_refresh_are_forecast(
    grid_ctx: Context, store: TimeseriesStore, clock: Clock
) -> None:
    ctx = grid_ctx
    write_history(store, ctx)
    assert forecasting.refresh(ctx, store).failed == {}

    clock.advance(timedelta(minutes=15))
    capacity.roll_horizon(ctx)

    assert {b.source for b in forecasting.forecast(ctx, "c1").blocks[1:]} == {Source.FORECAST}


def test_settings_reach_the_forecasts(tmp_path: Path) -> None:
    from service.usecases import build_context

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        backtest_issue_time="06:00",
        forecast_local_tz="Europe/Berlin",
        forecast_coverage=D("0.9"),
        forecast_interval_min=30,
        horizon_hours=24,
        load_power_factor=D("0.85"),
    )
    ctx = build_context(settings)
    config = ctx.forecast_config
    assert (config.issue_time, config.local_tz, config.coverage) == ("06:00", "Europe/Berlin", 0.9)
    assert config.horizon_blocks == 96 + 2 + 1  # the horizon, a refresh interval, and the block under way
    assert ctx.power_factor == 0.85
    ctx.db.dispose()
