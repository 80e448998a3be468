"""The audit trail: every decision, and every budget change with its reason."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from service.domain.blocks import BLOCK, as_utc
from service.domain.errors import InvalidInput
from service.store import Repository
from service.usecases.context import Context

MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    at: datetime
    decision_id: int
    actor: str
    action: str
    cable_id: str
    cpo_id: str
    start: datetime
    end: datetime
    old_capacity: Decimal
    new_capacity: Decimal
    reason: str
    severity: str


@dataclass(frozen=True, slots=True)
class Decision:
    id: int
    at: datetime
    actor: str
    action: str
    cable_id: str | None
    cpo_id: str | None
    status: str | None
    severity: str
    message: str


def _check(since: datetime | None, limit: int) -> datetime | None:
    if not 1 <= limit <= MAX_ENTRIES:
        raise InvalidInput(f"limit must be between 1 and {MAX_ENTRIES}")
    return as_utc(since, "since") if since is not None else None


def ledger(
    ctx: Context,
    *,
    cable_id: str | None = None,
    cpo_id: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[LedgerEntry]:
    since = _check(since, limit)
    with ctx.db.read() as session:
        rows = Repository(session).ledger(cable_id=cable_id, cpo_id=cpo_id, since=since, limit=limit)
    return [
        LedgerEntry(
            e.id,
            e.at,
            d.id,
            d.actor,
            d.action,
            e.cable_id,
            e.cpo_id,
            e.start,
            e.start + BLOCK,
            e.old_capacity,
            e.new_capacity,
            e.reason,
            d.severity,
        )
        for e, d in rows
    ]


def decisions(
    ctx: Context,
    *,
    cable_id: str | None = None,
    cpo_id: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[Decision]:
    since = _check(since, limit)
    with ctx.db.read() as session:
        rows = Repository(session).decisions(cable_id=cable_id, cpo_id=cpo_id, since=since, limit=limit)
    return [
        Decision(d.id, d.at, d.actor, d.action, d.cable_id, d.cpo_id, d.status, d.severity, d.message) for d in rows
    ]
