"""What the OSCP gateway asks of the service: a CPO's forecasts, its requests and reports, its
heartbeats, and the pushes it is owed.

The gateway (SOAP and JSON) maps wire messages to these functions and back; the decisions are
the same use cases the REST API calls. Pushes leave through a `PeerLink` so this layer knows no
transport: the outbox rows are written by every decision (see `context.save_hand_out`) and
delivered here, after the transaction, in order per CPO.
"""

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from service.domain.allocation import AdjustStatus, Ledger, release_holds, share_freed
from service.domain.blocks import BLOCK
from service.domain.errors import InvalidInput
from service.domain.model import Cpo
from service.domain.units import ZERO, Unit
from service.store import DecisionRecord, Repository
from service.usecases import capacity
from service.usecases.capacity import BlockQuantity, RequestResult
from service.usecases.context import (
    Context,
    OpenedBook,
    commit,
    hold_rules,
    open_book,
    save_hand_out,
)

log = logging.getLogger("gridcap.oscp")

MAX_FORECAST_BLOCKS = 192  # the contract's limit per CableCapacityForecast
MAX_BACKOFF = timedelta(minutes=5)


# --- what a CPO is told ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpoForecast:
    """A CPO's budget per block on one cable, in the cable's unit, and its backup capacity."""

    cable_id: str
    unit: Unit
    budgets: dict[datetime, Decimal]  # block start -> budget
    backup: Decimal


def _forecast(repo: Repository, cable_id: str, cpo_id: str, start: datetime, end: datetime) -> CpoForecast:
    """The CPO's budgets on the cable's handed-out blocks in [start, end), at most the contract's
    192; blocks it has no budget in count as 0 (it left the cable, or never had a share)."""
    cable = repo.cable(cable_id)
    starts = sorted(repo.block_starts(cable_id, start, end))[:MAX_FORECAST_BLOCKS]
    sub = repo.subscriptions(cable_id).get(cpo_id)
    budgets = repo.budgets_of(cable_id, cpo_id, starts[0], starts[-1] + BLOCK) if starts else {}
    return CpoForecast(
        cable.id,
        cable.unit,
        {s: budgets.get(s, ZERO) for s in starts},
        sub.guaranteed_minimum if sub else ZERO,
    )


def forecasts(ctx: Context, cpo_id: str, cable_id: str | None = None) -> list[CpoForecast]:
    """GetCapacityForecast: the CPO's budgets for the horizon on one cable, or on every cable it
    is subscribed to."""
    with ctx.db.read() as session:
        repo = Repository(session)
        if cable_id is not None:
            capacity.require_subscription(repo, cable_id, cpo_id)
            cable_ids = [cable_id]
        else:
            cable_ids = repo.cables_of_cpo(cpo_id)
    for c in cable_ids:
        capacity.ensure_horizon(ctx, c)
    now = ctx.clock()
    h_start, h_end = ctx.horizon(now)
    with ctx.db.read() as session:
        repo = Repository(session)
        return [_forecast(repo, c, cpo_id, h_start, h_end) for c in cable_ids]


# --- requests and reports ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdjustResult:
    result: RequestResult
    forecast: CpoForecast
    reason: str | None


def request(ctx: Context, cpo_id: str, cable_id: str, blocks: Sequence[BlockQuantity]) -> AdjustResult:
    """RequestAdjustedCapacity: the decision of the REST API, answered with the budgets after it."""
    result = capacity.request(
        ctx, cable_id, cpo_id, blocks, actor=f"cpo:{cpo_id}", field="requestedBlock", answered=True
    )
    forecast = CpoForecast(cable_id, result.unit, result.budgets, result.backup)
    short = sum((max(ZERO, asked - result.budgets[s]) for s, asked in result.asked.items()), ZERO)
    reason = None
    if result.status is not AdjustStatus.ACCEPTED:
        reason = (
            f"not all of it could be granted (short by {short} {result.unit} in total); the rest waits as a "
            "pending request and is pushed to you when capacity frees"
        )
    return AdjustResult(result, forecast, reason)


def report_usage(ctx: Context, cpo_id: str, cable_id: str, blocks: Sequence[BlockQuantity]) -> int:
    return capacity.report_usage(ctx, cable_id, cpo_id, blocks, actor=f"cpo:{cpo_id}", field="usageBlock")


# --- presence and heartbeats ---------------------------------------------------------------------


def seen(ctx: Context, cpo_id: str) -> None:
    """The CPO was heard from: it answered us or called us with valid credentials."""
    with ctx.db.write() as session:
        _heard_from(ctx, Repository(session), cpo_id)


