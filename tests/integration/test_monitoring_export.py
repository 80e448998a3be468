"""The monitoring export end to end: real use cases write the SQL record (requests, usage, limit
changes, OSCP messages through the Recorder, owed pushes), the export writes it to a real influxd
(and to the embedded store), and InfluxQL reads back what was driven; a backtest writes its quality
per local day; the scheduler records every job run, also one that raises, and survives an InfluxDB
outage. The SQL side on SQLite and on PostgreSQL."""

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import Clock, influx_query
from test_forecasting import make_cable, write_history

import forecasts
from service.domain.blocks import BLOCK, block_floor
from service.domain.model import Binding, Cpo, LimitOverride, Subscription
from service.jobs import scheduler
from service.oscp.v1.recorder import Recorder
from service.settings import Settings
from service.store import Database
from service.timeseries import TimeseriesStore, TimeseriesUnavailable, build_timeseries
from service.timeseries.base import epoch_ns
from service.usecases import Context, audit, capacity, cpos, forecasting, grid, monitoring, oscp
from service.usecases.capacity import BlockQuantity

D = Decimal


@pytest.fixture
def clock() -> Clock:
    """Near the real time: the Recorder stamps messages with the wall clock, the use cases with this."""
    return Clock(monitoring.minute_floor(datetime.now(UTC)) + timedelta(seconds=5))


class DownLink:
    """Every CPO is unreachable: pushes stay owed, and count their attempts."""

    def push(self, cpo: Cpo, forecasts: Any) -> str | None:
        raise oscp.PeerUnreachable("connection refused")

    def heartbeat(self, cpo: Cpo) -> None:
        raise oscp.PeerUnreachable("connection refused")


def influx_store(url: str, database: str) -> TimeseriesStore:
    return build_timeseries(Settings(timeseries_backend="influx1", influx_url=url, influx_database=database))


@dataclasses.dataclass(frozen=True)
class Influx:
    """The influx1 store on a fresh database of the test influxd."""

    store: TimeseriesStore
    url: str
    database: str

    def select(self, what: str, measurement: str, group_by: str = "") -> list[dict[str, Any]]:
        """SELECT `what` FROM `measurement` at any time: the export's CPO snapshot is a minute
        ahead of the real clock, beyond where InfluxQL's default time range may end."""
        group = f" GROUP BY {group_by}" if group_by else ""
        query = f"SELECT {what} FROM \"{measurement}\" WHERE time < '2262-01-01T00:00:00Z'{group}"  # noqa: S608
        return rows(self.url, self.database, query)


def rows(url: str, database: str, query: str) -> list[dict[str, Any]]:
    """Every row of every series, as {column: value} plus the series' tags."""
    body = influx_query(url, query, db=database, epoch="ns")
    found = []
    for series in body["results"][0].get("series", []):  # type: ignore[index]
        for values in series["values"]:
            found.append({**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))})
    return found


@dataclasses.dataclass
class Driven:
    """What the test did, to check the export against."""

    started: datetime
    statuses: Counter[tuple[str, str]]  # (cpo, status) of the capacity requests
    messages: Counter[tuple[str, str, str, str]]  # (cpo, direction, operation, outcome) recorded
    seen_at: datetime  # when CPO a was last heard from


