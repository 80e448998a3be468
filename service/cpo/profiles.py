"""Cable budgets -> per-connector current limits -> OCPP 1.6 charging profiles. Pure: no I/O, no clock.

Rules (from OCPP 1.6 smart charging as chargers actually behave):
- Every limit is a current per phase in A on the 0.1 A grid, and 0 (pause) or >= 6 A (IEC 61851 pilot).
- A budget: the per-phase sum on the cable. Without phase-rotation knowledge every car is assumed to load
  phase L1, so the sum of the limits of all sessions must stay within the budget.
  KW budget: P = I * V * phases / 1000 per session, summed. A charge point with several connectors may
  hand one car's share to a 3-phase car, so its sessions count at the charge point's phases.
- A charge point marked `unresponsive` (rejects every profile kind, or accepts and ignores) gets no share:
  its full rating is reserved first.
- Fair share is water-filling: everyone rises to a common level, each stops at its cap
  min(connector rating, charge point rating, max(6 A, drawn + headroom)); what one leaves goes to others.
  Connectors of one charge point share its rating.
- Pause order when 6 A each does not fit: sessions are admitted in priority order and the rest pause.
  Priority: sessions that are charging (or new) before paused ones (no flapping), then the least energy
  delivered in this session first (who has charged longest pauses first), then charge point id, connector.
- Hysteresis (band, default 1 A): a paused session resumes only with room for 6 A + band; a change of less
  than the band is held back, except a reduction that is needed to stay within the budget or a rating.

The computation runs on integers: currents in 0.1 A (deciampere, "da"); KW loads in mW, which is exact
with voltages on the 0.01 V grid (0.1 A x 0.01 V = 1 mW).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum
from itertools import pairwise
from typing import Any

from service.domain.blocks import BLOCK, aligned, as_utc
from service.domain.errors import InvalidInput
from service.domain.model import check_id
from service.domain.units import Unit, to_capacity

Key = tuple[str, int]  # (charge point id, connector id)

MIN_CURRENT_A = Decimal(6)  # the lowest current an AC charger can signal
LIMIT_STEP_A = Decimal("0.1")  # OCPP limits are multiples of 0.1
DEFAULT_HEADROOM_A = Decimal(2)
DEFAULT_BAND_A = Decimal(1)
DEFAULT_SKEW = timedelta(seconds=60)
MAX_CURRENT_A = Decimal(10_000)
_MIN_DA = 60


def _da(current_a: Decimal) -> int:
    """A current in whole 0.1 A steps, rounded down."""
    return int((current_a * 10).to_integral_value(ROUND_FLOOR))


_AMPS: dict[int, Decimal] = {}


def _amps(da: int) -> Decimal:
    """0.1 A steps back to A (cached: the horizon repeats the same few values)."""
    value = _AMPS.get(da)
    if value is None:
        value = _AMPS[da] = Decimal(da).scaleb(-1)
    return value


def floor_limit(limit_a: Decimal) -> Decimal:
    """A limit on the 0.1 A grid, rounded down (never 41.400000000000006)."""
    return _amps(max(0, _da(limit_a)))


def _current(value: object, field_name: str) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"{field_name} must be a number, got {value!r}") from None
    if not number.is_finite() or not 0 <= number <= MAX_CURRENT_A:
        raise InvalidInput(f"{field_name} must be in [0, {MAX_CURRENT_A}] A, got {value!r}")
    return number


def _phases(value: int, field_name: str) -> int:
    if isinstance(value, bool) or value not in (1, 2, 3):
        raise InvalidInput(f"{field_name} must be 1, 2 or 3, got {value!r}")
    return value


class ProfileKind(StrEnum):
    """OCPP charging profile purposes, in the order the adapter tries them."""

    CHARGE_POINT_MAX = "ChargePointMaxProfile"
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"


_FALLBACK = tuple(ProfileKind)


def next_kind(rejected: ProfileKind) -> ProfileKind | None:
    """The kind to try after `rejected`; None: the charge point rejects everything, reserve its rating."""
    position = _FALLBACK.index(rejected)
    return _FALLBACK[position + 1] if position + 1 < len(_FALLBACK) else None


@dataclass(frozen=True, slots=True)
class ChargePoint:
    """A charge point on a cable. Its rating is min(max_current_a, protection_a), shared by its connectors."""

    id: str
    cable_id: str
    max_current_a: Decimal
    phases: int
    voltage_v: Decimal = Decimal(230)
    connectors: int = 1
    protection_a: Decimal | None = None
    connector_max_current_a: Decimal | None = None  # socket or fixed cable rating, per connector
    unresponsive: bool = False  # rejects every profile kind, or accepts and ignores: its rating is reserved

    def __post_init__(self) -> None:
        check_id(self.id, "charge point id")
        check_id(self.cable_id, "cable id")
        object.__setattr__(self, "max_current_a", _current(self.max_current_a, "max_current_a"))
        for name in ("protection_a", "connector_max_current_a"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _current(getattr(self, name), name))
        _phases(self.phases, "phases")
        try:
            voltage = Decimal(str(self.voltage_v))
        except InvalidOperation:
            raise InvalidInput(f"voltage_v must be a number, got {self.voltage_v!r}") from None
        if not voltage.is_finite() or not 0 < voltage <= 1000:
            raise InvalidInput(f"voltage_v must be a phase voltage such as 230, got {self.voltage_v!r}")
        # rounded up: a higher voltage overstates the power, never understates it
        object.__setattr__(self, "voltage_v", voltage.quantize(Decimal("0.01"), ROUND_CEILING))
        if isinstance(self.connectors, bool) or not isinstance(self.connectors, int) or not 1 <= self.connectors <= 99:
            raise InvalidInput(f"connectors must be 1-99, got {self.connectors!r}")
        if not isinstance(self.unresponsive, bool):
            raise InvalidInput(f"unresponsive must be true or false, got {self.unresponsive!r}")

    @property
    def rating_a(self) -> Decimal:
        """What the whole charge point may draw per phase."""
        return self.max_current_a if self.protection_a is None else min(self.max_current_a, self.protection_a)

    @property
    def connector_rating_a(self) -> Decimal:
        """What one connector may draw per phase."""
        if self.connector_max_current_a is None:
            return self.rating_a
        return min(self.rating_a, self.connector_max_current_a)

    @property
    def centivolts(self) -> int:
        return int(self.voltage_v * 100)


@dataclass(frozen=True, slots=True)
class Session:
    """A car on a connector. `drawn_a`: what it drew lately per phase (None: unknown, it may take its rating);
    `previous_limit_a`: the limit in force (0: paused, None: none yet); `energy_kwh`: delivered so far."""

    charge_point_id: str
    connector_id: int
    phases_in_use: int
    drawn_a: Decimal | None = None
    previous_limit_a: Decimal | None = None
    energy_kwh: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        check_id(self.charge_point_id, "charge point id")
        if isinstance(self.connector_id, bool) or not isinstance(self.connector_id, int) or self.connector_id < 1:
            raise InvalidInput(f"connector_id must be >= 1 (0 is the whole charge point), got {self.connector_id!r}")
        _phases(self.phases_in_use, "phases_in_use")
        for name in ("drawn_a", "previous_limit_a"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _current(getattr(self, name), name))
        object.__setattr__(self, "energy_kwh", to_capacity(self.energy_kwh, "energy_kwh"))

    @property
    def key(self) -> Key:
        return (self.charge_point_id, self.connector_id)


@dataclass(frozen=True, slots=True)
class Budget:
    """The capacity a CPO may use on one cable in one 15-minute block, in the cable's unit."""

    start: datetime
    capacity: Decimal
    unit: Unit

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", aligned(self.start, "budget.start"))
        object.__setattr__(self, "capacity", to_capacity(self.capacity, "budget.capacity"))
        try:
            object.__setattr__(self, "unit", Unit(self.unit))
        except ValueError:
            raise InvalidInput(f"budget.unit must be 'A' or 'KW', got {self.unit!r}") from None


