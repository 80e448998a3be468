"""The jobs: deliver owed pushes, exchange heartbeats, release expired holds, hand out blocks as
they enter the horizon, refresh the base-load forecasts, backtest them once a day, and write the
operational record to InfluxDB for monitoring.

Exactly one process runs them at a time: each process that starts a scheduler competes for the
SCHEDULER lease in the database and skips every job while another process holds it. Each job
isolates failures per CPO or cable and logs them together; a job that is still running when it
is due again is skipped, not stacked. Every run is timed: into the Prometheus metrics at once, and
into InfluxDB with the next monitoring export (a job never waits for InfluxDB).
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from service.monitoring.metrics import observe_job
from service.oscp.v1.client import OscpClient
from service.oscp.v1.gateway import WSDL_DIR
from service.oscp.v1.link import OscpPeerLink
from service.oscp.v1.recorder import Recorder
from service.settings import Settings
from service.timeseries import TimeseriesStore, build_timeseries
from service.usecases import Context, capacity, forecasting, leases, monitoring, oscp
from service.usecases.oscp import PeerLink

log = logging.getLogger("gridcap.jobs")

PUSH_EVERY = timedelta(seconds=2)
HOLDS_EVERY = timedelta(seconds=30)
HORIZON_EVERY = timedelta(minutes=1)
MONITORING_EVERY = timedelta(minutes=1)
BACKTEST_EVERY = timedelta(hours=1)  # backtests the cables whose metrics are a day old: restarts do not starve it
LEASE_TTL = timedelta(seconds=30)  # a dead scheduler's jobs resume elsewhere within this


class Lease:
    """This process's hold on the scheduler lease, renewed by its own job."""

    def __init__(self, ctx: Context, ttl: timedelta = LEASE_TTL) -> None:
        self.ctx = ctx
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._valid_until = 0.0  # monotonic seconds
        self._lock = threading.Lock()
        self._stopping = False

    def renew(self) -> None:
        if self._stopping:
            return
        asked = time.monotonic()
        try:
            held = leases.hold(self.ctx, leases.SCHEDULER, self.owner, self.ttl)
        except Exception:
            log.exception("renewing the scheduler lease failed; jobs pause until it succeeds")
            held = False
        with self._lock:
            was_held = self._valid_until > asked
            # Counted from before the request: the database's expiry is never earlier than ours.
            self._valid_until = asked + self.ttl.total_seconds() * 0.9 if held else 0.0
        if held and not was_held:
            log.info("this process (%s) now runs the scheduler's jobs", self.owner)
        elif was_held and not held:
            log.warning("this process (%s) lost the scheduler lease; another one runs the jobs", self.owner)

    @property
    def held(self) -> bool:
        """Jobs run, and long ones go on cable after cable, only while this is true."""
        with self._lock:
            return not self._stopping and time.monotonic() < self._valid_until

    def stop(self) -> None:
        """From now on nothing counts as held: running jobs end at their next check."""
        with self._lock:
            self._stopping = True

    def release(self) -> None:
        self.stop()
        with self._lock:
            self._valid_until = 0.0
        try:
            leases.release(self.ctx, leases.SCHEDULER, self.owner)
        except Exception:
            log.exception("releasing the scheduler lease failed; it expires by itself within %s", self.ttl)


def deliver_pushes(ctx: Context, link: PeerLink) -> None:
    oscp.deliver_pushes(ctx, link)  # each failure is logged where it happens, with its backoff


def send_heartbeats(ctx: Context, link: PeerLink) -> None:
    failed = oscp.send_heartbeats(ctx, link)
    if failed:
        log.warning("heartbeats failed to %s", "; ".join(f"{c}: {why}" for c, why in failed.items()))


def release_expired_holds(ctx: Context) -> None:
    failed = oscp.release_expired_holds(ctx)
    if failed:
        log.error("releasing expired holds failed on %s", "; ".join(f"{c}: {why}" for c, why in failed.items()))


def roll_horizon(ctx: Context) -> None:
    result = capacity.roll_horizon(ctx)
    if result.failed:
        log.error("handing out new blocks failed on %s", "; ".join(f"{c}: {w}" for c, w in result.failed.items()))


def refresh_forecasts(ctx: Context, store: TimeseriesStore, lease: Lease) -> None:
    report = forecasting.refresh(ctx, store, stop=lambda: not lease.held)
    if report.failed:
        log.error(
            "forecasts failed on %d of %d cables: %s; those cables keep their last forecast, then the historical peak",
            len(report.failed),
            len(report.failed) + len(report.refreshed),
            "; ".join(f"{c}: {why}" for c, why in sorted(report.failed.items())),
        )
    for cable_id, issues in sorted(report.warnings.items()):
        log.warning("forecast data of %s: %s", cable_id, "; ".join(issues))


def backtest_forecasts(ctx: Context, store: TimeseriesStore, lease: Lease) -> None:
    failed = forecasting.backtest_all(ctx, store, older_than=timedelta(days=1), stop=lambda: not lease.held)
    if failed:
        log.error("backtests failed on %s", "; ".join(f"{c}: {why}" for c, why in sorted(failed.items())))