def drive(ctx: Context, clock: Clock) -> Driven:
    """Two cables, three CPOs (c on no cable), requests, usage, a limit change, an override, OSCP
    messages through the Recorder and pushes that failed once."""
    started = clock()
    grid.create_cable(ctx, make_cable("c1"), actor="eng")
    grid.create_cable(ctx, make_cable("c2"), actor="eng")
    for cpo_id in ("a", "b", "c"):
        cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", f"https://{cpo_id}.example/oscp", Binding.JSON)
        cpos.create_cpo(ctx, cpo, "a long enough password", actor="eng")
    for cpo_id in ("a", "b"):
        grid.subscribe(ctx, Subscription("c1", cpo_id, D(1), D(10)), actor="eng")

    clock.advance(timedelta(seconds=50))  # into the next minute
    soon = block_floor(clock()) + 2 * BLOCK
    statuses: Counter[tuple[str, str]] = Counter()
    for cpo_id, amps in (("a", 200), ("b", 30), ("a", 20), ("b", 400)):
        result = capacity.request(ctx, "c1", cpo_id, [BlockQuantity(soon, soon + BLOCK, D(amps))], actor=cpo_id)
        statuses[(cpo_id, result.status.value)] += 1
    assert len({status for _, status in statuses}) >= 2  # the counts are per status: have more than one
    past = block_floor(clock()) - BLOCK
    capacity.report_usage(ctx, "c1", "a", [BlockQuantity(past, past + BLOCK, D(12))], actor="a")

    clock.advance(timedelta(seconds=40))
    grid.update_cable(ctx, "c1", {"rated_limit": D(200)}, actor="eng")
    clock.advance(timedelta(seconds=10))
    start = block_floor(clock()) + 4 * BLOCK
    grid.add_override(ctx, "c1", LimitOverride(start, start + 4 * BLOCK, D(150), "maintenance"), actor="eng")
    assert oscp.deliver_pushes(ctx, DownLink()).failed  # the pushes stay owed, one attempt made
    clock.advance(timedelta(seconds=5))
    oscp.seen(ctx, "a")
    seen_at = clock()

    recorder = Recorder(ctx)
    messages: Counter[tuple[str, str, str, str]] = Counter()
    for cpo_id, direction, operation, outcome, status in [
        ("a", "in", "Heartbeat", "ok", 204),
        ("a", "in", "Heartbeat", "ok", 204),
        ("a", "in", "RequestAdjustedCapacity", "ok", 204),
        (None, "in", "Heartbeat", "Unauthorized", 401),
        (None, "in", "Heartbeat", "Unauthorized", 401),
        ("b", "out", "UpdateCableCapacityForecast", "Unreachable", None),
    ]:
        recorder.record(
            direction=direction,
            cpo_id=cpo_id,
            binding="json",
            operation=operation,
            outcome=outcome,
            http_status=status,
            started=time.perf_counter() - 0.004,
        )
        messages[(cpo_id or "-", direction, operation, outcome)] += 1
    recorder.close()  # writes what it buffered
    return Driven(started, statuses, messages, seen_at)


@pytest.fixture
def influx(influx_url: str, influx_database: str) -> Iterator[Influx]:
    store = influx_store(influx_url, influx_database)
    yield Influx(store, influx_url, influx_database)
    store.close()