# ---------------------------------------------------------------------------------------------
# splitting one block


@dataclass(slots=True)
class _Cable:
    """The sessions of one cable, prepared once for every block of a horizon. Lists are indexed by session,
    in priority order (least energy first, then charge point id, connector)."""

    keys: list[Key]
    point: list[int]  # index into rating_da
    weight: list[int]  # budget units per 0.1 A: 1 for A budgets, mW for KW budgets
    hard_cap_da: list[int]  # the ratings
    cap_da: list[int]  # the ratings and what the car draws plus headroom
    rating_da: list[int]  # per responsive charge point
    shared: list[bool]  # per responsive charge point: several connectors share its rating
    reserved: int  # unresponsive charge points, in budget units
    previous_da: list[int | None] = field(default_factory=list)


def budget_units(capacity: Decimal, unit: Unit) -> int:
    """A budget as an integer the split works in: 0.1 A for A budgets, mW for KW budgets (rounded down)."""
    scale = 10 if unit is Unit.AMPERE else 1_000_000
    return int((capacity * scale).to_integral_value(ROUND_FLOOR))


def _points_by_id(charge_points: Iterable[ChargePoint]) -> dict[str, ChargePoint]:
    points: dict[str, ChargePoint] = {}
    for cp in charge_points:
        if cp.id in points:
            raise InvalidInput(f"charge point {cp.id} is listed twice")
        points[cp.id] = cp
    if len({cp.cable_id for cp in points.values()}) > 1:
        raise InvalidInput("a split covers one cable; the charge points are on several")
    return points


