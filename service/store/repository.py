"""Reads and writes of domain objects within one transaction (a SQLAlchemy Session)."""

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import ColumnElement, Select, Table, and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.domain.allocation import BlockState, BudgetChange, CableBook, PendingRequest
from service.domain.errors import UnknownCable, UnknownCpo
from service.domain.model import Binding, Cable, Cpo, LimitOverride, Subscription
from service.domain.units import ZERO, Unit
from service.store.prepared import Link, Prepared, link
from service.store.tables import (
    BaseLoadForecastRow,
    BlockRow,
    BudgetRow,
    CableRow,
    CpoRow,
    DecisionRow,
    ForecastRunRow,
    LeaseRow,
    LedgerRow,
    LimitOverrideRow,
    OscpMessageRow,
    OutboxRow,
    PendingRequestRow,
    PresenceRow,
    SubscriptionRow,
    UsageRow,
)

_END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])


def _table(row: type[Any]) -> Table:
    return cast(Table, row.__table__)  # the ORM classes' __table__ is typed as a FromClause


_CABLES = _table(CableRow)
_OVERRIDES = _table(LimitOverrideRow)
_CPOS = _table(CpoRow)
_SUBSCRIPTIONS = _table(SubscriptionRow)
_PRESENCE = _table(PresenceRow)
_BLOCKS = _table(BlockRow)
_BUDGETS = _table(BudgetRow)
_PENDING = _table(PendingRequestRow)
_USAGE = _table(UsageRow)
_DECISIONS = _table(DecisionRow)
_LEDGER = _table(LedgerRow)
_OUTBOX = _table(OutboxRow)
_LEASES = _table(LeaseRow)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    at: datetime
    actor: str
    action: str
    message: str
    cable_id: str | None = None
    cpo_id: str | None = None
    status: str | None = None
    severity: str = "info"


# The statements of every decision, built once and run as `Prepared` statements: building and
# caching a statement per call, and SQLAlchemy's execution of it, cost several times what running
# it does. Core, not ORM: no identity map to fill and flush. No expanding IN: a fixed text each.
_CABLE = Prepared(select(_CABLES).where(_CABLES.c.id == bindparam("cable_id")))
_CABLE_OVERRIDES = Prepared(
    select(_OVERRIDES).where(_OVERRIDES.c.cable_id == bindparam("cable_id")).order_by(_OVERRIDES.c.start)
)
_CPO = Prepared(
    select(_CPOS.c.id, _CPOS.c.name, _CPOS.c.username, _CPOS.c.endpoint_url, _CPOS.c.binding).where(
        _CPOS.c.id == bindparam("cpo_id")
    )
)
_CABLE_SUBSCRIPTIONS = Prepared(
    select(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.cable_id == bindparam("cable_id")).order_by(_SUBSCRIPTIONS.c.cpo_id)
)
_OFFLINE = Prepared(
    select(_PRESENCE.c.cpo_id)
    .join(_SUBSCRIPTIONS, _SUBSCRIPTIONS.c.cpo_id == _PRESENCE.c.cpo_id)
    .where(_SUBSCRIPTIONS.c.cable_id == bindparam("cable_id"), _PRESENCE.c.last_seen_at < bindparam("before"))
)


def _cable_between(table: Table) -> tuple[ColumnElement[bool], ...]:
    """The rows of cable :cable_id whose block starts in [:from_, :until)."""
    return (
        table.c.cable_id == bindparam("cable_id"),
        table.c.start >= bindparam("from_"),
        table.c.start < bindparam("until"),
    )


_BOOK_BUDGETS = Prepared(
    select(_BUDGETS.c.start, _BUDGETS.c.cpo_id, _BUDGETS.c.capacity, _BUDGETS.c.told, _BUDGETS.c.reduced_at).where(
        *_cable_between(_BUDGETS)
    )
)
_BOOK_BLOCKS = Prepared(
    select(_BLOCKS.c.start, _BLOCKS.c.limit, _BLOCKS.c.base_load, _BLOCKS.c.margin).where(*_cable_between(_BLOCKS))
)
_BLOCK_COUNT = Prepared(select(func.count()).select_from(_BLOCKS).where(*_cable_between(_BLOCKS)))
_BOOK_PENDING = Prepared(
    select(_PENDING.c.cpo_id, _PENDING.c.start, _PENDING.c.target, _PENDING.c.requested_at).where(
        *_cable_between(_PENDING)
    )
)
_USAGE_PEAKS = Prepared(
    select(_USAGE.c.cpo_id, func.max(_USAGE.c.average_usage))
    .where(_USAGE.c.cable_id == bindparam("cable_id"), _USAGE.c.start >= bindparam("since"))
    .group_by(_USAGE.c.cpo_id)
)
_DELETE_PENDING = Prepared(
    delete(_PENDING).where(_PENDING.c.cable_id == bindparam("cable_id"), _PENDING.c.start == bindparam("block"))
)
_INSERT_PENDING = Prepared(insert(_PENDING), keys=["cable_id", "start", "cpo_id", "target", "requested_at"])
_b = _BUDGETS.c
_now = bindparam("now", type_=_b.reduced_at.type)  # a case() does not take its type from the column
_CONFIRM = Prepared(
    update(_BUDGETS)
    .where(_b.cable_id == bindparam("b_cable"), _b.cpo_id == bindparam("b_cpo"), _b.start == bindparam("block"))
    .values(
        told=bindparam("value", type_=_b.told.type),
        reduced_at=case((_b.capacity < bindparam("value", type_=_b.told.type), _now), else_=None),
    )
)
_INSERT_OUTBOX = Prepared(insert(_OUTBOX), keys=["cpo_id", "cable_id", "created_at", "attempts", "next_attempt_at"])
_DECISION_FIELDS = [f.name for f in dataclasses.fields(DecisionRecord)]
_INSERT_DECISION = Prepared(insert(_DECISIONS).returning(_DECISIONS.c.id), keys=_DECISION_FIELDS)
_INSERT_LEDGER = Prepared(
    insert(_LEDGER),
    keys=["decision_id", "at", "cable_id", "cpo_id", "start", "old_capacity", "new_capacity", "reason"],
)
_MESSAGES = _table(OscpMessageRow)
_INSERT_MESSAGES = Prepared(insert(_MESSAGES), keys=[c.key for c in _MESSAGES.c if c.key != "id"])