def export_monitoring(exporter: monitoring.Exporter) -> None:
    report = exporter.run()
    if not report.written:
        log.warning(
            "monitoring since %s was not written to the timeseries store (%s); it is retried at the next run",
            (exporter.done_until or report.since).isoformat(),
            report.error,
        )


def leased(
    ctx: Context, lease: Lease, runs: monitoring.JobRuns, name: str, func: Callable[[], None]
) -> Callable[[], None]:
    """The job as the scheduler runs it: only while this process holds the lease, and timed. A run
    that raises is recorded too, and its exception goes on to APScheduler, which logs it."""

    def run() -> None:
        if not lease.held:
            return
        started_at = ctx.clock()
        started = time.monotonic()
        ok = False
        try:
            func()
            ok = True
        finally:
            _record_run(runs, name, started_at, time.monotonic() - started, ok)

    return run


def _record_run(runs: monitoring.JobRuns, name: str, started_at: datetime, duration_s: float, ok: bool) -> None:
    try:
        runs.record(name, started_at, duration_s, ok)
        observe_job(name, duration_s, ok)
    except Exception:  # recording must never turn a good run into a failed one, nor hide why one failed
        log.exception("recording a run of %r failed", name)


REFRESH = "refresh base-load forecasts"
MONITORING = "write monitoring to InfluxDB"


class Jobs:
    """The scheduler and this process's lease; its jobs run only while the lease is held."""

    def __init__(self, ctx: Context, scheduler: BackgroundScheduler, store: TimeseriesStore, lease: Lease) -> None:
        self.scheduler = scheduler
        self.lease = lease
        self.store = store  # the jobs' own: closed with them
        self.runs = monitoring.JobRuns(ctx.results_prefix)  # job runs the next monitoring export writes
        self.exporter = monitoring.Exporter(ctx, store, self.runs)

    def get_jobs(self) -> list[Any]:
        return list(self.scheduler.get_jobs())

    def start(self) -> None:
        """Take the lease if it is free, then start; the first forecast refresh runs at once."""
        self.lease.renew()
        self.scheduler.start()
        self.scheduler.modify_job(REFRESH, next_run_time=datetime.now(UTC) + timedelta(seconds=1))

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop: running jobs end at their next check, so no second scheduler overlaps this one."""
        self.lease.stop()
        self.scheduler.shutdown(wait=wait)
        self.lease.release()
        self.store.close()


def build_scheduler(
    ctx: Context,
    link: PeerLink,
    store: TimeseriesStore,
    *,
    forecast_every: timedelta = timedelta(minutes=15),
    lease_ttl: timedelta = LEASE_TTL,
) -> Jobs:
    """Every job on one scheduler; start() it, shutdown() it."""
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per run every 2 s
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    jobs = Jobs(ctx, scheduler, store, Lease(ctx, lease_ttl))
    lease = jobs.lease
    periodic: list[tuple[Callable[[], None], timedelta, str]] = [
        (lambda: deliver_pushes(ctx, link), PUSH_EVERY, "deliver owed pushes"),
        (lambda: send_heartbeats(ctx, link), ctx.policy.heartbeat_interval, "heartbeat every CPO"),
        (lambda: release_expired_holds(ctx), HOLDS_EVERY, "release holds past the notice period"),
        (lambda: roll_horizon(ctx), HORIZON_EVERY, "hand out blocks entering the horizon"),
        (lambda: refresh_forecasts(ctx, store, lease), forecast_every, REFRESH),
        (lambda: backtest_forecasts(ctx, store, lease), BACKTEST_EVERY, "backtest the forecasts"),
        (lambda: export_monitoring(jobs.exporter), MONITORING_EVERY, MONITORING),
    ]
    renew_every = lease_ttl.total_seconds() / 3
    jobs.scheduler.add_job(
        lease.renew,
        "interval",
        seconds=renew_every,
        name="renew the scheduler lease",
        id="lease",
        misfire_grace_time=None,  # a late renewal still counts; skipping it would drop the lease
    )
    for func, every, name in periodic:
        job = leased(ctx, lease, jobs.runs, name, func)
        jobs.scheduler.add_job(job, "interval", seconds=every.total_seconds(), name=name, id=name)
    return jobs


def jobs_from_settings(settings: Settings, ctx: Context, recorder: Recorder) -> Jobs:
    """The jobs as a server runs them: OSCP calls to CPOs as the DSO (settings oscp_username and
    oscp_password), recorded by `recorder`, and forecasts from the configured timeseries store."""
    client = OscpClient(
        wsdl_dir=WSDL_DIR,
        username=settings.oscp_username,
        password=settings.oscp_password,
        timeout_s=settings.oscp_push_timeout_s,
    )
    store = build_timeseries(settings)  # the jobs close it when they shut down
    every = timedelta(minutes=settings.forecast_interval_min)
    return build_scheduler(ctx, OscpPeerLink(client, recorder), store, forecast_every=every)