def _live_sessions(points: Mapping[str, ChargePoint], sessions: Iterable[Session]) -> list[Session]:
    """Valid sessions on responsive charge points, in priority order (least energy first)."""
    seen: set[Key] = set()
    live: list[Session] = []
    for s in sessions:
        cp = points.get(s.charge_point_id)
        if cp is None:
            raise InvalidInput(f"session on unknown charge point {s.charge_point_id}")
        if s.connector_id > cp.connectors:
            raise InvalidInput(f"charge point {cp.id} has {cp.connectors} connector(s), not {s.connector_id}")
        if s.phases_in_use > cp.phases:
            raise InvalidInput(f"charge point {cp.id} has {cp.phases} phase(s); a car cannot use {s.phases_in_use}")
        if s.key in seen:
            raise InvalidInput(f"two sessions on charge point {cp.id} connector {s.connector_id}")
        seen.add(s.key)
        if not cp.unresponsive:  # an unresponsive charge point gets no share: its rating is reserved
            live.append(s)
    live.sort(key=lambda s: (s.energy_kwh, s.charge_point_id, s.connector_id))
    return live


def _prepare(
    charge_points: Iterable[ChargePoint], sessions: Iterable[Session], unit: Unit, headroom_a: Decimal
) -> _Cable:
    points = _points_by_id(charge_points)
    kw = unit is Unit.KILOWATT
    prepared = _Cable([], [], [], [], [], [], [], 0)
    index: dict[str, int] = {}
    for cp in points.values():
        if cp.unresponsive:
            prepared.reserved += _da(cp.rating_a) * (cp.centivolts * cp.phases if kw else 1)
        else:
            index[cp.id] = len(prepared.rating_da)
            prepared.rating_da.append(_da(cp.rating_a))
            prepared.shared.append(cp.connectors > 1)
    for s in _live_sessions(points, sessions):
        cp = points[s.charge_point_id]
        hard = _da(cp.connector_rating_a)
        cap = hard if s.drawn_a is None else min(hard, max(_MIN_DA, _da(s.drawn_a + headroom_a)))
        phases = s.phases_in_use if cp.connectors == 1 else cp.phases
        prepared.keys.append(s.key)
        prepared.point.append(index[cp.id])
        prepared.weight.append(cp.centivolts * phases if kw else 1)
        prepared.hard_cap_da.append(hard)
        prepared.cap_da.append(cap)
        prepared.previous_da.append(None if s.previous_limit_a is None else _da(s.previous_limit_a))
    return prepared


