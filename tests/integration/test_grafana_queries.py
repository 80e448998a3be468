"""Every query of every Grafana dashboard, run against a real influxd holding what a running service wrote.

The service runs as `gridcap serve --with-scheduler` does: the app on a live HTTP server and its
scheduled jobs, writing to the test influxd. Two CPOs talk to it over real OSCP (JSON and SOAP) with
the adapter's own client: heartbeats, usage reports, requests that are granted, handed back and
reclaimed, and a call with a wrong password. One CPO's endpoint answers pushes, the other's is down.
The jobs refresh the forecasts, deliver pushes, backtest and export the monitoring record. Then each
panel and annotation query runs as Grafana sends it, over the dashboard's own time range:
$timeFilter, $__interval and the template variables expanded (variables from their own queries, in
order), and must return a non-empty series.
"""

import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import _server_env, influx_query
from oscp_support import PASSWORD, CpoEndpoint, live_server
from test_forecasting import make_cable, write_history

from service.app import create_app, wiring
from service.cpo.app import dso_endpoint
from service.cpo.dso import DsoLink, DsoUnreachable, MessageLog
from service.domain.blocks import BLOCK, block_floor
from service.domain.model import Binding, Cpo, Subscription
from service.jobs.scheduler import MONITORING, REFRESH, Jobs, jobs_from_settings
from service.monitoring import dashboards, names
from service.oscp.v1.client import OscpClient
from service.oscp.v1.gateway import WSDL_DIR
from service.settings import Settings
from service.timeseries import build_timeseries
from service.usecases import Context, build_context, cpos, grid, oscp

pytestmark = pytest.mark.influx

CABLES = {"c1": Decimal(250), "c2": Decimal(100)}  # c2's limit is below its evening load: congested
BACKTEST = "backtest the forecasts"
WAIT_S = 240.0  # the backtest of two cables over four weeks, on a busy two-core machine


