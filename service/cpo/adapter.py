"""The CPO adapter: DSO budgets in, OCPP charging profiles out, usage back to the DSO.

State lives here; the pure rules live in `profiles` (split, plans) and `ledger` (usage, request or hand
back); the transports are thin (`central` for OCPP, `dso` for OSCP, `api` for REST).

Safety: every cable's charge points together stay within its budget in every block.
- Charge points that cannot be steered (reject every profile kind, or accept and ignore) have their full
  rating reserved. Ones that are offline, or did not answer, are held at the most their accepted profile
  and any sent since without an answer allow (their rating if none was accepted): what they may draw.
  The idle connectors of a TxProfile-only charger are reserved at their rating.
- Nothing rises before every lowering is in force: a change that lowers anything goes out first as the
  lower of old and new; raises follow in a round in which no profile lowers. Whatever fails is held as
  above and the split recomputed.
- The last period of every profile is the charge point's share of the cable's backup capacity and never
  expires, so a charge point that loses the adapter (or an adapter that loses the DSO) falls back to it
  once the known blocks run out. Block boundaries allow a minute of charger clock skew.

Threads: OCPP events and the scheduled work run on one asyncio loop; REST and OSCP requests come from
server threads. Shared state is guarded by one lock, held only for computing, never across I/O.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import takewhile
from typing import Any

from service.cpo import profiles as p
from service.cpo.background import Background
from service.cpo.central import CentralSystem, CompositeSchedule
from service.cpo.dso import DsoLink, DsoRefused, DsoUnreachable, ReceivedBudgets
from service.cpo.ledger import (
    BlockState,
    Decision,
    Hysteresis,
    MeterSample,
    Outlook,
    UsageMeter,
    block_usage,
    constrained_demand,
    decide,
)
from service.cpo.store import CpoStore, OutboxItem, point_values
from service.domain.blocks import BLOCK, block_floor
from service.domain.errors import Conflict, InvalidInput, NotFound
from service.domain.units import Unit

log = logging.getLogger("gridcap.cpo")

USAGE_SETTLE = timedelta(minutes=2)  # a block's closing meter readings arrive before it is reported
READINGS_REACH_BACK, READINGS_REACH_AHEAD = timedelta(days=2), timedelta(minutes=15)  # plausible clocks
# charge points that do not answer are tried again after 30 s, then twice as long each time, at most 10 min
RETRY_FIRST, RETRY_MOST = timedelta(seconds=30), timedelta(minutes=10)
CURRENT_IMPORT = "Current.Import"
CURRENT_OFFERED = "Current.Offered"
ENERGY_REGISTER = "Energy.Active.Import.Register"
# Our profiles have fixed ids per purpose and connector, so a new one replaces the old.
_PROFILE_IDS = {p.ProfileKind.CHARGE_POINT_MAX: 1000, p.ProfileKind.TX_DEFAULT: 2000, p.ProfileKind.TX: 3000}
_UNIT_HYSTERESIS = {  # per cable unit: request band, hand-back band, headroom kept above usage
    Unit.AMPERE: (Decimal(2), Decimal(6), Decimal(6)),
    Unit.KILOWATT: (Decimal("1.4"), Decimal("4.2"), Decimal("4.2")),
}


@dataclass(frozen=True)
class AdapterSettings:
    heartbeat_interval_s: int = 60  # until the DSO's Heartbeat answer says otherwise
    recompute_every_s: float = 30.0  # block boundaries, what cars draw, retries
    usage_every_s: float = 60.0  # how often closed blocks are looked for and the buffer is replayed
    adjust_every_s: float = 60.0  # how often requests and hand-backs are considered
    adjust_blocks: int = 4  # requests and hand-backs cover the next hour, not tomorrow
    compliance_after_s: float = 30.0  # check the composite schedule this long after a profile is accepted
    offered_tolerance_a: Decimal = Decimal(1)  # Current.Offered above the limit by more: not applied
    headroom_a: Decimal = p.DEFAULT_HEADROOM_A
    band_a: Decimal = p.DEFAULT_BAND_A
    cooldown: timedelta = timedelta(minutes=30)
    debounce_s: float = 0.2  # events within this coalesce into one recompute


@dataclass
class PointState:
    """What the adapter knows of one charge point while it runs."""

    connected: bool = False
    boot: dict[str, str | None] | None = None
    configuration: dict[str, str] = field(default_factory=dict)
    kind: p.ProfileKind = p.ProfileKind.CHARGE_POINT_MAX
    excluded: str | None = None  # why its rating is reserved: it cannot be steered
    unconfirmed: str | None = None  # the last profile was not confirmed (Timeout, Offline, CallError)
    accepted: dict[int, p.ProfilePlan] = field(default_factory=dict)  # per connector (0: ChargePointMax)
    unanswered: dict[int, p.ProfilePlan] = field(default_factory=dict)  # the most sent since, unconfirmed
    tx_rejections: int = 0  # TxProfiles rejected in a row (one may name a transaction that just ended)
    silent: int = 0  # profiles in a row without an answer
    retry_at: datetime | None = None  # when a charge point that did not answer is tried again
    accepted_at: dict[int, datetime] = field(default_factory=dict)
    statuses: dict[int, dict[str, str]] = field(default_factory=dict)
    offered_over: int = 0  # consecutive Current.Offered samples above the limit


@dataclass
class SessionState:
    transaction_id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    started_at: datetime
    meter_start_wh: int
    energy_wh: Decimal = Decimal(0)
    drawn_a: Decimal | None = None  # the highest phase current in the last sample
    max_drawn_a: Decimal | None = None
    last_reading_at: datetime | None = None


@dataclass
class DsoState:
    last_heard: datetime | None = None
    heartbeat_interval_s: int = 60
    forecasts_pulled: bool = False
    last_error: str | None = None


class Adapter:
    """The `central.Events` sink, the OSCP receiver and the REST API's model, in one place."""

    def __init__(
        self,
        store: CpoStore,
        *,
        dso: DsoLink | None,
        settings: AdapterSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        call_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.dso = dso
        self.settings = settings or AdapterSettings()
        self.clock = clock
        self.central = CentralSystem(self, call_timeout_s=call_timeout_s)
        self.dso_state = DsoState(heartbeat_interval_s=self.settings.heartbeat_interval_s)
        self._lock = threading.RLock()
        self._points: dict[str, PointState] = {}
        self._sessions: dict[p.Key, SessionState] = {}
        self._limits: dict[p.Key, Decimal] = {}  # the split's limit for the current block, per session
        self._phases: dict[p.Key, int] = {}  # phases each connector's car was seen charging on
        self._block_phases: dict[tuple[str, int, datetime], int] = {}  # ... per block, for its usage
        self._usage_until: dict[str, datetime] = {}  # per cable: blocks before this are queued
        self._decisions: dict[str, dict[datetime, BlockState]] = {}
        self._meter = UsageMeter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._cable_locks: dict[str, asyncio.Lock] = {}
        self._background = Background(log, "CPO adapter task")
        self.ocpp_port: int | None = None
        self.ready = threading.Event()  # set once the OCPP server listens
        for tx in store.open_transactions():
            self._sessions[(tx.charge_point_id, tx.connector_id)] = SessionState(
                tx.id, tx.charge_point_id, tx.connector_id, tx.id_tag, tx.started_at, tx.meter_start_wh
            )

    # ------------------------------------------------------------------------------------------
    # running

    async def run(self, stop: asyncio.Event, *, ocpp_host: str, ocpp_port: int) -> None:
        """Serve OCPP and do the scheduled work until `stop` is set."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.ocpp_port = await self.central.start(ocpp_host, ocpp_port)
        self.ready.set()
        self._background.spawn(self._enforcer(stop))
        self._background.spawn(self._every(stop, self.settings.recompute_every_s, self.recompute_all))
        if self.dso is not None:
            self._background.spawn(self._dso_heartbeats(stop))
            self._background.spawn(self._every(stop, self.settings.usage_every_s, self.report_usage))
            self._background.spawn(self._every(stop, self.settings.adjust_every_s, self.adjust_all))
        self.touch_all()
        try:
            await stop.wait()
        finally:
            await self._background.cancel_all()
            await self.central.stop()

    async def _every(self, stop: asyncio.Event, every_s: float, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while not stop.is_set():
            try:
                await work()
            except Exception:  # one failed round must not end the schedule
                log.exception("scheduled CPO adapter work failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def recompute_all(self) -> None:
        """Every cable again; charge points that did not answer get another chance once their back-off
        has passed (they are held again if they fail again)."""
        now = self.clock()
        with self._lock:
            for state in self._points.values():
                if state.connected and (state.retry_at is None or now >= state.retry_at):
                    state.unconfirmed = None
        self.touch_all()

    def touch_all(self) -> None:
        self.touch(*{r.charge_point.cable_id for r in self.store.charge_points()}, *self.store.budget_cables())

    def touch(self, *cable_ids: str) -> None:
        """Recompute these cables' profiles soon; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed() or not cable_ids:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to enforce
            loop.call_soon_threadsafe(self._mark, cable_ids)

    def _mark(self, cable_ids: Iterable[str]) -> None:
        self._dirty.update(cable_ids)
        if self._wake is not None:
            self._wake.set()

    async def _enforcer(self, stop: asyncio.Event) -> None:
        assert self._wake is not None  # noqa: S101 - set by run()
        while not stop.is_set():
            await self._wake.wait()
            await asyncio.sleep(self.settings.debounce_s)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for cable_id in sorted(dirty):  # one task each: a slow charge point holds up only its cable
                self._background.spawn(self._enforce_logged(cable_id))

    async def _enforce_logged(self, cable_id: str) -> None:
        try:
            await self.enforce(cable_id)
        except Exception:  # the next trigger tries again; the error must not end enforcement
            log.exception("enforcing the budget of cable %s failed", cable_id)

    # ------------------------------------------------------------------------------------------
    # budgets -> profiles

    async def enforce(self, cable_id: str) -> None:
        """Bring every charge point on the cable to the profile its share of the budget asks for."""
        lock = self._cable_locks.setdefault(cable_id, asyncio.Lock())
        async with lock:
            for _ in range(6):  # each round holds what failed; a few rounds settle any fleet
                now = self.clock()
                with self._lock:
                    plans = self._plan(cable_id, now)
                    pending = [plan for plan in plans if not self._in_force(plan, now)]
                    # first everything that lowers, and only its lowering: nothing rises in this round
                    lowering = [self._lowering_step(plan, now) for plan in pending if self._lowers(plan, now)]
                if not pending:
                    return
                if lowering:
                    await self._send_all(lowering)
                    continue  # recompute: raises go out once no plan lowers anything
                if not await self._send_all(pending):
                    return

    def _plan(self, cable_id: str, now: datetime) -> list[p.ProfilePlan]:
        records = self.store.charge_points(cable_id)
        if not records:
            return []
        points: list[p.ChargePoint] = []
        idle_a: dict[str, Decimal] = {}  # TxProfile charge points: connectors without a car are unlimited
        for record in records:
            cp = record.charge_point
            state = self._points.setdefault(cp.id, PointState())
            orphaned = any(c > cp.connectors for (i, c) in self._sessions if i == cp.id)
            if state.excluded is not None or orphaned:  # orphaned: a car on a connector it no longer lists
                points.append(replace(cp, unresponsive=True))
            elif not state.connected or state.unconfirmed is not None:
                points.append(self._held(cp, state, now))
            else:
                points.append(cp)
                if state.kind is p.ProfileKind.TX:
                    idle = sum(1 for c in range(1, cp.connectors + 1) if (cp.id, c) not in self._sessions)
                    idle_a[cp.id] = min(cp.rating_a, idle * cp.connector_rating_a)
        by_id = {cp.id: cp for cp in points}
        sessions = [self._session(s, by_id[s.charge_point_id]) for s in self._sessions_on(by_id)]
        reserve = sum((_cost(by_id[i], a, self._cable_unit(cable_id)) for i, a in idle_a.items()), Decimal(0))
        blocks = [replace(b, capacity=max(Decimal(0), b.capacity - reserve)) for b in self._known_blocks(cable_id, now)]
        limits = p.split_horizon(
            blocks, points, sessions, headroom_a=self.settings.headroom_a, band_a=self.settings.band_a
        )
        current = limits.get(block_floor(now), {})
        for s in sessions:
            if not by_id[s.charge_point_id].unresponsive:  # a held charge point's cars keep their last limit
                self._limits[s.key] = current.get(s.key, Decimal(0))
        backup = self.store.backup(cable_id)
        backups = {}
        if backup is not None:  # a TxProfile ends with its transaction: those charge points' ratings are kept
            stand_in = [replace(cp, unresponsive=True) if cp.id in idle_a else cp for cp in points]
            backups = p.backup_limits(backup.capacity, backup.unit, stand_in)
        kinds = {cp.id: self._points[cp.id].kind for cp in points}
        plans = p.plan_profiles(points, sessions, limits, backups, now, kinds=kinds)
        # cut to what each charger takes, before comparing with what it accepted
        return [p.truncated(plan, _max_periods(self._points[plan.charge_point_id].configuration)) for plan in plans]

    def _cable_unit(self, cable_id: str) -> Unit:
        backup = self.store.backup(cable_id)
        found = self.store.budgets(cable_id)
        return found[-1].unit if found else backup.unit if backup else Unit.AMPERE

    def _lowering_step(self, plan: p.ProfilePlan, now: datetime) -> p.ProfilePlan:
        """`plan` where it lowers, elsewhere nothing above what the charger may apply now (accepted, or sent
        since without an answer); with nothing accepted it may be unlimited and the whole plan lowers."""
        state = self._points[plan.charge_point_id]
        step = state.accepted.get(plan.connector_id)
        if step is None:
            return plan
        ceiling = state.unanswered.get(plan.connector_id)
        if ceiling is not None:
            step = p.pointwise(step, ceiling, now, max)
        return p.pointwise_min(plan, step, now)

    def _held(self, cp: p.ChargePoint, state: PointState, now: datetime) -> p.ChargePoint:
        """A charge point the adapter cannot steer now, reserved at what it may still draw: the highest
        limit, from now on, of the profiles it accepted or may have applied without answering, and its
        rating where it has none."""

        def most(slot: int, rating_a: Decimal) -> Decimal:
            accepted = state.accepted.get(slot)
            if accepted is None:
                return rating_a
            ceiling = state.unanswered.get(slot)
            return max(p.highest_from(plan, now) for plan in (accepted, ceiling) if plan is not None)

        if state.kind is p.ProfileKind.CHARGE_POINT_MAX:
            held = most(0, cp.rating_a)
        else:
            held = sum((most(c, cp.connector_rating_a) for c in range(1, cp.connectors + 1)), Decimal(0))
        return replace(cp, max_current_a=min(held, cp.rating_a), protection_a=None, unresponsive=True)

    def _sessions_on(self, points: dict[str, p.ChargePoint]) -> list[SessionState]:
        return [s for s in self._sessions.values() if s.charge_point_id in points]

    def _session(self, s: SessionState, cp: p.ChargePoint) -> p.Session:
        phases = min(self._phases.get((s.charge_point_id, s.connector_id)) or cp.phases, cp.phases)
        state = self._points.get(cp.id)
        previous = self._limits.get((s.charge_point_id, s.connector_id)) if state and state.accepted else None
        return p.Session(
            s.charge_point_id,
            s.connector_id,
            phases,
            drawn_a=s.drawn_a,
            previous_limit_a=previous,
            energy_kwh=s.energy_wh / 1000,
        )

    def _known_blocks(self, cable_id: str, now: datetime) -> list[p.Budget]:
        """The budgets from the current block to the last known one; a block the DSO left out gets the
        backup capacity, which also applies after the last known block (the profiles' last period)."""
        expected = block_floor(now)
        backup = self.store.backup(cable_id)
        blocks: list[p.Budget] = []
        for budget in self.store.budgets(cable_id, since=expected):
            gap = backup.capacity if backup is not None and backup.unit is budget.unit else Decimal(0)
            while expected < budget.start:
                blocks.append(p.Budget(expected, gap, budget.unit))
                expected += BLOCK
            blocks.append(p.Budget(budget.start, budget.capacity, budget.unit))
            expected += BLOCK
        return blocks

    def _in_force(self, plan: p.ProfilePlan, now: datetime) -> bool:
        accepted = self._known_in_force(plan)
        return accepted is not None and p.same_from(plan, accepted, now)

    def _lowers(self, plan: p.ProfilePlan, now: datetime) -> bool:
        return p.lowers(plan, self._known_in_force(plan), now)

    def _known_in_force(self, plan: p.ProfilePlan) -> p.ProfilePlan | None:
        """The profile the connector surely applies; None when unknown (none accepted, or one sent since
        without an answer, which it may or may not apply)."""
        state = self._points[plan.charge_point_id]
        return None if state.unanswered.get(plan.connector_id) else state.accepted.get(plan.connector_id)

    async def _send_all(self, plans: Sequence[p.ProfilePlan]) -> bool:
        """Send the plans at once; True when any was not accepted (the split must be recomputed)."""
        results = await asyncio.gather(*(self._send(plan) for plan in plans))
        return not all(results)

    async def _send(self, plan: p.ProfilePlan) -> bool:
        with self._lock:
            session = self._sessions.get(plan.key)
            state = self._points.setdefault(plan.charge_point_id, PointState())
            stack_level = _stack_level(state.configuration)
        transaction_id = session.transaction_id if session is not None else None
        if plan.kind is p.ProfileKind.TX and transaction_id is None:
            return False  # the car left meanwhile: recompute
        profile: dict[str, object] = {
            "chargingProfileId": _PROFILE_IDS[plan.kind] + plan.connector_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": plan.kind.value,
            "chargingProfileKind": "Absolute",
            "chargingSchedule": plan.charging_schedule(),
        }
        if plan.kind is p.ProfileKind.TX:
            profile["transactionId"] = transaction_id
        status = await self.central.set_charging_profile(plan.charge_point_id, plan.connector_id, profile)
        now = self.clock()
        detail = None
        with self._lock:
            if status == "Accepted":
                previous_kinds = {a.kind for a in state.accepted.values()} - {plan.kind}
                state.accepted = {c: a for c, a in state.accepted.items() if a.kind is plan.kind}
                state.accepted[plan.connector_id] = plan
                state.accepted_at[plan.connector_id] = now
                state.unanswered.pop(plan.connector_id, None)
                state.unconfirmed = None
                state.tx_rejections = 0
                state.silent, state.retry_at = 0, None
                state.offered_over = 0
            elif status == "Rejected" and plan.kind is p.ProfileKind.TX and state.tx_rejections < 1:
                state.tx_rejections += 1  # the car may just have left: only a second refusal counts
                detail = "Rejected: retried once before the charge point is excluded"
            elif status in ("Rejected", "NotSupported"):
                following = p.next_kind(plan.kind)
                if following is None:
                    state.excluded = f"answered {status} to every charging profile kind"
                    detail = state.excluded
                    log.warning("charge point %s %s: its full rating is reserved", plan.charge_point_id, detail)
                else:
                    state.kind = following
                    detail = f"falls back to {following.value}"
                    log.info("charge point %s answered %s to %s; %s", plan.charge_point_id, status, plan.kind, detail)
            else:
                state.unconfirmed = status
                state.silent += 1  # back off: 30 s, 1 min, 2 min ... at most 10 min between tries
                state.retry_at = now + min(RETRY_FIRST * 2 ** (state.silent - 1), RETRY_MOST)
                if plan.connector_id in state.accepted:  # it may have applied this one without answering
                    ceiling = state.unanswered.get(plan.connector_id)
                    state.unanswered[plan.connector_id] = (
                        plan if ceiling is None else p.pointwise(plan, ceiling, now, max)
                    )
                detail = f"{status}: held at the most its profiles allow"
        self.store.record_profile(
            plan.charge_point_id,
            plan.connector_id,
            purpose=plan.kind.value,
            stack_level=stack_level,
            schedule=plan.charging_schedule(),
            status=status,
            charging_profile_id=_PROFILE_IDS[plan.kind] + plan.connector_id,
            transaction_id=transaction_id if plan.kind is p.ProfileKind.TX else None,
            detail=detail,
            sent_at=now,
        )
        if status != "Accepted":
            return False
        for kind in previous_kinds:  # a fallback: the profiles of the kind given up must not linger
            self._background.spawn(self.central.clear_charging_profile(plan.charge_point_id, purpose=kind.value))
        self._background.spawn(self._check_compliance(plan))
        return True

    async def _check_compliance(self, plan: p.ProfilePlan) -> None:
        """Some chargers accept a profile and ignore it: ask for the composite schedule a little later."""
        await asyncio.sleep(self.settings.compliance_after_s)
        with self._lock:
            state = self._points.get(plan.charge_point_id)
            if state is None or state.accepted.get(plan.connector_id) is not plan or state.excluded:
                return  # replaced meanwhile: the newer one gets its own check
        answer = await self.central.get_composite_schedule(plan.charge_point_id, plan.connector_id, 900)
        if not isinstance(answer, CompositeSchedule):
            return  # cannot tell (NotSupported, offline): Current.Offered still can
        now = self.clock()
        expected = p.limit_at(plan, now)
        applied = _composite_limit(answer, now)
        if applied is None or applied > expected + p.LIMIT_STEP_A:
            shown = "no limit" if applied is None else f"{applied} A"
            self._exclude(plan.charge_point_id, f"accepted {expected} A but its composite schedule shows {shown}")

    def _exclude(self, charge_point_id: str, reason: str) -> None:
        with self._lock:
            state = self._points.setdefault(charge_point_id, PointState())
            if state.excluded is not None:
                return
            state.excluded = reason
        log.warning(
            "charge point %s does not follow its profile (%s): its full rating is reserved", charge_point_id, reason
        )
        self._touch_point(charge_point_id)

    def _touch_point(self, charge_point_id: str) -> None:
        record = self.store.get_charge_point(charge_point_id)
        if record is not None:
            self.touch(record.charge_point.cable_id)

    # ------------------------------------------------------------------------------------------
    # central.Events

    def admit(self, charge_point_id: str, username: str | None, password: str | None) -> bool | None:
        if self.store.get_charge_point(charge_point_id) is None:
            return None
        return self.store.verify_charge_point(charge_point_id, username, password)

    def connected(self, charge_point_id: str) -> None:
        with self._lock:
            self._points.setdefault(charge_point_id, PointState()).connected = True
        self._touch_point(charge_point_id)

    def disconnected(self, charge_point_id: str) -> None:
        with self._lock:
            self._points.setdefault(charge_point_id, PointState()).connected = False
        self._touch_point(charge_point_id)

    def booted(self, charge_point_id: str, vendor: str, model: str, firmware: str | None) -> None:
        """A (re)boot: it may have lost its profiles, and may now follow them: start afresh."""
        with self._lock:
            known = self._points.get(charge_point_id, PointState())
            self._points[charge_point_id] = PointState(
                connected=True,
                boot={"vendor": vendor, "model": model, "firmware": firmware},
                configuration=known.configuration,
                statuses=known.statuses,
            )
        self._touch_point(charge_point_id)

    def configured(self, charge_point_id: str, configuration: dict[str, str]) -> None:
        with self._lock:
            self._points.setdefault(charge_point_id, PointState()).configuration = dict(configuration)

    def status(self, charge_point_id: str, connector_id: int, status: str, error_code: str, at: datetime) -> None:
        with self._lock:
            state = self._points.setdefault(charge_point_id, PointState())
            state.statuses[connector_id] = {"status": status, "error_code": error_code, "at": at.isoformat()}
        self._touch_point(charge_point_id)

    def authorize(self, charge_point_id: str, id_tag: str) -> bool:
        return bool(id_tag.strip())  # tokens are the CPO's business system's concern; any tag may charge

    def transaction_started(
        self, charge_point_id: str, connector_id: int, id_tag: str, meter_start_wh: int, at: datetime
    ) -> int:
        record = self.store.get_charge_point(charge_point_id)
        if record is None:
            raise NotFound(f"charge point {charge_point_id} is not registered")
        if connector_id > record.charge_point.connectors:
            raise InvalidInput(
                f"charge point {charge_point_id} has {record.charge_point.connectors} connector(s), not {connector_id}"
            )
        transaction_id = self.store.start_transaction(charge_point_id, connector_id, id_tag, meter_start_wh, at)
        with self._lock:
            self._forget_tx_profile(charge_point_id, connector_id)
            self._phases.pop((charge_point_id, connector_id), None)  # a new car
            self._sessions[(charge_point_id, connector_id)] = SessionState(
                transaction_id, charge_point_id, connector_id, id_tag, at, meter_start_wh, last_reading_at=at
            )
            if self._plausible(charge_point_id, [at]):
                self._meter.reading(charge_point_id, connector_id, at, meter_start_wh)
        self.touch(record.charge_point.cable_id)
        return transaction_id

    def transaction_stopped(
        self, charge_point_id: str, transaction_id: int, meter_stop_wh: int, at: datetime, reason: str | None
    ) -> None:
        known = self.store.get_transaction(transaction_id)
        if known is None or known.charge_point_id != charge_point_id:
            log.warning("charge point %s stopped unknown transaction %s; ignored", charge_point_id, transaction_id)
            return
        at = max(at, known.started_at)  # a clock corrected mid-session must not keep the session alive
        try:
            tx = self.store.stop_transaction(transaction_id, meter_stop_wh, at, reason)
        except Conflict as exc:  # stopped before with other values: the first stop stands
            log.warning("charge point %s: %s", charge_point_id, exc.message)
            tx = known
        with self._lock:
            key = (tx.charge_point_id, tx.connector_id)
            if key in self._sessions and self._sessions[key].transaction_id == transaction_id:
                del self._sessions[key]
            self._limits.pop(key, None)
            self._forget_tx_profile(tx.charge_point_id, tx.connector_id)
            if self._plausible(charge_point_id, [at]):
                self._meter.reading(tx.charge_point_id, tx.connector_id, at, meter_stop_wh)
        self._touch_point(charge_point_id)

    def _plausible(self, charge_point_id: str, moments: Sequence[datetime]) -> bool:
        """Readings from a charger whose clock is far off would spread energy over months: not counted."""
        now = self.clock()
        if all(now - READINGS_REACH_BACK <= at <= now + READINGS_REACH_AHEAD for at in moments):
            return True
        log.warning(
            "charge point %s sent meter readings timed %s; its clock is off, they are not counted",
            charge_point_id,
            ", ".join(sorted({at.isoformat() for at in moments})),
        )
        return False

    def _forget_tx_profile(self, charge_point_id: str, connector_id: int) -> None:
        """A TxProfile ends with its transaction: the next car on the connector has none."""
        state = self._points.get(charge_point_id)
        if state is not None and state.kind is p.ProfileKind.TX:
            state.accepted.pop(connector_id, None)
            state.unanswered.pop(connector_id, None)

    def meter_values(
        self, charge_point_id: str, connector_id: int, transaction_id: int | None, samples: list[MeterSample]
    ) -> None:
        record = self.store.get_charge_point(charge_point_id)
        if record is None:
            return
        cp = record.charge_point
        key = (charge_point_id, connector_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                seen = _observe(session, samples)
                if seen is not None:  # a car does not change its phases during a session
                    self._phases[key] = max(seen, self._phases.get(key, 0))
            # Usage converts with the same phases both ways; unknown counts as 1, the most current
            phases = min(self._phases.get(key, 1), cp.phases) if session is not None else 1
            if self._plausible(charge_point_id, [s.at for s in samples]):
                self._meter.add(charge_point_id, connector_id, samples, voltage_v=cp.voltage_v, phases=phases)
            # the readings close the interval since the last ones: its blocks were drawn on these phases
            latest = max((s.at for s in samples), default=None)
            if latest is not None:
                block = block_floor(session.last_reading_at if session and session.last_reading_at else latest)
                for _ in range(96):  # a day at most: a charger that was silent longer reports nothing new
                    if block > latest:
                        break
                    slot = (charge_point_id, connector_id, block)
                    self._block_phases[slot] = max(phases, self._block_phases.get(slot, 0))
                    block += BLOCK
                if session is not None:
                    session.last_reading_at = max(latest, session.last_reading_at or latest)
            offered = [s.value for s in samples if s.measurand == CURRENT_OFFERED and s.unit == "A"]
            state = self._points.setdefault(charge_point_id, PointState())
            limit = self._limit_in_force(state, connector_id, samples[0].at if samples else self.clock())
            over = bool(offered) and limit is not None and max(offered) > limit + self.settings.offered_tolerance_a
            state.offered_over = state.offered_over + 1 if over else 0
            ignored = state.offered_over >= 2  # one sample may predate the profile
        if ignored:
            self._exclude(charge_point_id, f"offers {max(offered)} A to the car while its limit is {limit} A")

    def _limit_in_force(self, state: PointState, connector_id: int, at: datetime) -> Decimal | None:
        """The limit the charge point should apply to the connector, once a profile had time to take hold."""
        plan = state.accepted.get(0 if state.kind is p.ProfileKind.CHARGE_POINT_MAX else connector_id)
        if plan is None:
            return None
        since = state.accepted_at.get(plan.connector_id)
        if since is None or at < since + timedelta(seconds=self.settings.compliance_after_s):
            return None
        return p.limit_at(plan, at)

    # ------------------------------------------------------------------------------------------
    # the DSO

    def receive(self, budgets: Sequence[ReceivedBudgets]) -> None:
        """Budgets from the DSO (a push, a forecast pulled, or a request's answer): kept per block."""
        now = self.clock()
        for b in budgets:
            self.store.replace_budgets(b.cable_id, b.blocks, b.unit, backup=b.backup, received_at=now)
        self.heard_from_dso()
        self.touch(*{b.cable_id for b in budgets})

    def heard_from_dso(self) -> None:
        with self._lock:
            self.dso_state.last_heard = self.clock()
            self.dso_state.last_error = None

    def dso_online(self) -> bool:
        """Silent for 3 heartbeat intervals is offline (the known blocks still count, then the backup)."""
        heard = self.dso_state.last_heard
        silence = timedelta(seconds=3 * self.dso_state.heartbeat_interval_s)
        return heard is not None and self.clock() - heard <= silence

    async def _dso_call(self, what: str, call: Callable[[], Any]) -> Any:
        assert self.dso is not None  # noqa: S101 - only scheduled with a DSO link
        try:
            result = await asyncio.to_thread(call)
        except DsoUnreachable as exc:
            with self._lock:
                self.dso_state.last_error = str(exc)
            log.warning("%s: %s", what, exc)
            return None
        self.heard_from_dso()
        return result

    async def _dso_heartbeats(self, stop: asyncio.Event) -> None:
        dso = self.dso
        assert dso is not None  # noqa: S101
        while not stop.is_set():
            if not self.dso_state.forecasts_pulled:
                await self._logged(self._pull_forecasts(dso), "pulling the capacity forecasts")
            await self._logged(self._heartbeat(dso), "the heartbeat to the DSO")
            wait_s = self.dso_state.heartbeat_interval_s if self.dso_state.forecasts_pulled else 10
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)

    async def _pull_forecasts(self, dso: DsoLink) -> None:
        pulled = await self._dso_call("pulling the capacity forecasts", dso.capacity_forecasts)
        if pulled is not None:
            self.receive(pulled)
            self.dso_state.forecasts_pulled = True

    async def _heartbeat(self, dso: DsoLink) -> None:
        interval = await self._dso_call("heartbeat to the DSO", dso.heartbeat)
        if interval is not None and interval > 0:
            self.dso_state.heartbeat_interval_s = int(interval)

    async def _logged(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run `work`; a failure is logged and shown in the status, and does not stop what follows."""
        try:
            await work
        except Exception as exc:
            log.exception("%s failed", what)
            with self._lock:
                self.dso_state.last_error = f"{what} failed: {exc}"

    async def report_usage(self) -> None:
        """Queue every closed block's usage on disk, then replay the queue to the DSO in order."""
        now = self.clock()
        with self._lock:
            points = [r.charge_point for r in self.store.charge_points()]
            usage = block_usage(self._meter, points, now=now, block_phases=self._block_phases, settle=USAGE_SETTLE)
            horizon = block_floor(now) - timedelta(hours=6)
            self._meter.forget_before(horizon)
            self._block_phases = {k: v for k, v in self._block_phases.items() if k[2] >= horizon}
        units = self._cable_units()
        for cable_id, blocks in usage.items():
            unit = units.get(cable_id)
            since = self._usage_until.get(cable_id)
            if unit is None:
                continue  # no budget yet: nothing to report against
            fresh = {start: b.in_unit(unit) for start, b in blocks.items() if since is None or start >= since}
            if fresh:  # a queued block is final: later readings do not rewrite it
                self.store.enqueue_usage(cable_id, fresh, unit)
                self._usage_until[cable_id] = max(fresh) + BLOCK
        if self.dso is not None:
            await self._replay_usage()

    async def _replay_usage(self) -> None:
        dso = self.dso
        assert dso is not None  # noqa: S101
        while True:
            pending = self.store.pending(limit=192)
            if not pending:
                return
            first = (pending[0].cable_id, pending[0].unit)
            batch = list(takewhile(partial(_same_cable, first), pending))
            blocks = {i.block_start: i.value for i in batch}
            seqs = [i.seq for i in batch]
            try:
                await asyncio.to_thread(dso.report_usage, first[0], first[1].value, blocks)
            except DsoRefused as exc:  # the DSO will never take these: drop them (recorded), not the queue
                log.error("the DSO refused the usage of cable %s: %s", first[0], exc)  # noqa: TRY400 - no traceback
                self.store.mark_refused(seqs, str(exc))
                continue
            except DsoUnreachable as exc:
                self.store.record_failure(seqs, str(exc))
                with self._lock:
                    self.dso_state.last_error = str(exc)
                return  # in order: nothing later goes before this
            self.store.mark_sent(seqs)
            self.heard_from_dso()

    def _cable_units(self) -> dict[str, Unit]:
        units: dict[str, Unit] = {}
        for cable_id in self.store.budget_cables():
            backup = self.store.backup(cable_id)
            found = self.store.budgets(cable_id)
            if found:
                units[cable_id] = found[-1].unit
            elif backup is not None:
                units[cable_id] = backup.unit
        return units

    async def adjust_all(self) -> None:
        """Ask for more where sessions are held back, hand back what goes unused (with hysteresis)."""
        dso = self.dso
        assert dso is not None  # noqa: S101
        now = self.clock()
        for cable_id, unit in self._cable_units().items():
            await self._logged(self._adjust(dso, cable_id, unit, now), f"adjusting cable {cable_id}")

    async def _adjust(self, dso: DsoLink, cable_id: str, unit: Unit, now: datetime) -> None:
        with self._lock:
            before = self._decisions.get(cable_id, {})
            decision = self._decide(cable_id, unit, now)
        if decision is None:
            return
        for adjustment in decision.adjustments:
            ask = partial(dso.request, cable_id, unit.value, dict(adjustment.blocks))
            answer = await self._dso_call(f"{adjustment.kind} on cable {cable_id}", ask)
            if answer is None:  # not delivered: ask again next time, not after the cool-down
                with self._lock:
                    self._decisions[cable_id] = before
                return
            log.info("%s on cable %s: %s %s", adjustment.kind, cable_id, answer.status, answer.reason or "")
            self.receive([answer.budgets])

    def _decide(self, cable_id: str, unit: Unit, now: datetime) -> Decision | None:
        points = [r.charge_point for r in self.store.charge_points(cable_id)]
        if not points:
            return None
        with_state = [replace(cp, unresponsive=True) if self._excluded(cp.id) else cp for cp in points]
        by_id = {cp.id: cp for cp in with_state}
        live = self._sessions_on(by_id)
        sessions = [self._session(s, by_id[s.charge_point_id]) for s in live]
        maxima = {(s.charge_point_id, s.connector_id): s.max_drawn_a for s in live if s.max_drawn_a is not None}
        demand = constrained_demand(with_state, sessions, unit, max_drawn_a=maxima)
        usage = _usage_now(sessions, by_id, unit)
        backup = self.store.backup(cable_id)
        floor = backup.capacity if backup is not None and backup.unit is unit else Decimal(0)
        known = self._known_blocks(cable_id, now)[: self.settings.adjust_blocks]
        outlook = {b.start: Outlook(b.capacity, demand, usage, floor) for b in known}
        request_band, handback_band, headroom = _UNIT_HYSTERESIS[unit]
        policy = Hysteresis(request_band, handback_band, headroom, cooldown=self.settings.cooldown)
        decision = decide(outlook, self._decisions.get(cable_id, {}), unit=unit, now=now, policy=policy)
        self._decisions[cable_id] = dict(decision.state)
        return decision

    def _excluded(self, charge_point_id: str) -> bool:
        state = self._points.get(charge_point_id)
        return state is not None and state.excluded is not None

    # ------------------------------------------------------------------------------------------
    # the REST API's views and commands

    def add_charge_point(self, cp: p.ChargePoint, *, username: str | None, password: str | None) -> dict[str, Any]:
        record = self.store.add_charge_point(cp, username=username, password=password)
        self.touch(cp.cable_id)
        return self.charge_point_view(record.charge_point.id)

    def update_charge_point(self, cp: p.ChargePoint) -> dict[str, Any]:
        with self._lock:
            busy = sorted(c for (i, c) in self._sessions if i == cp.id and c > cp.connectors)
        if busy:
            raise Conflict(f"charge point {cp.id} has a car on connector {busy[0]}; lower connectors once it has left")
        old = self.store.get_charge_point(cp.id)
        self.store.update_charge_point(cp)
        self.touch(cp.cable_id, *([old.charge_point.cable_id] if old else []))
        return self.charge_point_view(cp.id)

    def remove_charge_point(self, charge_point_id: str) -> None:
        record = self.store.get_charge_point(charge_point_id)
        if record is None:
            raise NotFound(f"charge point {charge_point_id} is not registered")
        with self._lock:
            if self._points.get(charge_point_id, PointState()).connected:
                raise Conflict(
                    f"charge point {charge_point_id} is connected and would keep drawing outside the budget; "
                    "remove it once it is offline"
                )
            if any(s.charge_point_id == charge_point_id for s in self._sessions.values()):
                raise Conflict(f"charge point {charge_point_id} has a session running; remove it when the car has left")
        self.store.remove_charge_point(charge_point_id)
        with self._lock:
            self._points.pop(charge_point_id, None)
        self.touch(record.charge_point.cable_id)

    def retry(self, charge_point_id: str) -> dict[str, Any]:
        """Give an excluded charge point another chance from ChargePointMaxProfile on."""
        record = self.store.get_charge_point(charge_point_id)
        if record is None:
            raise NotFound(f"charge point {charge_point_id} is not registered")
        with self._lock:
            state = self._points.setdefault(charge_point_id, PointState())
            state.excluded = None
            state.kind = p.ProfileKind.CHARGE_POINT_MAX
            state.accepted = {}
        self.touch(record.charge_point.cable_id)
        return self.charge_point_view(charge_point_id)

    def charge_point_view(self, charge_point_id: str) -> dict[str, Any]:
        record = self.store.get_charge_point(charge_point_id)
        if record is None:
            raise NotFound(f"charge point {charge_point_id} is not registered")
        cp = record.charge_point
        now = self.clock()
        with self._lock:
            state = self._points.get(cp.id, PointState())
            connectors = []
            for connector in range(1, cp.connectors + 1):
                session = self._sessions.get((cp.id, connector))
                connectors.append(
                    {
                        "connector_id": connector,
                        "status": state.statuses.get(connector, {}).get("status"),
                        "limit_a": self._connector_limit(state, cp, connector, now),
                        "transaction_id": session.transaction_id if session else None,
                    }
                )
            return {
                **point_values(cp),
                "username": record.username,
                "has_password": record.has_password,
                "connected": state.connected,
                "boot": state.boot,
                "profile_kind": state.kind.value,
                "excluded": state.excluded,
                "unconfirmed": state.unconfirmed,
                "connector_states": connectors,
            }

    def _connector_limit(self, state: PointState, cp: p.ChargePoint, connector: int, now: datetime) -> Decimal | None:
        """The limit in force on a connector: its own profile's, or the charge point's (None: none accepted)."""
        plan = state.accepted.get(connector) or state.accepted.get(0)
        return None if plan is None else p.limit_at(plan, now)

    def charge_points_view(self) -> list[dict[str, Any]]:
        return [self.charge_point_view(r.charge_point.id) for r in self.store.charge_points()]

    def sessions_view(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "transaction_id": s.transaction_id,
                    "charge_point_id": s.charge_point_id,
                    "connector_id": s.connector_id,
                    "id_tag": s.id_tag,
                    "started_at": s.started_at,
                    "energy_kwh": (s.energy_wh / 1000).quantize(Decimal("0.001")),
                    "drawn_a": s.drawn_a,
                    "phases_in_use": self._phases.get((s.charge_point_id, s.connector_id)),
                    "limit_a": self._limits.get((s.charge_point_id, s.connector_id)),
                }
                for s in sorted(self._sessions.values(), key=lambda s: s.transaction_id)
            ]

    def limits_view(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for record in self.store.charge_points():
            cp = record.charge_point
            with self._lock:
                state = self._points.get(cp.id, PointState())
                for connector in range(1, cp.connectors + 1):
                    out.append(
                        {
                            "charge_point_id": cp.id,
                            "connector_id": connector,
                            "cable_id": cp.cable_id,
                            "limit_a": self._connector_limit(state, cp, connector, now),
                            "profile_kind": state.kind.value,
                            "excluded": state.excluded,
                        }
                    )
        return out

    def budgets_view(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for cable_id in self.store.budget_cables():
            backup = self.store.backup(cable_id)
            blocks = self.store.budgets(cable_id, since=block_floor(now))
            known = self._known_blocks(cable_id, now)
            out.append(
                {
                    "cable_id": cable_id,
                    "unit": (blocks[0].unit if blocks else backup.unit if backup else Unit.AMPERE).value,
                    "backup_capacity": backup.capacity if backup else None,
                    "known_until": (known[-1].start + BLOCK) if known else None,
                    "blocks": [
                        {"start": b.start, "capacity": b.capacity, "received_at": b.received_at} for b in blocks
                    ],
                }
            )
        return out

    def status_view(self) -> dict[str, Any]:
        with self._lock:
            dso = self.dso_state
            return {
                "dso": {
                    "url": self.dso.url if self.dso else None,
                    "binding": self.dso.binding if self.dso else None,
                    "online": self.dso_online(),
                    "last_heard": dso.last_heard,
                    "heartbeat_interval_s": dso.heartbeat_interval_s,
                    "forecasts_pulled": dso.forecasts_pulled,
                    "last_error": dso.last_error,
                    "usage_buffered": len(self.store.pending()),
                },
                "ocpp": {
                    "connected": sorted(self.central.connected_ids()),
                    "excluded": sorted(cp for cp, st in self._points.items() if st.excluded),
                },
            }


def _same_cable(cable: tuple[str, Unit], item: OutboxItem) -> bool:
    return (item.cable_id, item.unit) == cable


def _stack_level(configuration: dict[str, str]) -> int:
    """Stack level 1 where allowed (above a charger's own defaults at 0), else 0."""
    try:
        highest = int(configuration.get("ChargeProfileMaxStackLevel", "1"))
    except ValueError:
        highest = 1
    return 1 if highest >= 1 else 0


def _composite_limit(schedule: CompositeSchedule, now: datetime) -> Decimal | None:
    """The limit a composite schedule applies now (None: no limit at all)."""
    if not schedule.periods or schedule.unit != "A":
        return None
    start = schedule.start or now
    offset = (now - start).total_seconds()
    limit = schedule.periods[0][1]
    for start_period_s, value in schedule.periods:
        if start_period_s > offset:
            break
        limit = value
    return limit


def _cost(cp: p.ChargePoint, current_a: Decimal, unit: Unit) -> Decimal:
    """A current per phase on the charge point as load on the cable, in its unit (A: every car on L1)."""
    return current_a if unit is Unit.AMPERE else current_a * cp.voltage_v * cp.phases / 1000


def _max_periods(configuration: dict[str, str]) -> int:
    try:
        return max(0, int(configuration.get("ChargingScheduleMaxPeriods", "0")))
    except ValueError:
        return 0


def _observe(session: SessionState, samples: Sequence[MeterSample]) -> int | None:
    """What the car draws now and the energy so far; returns the phases it charges on, when it is seen
    charging (a paused car draws nothing on every phase, which says nothing about its phases)."""
    phases = None
    per_phase = [s for s in samples if s.measurand == CURRENT_IMPORT and s.unit == "A"]
    if per_phase:
        drawn = max(s.value for s in per_phase)
        session.drawn_a = max(drawn, Decimal(0))
        session.max_drawn_a = max(session.max_drawn_a or Decimal(0), session.drawn_a)
        phased = [s for s in per_phase if s.phase and s.phase.startswith("L")]
        if phased and session.drawn_a >= p.MIN_CURRENT_A:
            phases = sum(1 for s in phased if s.value >= 1)
    registers = [s.value for s in samples if s.measurand == ENERGY_REGISTER and s.unit == "Wh"]
    if registers:
        session.energy_wh = max(Decimal(0), max(registers) - session.meter_start_wh)
    return phases


def _usage_now(sessions: Sequence[p.Session], points: dict[str, p.ChargePoint], unit: Unit) -> Decimal:
    total = Decimal(0)
    for s in sessions:
        drawn = s.drawn_a or Decimal(0)
        cp = points[s.charge_point_id]
        total += drawn if unit is Unit.AMPERE else drawn * cp.voltage_v * s.phases_in_use / 1000
    return total