def _water_fill(members: list[int], caps: list[int], weights: list[int], budget: int) -> dict[int, int]:
    """Max-min fair 0.1 A steps for `members` (in priority order) within `budget`; needs budget >= the
    sum of weight x 6 A and every cap >= 6 A. No step that fits and is below a cap stays unused."""
    alloc: dict[int, int] = {}
    remaining = sum(weights[i] for i in members)
    used = 0
    level = -1
    for i in sorted(members, key=caps.__getitem__):
        if used + remaining * caps[i] <= budget:
            alloc[i] = caps[i]
            used += weights[i] * caps[i]
            remaining -= weights[i]
        else:
            level = (budget - used) // remaining
            break
    if level < 0:
        return alloc
    rising = [i for i in members if i not in alloc]
    for i in rising:
        alloc[i] = level
    spare = budget - used - remaining * level
    # The remainder below one common step goes out 0.1 A at a time, in priority order.
    changed = True
    while changed and spare > 0:
        changed = False
        for i in rising:
            if weights[i] <= spare and alloc[i] < caps[i]:
                alloc[i] += 1
                spare -= weights[i]
                changed = True
    return alloc


def _split(c: _Cable, budget: int, previous: list[int | None], band_da: int) -> list[int]:
    n = len(c.keys)
    limits = [0] * n
    room = budget - c.reserved
    if n == 0 or room < 0:
        return limits
    # Admission: charging (or new) sessions first, paused ones last; each needs room for 6 A.
    order = [i for i in range(n) if previous[i] != 0] + [i for i in range(n) if previous[i] == 0]
    point_room = list(c.rating_da)
    admitted: list[int] = []
    for i in order:
        if c.hard_cap_da[i] < _MIN_DA:
            continue
        # hysteresis: a paused car resumes only with room for 6 A + band (or its whole rating)
        need = max(_MIN_DA, min(_MIN_DA + band_da, c.hard_cap_da[i])) if previous[i] == 0 else _MIN_DA
        w, p = c.weight[i], c.point[i]
        if w * need <= room and need <= point_room[p]:
            admitted.append(i)
            room -= w * _MIN_DA
            point_room[p] -= _MIN_DA
    if not admitted:
        return limits
    # Connectors of one charge point share its rating: fill within it first, the result is their cap.
    caps = list(c.cap_da)
    by_point: dict[int, list[int]] = {}
    for i in admitted:
        if c.shared[c.point[i]]:
            by_point.setdefault(c.point[i], []).append(i)
    ones = [1] * n
    for p, members in by_point.items():
        if sum(caps[i] for i in members) > c.rating_da[p]:
            for i, a in _water_fill(members, caps, ones, c.rating_da[p]).items():
                caps[i] = a
    for i, a in _water_fill(admitted, caps, c.weight, budget - c.reserved).items():
        limits[i] = a
    if band_da > 0:
        _hold_small_changes(c, limits, admitted, previous, band_da=band_da, room=budget - c.reserved)
    return limits


def _hold_small_changes(
    c: _Cable, limits: list[int], admitted: list[int], previous: list[int | None], *, band_da: int, room: int
) -> None:
    """Keep the previous limit when the change is smaller than the band. Increases held back only lower the
    load; a reduction is held back only if the budget and the ratings still hold without it."""
    for i in admitted:
        p = previous[i]
        if p is not None and p >= _MIN_DA and limits[i] < p + band_da and p < limits[i]:
            limits[i] = p
    used = sum(c.weight[i] * limits[i] for i in admitted)
    point_used = [0] * len(c.rating_da)
    for i in admitted:
        point_used[c.point[i]] += limits[i]
    for i in admitted:
        p = previous[i]
        if p is None or not limits[i] < p < limits[i] + band_da or p > c.hard_cap_da[i]:
            continue
        rise = p - limits[i]
        point = c.point[i]
        if used + c.weight[i] * rise <= room and point_used[point] + rise <= c.rating_da[point]:
            limits[i] = p
            used += c.weight[i] * rise
            point_used[point] += rise


