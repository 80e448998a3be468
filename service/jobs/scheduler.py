"""The OSCP jobs: deliver owed pushes, exchange heartbeats, release expired holds, and hand out
blocks as they enter the horizon (a new block every 15 minutes, each one pushed).

Each job isolates failures per CPO or cable and logs them together; a job that is still
running when it is due again is skipped, not stacked.
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from service.usecases import Context, capacity, oscp
from service.usecases.oscp import PeerLink

log = logging.getLogger("gridcap.jobs")

PUSH_EVERY = timedelta(seconds=2)
HOLDS_EVERY = timedelta(seconds=30)
HORIZON_EVERY = timedelta(minutes=1)


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


def build_scheduler(ctx: Context, link: PeerLink) -> BackgroundScheduler:
    """A scheduler with every OSCP job; start() it, shutdown() it."""
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per run every 2 s
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    jobs: list[tuple[Callable[[], None], timedelta, str]] = [
        (lambda: deliver_pushes(ctx, link), PUSH_EVERY, "deliver owed pushes"),
        (lambda: send_heartbeats(ctx, link), ctx.policy.heartbeat_interval, "heartbeat every CPO"),
        (lambda: release_expired_holds(ctx), HOLDS_EVERY, "release holds past the notice period"),
        (lambda: roll_horizon(ctx), HORIZON_EVERY, "hand out blocks entering the horizon"),
    ]
    for func, every, name in jobs:
        scheduler.add_job(func, "interval", seconds=every.total_seconds(), name=name, id=name)
    return scheduler