@pytest.mark.influx
def test_the_export_writes_what_the_use_cases_did_and_a_reexport_changes_nothing(
    ctx: Context, clock: Clock, influx: Influx
) -> None:
    driven = drive(ctx, clock)
    clock.now = max(clock.now, datetime.now(UTC)) + timedelta(minutes=1)  # every record in a whole minute before
    since = driven.started - timedelta(minutes=2)

    report = monitoring.export(ctx, influx.store, since=since, until=clock())

    assert report.written, report.error
    q = influx.select

    def check_everything() -> None:
        oscp_rows = q('sum("count")', "gridcap_oscp", "*")
        assert {(r["cpo"], r["direction"], r["operation"], r["outcome"]): r["sum"] for r in oscp_rows} == dict(
            driven.messages
        )
        durations = q('"mean_ms", "p95_ms", "max_ms"', "gridcap_oscp")
        assert all(4 <= r["mean_ms"] <= r["p95_ms"] <= r["max_ms"] < 5000 for r in durations)

        request_rows = q('sum("count")', "gridcap_requests", "*")
        assert {(r["cpo"], r["status"]): r["sum"] for r in request_rows} == dict(driven.statuses)
        assert {r["cable"] for r in request_rows} == {"c1"}

        ledger = audit.ledger(ctx, limit=10_000)
        expected: dict[tuple[str, str, str], list[Any]] = {}
        for e in ledger:
            sums = expected.setdefault((e.cable_id, e.cpo_id, e.reason), [0, D(0), D(0)])
            sums[0] += 1
            sums[1] += max(D(0), e.new_capacity - e.old_capacity)
            sums[2] += max(D(0), e.old_capacity - e.new_capacity)
        allocation_rows = q('sum("changes"), sum("increase"), sum("decrease")', "gridcap_allocation", "*")
        got = {(r["cable"], r["cpo"], r["reason"]): [r["sum"], r["sum_1"], r["sum_2"]] for r in allocation_rows}
        assert set(got) == set(expected)
        for key, (changes, up, down) in expected.items():
            assert got[key][0] == changes
            assert got[key][1] == pytest.approx(float(up))
            assert got[key][2] == pytest.approx(float(down))
        assert {r["last"] for r in q('last("unit")', "gridcap_allocation", "*")} == {"A"}
        reasons = {reason for _, _, reason in got}
        assert {"request_granted", "reallocated_down"} <= reasons  # increases and decreases both there
        assert any(float(sums[2]) > 0 for sums in expected.values())

        limit_rows = q('"text", "actor"', "gridcap_limit_change", "*")
        changes_audited = [
            d
            for d in audit.decisions(ctx, limit=10_000)
            if d.action in {"cable_created", "cable_updated", "override_added", "override_removed"}
        ]
        assert sorted((r["cable"], r["action"], r["text"], r["actor"], r["time"]) for r in limit_rows) == sorted(
            (d.cable_id, d.action, d.message, d.actor, epoch_ns(d.at)) for d in changes_audited
        )
        assert {r["action"] for r in limit_rows} == {"cable_created", "cable_updated", "override_added"}

    check_everything()
    state = {r["cpo"]: r for r in q("*", "gridcap_cpo_state", '"cpo"')}
    owed = {row["cpo_id"]: row for row in oscp.outbox(ctx)}
    assert set(owed) == {"a", "b"}
    assert set(state) == {"a", "b", "c"}  # c owes nothing and was never heard from: a point all the same
    for cpo_id, point in state.items():
        assert point["outbox_depth"] == (owed[cpo_id]["depth"] if cpo_id in owed else 0)
        assert point["push_attempts"] == (owed[cpo_id]["attempts"] if cpo_id in owed else 0)
        oldest = owed[cpo_id]["oldest"] if cpo_id in owed else None
        assert point["oldest_push_age_s"] == ((clock() - oldest).total_seconds() if oldest else 0)
        assert point["time"] == epoch_ns(clock())
    assert state["a"]["push_attempts"] == 1
    assert (state["a"]["online"], state["b"]["online"], state["c"]["online"]) == (1, 0, 0)
    assert state["a"]["heartbeat_age_s"] == (clock() - driven.seen_at).total_seconds()
    assert state["c"]["heartbeat_age_s"] is None

    points_before = q('count("count")', "gridcap_oscp")
    again = monitoring.export(ctx, influx.store, since=since, until=clock())  # the same minutes once more
    later = monitoring.export(ctx, influx.store, since=since + timedelta(minutes=1), until=clock())  # overlapping

    assert again.written
    assert later.written
    assert again.points == report.points
    check_everything()  # nothing doubled
    assert q('count("count")', "gridcap_oscp") == points_before


@pytest.mark.influx
def test_a_backtest_writes_its_quality_per_local_day(sqlite_url: str, clock: Clock, influx: Influx) -> None:
    ctx = Context(Database(sqlite_url), clock=clock)
    ctx.db.create_schema()
    grid.create_cable(ctx, make_cable("c1"), actor="eng")
    write_history(influx.store, ctx)

    run = forecasting.backtest(ctx, influx.store, "c1", start=block_floor(clock()) - timedelta(days=5))
    ctx.db.dispose()

    points = influx.select("*", "gridcap_forecast_quality")
    frame = run.result.frame
    tz = ctx.forecast_config.local_tz
    days = frame.groupby(frame.index.tz_convert(tz).date)
    assert len(points) == days.ngroups == run.result.days >= 4
    for point, (day, blocks) in zip(points, days, strict=True):
        midnight = pd.Timestamp(day).tz_localize(tz).tz_convert(UTC)
        assert point["time"] == midnight.value  # the local day's start
        assert point["cable"] == "c1"
        assert point["model"] == blocks["model"].mode()[0]
        expected = forecasts.evaluate(
            blocks["actual"].to_numpy(),
            blocks["p50"].to_numpy(),
            blocks["lower"].to_numpy(),
            blocks["upper"].to_numpy(),
            blocks["limit"].to_numpy(),
            coverage=ctx.forecast_config.coverage,
        )
        for name in ("rmae", "coverage", "mae", "overload_rate"):
            assert point[name] == pytest.approx(expected[name])


