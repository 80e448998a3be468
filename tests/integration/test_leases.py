"""The scheduler lease: among many processes exactly one holds it, and it moves on when its holder
stops renewing. On SQLite and on the real PostgreSQL."""

import multiprocessing
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import Clock

from service.settings import Settings
from service.store import Database
from service.timeseries import build_timeseries
from service.usecases import Context, leases

TTL = timedelta(seconds=30)


def test_a_held_lease_is_refused_to_others_until_it_expires(ctx: Context, clock: Clock) -> None:
    assert leases.holder(ctx, "jobs") is None
    assert leases.hold(ctx, "jobs", "a", TTL)
    assert not leases.hold(ctx, "jobs", "b", TTL)
    assert leases.holder(ctx, "jobs") == "a"
    clock.advance(TTL / 2)
    assert leases.hold(ctx, "jobs", "a", TTL)  # renewed: now valid for another TTL
    clock.advance(TTL * 0.9)
    assert not leases.hold(ctx, "jobs", "b", TTL)
    clock.advance(TTL * 0.2)
    assert leases.hold(ctx, "jobs", "b", TTL)  # a stopped renewing
    assert not leases.hold(ctx, "jobs", "a", TTL)
    assert leases.holder(ctx, "jobs") == "b"


def test_a_released_lease_can_be_taken_at_once(ctx: Context) -> None:
    assert leases.hold(ctx, "jobs", "a", TTL)
    leases.release(ctx, "jobs", "b")  # not b's to release
    assert not leases.hold(ctx, "jobs", "b", TTL)
    leases.release(ctx, "jobs", "a")
    assert leases.holder(ctx, "jobs") is None
    assert leases.hold(ctx, "jobs", "b", TTL)


def test_leases_of_different_names_are_independent(ctx: Context) -> None:
    assert leases.hold(ctx, "jobs", "a", TTL)
    assert leases.hold(ctx, "other", "b", TTL)


def test_many_threads_racing_for_a_free_lease_give_one_holder(ctx: Context) -> None:
    start = threading.Barrier(8)
    won: list[str] = []

    def race(owner: str) -> None:
        start.wait()
        if leases.hold(ctx, "jobs", owner, TTL):
            won.append(owner)

    threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert leases.holder(ctx, "jobs") == won[0]


def _race_in_process(url: str, owner: str, start: Any, results: Any) -> None:
    db = Database(url)
    try:
        start.wait()
        results.put((owner, leases.hold(Context(db), "jobs", owner, TTL)))
    finally:
        db.dispose()


def test_processes_racing_for_a_free_lease_give_one_holder(db: Database) -> None:
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(4), spawn.Queue()
    workers = [spawn.Process(target=_race_in_process, args=(db.url, f"p{i}", start, results)) for i in range(4)]
    for w in workers:
        w.start()
    outcomes = dict(results.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    winners = [owner for owner, won in outcomes.items() if won]
    assert len(winners) == 1, outcomes
    assert leases.holder(Context(db), "jobs") == winners[0]


class NoCpos:
    """A peer link for a grid without CPOs: any call is a test failure."""

    def push(self, cpo: Any, forecasts: Any) -> str | None:
        raise AssertionError("no CPO to push to")

    def heartbeat(self, cpo: Any) -> None:
        raise AssertionError("no CPO to call")


def test_of_two_schedulers_one_runs_the_jobs_and_the_other_takes_over_when_it_stops(
    db: Database, tmp_path: Path
) -> None:
    from service.jobs.scheduler import build_scheduler

    ctx = Context(db)  # the real clock: the schedulers' lease timing is real
    ttl = timedelta(seconds=1.5)
    stores = [
        build_timeseries(Settings(timeseries_backend="embedded", timeseries_path=str(tmp_path / f"ts{i}.db")))
        for i in range(2)
    ]
    first, second = (build_scheduler(ctx, NoCpos(), store, lease_ttl=ttl) for store in stores)
    first.start()
    second.start()
    try:
        assert first.lease.held
        assert not second.lease.held
        assert leases.holder(ctx, leases.SCHEDULER) == first.lease.owner
        first.shutdown()  # releases the lease: the other takes it at its next renewal
        deadline = time.monotonic() + 10 * ttl.total_seconds()
        while not second.lease.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.lease.held
        assert leases.holder(ctx, leases.SCHEDULER) == second.lease.owner
    finally:
        for jobs in (first, second):
            if jobs.scheduler.running:
                jobs.shutdown()