def split_block(
    capacity: Decimal,
    unit: Unit,
    charge_points: Sequence[ChargePoint],
    sessions: Sequence[Session],
    *,
    headroom_a: Decimal = DEFAULT_HEADROOM_A,
    band_a: Decimal = DEFAULT_BAND_A,
) -> dict[Key, Decimal]:
    """Limits in A per phase for the sessions on responsive charge points, from one block's budget.
    Hysteresis compares with each session's `previous_limit_a`."""
    unit = Unit(unit)
    c = _prepare(charge_points, sessions, unit, headroom_a)
    limits = _split(c, budget_units(to_capacity(capacity, "capacity"), unit), c.previous_da, _da(band_a))
    return {key: _amps(limit) for key, limit in zip(c.keys, limits, strict=True)}


def split_horizon(
    budgets: Sequence[Budget],
    charge_points: Sequence[ChargePoint],
    sessions: Sequence[Session],
    *,
    headroom_a: Decimal = DEFAULT_HEADROOM_A,
    band_a: Decimal = DEFAULT_BAND_A,
) -> dict[datetime, dict[Key, Decimal]]:
    """`split_block` for every block, in time order; hysteresis compares each block with the one before.
    The sessions are prepared once, so this is much faster than a `split_block` per block."""
    units = {b.unit for b in budgets}
    if len(units) > 1:
        raise InvalidInput("the budgets of one cable are all in A or all in KW")
    result: dict[datetime, dict[Key, Decimal]] = {}
    if not budgets:
        return result
    unit = units.pop()
    c = _prepare(charge_points, sessions, unit, headroom_a)
    previous = c.previous_da
    band_da = _da(band_a)
    for budget in sorted(budgets, key=lambda b: b.start):
        if budget.start in result:
            raise InvalidInput(f"two budgets for the block at {budget.start.isoformat()}")
        limits = _split(c, budget_units(budget.capacity, unit), previous, band_da)
        previous = list(limits)
        result[budget.start] = {key: _amps(limit) for key, limit in zip(c.keys, limits, strict=True)}
    return result


# ---------------------------------------------------------------------------------------------
# profiles


@dataclass(frozen=True, slots=True)
class Period:
    start_period_s: int
    limit_a: Decimal
    number_phases: int


@dataclass(frozen=True, slots=True)
class ProfilePlan:
    """One Absolute charging profile for a charge point (connector 0) or one connector. The last period is
    the backup limit and, with no duration, never expires."""

    charge_point_id: str
    connector_id: int
    kind: ProfileKind
    start_schedule: datetime
    periods: tuple[Period, ...]

    @property
    def key(self) -> Key:
        return (self.charge_point_id, self.connector_id)

    def charging_schedule(self) -> dict[str, object]:
        """The OCPP 1.6 ChargingSchedule (camelCase, as on the wire; limits stay Decimal)."""
        return {
            "chargingRateUnit": "A",
            "startSchedule": self.start_schedule.isoformat().replace("+00:00", "Z"),
            "chargingSchedulePeriod": [
                {"startPeriod": p.start_period_s, "limit": p.limit_a, "numberPhases": p.number_phases}
                for p in self.periods
            ],
        }


def _backup(backup_a: Decimal, rating_a: Decimal) -> Decimal:
    """A backup limit that obeys the rating and the 6 A rule."""
    limit = floor_limit(min(backup_a, rating_a))
    return limit if limit >= MIN_CURRENT_A else _amps(0)