def _next_attempt() -> ColumnElement[datetime]:
    """When a CPO's undelivered pushes are next tried: a failure sets the retry time of all of them,
    and pushes owed since then (due at once) wait for it; with no failure, as soon as one is due."""
    o = _OUTBOX.c
    return func.coalesce(func.max(case((o.attempts > 0, o.next_attempt_at))), func.min(o.next_attempt_at))


def _insert(dialect: str, table: Table) -> Any:
    """An INSERT that can say what to do on conflict, in the database's own words."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@cache
def _budget_upsert(dialect: str) -> Prepared:
    """Set budgets. Where one falls below what its CPO confirmed, the notice period (re)starts: a
    further cut has yet to reach it. Where it is back at or above that, nothing is held."""
    stmt = _insert(dialect, _BUDGETS)
    new, noted_at = stmt.excluded.capacity, bindparam("noted_at", type_=_b.reduced_at.type)
    upsert = stmt.on_conflict_do_update(
        index_elements=["cable_id", "start", "cpo_id"],
        set_={"capacity": new, "reduced_at": case((and_(_b.told.is_not(None), new < _b.told), noted_at), else_=None)},
    )
    return Prepared(upsert, keys=["cable_id", "start", "cpo_id", "capacity"])


@cache
def _upsert_statement(dialect: str, table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Prepared:
    """INSERT ... ON CONFLICT (keys) DO UPDATE of `columns`, built once per table and dialect."""
    stmt = _insert(dialect, table)
    upsert = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns})
    return Prepared(upsert, keys=[*keys, *columns])


class Repository:
    """All persistence the use cases need, on one open transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session
        # Read once per transaction: a decision asks for its cable and subscriptions several times.
        # Every method that writes those tables forgets them.
        self._cables: dict[str, Cable] = {}
        self._subscriptions: dict[str, dict[str, Subscription]] = {}
        # What the database holds of each block read or written in this transaction: its limit,
        # base load, margin and pending requests. Saving skips what is unchanged.
        self._stored_blocks: dict[tuple[str, datetime], _StoredBlock] = {}
        # (cable, CPO, block) whose hold the book read as expired; the database still has the old `told`.
        self._expired_holds: set[tuple[str, str, datetime]] = set()
        self._taken: Link | None = None

    @property
    def _link(self) -> Link:
        """Where prepared statements run: this transaction's connection, taken once. The ORM's
        changes reach it when they are flushed, which every method that makes them does at once."""
        # Not a cached_property: on Python 3.11 that holds one lock across all instances while the
        # connection is taken, which may wait for the pool.
        if self._taken is None:
            self._taken = link(self.session)
        return self._taken

    def _forget(self, cable_id: str) -> None:
        self._cables.pop(cable_id, None)
        self._subscriptions.pop(cable_id, None)

    # --- cables -------------------------------------------------------------------------------

    def cable(self, cable_id: str) -> Cable:
        known = self._cables.get(cable_id)
        if known is not None:
            return known
        row = _CABLE.first(self._link, {"cable_id": cable_id})
        if row is None:
            raise UnknownCable(f"cable {cable_id!r} does not exist; list the cables to see which do")
        overrides = [_override(o) for o in _CABLE_OVERRIDES.rows(self._link, {"cable_id": cable_id})]
        cable = self._cables[cable_id] = self._cable(row, overrides)
        return cable

    def cables(self) -> list[Cable]:
        overrides: dict[str, list[LimitOverride]] = {}
        for o in self.session.scalars(select(LimitOverrideRow).order_by(LimitOverrideRow.start)):
            overrides.setdefault(o.cable_id, []).append(_override(o))
        rows = self.session.scalars(select(CableRow).order_by(CableRow.id))
        return [self._cable(row, overrides.get(row.id, [])) for row in rows]

    def cable_exists(self, cable_id: str) -> bool:
        return self.session.get(CableRow, cable_id) is not None

    @staticmethod
    def _cable(row: Any, overrides: Sequence[LimitOverride]) -> Cable:
        return Cable(
            id=row.id,
            name=row.name,
            unit=Unit(row.unit),
            rated_limit=row.rated_limit,
            phases=row.phases,
            voltage_v=row.voltage_v,
            margin=row.margin,
            reserve_share=row.reserve_share,
            base_load=row.base_load,
            overrides=tuple(overrides),
        )

    def save_cable(self, cable: Cable, now: datetime) -> None:
        self._forget(cable.id)
        row = self.session.get(CableRow, cable.id)
        if row is None:
            row = CableRow(id=cable.id, created_at=now)
            self.session.add(row)
        row.name, row.unit, row.rated_limit, row.phases = cable.name, cable.unit.value, cable.rated_limit, cable.phases
        row.voltage_v, row.margin, row.reserve_share = cable.voltage_v, cable.margin, cable.reserve_share
        row.base_load, row.updated_at = cable.base_load, now
        self.session.flush()

    def delete_cable(self, cable_id: str) -> None:
        self._forget(cable_id)
        self.session.execute(delete(BudgetRow).where(BudgetRow.cable_id == cable_id))
        self.session.execute(delete(PendingRequestRow).where(PendingRequestRow.cable_id == cable_id))
        self.session.execute(delete(UsageRow).where(UsageRow.cable_id == cable_id))
        self.session.execute(delete(BaseLoadForecastRow).where(BaseLoadForecastRow.cable_id == cable_id))
        self.session.execute(delete(ForecastRunRow).where(ForecastRunRow.cable_id == cable_id))
        self.session.execute(delete(BlockRow).where(BlockRow.cable_id == cable_id))
        self.session.execute(delete(SubscriptionRow).where(SubscriptionRow.cable_id == cable_id))
        self.session.execute(delete(LimitOverrideRow).where(LimitOverrideRow.cable_id == cable_id))
        self.session.execute(delete(CableRow).where(CableRow.id == cable_id))

    def add_override(self, cable_id: str, override: LimitOverride) -> LimitOverride:
        self._forget(cable_id)
        row = LimitOverrideRow(
            cable_id=cable_id, start=override.start, end=override.end, limit=override.limit, reason=override.reason
        )
        self.session.add(row)
        self.session.flush()
        return _override(row)

    def delete_override(self, cable_id: str, override_id: int) -> bool:
        self._forget(cable_id)
        result = self.session.execute(
            delete(LimitOverrideRow).where(LimitOverrideRow.cable_id == cable_id, LimitOverrideRow.id == override_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # --- CPOs ---------------------------------------------------------------------------------

    def cpo(self, cpo_id: str) -> Cpo:
        row = _CPO.first(self._link, {"cpo_id": cpo_id})
        if row is None:
            raise UnknownCpo(f"CPO {cpo_id!r} does not exist; list the CPOs to see which do")
        return _cpo(row)

    def cpo_exists(self, cpo_id: str) -> bool:
        return self.session.get(CpoRow, cpo_id) is not None

    def cpos(self) -> list[Cpo]:
        return [_cpo(row) for row in self.session.scalars(select(CpoRow).order_by(CpoRow.id))]

    def cpo_id_of_username(self, username: str) -> str | None:
        return self.session.scalar(select(CpoRow.id).where(CpoRow.username == username))

    def password_hash(self, cpo_id: str) -> str:
        row = self.session.get(CpoRow, cpo_id)
        if row is None:
            raise UnknownCpo(f"CPO {cpo_id!r} does not exist")
        return row.password_hash

    def save_cpo(self, cpo: Cpo, now: datetime, password_hash: str | None = None) -> None:
        row = self.session.get(CpoRow, cpo.id)
        if row is None:
            row = CpoRow(id=cpo.id, created_at=now)
            self.session.add(row)
        row.name, row.username, row.endpoint_url, row.binding = (
            cpo.name,
            cpo.username,
            cpo.endpoint_url,
            cpo.binding.value,
        )
        row.updated_at = now
        if password_hash is not None:
            row.password_hash = password_hash
        self.session.flush()

    def delete_cpo(self, cpo_id: str) -> None:
        self.session.execute(delete(OutboxRow).where(OutboxRow.cpo_id == cpo_id))
        self.session.execute(delete(PresenceRow).where(PresenceRow.cpo_id == cpo_id))
        self.session.execute(delete(CpoRow).where(CpoRow.id == cpo_id))

    # --- presence -----------------------------------------------------------------------------

    def seen(self, cpo_id: str, at: datetime) -> datetime | None:
        """Record contact with the CPO; returns when it was last heard from before."""
        before = self.session.scalar(select(PresenceRow.last_seen_at).where(PresenceRow.cpo_id == cpo_id))
        self._upsert(_PRESENCE, [{"cpo_id": cpo_id, "last_seen_at": at}], keys=("cpo_id",))
        return before

    def last_seen(self) -> dict[str, datetime]:
        return {row.cpo_id: row.last_seen_at for row in self.session.scalars(select(PresenceRow))}

    def offline_cpos(self, cable_id: str, offline_before: datetime) -> frozenset[str]:
        """The cable's CPOs last heard from before `offline_before`. Never heard from is not offline:
        such a CPO was never told anything it could still be using."""
        rows = _OFFLINE.rows(self._link, {"cable_id": cable_id, "before": offline_before})
        return frozenset(cpo_id for (cpo_id,) in rows)

    # --- subscriptions ------------------------------------------------------------------------

    def subscriptions(self, cable_id: str) -> dict[str, Subscription]:
        known = self._subscriptions.get(cable_id)
        if known is None:
            rows = _CABLE_SUBSCRIPTIONS.rows(self._link, {"cable_id": cable_id})
            known = self._subscriptions[cable_id] = {r.cpo_id: _subscription(r) for r in rows}
        return dict(known)  # a copy: callers (the allocation rules) may change theirs

    def cables_of_cpo(self, cpo_id: str) -> list[str]:
        return list(
            self.session.scalars(
                select(SubscriptionRow.cable_id)
                .where(SubscriptionRow.cpo_id == cpo_id)
                .order_by(SubscriptionRow.cable_id)
            )
        )

    def save_subscription(self, sub: Subscription) -> None:
        self._forget(sub.cable_id)
        row = self.session.get(SubscriptionRow, (sub.cable_id, sub.cpo_id))
        if row is None:
            row = SubscriptionRow(cable_id=sub.cable_id, cpo_id=sub.cpo_id)
            self.session.add(row)
        row.weight, row.guaranteed_minimum = sub.weight, sub.guaranteed_minimum
        self.session.flush()

    def delete_subscription(self, cable_id: str, cpo_id: str) -> None:
        self._forget(cable_id)
        self.session.execute(
            delete(SubscriptionRow).where(SubscriptionRow.cable_id == cable_id, SubscriptionRow.cpo_id == cpo_id)
        )

    # --- blocks and budgets -------------------------------------------------------------------

    def block_starts(self, cable_id: str, start: datetime, end: datetime) -> set[datetime]:
        return set(
            self.session.scalars(
                select(BlockRow.start).where(
                    BlockRow.cable_id == cable_id, BlockRow.start >= start, BlockRow.start < end
                )
            )
        )

    def block_count(self, cable_id: str, start: datetime, end: datetime) -> int:
        return int(_BLOCK_COUNT.rows(self._link, {"cable_id": cable_id, "from_": start, "until": end})[0][0])

    def load_book(
        self,
        cable: Cable,
        start: datetime,
        end: datetime | None,
        *,
        usage_since: datetime | None = None,
        holds: "HoldRules | None" = None,
    ) -> CableBook:
        """The cable's handed-out blocks in [start, end) (end None: from start on) with budgets,
        pending requests and, given `holds`, what CPOs confirmed and which are offline."""
        in_range = {"cable_id": cable.id, "from_": start, "until": end or _END_OF_TIME}
        subscriptions = self.subscriptions(cable.id)
        offline = self.offline_cpos(cable.id, holds.offline_before) if holds else frozenset()
        budgets: dict[datetime, dict[str, Decimal]] = {}
        told: dict[datetime, dict[str, Decimal]] = {}
        for block_start, cpo_id, capacity, confirmed, reduced_at in _BOOK_BUDGETS.rows(self._link, in_range):
            budgets.setdefault(block_start, {})[cpo_id] = capacity
            if holds is not None:
                expired = cpo_id not in offline and reduced_at is not None and reduced_at <= holds.expired_before
                if expired:
                    self._expired_holds.add((cable.id, cpo_id, block_start))
                known = capacity if expired else _known(offline, subscriptions, cpo_id=cpo_id, confirmed=confirmed)
                if known is not None:
                    told.setdefault(block_start, {})[cpo_id] = known
        blocks = {
            row.start: BlockState(
                row.start,
                row.limit,
                row.base_load,
                row.margin,
                budgets.get(row.start, {}),
                told=told.get(row.start, {}),
            )
            for row in _BOOK_BLOCKS.rows(self._link, in_range)
        }
        for p in _BOOK_PENDING.rows(self._link, in_range):
            blocks[p.start].pending[p.cpo_id] = PendingRequest(p.cpo_id, p.start, p.target, p.requested_at)
        for s, b in blocks.items():
            self._stored_blocks[(cable.id, s)] = _stored(b)
        peaks: dict[str, Decimal] = {}
        if usage_since is not None:
            rows = _USAGE_PEAKS.rows(self._link, {"cable_id": cable.id, "since": usage_since})
            peaks = {row[0]: row[1] for row in rows}
        return CableBook(cable, subscriptions, blocks, usage_peak=peaks, offline=offline)

    def save_book(
        self, book: CableBook, starts: Iterable[datetime], changes: Sequence[BudgetChange], now: datetime
    ) -> None:
        """Write the given blocks' parameters and pending requests, where changed, and the changed
        budgets, (re)starting the notice period of those now below what their CPO confirmed."""
        cable_id = book.cable.id
        blocks, pending_starts = [], []
        for s in starts:
            b = book.blocks[s]
            now_stored, stored = _stored(b), self._stored_blocks.get((cable_id, s))
            if stored is None or stored.params != now_stored.params:
                blocks.append({"cable_id": cable_id, "start": s, "limit": b.limit, "base_load": b.base_load,
                               "margin": b.margin})  # fmt: skip
            if stored is None or stored.pending != now_stored.pending:
                pending_starts.append(s)
            self._stored_blocks[(cable_id, s)] = now_stored
        self._upsert(_BLOCKS, blocks, keys=("cable_id", "start"))
        budgets = [
            {
                "cable_id": cable_id,
                "start": s,
                "cpo_id": cpo,
                "capacity": book.blocks[s].budgets.get(cpo, ZERO),
                "noted_at": now,
            }
            for cpo, s in sorted({(c.cpo_id, c.block_start) for c in changes})
        ]
        expired = [
            (c.cpo_id, c.block_start) for c in changes if (cable_id, c.cpo_id, c.block_start) in self._expired_holds
        ]
        if expired:  # as the book read them: each CPO knows the budget it had, and a cut notices from there
            self.drop_holds(cable_id, expired)
            self._expired_holds.difference_update((cable_id, cpo, start) for cpo, start in expired)
        if budgets:
            _budget_upsert(self._dialect).run(self._link, budgets)
        if pending_starts:
            _DELETE_PENDING.run(self._link, [{"cable_id": cable_id, "block": s} for s in pending_starts])
            pending = [
                {
                    "cable_id": cable_id,
                    "start": p.block_start,
                    "cpo_id": p.cpo_id,
                    "target": p.target,
                    "requested_at": p.requested_at,
                }
                for s in pending_starts
                for p in book.blocks[s].pending.values()
            ]
            if pending:
                _INSERT_PENDING.run(self._link, pending)

    def confirm(self, cable_id: str, cpo_id: str, told: dict[datetime, Decimal], now: datetime) -> None:
        """The CPO now knows these budgets: a push it Accepted, or the answer to its own request."""
        self.confirm_all(cable_id, [(cpo_id, told, now)])

    def confirm_all(self, cable_id: str, told: Sequence[tuple[str, dict[datetime, Decimal], datetime]]) -> None:
        """`confirm` for several answers (CPO, budgets, when) in one statement (executemany), in order."""
        rows = [
            {"b_cable": cable_id, "b_cpo": cpo_id, "block": start, "value": v, "now": at}
            for cpo_id, budgets, at in told
            for start, v in budgets.items()
        ]
        if rows:
            _CONFIRM.run(self._link, rows)

    def offered(self, cable_id: str, cpo_id: str, start: datetime, end: datetime) -> None:
        """A push of the CPO's current budgets is leaving: where a budget is above what it confirmed,
        it may use that budget from now on."""
        b = BudgetRow.__table__.c
        self.session.execute(
            update(_BUDGETS)
            .where(
                b.cable_id == cable_id,
                b.cpo_id == cpo_id,
                b.start >= start,
                b.start < end,
                or_(b.told.is_(None), b.told < b.capacity),
            )
            .values(told=b.capacity, reduced_at=None)
        )

    def restart_notice(self, cpo_id: str, now: datetime) -> None:
        """The CPO is back from offline: its unconfirmed lower budgets get a full notice period
        from now, as if just sent (it could not have answered while it was away)."""
        b = BudgetRow.__table__.c
        self.session.execute(
            update(_BUDGETS).where(b.cpo_id == cpo_id, b.reduced_at.is_not(None)).values(reduced_at=now)
        )

    def expired_holds(self, cable_id: str, expired_before: datetime, since: datetime) -> list[tuple[str, datetime]]:
        """(cpo, block) whose lower budget went unconfirmed for the whole notice period."""
        b = BudgetRow.__table__.c
        return [
            (row.cpo_id, row.start)
            for row in self.session.execute(
                select(b.cpo_id, b.start).where(
                    b.cable_id == cable_id, b.start >= since, b.reduced_at.is_not(None), b.reduced_at <= expired_before
                )
            )
        ]

    def drop_holds(self, cable_id: str, holds: Sequence[tuple[str, datetime]]) -> None:
        """Expired holds: the lower budget counts as known from now on."""
        if not holds:
            return
        b = BudgetRow.__table__.c
        self.session.connection().execute(  # one statement for all holds (executemany)
            update(_BUDGETS)
            .where(
                b.cable_id == cable_id,
                b.cpo_id == bindparam("cpo", type_=b.cpo_id.type),
                b.start == bindparam("block", type_=b.start.type),
            )
            .values(told=b.capacity, reduced_at=None),
            [{"cpo": cpo_id, "block": start} for cpo_id, start in holds],
        )

    def budgets_of(self, cable_id: str, cpo_id: str, start: datetime, end: datetime) -> dict[datetime, Decimal]:
        b = BudgetRow.__table__.c
        rows = self.session.execute(
            select(b.start, b.capacity).where(
                b.cable_id == cable_id, b.cpo_id == cpo_id, b.start >= start, b.start < end
            )
        )
        return dict(sorted((row.start, row.capacity) for row in rows))

    def delete_budgets_of(self, cable_id: str, cpo_id: str, *, since: datetime) -> None:
        """Forget a CPO's budgets from `since` on (earlier ones stay as history), except what it was
        told: that stays held, at budget 0, until it confirms the zero budget pushed to it or the
        notice period passes."""
        b = BudgetRow.__table__.c
        mine = (b.cable_id == cable_id, b.cpo_id == cpo_id, b.start >= since)
        self.session.execute(delete(BudgetRow).where(*mine, or_(b.told.is_(None), b.told <= Decimal(0))))
        self.session.execute(update(_BUDGETS).where(*mine).values(capacity=Decimal(0)))
        self.session.execute(
            delete(PendingRequestRow).where(
                PendingRequestRow.cable_id == cable_id,
                PendingRequestRow.cpo_id == cpo_id,
                PendingRequestRow.start >= since,
            )
        )

    def _upsert(self, table: Table, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
        if not rows:
            return
        columns = tuple(c for c in rows[0] if c not in keys)
        _upsert_statement(self._dialect, table, keys, columns).run(self._link, rows)

    @property
    def _dialect(self) -> str:
        return self.session.get_bind().dialect.name

    # --- forecasts ----------------------------------------------------------------------------

    def save_forecast(
        self,
        cable_id: str,
        issued_at: datetime,
        model: str,
        blocks: dict[datetime, tuple[Decimal, Decimal, Decimal]],
        *,
        keep_since: datetime,
    ) -> bool:
        """Store (p50, lower, upper) per block unless a forecast issued later is stored already
        (False), and drop rows of blocks that started before `keep_since`."""
        run = self.session.get(ForecastRunRow, cable_id)
        if run is not None and run.issued_at is not None and run.issued_at > issued_at:
            return False
        self._upsert(
            _table(BaseLoadForecastRow),
            [
                {
                    "cable_id": cable_id,
                    "start": s,
                    "issued_at": issued_at,
                    "model": model,
                    "p50": p,
                    "lower": lo,
                    "upper": up,
                }
                for s, (p, lo, up) in sorted(blocks.items())
            ],
            keys=("cable_id", "start"),
        )
        f = BaseLoadForecastRow
        self.session.execute(delete(f).where(f.cable_id == cable_id, f.start < keep_since))
        return True

    def forecast(self, cable_id: str, start: datetime, end: datetime) -> list[BaseLoadForecastRow]:
        f = BaseLoadForecastRow
        return list(
            self.session.scalars(
                select(f).where(f.cable_id == cable_id, f.start >= start, f.start < end).order_by(f.start)
            )
        )

    def forecast_upper(self, cable_id: str, starts: Sequence[datetime]) -> dict[datetime, Decimal]:
        """The forecast base load plus margin of those blocks that have a forecast."""
        if not starts:
            return {}
        f = BaseLoadForecastRow
        rows = self.session.execute(
            select(f.start, f.upper).where(f.cable_id == cable_id, f.start >= min(starts), f.start <= max(starts))
        )
        wanted = set(starts)
        return {s: u for s, u in rows if s in wanted}

    def forecast_run(self, cable_id: str) -> ForecastRunRow | None:
        return self.session.get(ForecastRunRow, cable_id)

    def save_forecast_run(self, cable_id: str, **values: Any) -> None:
        """Set the given fields of the cable's run; the first run must give the required ones.
        Call under the cable's lock."""
        row = self.session.get(ForecastRunRow, cable_id)
        if row is None:
            self.session.add(ForecastRunRow(cable_id=cable_id, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
        self.session.flush()

    # --- leases -------------------------------------------------------------------------------

    def take_lease(self, name: str, owner: str, now: datetime, until: datetime) -> bool:
        """Hold (or keep holding) the lease `name` until `until`, unless another owner holds it
        past `now`. One statement decides, so two processes can never both win."""
        lease = LeaseRow.__table__.c
        insert_new = _insert(self._dialect, _LEASES)
        self.session.execute(
            insert_new.values(name=name, owner="", expires_at=now).on_conflict_do_nothing(index_elements=["name"])
        )
        taken = self.session.execute(
            update(_LEASES)
            .where(lease.name == name, or_(lease.owner == owner, lease.expires_at <= now))
            .values(owner=owner, expires_at=until)
        )
        return bool(taken.rowcount)  # type: ignore[attr-defined]

    def drop_lease(self, name: str, owner: str, now: datetime) -> None:
        lease = LeaseRow.__table__.c
        self.session.execute(update(_LEASES).where(lease.name == name, lease.owner == owner).values(expires_at=now))

    def lease_holder(self, name: str, now: datetime) -> str | None:
        row = self.session.get(LeaseRow, name)
        return row.owner if row is not None and row.expires_at > now and row.owner else None

    # --- usage --------------------------------------------------------------------------------

    def save_usage(self, cable_id: str, cpo_id: str, usage: dict[datetime, Decimal], now: datetime) -> None:
        self._upsert(
            _USAGE,
            [
                {"cable_id": cable_id, "cpo_id": cpo_id, "start": s, "average_usage": u, "reported_at": now}
                for s, u in sorted(usage.items())
            ],
            keys=("cable_id", "cpo_id", "start"),
        )

    def usage(self, cable_id: str, start: datetime, end: datetime) -> dict[datetime, dict[str, Decimal]]:
        out: dict[datetime, dict[str, Decimal]] = {}
        for row in self.session.scalars(
            select(UsageRow).where(UsageRow.cable_id == cable_id, UsageRow.start >= start, UsageRow.start < end)
        ):
            out.setdefault(row.start, {})[row.cpo_id] = row.average_usage
        return out

    def usage_totals(
        self, cable_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, dict[datetime, Decimal]]:
        """Per cable and block: the EV usage all CPOs reported together."""
        u = UsageRow
        out: dict[str, dict[datetime, Decimal]] = {c: {} for c in cable_ids}
        for cable_id, block, total in self.session.execute(
            select(u.cable_id, u.start, func.sum(u.average_usage))
            .where(u.cable_id.in_(cable_ids), u.start >= start, u.start < end)
            .group_by(u.cable_id, u.start)
        ):
            out[cable_id][block] = total
        return out

    # --- outbox -------------------------------------------------------------------------------

    def enqueue_pushes(self, cable_id: str, cpo_ids: Iterable[str], now: datetime) -> None:
        """Owe each CPO a push of its budgets on the cable, in the decision's own transaction. The row
        is due now, but a CPO that is backing off stays backed off until its retry time."""
        rows = [
            {"cpo_id": cpo_id, "cable_id": cable_id, "created_at": now, "attempts": 0, "next_attempt_at": now}
            for cpo_id in sorted(set(cpo_ids))
        ]
        if rows:
            _INSERT_OUTBOX.run(self._link, rows)

    def push_now(self, cpo_id: str, now: datetime) -> None:
        """The CPO is back: its undelivered pushes are due at once."""
        o = OutboxRow.__table__.c
        self.session.execute(
            update(_OUTBOX).where(o.cpo_id == cpo_id, o.delivered_at.is_(None)).values(next_attempt_at=now)
        )

    def cpos_with_due_pushes(self, now: datetime) -> list[str]:
        """CPOs whose next attempt is due (`_next_attempt`), oldest first."""
        o = OutboxRow.__table__.c
        first = (
            select(o.cpo_id, func.min(o.id).label("first_id"), _next_attempt().label("due"))
            .where(o.delivered_at.is_(None))
            .group_by(o.cpo_id)
            .subquery()
        )
        return list(self.session.scalars(select(first.c.cpo_id).where(first.c.due <= now).order_by(first.c.first_id)))

    def pending_pushes(self, cpo_id: str) -> list[tuple[int, str, int]]:
        """(id, cable, attempts) of the CPO's undelivered pushes, in order."""
        o = OutboxRow.__table__.c
        rows = self.session.execute(
            select(o.id, o.cable_id, o.attempts).where(o.cpo_id == cpo_id, o.delivered_at.is_(None)).order_by(o.id)
        )
        return [(row.id, row.cable_id, row.attempts) for row in rows]

    def pushes_delivered(self, ids: Sequence[int], now: datetime) -> None:
        o = OutboxRow.__table__.c
        self.session.execute(update(_OUTBOX).where(o.id.in_(ids)).values(delivered_at=now, last_error=None))

    def pushes_failed(self, ids: Sequence[int], attempts: int, error: str, retry_at: datetime) -> None:
        o = OutboxRow.__table__.c
        self.session.execute(
            update(_OUTBOX)
            .where(o.id.in_(ids))
            .values(attempts=attempts, next_attempt_at=retry_at, last_error=error[:2000])
        )

    def outbox(self) -> list[dict[str, Any]]:
        """Per CPO: undelivered pushes, the oldest one's age, attempts and last error."""
        o = OutboxRow.__table__.c
        rows = self.session.execute(
            select(
                o.cpo_id,
                func.count().label("depth"),
                func.min(o.created_at).label("oldest"),
                func.max(o.attempts).label("attempts"),
                _next_attempt().label("next_attempt_at"),
            )
            .where(o.delivered_at.is_(None))
            .group_by(o.cpo_id)
            .order_by(o.cpo_id)
        )
        errors: dict[str, str] = {}
        for cpo_id, error in self.session.execute(
            select(o.cpo_id, o.last_error).where(o.delivered_at.is_(None), o.last_error.is_not(None)).order_by(o.id)
        ):
            errors[cpo_id] = error  # the newest
        return [{**row._asdict(), "last_error": errors.get(row.cpo_id)} for row in rows]

    # --- OSCP message record -------------------------------------------------------------------

    def record_messages(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            _INSERT_MESSAGES.run(self._link, rows)

    def messages(self, *, cpo_id: str | None = None, since_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        m = OscpMessageRow.__table__.c
        query = select(OscpMessageRow.__table__).where(m.id > since_id).order_by(m.id).limit(limit)
        if cpo_id is not None:
            query = query.where(m.cpo_id == cpo_id)
        return [dict(row._mapping) for row in self.session.execute(query)]

    def message_counts(self) -> list[tuple[str, str, str, int]]:
        """(direction, operation, outcome, count) over the whole record."""
        m = OscpMessageRow.__table__.c
        rows = self.session.execute(
            select(m.direction, m.operation, m.outcome, func.count())
            .group_by(m.direction, m.operation, m.outcome)
            .order_by(m.direction, m.operation, m.outcome)
        )
        return [(d, o, out, int(n)) for d, o, out, n in rows]

    # --- audit --------------------------------------------------------------------------------

    def record(self, decision: DecisionRecord, changes: Sequence[BudgetChange]) -> int:
        return self.record_all([(decision, changes)])[0]

    def record_all(self, decisions: Sequence[tuple[DecisionRecord, Sequence[BudgetChange]]]) -> list[int]:
        """Audit decisions with their budget changes, in order; returns their ids."""
        if not decisions:
            return []
        insert = _INSERT_DECISION.rows  # one at a time: only that returns each id on every database
        ids = [insert(self._link, {f: getattr(d, f) for f in _DECISION_FIELDS})[0].id for d, _ in decisions]
        ledger = [
            {
                "decision_id": decision_id,
                "at": decision.at,
                "cable_id": decision.cable_id,
                "cpo_id": c.cpo_id,
                "start": c.block_start,
                "old_capacity": c.old,
                "new_capacity": c.new,
                "reason": c.reason.value,
            }
            for decision_id, (decision, changes) in zip(ids, decisions, strict=True)
            for c in changes
        ]
        if ledger:
            _INSERT_LEDGER.run(self._link, ledger)
        return ids

    def ledger(
        self, *, cable_id: str | None, cpo_id: str | None, since: datetime | None, limit: int
    ) -> list[tuple[LedgerRow, DecisionRow]]:
        query = select(LedgerRow, DecisionRow).join(DecisionRow, LedgerRow.decision_id == DecisionRow.id)
        query = _audit_filters(query, LedgerRow, cable_id=cable_id, cpo_id=cpo_id, since=since)
        return [(r[0], r[1]) for r in self.session.execute(query.order_by(LedgerRow.id).limit(limit))]

    def decisions(
        self, *, cable_id: str | None, cpo_id: str | None, since: datetime | None, limit: int
    ) -> list[DecisionRow]:
        query = _audit_filters(select(DecisionRow), DecisionRow, cable_id=cable_id, cpo_id=cpo_id, since=since)
        return list(self.session.scalars(query.order_by(DecisionRow.id).limit(limit)))

    # --- monitoring: what happened in a time window [start, end), read-only ----------------------

    def messages_between(
        self, start: datetime, end: datetime
    ) -> list[tuple[datetime, str | None, str, str, str, float]]:
        """(at, cpo_id, direction, operation, outcome, duration_ms) of the OSCP messages recorded."""
        m = OscpMessageRow
        rows = self.session.execute(
            select(m.at, m.cpo_id, m.direction, m.operation, m.outcome, m.duration_ms)
            .where(m.at >= start, m.at < end)
            .order_by(m.id)
        )
        return [(at, cpo, direction, operation, outcome, ms) for at, cpo, direction, operation, outcome, ms in rows]

    def ledger_between(
        self, start: datetime, end: datetime
    ) -> list[tuple[datetime, str, str, str, Decimal, Decimal, str | None]]:
        """(at, cable_id, cpo_id, reason, old_capacity, new_capacity, the cable's unit) of the budget
        changes decided; the unit is None once the cable is deleted."""
        e = LedgerRow
        rows = self.session.execute(
            select(e.at, e.cable_id, e.cpo_id, e.reason, e.old_capacity, e.new_capacity, CableRow.unit)
            .outerjoin(CableRow, CableRow.id == e.cable_id)
            .where(e.at >= start, e.at < end)
            .order_by(e.id)
        )
        return [(at, cable, cpo, reason, old, new, unit) for at, cable, cpo, reason, old, new, unit in rows]

    def decisions_between(
        self, start: datetime, end: datetime, actions: Sequence[str]
    ) -> list[tuple[datetime, str, str | None, str | None, str | None, str, str]]:
        """(at, action, cable_id, cpo_id, status, actor, message) of the decisions of these actions."""
        d = DecisionRow
        rows = self.session.execute(
            select(d.at, d.action, d.cable_id, d.cpo_id, d.status, d.actor, d.message)
            .where(d.at >= start, d.at < end, d.action.in_(list(actions)))
            .order_by(d.id)
        )
        return [(at, action, cable, cpo, status, actor, text) for at, action, cable, cpo, status, actor, text in rows]


def _audit_filters(
    query: SelectT,
    table: type[LedgerRow] | type[DecisionRow],
    *,
    cable_id: str | None,
    cpo_id: str | None,
    since: datetime | None,
) -> SelectT:
    """Narrow an audit query to a cable, a CPO and a start moment, each when given."""
    if cable_id is not None:
        query = query.where(table.cable_id == cable_id)
    if cpo_id is not None:
        query = query.where(table.cpo_id == cpo_id)
    if since is not None:
        query = query.where(table.at >= since)
    return query


class _StoredBlock(NamedTuple):
    params: tuple[Decimal, Decimal, Decimal]  # limit, base load, margin
    pending: frozenset[PendingRequest]


def _stored(block: BlockState) -> _StoredBlock:
    return _StoredBlock((block.limit, block.base_load, block.margin), frozenset(block.pending.values()))


# Row converters take an ORM row or a Core row of the same columns.


def _override(row: Any) -> LimitOverride:
    return LimitOverride(start=row.start, end=row.end, limit=row.limit, reason=row.reason, id=row.id)


def _cpo(row: Any) -> Cpo:
    return Cpo(
        id=row.id, name=row.name, username=row.username, endpoint_url=row.endpoint_url, binding=Binding(row.binding)
    )


def _subscription(row: Any) -> Subscription:
    return Subscription(row.cable_id, row.cpo_id, row.weight, row.guaranteed_minimum)


def _known(
    offline: frozenset[str], subscriptions: dict[str, Subscription], *, cpo_id: str, confirmed: Decimal | None
) -> Decimal | None:
    """What the CPO may be using in a block, as far as it limits what others get, unless its hold
    expired (the notice period passed while it was online: then it counts as knowing its budget)."""
    if cpo_id in offline and confirmed is None and cpo_id in subscriptions:
        return subscriptions[cpo_id].guaranteed_minimum  # where it knows nothing: its backup capacity
    return confirmed


@dataclass(frozen=True, slots=True)
class HoldRules:
    """When a hold has expired and when a CPO counts as offline, as instants for one decision."""

    expired_before: datetime  # a lower budget unconfirmed since before this no longer holds
    offline_before: datetime  # a CPO last heard from before this is offline
