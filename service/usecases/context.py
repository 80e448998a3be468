"""What every use case needs, and the one path by which a decision reaches the database."""

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import ceil
from typing import NamedTuple

from forecasts import ForecastConfig
from service.domain.allocation import (
    BudgetChange,
    CableBook,
    Ledger,
    Policy,
    check_blocks_follow_cable,
    check_invariants,
    hand_out,
    new_block,
)
from service.domain.blocks import BLOCK, block_floor, block_starts
from service.domain.model import Cable
from service.settings import Settings
from service.store import Database, DecisionRecord, HoldRules, Repository
from service.usecases.baseload import BaseLoadSource, ForecastBaseLoad
from service.usecases.batching import Combiner

log = logging.getLogger("gridcap.decisions")

WEEK_BLOCKS = 7 * 96  # the longest horizon a forecast can have: last week's same slot must exist
OFFLINE_AFTER_HEARTBEATS = 3  # a CPO silent for this many heartbeat intervals is offline


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Context:
    db: Database
    policy: Policy = field(default_factory=Policy)
    clock: Callable[[], datetime] = utc_now
    base_loads: BaseLoadSource = field(default_factory=ForecastBaseLoad)
    forecast_config: ForecastConfig = field(default_factory=lambda: forecast_config(Policy()))
    history: timedelta = timedelta(weeks=8)  # of measurements each forecast learns from
    results_prefix: str = "gridcap_"  # of the measurements written back for monitoring
    power_factor: float = 0.9  # the lowest expected: measured kW become this much more current
    combiner: Combiner = field(default_factory=Combiner, compare=False, repr=False)  # of concurrent decisions

    def horizon(self, now: datetime) -> tuple[datetime, datetime]:
        """[start of the current block, that + horizon): the blocks that have budgets."""
        start = block_floor(now)
        return start, start + self.policy.horizon


def forecast_config(
    policy: Policy,
    *,
    refresh_every: timedelta = timedelta(minutes=15),
    coverage: float = 0.95,
    local_tz: str = "Europe/Amsterdam",
    issue_time: str = "12:00",
) -> ForecastConfig:
    """Forecasts reach a refresh interval beyond the horizon, so the blocks that enter it before the
    next refresh already have one."""
    blocks = policy.horizon // BLOCK + ceil(refresh_every / BLOCK) + 1
    return ForecastConfig(
        horizon_blocks=min(WEEK_BLOCKS, blocks), coverage=coverage, local_tz=local_tz, issue_time=issue_time
    )


def build_context(settings: Settings) -> Context:
    """The one wiring of settings to a database, shared by the API, the CLI and jobs."""
    policy = settings.policy()
    return Context(
        Database(settings.database_url),
        policy=policy,
        forecast_config=forecast_config(
            policy,
            refresh_every=timedelta(minutes=settings.forecast_interval_min),
            coverage=float(settings.forecast_coverage),
            local_tz=settings.forecast_local_tz,
            issue_time=settings.backtest_issue_time,
        ),
        history=timedelta(weeks=settings.forecast_history_weeks),
        results_prefix=settings.results_prefix,
        power_factor=float(settings.load_power_factor),
    )


class OpenedBook(NamedTuple):
    book: CableBook
    new_starts: list[datetime]  # blocks that entered the horizon while the book was opened
    hand_out: Ledger  # their initial budgets


def open_book(
    repo: Repository, ctx: Context, cable: Cable, now: datetime, *, start: datetime, end: datetime | None
) -> OpenedBook:
    """Load the cable's blocks in [start, end) (end None: every one from start on) and hand out
    any horizon block not handed out yet.

    Call within a write transaction that holds the cable's lock.
    """
    h_start, h_end = ctx.horizon(now)
    book = repo.load_book(cable, start, end, usage_since=now - ctx.policy.usage_lookback, holds=hold_rules(ctx, now))
    if repo.block_count(cable.id, h_start, h_end) == (h_end - h_start) // BLOCK:  # the usual case, and cheap
        return OpenedBook(book, [], Ledger())
    existing = repo.block_starts(cable.id, h_start, h_end)
    missing = [s for s in block_starts(h_start, h_end) if s not in existing]
    loads = ctx.base_loads.base_load(repo, cable, missing)
    ledger = hand_out(book, [new_block(cable, s, loads[s]) for s in missing])
    return OpenedBook(book, missing, ledger)


def hold_rules(ctx: Context, now: datetime) -> HoldRules:
    return HoldRules(
        expired_before=now - ctx.policy.reclaim_notice,
        offline_before=now - OFFLINE_AFTER_HEARTBEATS * ctx.policy.heartbeat_interval,
    )


def commit(
    repo: Repository,
    horizon: OpenedBook,
    decision: DecisionRecord,
    ledger: Ledger | None = None,
    *,
    touched: Iterable[datetime] = (),
) -> int:
    """Check the invariants, then save the book and audit the decision, in the open transaction."""
    save_hand_out(repo, horizon, decision.at, ledger, touched=touched)
    return _audit(repo, decision, ledger or Ledger())


def save_hand_out(
    repo: Repository,
    horizon: OpenedBook,
    now: datetime,
    ledger: Ledger | None = None,
    *,
    touched: Iterable[datetime] = (),
) -> None:
    """Save the blocks that entered the horizon (audited as a decision of their own) and `touched`,
    and owe every CPO whose budget changed a push, in the same transaction."""
    book, new_starts, handed = horizon
    starts = sorted({*new_starts, *touched})
    changes: list[BudgetChange] = [*handed.changes, *(ledger.changes if ledger else ())]
    check_invariants(book, starts, changes)
    check_blocks_follow_cable(book, starts)
    repo.save_book(book, starts, changes, now)
    repo.enqueue_pushes(book.cable.id, {c.cpo_id for c in changes}, now)
    if new_starts:
        message = f"{len(new_starts)} blocks entered the horizon and were handed out"
        _audit(repo, DecisionRecord(now, "system", "hand_out", message, cable_id=book.cable.id), handed)


def _audit(repo: Repository, decision: DecisionRecord, ledger: Ledger) -> int:
    """Record the decision with its budget changes; one that raised alerts is critical."""
    return audit_all(repo, [(decision, ledger)])[0]


def audit_all(repo: Repository, decisions: Sequence[tuple[DecisionRecord, Ledger]]) -> list[int]:
    """Record decisions with their budget changes, in order; returns their ids. One that raised
    alerts is critical."""
    return repo.record_all([(_alerted(decision, ledger), ledger.changes) for decision, ledger in decisions])


def _alerted(decision: DecisionRecord, ledger: Ledger) -> DecisionRecord:
    if not ledger.alerts:
        return decision
    more = f"; and {len(ledger.alerts) - 5} more blocks" if len(ledger.alerts) > 5 else ""
    message = f"{decision.message}; {'; '.join(ledger.alerts[:5])}{more}"
    log.critical("%s", message)
    return dataclasses.replace(decision, severity="critical", message=message)
