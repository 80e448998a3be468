"""The whole forecast refresh of the service, not only the forecasting: N cables with two CPOs each
on SQLite, 8 weeks of synthetic measurements in the embedded store. Printed beside it, as the
baseline, `forecasts.forecast_many` alone on the same history: what the refresh adds is reading,
checking, storing, reallocating (every horizon block of every cable) and writing results back.
No target in the issue; the figures say how far one process goes. Run with `make bench`.
"""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import forecasts
from forecasts.synthetic import demo_measurements
from service.domain.blocks import block_floor
from service.domain.model import Binding, Cable, Cpo, Subscription
from service.domain.units import Unit
from service.settings import Settings
from service.store import Database
from service.timeseries import build_timeseries
from service.usecases import Context, cpos, forecasting, grid

CABLES = 200
NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)


def test_refresh_of_many_cables(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'bench.db'}")
    db.create_schema()
    ctx = Context(db, clock=lambda: NOW)
    store = build_timeseries(Settings(timeseries_path=str(tmp_path / "ts.db")))
    store.ensure_ready()
    ids = [f"c{i:04d}" for i in range(CABLES)]
    for cpo_id in ("a", "b"):
        cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", f"https://{cpo_id}.example/oscp", Binding.JSON)
        cpos.create_cpo(ctx, cpo, "a long enough password", actor="bench")
    end = block_floor(NOW)
    data = demo_measurements(ids, start=end - timedelta(weeks=8), end=end, seed=1)
    started = time.perf_counter()
    for cable_id in ids:
        limit_kw = Decimal(str(round(float(data.limit_kw[cable_id]), 3)))
        grid.create_cable(ctx, Cable(cable_id, cable_id, Unit.KILOWATT, limit_kw, 3, Decimal(230)), actor="bench")
        for cpo_id in ("a", "b"):
            grid.subscribe(ctx, Subscription(cable_id, cpo_id, Decimal(1), Decimal(0)), actor="bench")
        store.write_load(cable_id, data.measured[cable_id])
    seeded = time.perf_counter() - started

    history = forecasting.read_history(ctx, store, grid.list_cables(ctx), start=end - ctx.history, end=end)
    started = time.perf_counter()
    forecasts.forecast_many(history.base_load, issued_at=NOW, config=ctx.forecast_config)
    alone = time.perf_counter() - started

    started = time.perf_counter()
    report = forecasting.refresh(ctx, store)
    full = time.perf_counter() - started
    assert report.failed == {}
    store.close()
    db.dispose()

    print(f"\nforecast refresh, {CABLES} cables x 2 CPOs, SQLite + embedded store (seeding took {seeded:.1f} s)")
    print(f"  baseline: forecast_many alone       {alone:7.1f} s")
    print(f"  the whole refresh                    {full:7.1f} s  ({full / alone:.1f} x baseline, "
          f"{full / CABLES * 1000:.0f} ms a cable)")  # fmt: skip