def _heard_from(ctx: Context, repo: Repository, cpo_id: str) -> None:
    now = ctx.clock()
    before = repo.seen(cpo_id, now)
    if before is not None and before < hold_rules(ctx, now).offline_before:
        log.info("CPO %s is back after being offline since %s", cpo_id, before.isoformat())
        repo.restart_notice(cpo_id, now)  # it could not confirm while away: the notice starts now
        repo.push_now(cpo_id, now)


@dataclass(frozen=True, slots=True)
class Presence:
    cpo_id: str
    last_seen_at: datetime | None
    online: bool


def presence(ctx: Context) -> list[Presence]:
    offline_before = hold_rules(ctx, ctx.clock()).offline_before
    with ctx.db.read() as session:
        repo = Repository(session)
        last = repo.last_seen()
        return [Presence(c.id, last.get(c.id), c.id in last and last[c.id] >= offline_before) for c in repo.cpos()]


class PeerUnreachable(Exception):
    """A call to a CPO failed: transport, timeout, fault or an unreadable answer."""


class PeerLink(Protocol):
    """The calls the DSO makes to CPOs (the OSCP client implements it)."""

    def push(self, cpo: Cpo, forecasts: Sequence[CpoForecast]) -> str | None:
        """UpdateCableCapacityForecast; None when Accepted, else the CPO's reason for rejecting.
        Raises PeerUnreachable."""
        ...

    def heartbeat(self, cpo: Cpo) -> None:
        """Heartbeat; raises PeerUnreachable."""
        ...


def send_heartbeats(ctx: Context, link: PeerLink) -> dict[str, str]:
    """Call Heartbeat on every CPO; returns the failures (cpo id -> why)."""
    with ctx.db.read() as session:
        cpos = Repository(session).cpos()
    failed = {}
    for cpo in cpos:
        try:
            link.heartbeat(cpo)
            seen(ctx, cpo.id)
        except PeerUnreachable as exc:
            failed[cpo.id] = str(exc)
        except Exception as exc:  # one CPO must not stop the others
            log.exception("heartbeat to %s failed", cpo.id)
            failed[cpo.id] = str(exc) or type(exc).__name__
    return failed


# --- the outbox ----------------------------------------------------------------------------------