class Shifted:
    """Real time, moved on by hand: the export counts whole minutes only, so the test steps past one."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Running:
    ctx: Context
    influx_url: str
    database: str

    def run(self, query: str) -> list[dict[str, Any]]:
        body = influx_query(self.influx_url, query, db=self.database, epoch="ms")
        series: list[dict[str, Any]] = body["results"][0].get("series", [])  # type: ignore[index]
        return series

    def measurements(self) -> set[str]:
        return {row[0] for s in self.run("SHOW MEASUREMENTS") for row in s["values"]}


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def cpo_link(base_url: str, username: str, binding: str, password: str = PASSWORD) -> DsoLink:
    """A CPO's connection to the DSO: the CPO adapter's own OSCP client."""
    client = OscpClient(wsdl_dir=WSDL_DIR, username=username, password=password, timeout_s=10)
    return DsoLink(client, MessageLog(), url=dso_endpoint(base_url, binding), binding=binding)


def drive_cpos(ctx: Context, dso_url: str) -> None:
    """What two CPOs do over OSCP. On c1, a reports little use and b, having handed some budget back
    first, asks for far more than is free: it is granted what is free and the rest is reclaimed from a.
    On c2 the same the other way round."""
    a, b = cpo_link(dso_url, "user-a", "json"), cpo_link(dso_url, "user-b", "soap11")
    try:
        for link in (a, b):
            link.heartbeat()
        yesterday = block_floor(ctx.clock()) - timedelta(days=1)
        low_use = {yesterday + k * BLOCK: Decimal(k % 8) for k in range(96)}
        a.report_usage("c1", "A", low_use)
        b.report_usage("c2", "A", low_use)
        for link, cable_id in ((b, "c1"), (a, "c2")):
            (held,) = [f for f in link.capacity_forecasts() if f.cable_id == cable_id]
            most = sorted(held.blocks, key=lambda start: (-held.blocks[start], start))[:4]  # the most it holds
            assert all(held.blocks[start] > 1 for start in most), held
            link.request(cable_id, "A", {start: (held.blocks[start] / 2).quantize(Decimal(1)) for start in most})
            link.request(cable_id, "A", dict.fromkeys(most, Decimal(400)))  # more than the cable has
        with pytest.raises(DsoUnreachable):
            cpo_link(dso_url, "user-a", "json", password="not the password").heartbeat()  # noqa: S106
    finally:
        a.close()
        b.close()


@pytest.fixture(scope="module")
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    influx_url = _server_env(request.config, "GRIDCAP_TEST_INFLUX_URL", "InfluxDB server").rstrip("/")
    database = f"gridcap_{uuid.uuid4().hex[:12]}"
    influx_query(influx_url, f'CREATE DATABASE "{database}"')
    tmp: Path = tmp_path_factory.mktemp("grafana")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'gridcap.db'}",
        timeseries_backend="influx1",
        influx_url=influx_url,
        influx_database=database,
        admin_token="an admin token for the Grafana tests",  # noqa: S106
        oscp_password="the DSO's password",  # noqa: S106
        forecast_history_weeks=4,
    )
    clock = Shifted()
    ctx = dataclasses.replace(build_context(settings), clock=clock)
    ctx.db.create_schema()
    endpoint = CpoEndpoint()  # CPO a's; b's is down
    app = create_app(settings, ctx)
    jobs: Jobs | None = None
    try:
        with live_server(endpoint.app()) as cpo_url, live_server(app) as dso_url:
            store = build_timeseries(settings)
            try:
                for cable_id, limit in CABLES.items():
                    grid.create_cable(ctx, dataclasses.replace(make_cable(cable_id), rated_limit=limit), actor="eng")
                    write_history(store, ctx, cable_id)
            finally:
                store.close()
            for cpo_id, url, binding in (
                ("a", f"{cpo_url}/oscp/1.0/json", Binding.JSON),
                ("b", "http://127.0.0.1:9/oscp/1.0/soap", Binding.SOAP11),
            ):
                cpos.create_cpo(
                    ctx, Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", url, binding), PASSWORD, actor="eng"
                )
                for cable_id in CABLES:
                    grid.subscribe(ctx, Subscription(cable_id, cpo_id, Decimal(1), Decimal(10)), actor="eng")
            jobs = jobs_from_settings(settings, ctx, wiring(app).recorder)
            jobs.start()  # the first forecast refresh runs at once
            found = Running(ctx, influx_url, database)
            until(lambda: names.CAPACITY.measurement() in found.measurements(), "the first forecast refresh")
            drive_cpos(ctx, dso_url)
            grid.update_cable(ctx, "c1", {"rated_limit": Decimal(240)}, actor="eng")  # an annotation
            jobs.scheduler.modify_job(REFRESH, next_run_time=datetime.now(UTC))  # writes the usage back
            until(lambda: names.USAGE.measurement() in found.measurements(), "the reported usage written back")
            until(lambda: bool(endpoint.pushes()), "a push delivered to CPO a")
            until(lambda: any(o["cpo_id"] == "b" and o["attempts"] for o in oscp.outbox(ctx)), "a push to b failing")
            jobs.scheduler.modify_job(BACKTEST, next_run_time=datetime.now(UTC))
            until(lambda: names.FORECAST_QUALITY.measurement() in found.measurements(), "the backtests")
            wiring(app).recorder.flush()
            clock.offset = timedelta(minutes=1)  # the minute of the calls above is whole now
            jobs.scheduler.modify_job(MONITORING, next_run_time=datetime.now(UTC))
            until(lambda: names.OSCP.measurement() in found.measurements(), "the monitoring export")
            jobs.scheduler.modify_job(MONITORING, next_run_time=datetime.now(UTC))  # with the backtest's run
            until(lambda: bool(found.run(job_runs_of(BACKTEST))), "the backtest's run exported")
            yield found
    finally:
        if jobs is not None:
            jobs.shutdown(wait=True)
        wiring(app).close()
        ctx.db.dispose()
        influx_query(influx_url, f'DROP DATABASE "{database}"')


def job_runs_of(job: str) -> str:
    return f"SELECT * FROM {dashboards.q(names.JOB.measurement())} WHERE {dashboards.q(names.JOB.job)} = '{job}'"  # noqa: S608 - a fixed name


# --- as Grafana sends it --------------------------------------------------------------------------

Window = tuple[datetime, datetime]
RELATIVE = re.compile(r"^now(?:([+-])(\d+)([mhd]))?$")
UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


def moment(text: str, now: datetime) -> datetime:
    """A Grafana relative time such as now, now-6h, now+24h."""
    found = RELATIVE.match(text)
    assert found, f"a time Grafana could not read here: {text}"
    sign, amount, unit = found.groups()
    if sign is None:
        return now
    return now + (1 if sign == "+" else -1) * int(amount) * UNITS[unit]


def window_of(board: dict[str, Any], panel: dict[str, Any] | None, now: datetime) -> Window:
    """The dashboard's time range, or the panel's own relative one (timeFrom: the last N)."""
    if panel is not None and "timeFrom" in panel:
        return moment(f"now-{panel['timeFrom']}", now), now
    return moment(board["time"]["from"], now), moment(board["time"]["to"], now)


def expand(text: str, values: dict[str, str], window: Window, interval: str) -> str:
    """What Grafana's InfluxQL datasource sends for `text` over `window`."""
    start, end = window
    time_filter = f"time >= {int(start.timestamp() * 1000)}ms and time <= {int(end.timestamp() * 1000)}ms"
    text = text.replace("$timeFilter", time_filter).replace("$__interval", interval)
    for name in sorted(values, key=len, reverse=True):  # $cable before a shorter name it starts with
        text = text.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert not re.search(r"\$\{?\w", text), f"unexpanded variable in {text}"  # a regex's $/ is no variable
    return text


