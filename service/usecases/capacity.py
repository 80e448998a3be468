"""Capacity use cases: what a cable offers per block, requests and hand-backs, reported usage.

REST, OSCP (SOAP and JSON), jobs and the CLI all call these functions; none decides on its own.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from service.domain.allocation import (
    AdjustStatus,
    Ledger,
    RequestOutcome,
    available_capacity,
    request_capacity,
)
from service.domain.blocks import BLOCK, aligned, block_of, block_starts
from service.domain.errors import GridcapError, InvalidInput, NotSubscribed
from service.domain.model import Cable
from service.domain.units import ZERO, Unit, in_cable_unit, to_capacity
from service.store import DecisionRecord, Repository
from service.usecases.context import Context, audit_all, open_book, save_hand_out

log = logging.getLogger("gridcap.capacity")

MAX_VIEW_BLOCKS = 96 * 31


@dataclass(frozen=True, slots=True)
class BlockQuantity:
    """A block given by its start and end (tz-aware) with one quantity: a wish or a measurement."""

    start: datetime
    end: datetime
    value: Decimal
    unit: str | None = None  # the unit `value` is in as sent (A, KW, W); None: the cable's own


@dataclass(frozen=True, slots=True)
class RequestResult:
    decision_id: int
    status: AdjustStatus
    budgets: dict[datetime, Decimal]  # the requester's budget per requested block, afterwards
    asked: dict[datetime, Decimal]  # what it asked for per block, in the cable's unit
    unit: Unit  # the cable's, which budgets are in
    backup: Decimal  # the requester's backup capacity on the cable: its guaranteed minimum


def _in_cable_unit(
    values: dict[datetime, Decimal], items: Sequence[BlockQuantity], cable: Cable, field: str, quantity: str
) -> dict[datetime, Decimal]:
    """`values` (from `_blocks(items)`, in the same order) in the cable's unit."""
    if all(item.unit is None for item in items):
        return values
    return {
        start: value if item.unit is None else in_cable_unit(value, item.unit, cable.unit, f"{field}[{i}].{quantity}")
        for i, ((start, value), item) in enumerate(zip(values.items(), items, strict=True))
    }


def _blocks(items: Sequence[BlockQuantity], field: str, quantity: str) -> dict[datetime, Decimal]:
    """Validate blocks: aligned, 15 minutes, no duplicates, quantities >= 0."""
    if not items:
        raise InvalidInput(f"{field} must list at least one block")
    out: dict[datetime, Decimal] = {}
    for i, item in enumerate(items):
        start = block_of(item.start, item.end, f"{field}[{i}]")
        if start in out:
            raise InvalidInput(f"{field}[{i}] starts at {start.isoformat()}, which an earlier block already covers")
        out[start] = to_capacity(item.value, f"{field}[{i}].{quantity}")
    return out


def require_subscription(repo: Repository, cable_id: str, cpo_id: str) -> None:
    """Raise UnknownCable, UnknownCpo or NotSubscribed unless the CPO is on the cable."""
    repo.cable(cable_id)  # raises UnknownCable
    if cpo_id not in repo.subscriptions(cable_id):
        repo.cpo(cpo_id)  # raises UnknownCpo; a subscription always names an existing CPO
        raise NotSubscribed(f"CPO {cpo_id!r} is not subscribed to cable {cable_id!r}")


@dataclass(frozen=True, slots=True)
class _Ask:
    """One request waiting to be decided: its blocks checked for form, not yet against the cable."""

    cpo_id: str
    blocks: Sequence[BlockQuantity]
    wanted: dict[datetime, Decimal]  # per block start, in the unit it was sent in
    actor: str
    field: str
    answered: bool


def request(
    ctx: Context,
    cable_id: str,
    cpo_id: str,
    blocks: Sequence[BlockQuantity],
    *,
    actor: str,
    field: str = "blocks",
    answered: bool = False,
) -> RequestResult:
    """A CPO asks for a new budget per block: above its budget is a request, below a hand-back.

    answered: the CPO itself receives the answer (OSCP), so its new budgets count as confirmed;
    otherwise (an engineer on its behalf) it learns them from the push that follows.

    Requests on one cable that arrive while others are decided are decided together, in order of
    arrival and in one transaction (`Combiner`); each gets its own decision, audit and answer,
    exactly as if it had been decided alone after the ones before it.
    """
    ask = _Ask(cpo_id, blocks, _blocks(blocks, field, "capacity"), actor, field, answered)
    return ctx.combiner.submit(cable_id, ask, lambda asks: _decide_requests(ctx, cable_id, asks))