@dataclass(slots=True)
class DeliveryResult:
    delivered: dict[str, int] = field(default_factory=dict)  # cpo id -> outbox rows settled
    failed: dict[str, str] = field(default_factory=dict)  # cpo id -> why


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s, ... up to 5 minutes, with jitter so CPOs that failed together retry apart."""
    base = min(MAX_BACKOFF.total_seconds(), 5 * 2 ** min(attempts, 16))
    return timedelta(seconds=base * random.uniform(0.8, 1.0))  # noqa: S311 - jitter, not a secret


def deliver_pushes(ctx: Context, link: PeerLink) -> DeliveryResult:
    """Deliver every due push: per CPO, one UpdateCableCapacityForecast with its current budgets on
    each cable it is owed, rendered after every change the pushes stand for. Accepted pushes
    confirm those budgets, which may free held capacity for others (and owe them pushes).
    A CPO that fails, for whatever reason, backs off; the others are still served."""
    result = DeliveryResult()
    with ctx.db.read() as session:
        due = Repository(session).cpos_with_due_pushes(ctx.clock())
    for cpo_id in due:
        try:
            result.delivered[cpo_id] = _deliver_to(ctx, link, cpo_id)
        except Exception as exc:  # the CPO, a bug or the database: backed off, never blocks the others
            if not isinstance(exc, PeerUnreachable):
                log.exception("delivering pushes to %s failed", cpo_id)
            result.failed[cpo_id] = str(exc) or type(exc).__name__
            _failed(ctx, cpo_id, result.failed[cpo_id])
    return result


def _deliver_to(ctx: Context, link: PeerLink, cpo_id: str) -> int:
    with ctx.db.read() as session:
        repo = Repository(session)
        cpo = repo.cpo(cpo_id)
        rows = repo.pending_pushes(cpo_id)
    if not rows:
        return 0
    ids = [r[0] for r in rows]
    # Offered after the rows were read, so they carry every change the rows stand for.
    owed = [f for cable_id in dict.fromkeys(r[1] for r in rows) if (f := offer(ctx, cpo_id, cable_id))]
    rejected = link.push(cpo, owed) if owed else None
    if rejected is not None:
        raise PeerUnreachable(f"{cpo_id} rejected the push: {rejected}")
    for forecast in owed:
        confirm(ctx, cpo_id, forecast)
    with ctx.db.write() as session:
        repo = Repository(session)
        repo.pushes_delivered(ids, ctx.clock())
        _heard_from(ctx, repo, cpo_id)
    return len(ids)


def offer(ctx: Context, cpo_id: str, cable_id: str) -> CpoForecast | None:
    """The CPO's budgets on the cable as they are about to be pushed (None: nothing to tell).

    From the moment a push leaves, the CPO may use what it offers, so any budget above what the
    CPO confirmed counts as told at once, under the cable's lock: a decision racing the push then
    holds it rather than granting it to someone else.
    """
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        h_start, h_end = ctx.horizon(now)
        repo = Repository(session)
        if not repo.cable_exists(cable_id):
            return None  # the cable is gone: nothing left to tell
        forecast = _forecast(repo, cable_id, cpo_id, h_start, h_end)
        if not forecast.budgets:
            return None
        repo.offered(cable_id, cpo_id, min(forecast.budgets), max(forecast.budgets) + BLOCK)
        return forecast


def _failed(ctx: Context, cpo_id: str, why: str) -> None:
    """Back off every undelivered push of the CPO, new ones included, from its attempts so far."""
    log.warning("push to %s failed: %s", cpo_id, why)
    with ctx.db.write() as session:
        repo = Repository(session)
        rows = repo.pending_pushes(cpo_id)
        attempts = max((r[2] for r in rows), default=0)
        repo.pushes_failed([r[0] for r in rows], attempts + 1, why, ctx.clock() + backoff(attempts))


def confirm(ctx: Context, cpo_id: str, forecast: CpoForecast) -> None:
    """The CPO Accepted these budgets: record them, and share what it no longer holds."""
    with ctx.db.write((forecast.cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        starts = sorted(forecast.budgets)
        if not starts or not repo.cable_exists(forecast.cable_id):
            return
        cable = repo.cable(forecast.cable_id)
        opened = open_book(repo, ctx, cable, now, start=starts[0], end=starts[-1] + BLOCK)
        ledger = release_holds(opened.book, {(cpo_id, s): v for s, v in forecast.budgets.items()})
        repo.confirm(forecast.cable_id, cpo_id, forecast.budgets, now)
        _commit_shared(repo, opened, ledger, now, f"{cpo_id} confirmed its budgets on {cable.id}")


def release_expired_holds(ctx: Context) -> dict[str, str]:
    """Share capacity held for CPOs that left a lower budget unconfirmed for the whole notice
    period while online. Returns the cables that failed (id -> why)."""
    with ctx.db.read() as session:
        cable_ids = [c.id for c in Repository(session).cables()]
    failed = {}
    for cable_id in cable_ids:
        try:
            _release_expired(ctx, cable_id)
        except Exception as exc:  # one cable must not stop the others
            log.exception("releasing expired holds on cable %s failed", cable_id)
            failed[cable_id] = str(exc) or type(exc).__name__
    return failed


def _release_expired(ctx: Context, cable_id: str) -> None:
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        rules = hold_rules(ctx, now)
        h_start, _ = ctx.horizon(now)
        offline = repo.offline_cpos(cable_id, rules.offline_before)
        expired = [(c, s) for c, s in repo.expired_holds(cable_id, rules.expired_before, h_start) if c not in offline]
        if not expired:
            return
        repo.drop_holds(cable_id, expired)
        starts = sorted({s for _, s in expired})
        opened = open_book(repo, ctx, repo.cable(cable_id), now, start=starts[0], end=starts[-1] + BLOCK)
        ledger = share_freed(opened.book, starts)
        cpos = ", ".join(sorted({c for c, _ in expired}))
        _commit_shared(repo, opened, ledger, now, f"{cpos} left lower budgets unconfirmed past the notice period")


def _commit_shared(repo: Repository, opened: OpenedBook, ledger: Ledger, now: datetime, why: str) -> None:
    """Save freed capacity shared out (audited, pushed to those who got it), if any was."""
    if not ledger.changes:
        save_hand_out(repo, opened, now)
        return
    cable_id = opened.book.cable.id
    decision = DecisionRecord(now, "system", "holds_released", why, cable_id=cable_id)
    commit(repo, opened, decision, ledger, touched={c.block_start for c in ledger.changes})


# --- the message record ------------------------------------------------------------------------


def record_messages(ctx: Context, rows: Sequence[dict[str, object]]) -> None:
    with ctx.db.write() as session:
        Repository(session).record_messages(rows)


def messages(
    ctx: Context, *, cpo_id: str | None = None, since_id: int = 0, limit: int = 100
) -> list[dict[str, object]]:
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    with ctx.db.read() as session:
        return Repository(session).messages(cpo_id=cpo_id, since_id=since_id, limit=limit)


def message_counts(ctx: Context) -> list[tuple[str, str, str, int]]:
    with ctx.db.read() as session:
        return Repository(session).message_counts()


def outbox(ctx: Context) -> list[dict[str, object]]:
    with ctx.db.read() as session:
        return Repository(session).outbox()