def _periods(
    limits: Sequence[Decimal],
    *,
    first_start: datetime,
    start_schedule: datetime,
    now: datetime,
    backup_a: Decimal,
    phases: int,
    skew: timedelta,
) -> tuple[Period, ...]:
    periods: list[Period] = []

    def add(offset: timedelta, limit_a: Decimal) -> None:
        limit_a = floor_limit(limit_a)
        if not periods:  # the first period starts the schedule
            periods.append(Period(0, limit_a, phases))
        elif periods[-1].limit_a != limit_a:  # equal neighbours merge
            periods.append(Period(int(offset.total_seconds()), limit_a, phases))

    if first_start > now:
        add(timedelta(0), backup_a)  # the horizon starts later: until then, the safe value
    # else the first block reaches back to startSchedule: that minute has passed
    for k, limit_a in enumerate(limits):
        block_start = first_start + k * BLOCK
        if block_start + BLOCK > start_schedule:
            add(block_start - start_schedule, limit_a)
    add(first_start + len(limits) * BLOCK - start_schedule, backup_a)  # never expires
    return _skewed(periods, int(skew.total_seconds()))


def _skewed(periods: list[Period], skew_s: int) -> tuple[Period, ...]:
    """Rises a little later, falls a little earlier: a charger whose clock is off by up to `skew_s` still
    never applies a block's higher limit while its neighbour's lower one should hold. Per charge point the
    limit is then at most the lower of two neighbouring blocks around each boundary, so the sum over
    charge points stays within both blocks' budgets."""
    out: list[Period] = [periods[0]]
    for before, period in pairwise(periods):
        start = period.start_period_s + (skew_s if period.limit_a > before.limit_a else -skew_s)
        if start <= out[-1].start_period_s:  # a fall reaching back over the previous step: that step takes it
            out[-1] = replace(out[-1], limit_a=min(out[-1].limit_a, period.limit_a))
        else:
            out.append(replace(period, start_period_s=start))
    merged = [out[0]]
    for period in out[1:]:
        if period.limit_a != merged[-1].limit_a:
            merged.append(period)
    return tuple(merged)


def plan_profiles(
    charge_points: Sequence[ChargePoint],
    sessions: Sequence[Session],
    block_limits: Mapping[datetime, Mapping[Key, Decimal]],
    backup_limits_a: Mapping[str, Decimal],
    now: datetime,
    *,
    kinds: Mapping[str, ProfileKind] | None = None,
    skew: timedelta = DEFAULT_SKEW,
) -> list[ProfilePlan]:
    """Absolute profiles for every responsive charge point, from the limits of consecutive blocks.

    `kinds` says which kind each charge point accepted (default ChargePointMaxProfile):
    - ChargePointMaxProfile: one profile on connector 0 with the sum of its connectors' limits;
    - TxDefaultProfile: one per connector (0 A where no car is);
    - TxProfile: one per connector with a session (the adapter adds the transactionId).
    `backup_limits_a`: per charge point, what it may draw when the adapter falls silent (missing: 0);
    connectors share it equally. startSchedule is `now` to the minute minus `skew`, against clock drift.
    """
    kinds = kinds or {}
    utc_now = as_utc(now, "now")
    start_schedule = utc_now.replace(second=0, microsecond=0) - skew
    starts = sorted(block_limits)
    for before, after in pairwise(starts):
        if after - before != BLOCK:
            raise InvalidInput(f"blocks must follow each other; {before.isoformat()} to {after.isoformat()} is not")
    first_start = aligned(starts[0], "block") if starts else start_schedule
    timing: dict[str, Any] = {
        "first_start": first_start,
        "start_schedule": start_schedule,
        "now": utc_now,
        "skew": skew,
    }
    points = {cp.id: cp for cp in charge_points if not cp.unresponsive}
    by_connector: dict[str, dict[int, list[Decimal]]] = {cp_id: {} for cp_id in points}
    zero = _amps(0)
    for k, start in enumerate(starts):
        for (cp_id, connector), limit_a in block_limits[start].items():
            if cp_id not in points:
                if any(cp.id == cp_id for cp in charge_points):
                    continue  # an unresponsive charge point: nothing to send
                raise InvalidInput(f"limit for unknown charge point {cp_id}")
            row = by_connector[cp_id].setdefault(connector, [zero] * len(starts))
            row[k] = limit_a
    phases_in_use = {s.key: s.phases_in_use for s in sessions}
    plans: list[ProfilePlan] = []
    for cp in points.values():
        kind = kinds.get(cp.id, ProfileKind.CHARGE_POINT_MAX)
        backup_a = backup_limits_a.get(cp.id, zero)
        rows = by_connector[cp.id]
        if kind is ProfileKind.CHARGE_POINT_MAX:
            sums = [sum((row[k] for row in rows.values()), zero) for k in range(len(starts))]
            single = phases_in_use.get((cp.id, 1)) if cp.connectors == 1 else None
            periods = _periods(sums, backup_a=_backup(backup_a, cp.rating_a), phases=single or cp.phases, **timing)
            plans.append(ProfilePlan(cp.id, 0, kind, start_schedule, periods))
            continue
        share_a = _backup(backup_a / cp.connectors, cp.connector_rating_a)
        for connector in range(1, cp.connectors + 1):
            phases = phases_in_use.get((cp.id, connector))
            if kind is ProfileKind.TX and phases is None:
                continue  # a TxProfile needs a running transaction
            row = rows.get(connector, [zero] * len(starts))
            periods = _periods(row, backup_a=share_a, phases=phases or cp.phases, **timing)
            plans.append(ProfilePlan(cp.id, connector, kind, start_schedule, periods))
    return plans