def _decide_requests(ctx: Context, cable_id: str, asks: Sequence[_Ask]) -> list[RequestResult | GridcapError]:
    results: dict[int, RequestResult | GridcapError] = {}
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        cable = repo.cable(cable_id)
        checked: dict[int, dict[datetime, Decimal]] = {}
        for i, ask in enumerate(asks):
            try:
                checked[i] = _checked(ctx, repo, cable, ask, now)
            except GridcapError as exc:
                results[i] = exc
        if checked:
            starts = sorted({start for wanted in checked.values() for start in wanted})
            horizon = open_book(repo, ctx, cable, now, start=starts[0], end=starts[-1] + BLOCK)
            book = horizon.book
            decided: dict[int, tuple[RequestOutcome, datetime]] = {}
            for i, wanted in checked.items():
                ask, at = asks[i], ctx.clock()  # each request at its own time: pending ones wait in order
                try:  # a request is checked whole before it changes the book
                    outcome = request_capacity(
                        book, ask.cpo_id, wanted, now=at, policy=ctx.policy, answered=ask.answered
                    )
                except GridcapError as exc:
                    results[i] = exc
                    continue
                if ask.answered:  # what it was told holds for the requests after it, as once saved
                    for start, budget in outcome.budgets.items():
                        book.blocks[start].release(ask.cpo_id, budget)
                decided[i] = outcome, at
            changes = Ledger([change for outcome, _ in decided.values() for change in outcome.ledger.changes])
            save_hand_out(repo, horizon, ctx.clock(), changes, touched=starts)
            answered = [
                (asks[i].cpo_id, outcome.budgets, at) for i, (outcome, at) in decided.items() if asks[i].answered
            ]
            repo.confirm_all(cable_id, answered)  # after the save: answers replace what was confirmed
            audited = [(_decision(asks[i], checked[i], o, cable, at), o.ledger) for i, (o, at) in decided.items()]
            for (i, (outcome, _)), decision_id in zip(decided.items(), audit_all(repo, audited), strict=True):
                budgets, backup = outcome.budgets, book.minimum(asks[i].cpo_id)
                results[i] = RequestResult(decision_id, outcome.status, budgets, checked[i], cable.unit, backup)
    return [results[i] for i in range(len(asks))]


def _checked(ctx: Context, repo: Repository, cable: Cable, ask: _Ask, now: datetime) -> dict[datetime, Decimal]:
    """The request's blocks in the cable's unit; raises what is wrong with it."""
    h_start, h_end = ctx.horizon(now)
    for start in ask.wanted:
        if start < h_start:
            raise InvalidInput(f"block {start.isoformat()} has already ended; ask only for current or future blocks")
        if start >= h_end:
            raise InvalidInput(
                f"block {start.isoformat()} is beyond the horizon; budgets exist until {h_end.isoformat()}"
            )
    require_subscription(repo, cable.id, ask.cpo_id)
    return _in_cable_unit(ask.wanted, ask.blocks, cable, ask.field, "capacity")


def _decision(
    ask: _Ask, wanted: dict[datetime, Decimal], outcome: RequestOutcome, cable: Cable, now: datetime
) -> DecisionRecord:
    asked = sum(wanted.values(), ZERO)
    got = sum(outcome.budgets.values(), ZERO)
    message = f"{ask.cpo_id} asked for {asked} {cable.unit} over {len(wanted)} blocks and now holds {got}"
    return DecisionRecord(
        now, ask.actor, "request", message, cable_id=cable.id, cpo_id=ask.cpo_id, status=outcome.status.value
    )


def report_usage(
    ctx: Context, cable_id: str, cpo_id: str, blocks: Sequence[BlockQuantity], *, actor: str, field: str = "blocks"
) -> int:
    """A CPO reports its measured average load per block; only blocks that have begun."""
    usage = _blocks(blocks, field, "average_usage")
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        for start in usage:
            if start > now:
                raise InvalidInput(f"block {start.isoformat()} has not begun; report usage only for measured blocks")
        repo = Repository(session)
        require_subscription(repo, cable_id, cpo_id)
        usage = _in_cable_unit(usage, blocks, repo.cable(cable_id), field, "average_usage")
        repo.save_usage(cable_id, cpo_id, usage, now)
        message = f"{cpo_id} reported usage for {len(usage)} blocks, peak {max(usage.values())}"
        return repo.record(DecisionRecord(now, actor, "usage_reported", message, cable_id=cable_id, cpo_id=cpo_id), [])


