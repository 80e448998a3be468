"""The jobs: deliver owed pushes, exchange heartbeats, release expired holds, hand out blocks as
they enter the horizon, refresh the base-load forecasts, and backtest them once a day.

Exactly one process runs them at a time: each process that starts a scheduler competes for the
SCHEDULER lease in the database and skips every job while another process holds it. Each job
isolates failures per CPO or cable and logs them together; a job that is still running when it
is due again is skipped, not stacked.
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

from service.timeseries import TimeseriesStore
from service.usecases import Context, capacity, forecasting, leases, oscp
from service.usecases.oscp import PeerLink

log = logging.getLogger("gridcap.jobs")

PUSH_EVERY = timedelta(seconds=2)
HOLDS_EVERY = timedelta(seconds=30)
HORIZON_EVERY = timedelta(minutes=1)
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


REFRESH = "refresh base-load forecasts"


class Jobs:
    """The scheduler and this process's lease; its jobs run only while the lease is held."""

    def __init__(self, ctx: Context, scheduler: BackgroundScheduler, store: TimeseriesStore, lease: Lease) -> None:
        self.scheduler = scheduler
        self.lease = lease
        self.store = store  # the jobs' own: closed with them

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

    def leased(func: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if lease.held:
                func()

        return run

    periodic: list[tuple[Callable[[], None], timedelta, str]] = [
        (lambda: deliver_pushes(ctx, link), PUSH_EVERY, "deliver owed pushes"),
        (lambda: send_heartbeats(ctx, link), ctx.policy.heartbeat_interval, "heartbeat every CPO"),
        (lambda: release_expired_holds(ctx), HOLDS_EVERY, "release holds past the notice period"),
        (lambda: roll_horizon(ctx), HORIZON_EVERY, "hand out blocks entering the horizon"),
        (lambda: refresh_forecasts(ctx, store, lease), forecast_every, REFRESH),
        (lambda: backtest_forecasts(ctx, store, lease), BACKTEST_EVERY, "backtest the forecasts"),
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
        jobs.scheduler.add_job(leased(func), "interval", seconds=every.total_seconds(), name=name, id=name)
    return jobs
