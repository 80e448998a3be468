"""Every query of every Grafana dashboard, run against a real influxd holding what the service wrote.

The service's own code writes the data: measured load through the influx1 timeseries store, usage
reported by CPOs, then a forecast refresh, which writes forecasts, capacity, budgets and usage back.
Each panel query then runs as Grafana would send it: $timeFilter, $__interval and the template
variables expanded (variables from their own queries, in order), and must return a non-empty series.
"""

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, influx_query
from test_forecasting import make_cable, write_history

from service.domain.blocks import BLOCK, block_floor
from service.domain.model import Binding, Cpo, Subscription
from service.monitoring import dashboards
from service.settings import Settings
from service.store import Database
from service.timeseries import build_timeseries
from service.usecases import Context, capacity, cpos, forecasting, grid
from service.usecases.capacity import BlockQuantity

pytestmark = pytest.mark.influx

CABLES = {"c1": Decimal(250), "c2": Decimal(100)}  # c2's limit is below its evening load: congested
INTERVAL = "15m"


@pytest.fixture
def written(tmp_path: Path, clock: Clock, influx_url: str, influx_database: str) -> Iterator[Context]:
    """Two cables, two CPOs, four weeks of measured load and a day of reported usage in influxd, and
    the results of one forecast refresh written back."""
    ctx = Context(Database(f"sqlite:///{tmp_path / 'gridcap.db'}"), clock=clock)
    ctx.db.create_schema()
    settings = Settings(timeseries_backend="influx1", influx_url=influx_url, influx_database=influx_database)
    store = build_timeseries(settings)
    try:
        for cable_id, limit in CABLES.items():
            grid.create_cable(ctx, dataclasses.replace(make_cable(cable_id), rated_limit=limit), actor="eng")
            write_history(store, ctx, cable_id)
        for cpo_id in ("a", "b"):
            cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", f"https://{cpo_id}.example/oscp", Binding.JSON)
            cpos.create_cpo(ctx, cpo, "a long enough password", actor="eng")
            for cable_id in CABLES:
                grid.subscribe(ctx, Subscription(cable_id, cpo_id, Decimal(1), Decimal(10)), actor="eng")
        today = block_floor(clock()) - timedelta(days=1)
        usage = [BlockQuantity(today + i * BLOCK, today + (i + 1) * BLOCK, Decimal(i % 8)) for i in range(96)]
        for cable_id in CABLES:
            capacity.report_usage(ctx, cable_id, "a", usage, actor="a")

        report = forecasting.refresh(ctx, store)

        assert report.failed == {}
        assert "*" not in report.warnings  # the results were written
        yield ctx
    finally:
        store.close()
        ctx.db.dispose()


Window = tuple[datetime, datetime]


def expand(text: str, values: dict[str, str], window: Window) -> str:
    """What Grafana's InfluxQL datasource sends for `text` over the time range `window`."""
    start, end = window
    time_filter = f"time >= {int(start.timestamp() * 1000)}ms and time <= {int(end.timestamp() * 1000)}ms"
    text = text.replace("$timeFilter", time_filter).replace("$__interval", INTERVAL)
    for name in sorted(values, key=len, reverse=True):  # $cable before a shorter name it starts with
        text = text.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in text, f"unexpanded variable in {text}"
    return text


def run(influx_url: str, database: str, query: str) -> list[dict[str, Any]]:
    body = influx_query(influx_url, query, db=database, epoch="ms")
    series: list[dict[str, Any]] = body["results"][0].get("series", [])  # type: ignore[index]
    return series


def variable_values(board: dict[str, Any], url: str, database: str, window: Window) -> list[dict[str, str]]:
    """Every combination of the first variable's values, each later variable at its default (its
    first value in its sort order, as Grafana picks)."""
    variables = board["templating"]["list"]
    if not variables:
        return [{}]
    first, *rest = variables
    combinations = []
    for value in tag_values(first, {}, url, database, window):
        values = {first["name"]: value}
        for variable in rest:
            found = tag_values(variable, values, url, database, window)
            assert found, f"variable {variable['name']} has no values for {values}"
            values[variable["name"]] = found[0]
        combinations.append(values)
    return combinations


def tag_values(variable: dict[str, Any], values: dict[str, str], url: str, database: str, window: Window) -> list[str]:
    series = run(url, database, expand(variable["query"], values, window))
    found = sorted({row[1] for s in series for row in s["values"]}, reverse=variable["sort"] == 2)
    return found


@pytest.mark.parametrize("name", sorted(dashboards.build()))
def test_every_panel_query_returns_data(name: str, written: Context, influx_url: str, influx_database: str) -> None:
    board = dashboards.build()[name]
    now = written.clock()
    window = (now - timedelta(days=2), now + timedelta(days=2))
    combinations = variable_values(board, influx_url, influx_database, window)
    if board["templating"]["list"]:
        assert {values["cable"] for values in combinations} == set(CABLES)
    ran = 0
    for values in combinations:
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                query = expand(target["query"], values, window)
                series = run(influx_url, influx_database, query)
                assert series, f"{name} panel {panel['title']!r} {target['refId']} {values}: no series for {query}"
                assert any(any(v is not None for v in row[1:]) for s in series for row in s["values"]), query
                ran += 1
    assert ran >= len(board["panels"])


def test_the_overview_finds_the_congested_cable(written: Context, influx_url: str, influx_database: str) -> None:
    board = dashboards.build()["grid-overview.json"]
    now = written.clock()
    (congested,) = [p for p in board["panels"] if p["title"] == "Congested blocks"]
    query = expand(congested["targets"][0]["query"], {}, (now, now + timedelta(hours=24)))
    counts = {s["tags"]["cable"]: s["values"][0][1] for s in run(influx_url, influx_database, query)}
    assert counts.get("c2", 0) > 0
    (ranking,) = [p for p in board["panels"] if p["title"] == "Cables ranked by peak loading"]
    query = expand(ranking["targets"][0]["query"], {}, (now, now + timedelta(hours=24)))
    peaks = {
        s["tags"]["cable"]: s["values"][0][s["columns"].index("peak loading")]
        for s in run(influx_url, influx_database, query)
    }
    assert peaks["c2"] > peaks["c1"] > 0