def backup_limits(capacity: Decimal, unit: Unit, charge_points: Sequence[ChargePoint]) -> dict[str, Decimal]:
    """Each responsive charge point's share of a cable's backup capacity, in A per phase: what it may draw
    once the adapter falls silent, whoever then charges. Unresponsive charge points' ratings come off first;
    the rest is shared equally, and when that is below 6 A each, charge points in id order get 6 A (or
    nothing) as far as it goes. The sum stays within the backup capacity."""
    unit = Unit(unit)
    points = _points_by_id(charge_points)
    kw = unit is Unit.KILOWATT

    def units_per_da(cp: ChargePoint) -> int:
        return cp.centivolts * cp.phases if kw else 1

    room = budget_units(to_capacity(capacity, "backup capacity"), unit)
    room -= sum(_da(cp.rating_a) * units_per_da(cp) for cp in points.values() if cp.unresponsive)
    responsive = sorted((cp for cp in points.values() if not cp.unresponsive), key=lambda cp: cp.id)
    limits = {cp.id: _amps(0) for cp in responsive}
    able = [cp for cp in responsive if _da(cp.rating_a) >= _MIN_DA]  # a charger cannot signal less than 6 A
    if room <= 0 or not able:
        return limits
    share = room // len(able)  # budget units each
    equal = {cp.id: min(share // units_per_da(cp), _da(cp.rating_a)) for cp in able}
    if all(da >= _MIN_DA for da in equal.values()):
        return limits | {cp_id: _amps(da) for cp_id, da in equal.items()}
    for cp in able:
        need = _MIN_DA * units_per_da(cp)
        if need <= room:
            limits[cp.id] = _amps(_MIN_DA)
            room -= need
    return limits


def limit_at(plan: ProfilePlan, moment: datetime) -> Decimal:
    """The limit `plan` applies at `moment` (the first period's before it starts)."""
    offset = (as_utc(moment, "moment") - plan.start_schedule).total_seconds()
    limit = plan.periods[0].limit_a
    for period in plan.periods:
        if period.start_period_s > offset:
            break
        limit = period.limit_a
    return limit


def highest_from(plan: ProfilePlan, moment: datetime) -> Decimal:
    """The highest limit `plan` applies from `moment` on (its backup included)."""
    offset = (as_utc(moment, "moment") - plan.start_schedule).total_seconds()
    current = limit_at(plan, moment)
    return max([current, *(p.limit_a for p in plan.periods if p.start_period_s > offset)])


def _changes(plan: ProfilePlan, moment: datetime) -> list[tuple[datetime, Decimal]]:
    """(from, limit) steps of `plan` from `moment` on."""
    steps = [(moment, limit_at(plan, moment))]
    for period in plan.periods:
        at = plan.start_schedule + timedelta(seconds=period.start_period_s)
        if at > moment:
            steps.append((at, period.limit_a))
    return steps


def same_from(new: ProfilePlan, old: ProfilePlan, moment: datetime) -> bool:
    """Whether two plans for one connector apply the same limits from `moment` on."""
    if (new.key, new.kind) != (old.key, old.kind):
        return False
    if {p.number_phases for p in new.periods} != {p.number_phases for p in old.periods}:
        return False
    merged_new = _merged(_changes(new, moment))
    merged_old = _merged(_changes(old, moment))
    return merged_new == merged_old


def _merged(steps: list[tuple[datetime, Decimal]]) -> list[tuple[datetime, Decimal]]:
    out: list[tuple[datetime, Decimal]] = []
    for at, limit in steps:
        if not out or out[-1][1] != limit:
            out.append((at, limit))
    return out


def lowers(new: ProfilePlan, old: ProfilePlan | None, moment: datetime) -> bool:
    """Whether `new` is below `old` at any time from `moment` on (no `old`: the charge point may be
    unlimited, so anything lowers). Such plans go out before any that raise."""
    if old is None:
        return True
    times = sorted({at for at, _ in _changes(new, moment)} | {at for at, _ in _changes(old, moment)})
    return any(limit_at(new, at) < limit_at(old, at) for at in times)


def pointwise_min(new: ProfilePlan, old: ProfilePlan, moment: datetime) -> ProfilePlan:
    """`new` where it is lower than `old`, `old` elsewhere, from `moment` on: the first step of a change
    that lowers some blocks and raises others, so that nothing rises before every lowering is in force."""
    return pointwise(new, old, moment, min)


def pointwise(
    new: ProfilePlan, old: ProfilePlan, moment: datetime, pick: Callable[[Decimal, Decimal], Decimal]
) -> ProfilePlan:
    """A plan on `new`'s schedule whose limit at every moment from `moment` on is pick(new's, old's).
    It starts at `moment` should `new` start later: no period may lie before the start of its schedule."""
    utc = as_utc(moment, "moment")
    start = min(new.start_schedule, utc)
    times = sorted({utc} | {at for at, _ in _changes(new, utc)} | {at for at, _ in _changes(old, utc)})
    periods: list[Period] = []
    phases = new.periods[0].number_phases
    for at in times:
        limit_a = pick(limit_at(new, at), limit_at(old, at))
        if not periods:
            periods.append(Period(0, limit_a, phases))
        elif periods[-1].limit_a != limit_a:
            periods.append(Period(int((at - start).total_seconds()), limit_a, phases))
    return ProfilePlan(new.charge_point_id, new.connector_id, new.kind, start, tuple(periods))


def truncated(plan: ProfilePlan, max_periods: int) -> ProfilePlan:
    """At most `max_periods` periods (a charger's ChargingScheduleMaxPeriods): the last one kept is the
    lowest of all it replaces, so the shorter schedule never allows more than the full one."""
    if max_periods < 1 or len(plan.periods) <= max_periods:
        return plan
    kept = list(plan.periods[: max_periods - 1])
    tail = plan.periods[max_periods - 1 :]
    kept.append(Period(tail[0].start_period_s, min(p.limit_a for p in tail), tail[0].number_phases))
    return ProfilePlan(plan.charge_point_id, plan.connector_id, plan.kind, plan.start_schedule, tuple(kept))