@dataclass(frozen=True, slots=True)
class BlockView:
    start: datetime
    end: datetime
    limit: Decimal
    base_load: Decimal
    margin: Decimal
    available: Decimal
    unallocated: Decimal
    budgets: dict[str, Decimal]
    handed_out: bool


@dataclass(frozen=True, slots=True)
class CapacityView:
    cable_id: str
    unit: str
    blocks: list[BlockView]


def ensure_horizon(ctx: Context, cable_id: str) -> int:
    """Hand out the blocks that entered the horizon; returns how many. Cheap when none did."""
    now = ctx.clock()
    h_start, h_end = ctx.horizon(now)
    with ctx.db.read() as session:
        repo = Repository(session)
        repo.cable(cable_id)
        if repo.block_count(cable_id, h_start, h_end) == (h_end - h_start) // BLOCK:
            return 0
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        h_start, _ = ctx.horizon(now)
        repo = Repository(session)
        horizon = open_book(repo, ctx, repo.cable(cable_id), now, start=h_start, end=h_start)
        save_hand_out(repo, horizon, now)
        return len(horizon.new_starts)


@dataclass(frozen=True, slots=True)
class RollResult:
    handed_out: dict[str, int]  # cable id -> blocks that entered the horizon
    failed: dict[str, str]  # cable id -> what went wrong


def roll_horizon(ctx: Context) -> RollResult:
    """Hand out new blocks on every cable (a periodic job). A cable that fails does not stop the
    others; the failures are reported together."""
    with ctx.db.read() as session:
        cable_ids = [c.id for c in Repository(session).cables()]
    result = RollResult({}, {})
    for cable_id in cable_ids:
        try:
            result.handed_out[cable_id] = ensure_horizon(ctx, cable_id)
        except Exception as exc:
            log.exception("handing out new blocks on cable %s failed", cable_id)
            result.failed[cable_id] = str(exc) or type(exc).__name__
    return result


def capacity(ctx: Context, cable_id: str, start: datetime | None = None, end: datetime | None = None) -> CapacityView:
    """Limit, base load, margin, available, unallocated and budgets per block of [start, end).

    Defaults to the whole horizon. Past blocks show what was handed out then; blocks before the
    service knew the cable show budgets as empty and handed_out false.
    """
    now = ctx.clock()
    h_start, h_end = ctx.horizon(now)
    first = h_start if start is None else aligned(start, "start")
    stop = h_end if end is None else aligned(end, "end")
    if stop > h_end:
        raise InvalidInput(
            f"end must be at or before the horizon's end {h_end.isoformat()}; later blocks have no budgets yet"
        )
    if stop - first > MAX_VIEW_BLOCKS * BLOCK:
        raise InvalidInput(f"ask for at most {MAX_VIEW_BLOCKS} blocks (31 days) at once")
    starts = list(block_starts(first, stop))
    ensure_horizon(ctx, cable_id)
    with ctx.db.read() as session:
        repo = Repository(session)
        cable = repo.cable(cable_id)
        book = repo.load_book(cable, starts[0], starts[-1] + BLOCK)
        unknown = [s for s in starts if s not in book.blocks]
        loads = ctx.base_loads.base_load(repo, cable, unknown) if unknown else {}
    views = []
    for s in starts:
        block = book.blocks.get(s)
        if block is None:
            limit, base_load, margin = cable.limit_at(s), loads[s], cable.margin
            available = available_capacity(limit, base_load, margin)
            views.append(BlockView(s, s + BLOCK, limit, base_load, margin, available, available, {}, False))
            continue
        views.append(
            BlockView(
                s,
                s + BLOCK,
                block.limit,
                block.base_load,
                block.margin,
                block.available,
                block.unallocated,
                dict(sorted(block.budgets.items())),
                True,
            )
        )
    return CapacityView(cable.id, cable.unit.value, views)