class NoWrites:
    """A store that reads but cannot write: InfluxDB refusing writes, or down since the read."""

    def __init__(self, store: TimeseriesStore) -> None:
        self.store = store
        self.name = store.name
        self.layout = store.layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def write_points(self, points: Any) -> None:
        raise TimeseriesUnavailable("InfluxDB did not answer (simulated)")


def test_a_backtest_whose_quality_cannot_be_written_is_stored_and_returned_all_the_same(
    sqlite_url: str, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = Context(Database(sqlite_url), clock=clock)
    ctx.db.create_schema()
    grid.create_cable(ctx, make_cable("c1"), actor="eng")
    store = build_timeseries(Settings(timeseries_backend="embedded", timeseries_path=str(tmp_path / "ts.db")))
    write_history(store, ctx)

    run = forecasting.backtest(ctx, NoWrites(store), "c1", start=block_floor(clock()) - timedelta(days=3))  # type: ignore[arg-type]

    assert run.result.days >= 2
    _, stored = forecasting.metrics(ctx, "c1")
    assert stored["rmae"] == run.result.as_dict()["rmae"]
    (logged,) = [r for r in caplog.records if "forecast quality of cable c1 was not written" in r.getMessage()]
    assert (logged.levelname, logged.exc_info) == ("WARNING", None)  # an outage, not a bug: no traceback
    assert "simulated" in logged.getMessage()
    # the embedded store takes the quality points too
    forecasting.backtest(ctx, store, "c1", start=block_floor(clock()) - timedelta(days=3))
    written = store.read_points("gridcap_forecast_quality", clock() - timedelta(days=10), clock())
    assert len(written) == run.result.days
    store.close()
    ctx.db.dispose()


def test_the_exporter_counts_late_records_and_overwrites_the_minutes_it_exports_again(
    ctx: Context, clock: Clock, tmp_path: Path
) -> None:
    """With the embedded store, whose points overwrite like InfluxDB's."""
    store = build_timeseries(Settings(timeseries_backend="embedded", timeseries_path=str(tmp_path / "ts.db")))
    grid.create_cable(ctx, make_cable("c1"), actor="eng")
    cpo = Cpo("a", "CPO a", "user-a", "https://a.example/oscp", Binding.JSON)
    cpos.create_cpo(ctx, cpo, "a long enough password", actor="eng")
    exporter = monitoring.Exporter(ctx, store, monitoring.JobRuns())

    def message(at: datetime) -> dict[str, object]:
        return {
            "at": at,
            "direction": "in",
            "cpo_id": "a",
            "binding": "json",
            "operation": "Heartbeat",
            "outcome": "ok",
            "http_status": 204,
            "duration_ms": 2.5,
            "detail": None,
        }

    first_minute = monitoring.minute_floor(clock())
    oscp.record_messages(ctx, [message(clock())] * 3)
    clock.advance(timedelta(minutes=1))
    assert exporter.run().written
    assert exporter.done_until == first_minute + timedelta(minutes=1)

    oscp.record_messages(ctx, [message(first_minute + timedelta(seconds=50))])  # flushed late
    oscp.record_messages(ctx, [message(clock())])
    clock.advance(timedelta(minutes=1))
    report = exporter.run()

    assert report.since <= first_minute
    points = store.read_points("gridcap_oscp", first_minute, clock())
    assert [(p.time, p.fields["count"]) for p in points] == [
        (first_minute, 4),
        (first_minute + timedelta(minutes=1), 1),
    ]
    # a window starting inside a minute exports that whole minute, never a part overwriting the whole
    assert monitoring.export(ctx, store, since=first_minute + timedelta(seconds=30), until=clock()).written
    assert store.read_points("gridcap_oscp", first_minute, clock()) == points
    (state,) = store.read_points("gridcap_cpo_state", clock(), clock() + timedelta(seconds=1))
    assert state.tags == {"cpo": "a"}
    assert state.fields["outbox_depth"] == 0
    store.close()


@pytest.mark.influx
def test_every_job_run_is_recorded_also_one_that_raises(
    ctx: Context,
    clock: Clock,
    influx: Influx,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    observed: list[tuple[str, float, bool]] = []
    monkeypatch.setattr(scheduler, "observe_job", lambda job, duration_s, ok: observed.append((job, duration_s, ok)))
    jobs = scheduler.build_scheduler(ctx, DownLink(), influx.store)
    jobs.lease.renew()
    try:
        assert jobs.lease.held

        def explode() -> None:
            time.sleep(0.05)
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):  # APScheduler still sees it, and logs it
            scheduler.leased(ctx, jobs.lease, jobs.runs, "explode", explode)()
        assert [(job, ok) for job, _, ok in observed] == [("explode", False)]
        assert observed[0][1] >= 0.05

        export_job = jobs.scheduler.get_job(scheduler.MONITORING).func  # as the scheduler calls it
        export_job()  # writes the failed run
        clock.advance(timedelta(minutes=1))
        export_job()  # writes the first export's own run
    finally:
        jobs.lease.release()

    runs = {r["job"]: r for r in influx.select("*", "gridcap_job", '"job"')}
    assert set(runs) == {"explode", scheduler.MONITORING}
    assert runs["explode"]["ok"] == 0
    assert runs["explode"]["duration_s"] == pytest.approx(observed[0][1])
    assert runs["explode"]["time"] == epoch_ns(clock() - timedelta(minutes=1))  # its start
    assert runs[scheduler.MONITORING]["ok"] == 1
    assert [(job, ok) for job, _, ok in observed] == [("explode", False), *[(scheduler.MONITORING, True)] * 2]


@pytest.mark.influx
def test_an_influxdb_outage_fails_no_job_and_loses_no_job_run(
    ctx: Context,
    clock: Clock,
    influx: Influx,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = build_timeseries(Settings(timeseries_backend="influx1", influx_url="http://127.0.0.1:9", influx_timeout_s=2))
    jobs = scheduler.build_scheduler(ctx, DownLink(), dead)
    jobs.lease.renew()
    try:
        jobs.scheduler.get_job("hand out blocks entering the horizon").func()
        export_job = jobs.scheduler.get_job(scheduler.MONITORING).func
        export_job()  # InfluxDB is down: logged, nothing raised

        assert "was not written to the timeseries store" in caplog.text
        assert jobs.exporter.done_until is None  # the next export starts where the last good one ended
        assert len(jobs.runs) == 2  # the horizon run waits, and the failed export's own run

        jobs.exporter.store = influx.store  # InfluxDB is back
        clock.advance(timedelta(minutes=1))
        export_job()
    finally:
        jobs.lease.release()
        dead.close()

    assert jobs.exporter.done_until is not None
    runs = influx.select("*", "gridcap_job", '"job"')
    assert sorted((r["job"], r["ok"]) for r in runs) == [
        ("hand out blocks entering the horizon", 1),
        (scheduler.MONITORING, 1),  # the first export ran (ok) though its write failed
    ]
    assert len(jobs.runs) == 1  # the second export's own run, for the next one


def test_the_scheduler_runs_the_export_every_minute(ctx: Context, tmp_path: Path) -> None:
    store = build_timeseries(Settings(timeseries_backend="embedded", timeseries_path=str(tmp_path / "ts.db")))
    jobs = scheduler.build_scheduler(ctx, DownLink(), store)
    job = jobs.scheduler.get_job(scheduler.MONITORING)
    assert job.name == "write monitoring to InfluxDB"
    assert job.trigger.interval == timedelta(minutes=1)
    jobs.lease.stop()  # without the lease a job neither runs nor is recorded
    job.func()
    assert len(jobs.runs) == 0
    assert jobs.exporter.done_until is None
    store.close()