def variable_values(board: dict[str, Any], found: Running, window: Window) -> list[dict[str, str]]:
    """Every value of the first variable, each later variable at its default (its first value in
    its sort order, as Grafana picks)."""
    variables = board["templating"]["list"]
    if not variables:
        return [{}]
    first, *rest = variables
    combinations = []
    for value in tag_values(first, {}, found, window):
        values = {first["name"]: value}
        for variable in rest:
            values_found = tag_values(variable, values, found, window)
            assert values_found, f"variable {variable['name']} has no values for {values}"
            values[variable["name"]] = values_found[0]
        combinations.append(values)
    return combinations


def tag_values(variable: dict[str, Any], values: dict[str, str], found: Running, window: Window) -> list[str]:
    series = found.run(expand(variable["query"], values, window, dashboards.BLOCK_INTERVAL))
    return sorted({row[1] for s in series for row in s["values"]}, reverse=variable["sort"] == 2)


def has_values(series: list[dict[str, Any]]) -> bool:
    return any(any(v is not None for v in row[1:]) for s in series for row in s["values"])


@pytest.mark.parametrize("name", sorted(dashboards.build()))
def test_every_panel_and_annotation_query_returns_data(name: str, running: Running) -> None:
    board = dashboards.build()[name]
    now = running.ctx.clock()
    combinations = variable_values(board, running, window_of(board, None, now))
    first = next(iter(board["templating"]["list"]), None)
    if first is not None:  # every cable, every CPO: none is missing from the variable
        expected = set(CABLES) if first["name"] == "cable" else {"a", "b"}
        assert {values[first["name"]] for values in combinations} == expected
    ran = 0
    for values in combinations:
        for panel in board["panels"]:
            window = window_of(board, panel, now)
            for target in panel.get("targets", []):
                query = expand(target["query"], values, window, panel["interval"])
                series = running.run(query)
                assert series, f"{name} panel {panel['title']!r} {target['refId']} {values}: no series for {query}"
                assert has_values(series), query
                ran += 1
        for annotation in board["annotations"]["list"]:
            query = expand(annotation["query"], values, window_of(board, None, now), dashboards.BLOCK_INTERVAL)
            assert has_values(running.run(query)), f"{name} annotation {annotation['name']} {values}: {query}"
    assert ran >= len(board["panels"])


def test_the_overview_finds_the_congested_cable(running: Running) -> None:
    board = dashboards.build()["grid-overview.json"]
    now = running.ctx.clock()
    day = (now, now + timedelta(hours=24))
    (congested,) = [p for p in board["panels"] if p["title"] == "Congested blocks"]
    query = expand(congested["targets"][0]["query"], {}, day, dashboards.BLOCK_INTERVAL)
    counts = {s["tags"]["cable"]: s["values"][0][1] for s in running.run(query)}
    assert counts.get("c2", 0) > 0
    (ranking,) = [p for p in board["panels"] if p["title"] == "Cables ranked by peak loading"]
    query = expand(ranking["targets"][0]["query"], {}, day, dashboards.BLOCK_INTERVAL)
    peaks = {s["tags"]["cable"]: s["values"][0][s["columns"].index("peak loading")] for s in running.run(query)}
    assert peaks["c2"] > peaks["c1"] > 0


def test_the_cpo_view_shows_what_each_cpo_did(running: Running) -> None:
    board = dashboards.build()["cpo-view.json"]
    now = running.ctx.clock()
    (changes,) = [p for p in board["panels"] if p["title"].startswith("Grants, hand-backs and reclaims")]
    for cpo_id in ("a", "b"):
        totals = {}
        for target in changes["targets"]:
            query = expand(target["query"], {"cpo": cpo_id}, window_of(board, changes, now), changes["interval"])
            totals[target["alias"]] = sum(row[1] for s in running.run(query) for row in s["values"])
        assert totals["granted"] > 0, (cpo_id, totals)
        assert totals["handed back"] < 0, (cpo_id, totals)
        assert totals["reclaimed"] < 0, (cpo_id, totals)
    (pushed,) = [p for p in board["panels"] if p["title"] == "Pushes in the range by outcome"]
    failed = {}
    for cpo_id in ("a", "b"):
        query = expand(pushed["targets"][0]["query"], {"cpo": cpo_id}, window_of(board, pushed, now), "1m")
        by_outcome = {s["tags"]["outcome"]: s["values"][0][1] for s in running.run(query)}
        failed[cpo_id] = sum(n for outcome, n in by_outcome.items() if outcome != "ok")
    assert failed["a"] == 0
    assert failed["b"] > 0  # its endpoint is down


def test_the_limit_change_is_annotated_on_its_cable_only(running: Running) -> None:
    board = dashboards.build()["cable-detail.json"]
    now = running.ctx.clock()
    (annotation,) = board["annotations"]["list"]
    texts = {}
    for cable_id in CABLES:
        query = expand(annotation["query"], {"cable": cable_id}, window_of(board, None, now), "15m")
        texts[cable_id] = [row[1] for s in running.run(query) for row in s["values"]]
    assert any("240" in text for text in texts["c1"]), texts
    assert not any("240" in text for text in texts["c2"]), texts
