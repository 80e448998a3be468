"""Meter readings -> usage per cable per block, and when to ask the DSO for more or hand capacity back.
Pure: no I/O, no clock.

- `parse_sampled_values`: OCPP 1.6 MeterValue objects -> `MeterSample`s in base units (Wh, W, A).
- `UsageMeter`: per (charge point, connector) the energy per 15-minute block.
- `block_usage`: per cable per closed block the average power (kW) and the per-phase current (A).
- `constrained_demand` and `decide`: what to request from the DSO and what to hand back, with hysteresis.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

from service.cpo.profiles import ChargePoint, Key, Session
from service.domain.blocks import BLOCK, aligned, as_utc, block_floor
from service.domain.errors import InvalidInput
from service.domain.units import GRID, ZERO, Unit, ceil_grid, to_capacity

ENERGY_REGISTER = "Energy.Active.Import.Register"
POWER_IMPORT = "Power.Active.Import"
CURRENT_IMPORT = "Current.Import"

MAX_SAMPLE_VALUE = Decimal(10) ** 15  # 1 TWh in Wh: far beyond any charge point's meter

# kilo units become their base unit; the value is multiplied by 1000
_KILO = {"kWh": "Wh", "kW": "W", "kvarh": "varh", "kvar": "var", "kVA": "VA"}


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One sampled value of a MeterValues message, in base units."""

    at: datetime  # tz-aware UTC
    measurand: str  # "Energy.Active.Import.Register" when the charge point leaves it out
    value: Decimal  # in `unit`
    unit: str  # normalised: "Wh", "W", "A", ... (kWh -> Wh, kW -> W)
    phase: str | None  # "L1", "L2", "L3", "L1-N", ... or None
    context: str | None  # "Sample.Periodic", "Sample.Clock", "Transaction.Begin", ...


def _default_unit(measurand: str) -> str:
    """OCPP 1.6 says the unit defaults to Wh; for measurands that cannot be in Wh, their natural unit."""
    if measurand.startswith("Current."):
        return "A"
    if measurand.startswith(("Power.Active.", "Power.Offered")):
        return "W"
    if measurand == "Voltage":
        return "V"
    if measurand == "SoC":
        return "Percent"
    return "Wh"


def _field(mapping: Mapping[str, object], snake: str, camel: str) -> object:
    return mapping[snake] if snake in mapping else mapping.get(camel)


def _optional_text(value: object, field_name: str) -> str | None:
    if value is None:
        return None
    text = getattr(value, "value", value)  # the ocpp library's enums are str subclasses; keep the text
    if not isinstance(text, str):
        raise InvalidInput(f"{field_name} must be text, got {value!r}")
    return str(text)


def _timestamp(value: object, where: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"{where}.timestamp {value!r} is not an ISO 8601 date-time; send e.g. 2026-03-29T16:00:00Z"
            ) from None
    else:
        raise InvalidInput(f"{where}.timestamp is missing or not a date-time string, got {value!r}")
    return as_utc(moment, f"{where}.timestamp")


def _number(value: object, where: str) -> Decimal:
    if value is None:
        raise InvalidInput(f"{where}.value is missing; every sampled value needs one")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput(f'{where}.value must be a number written as text, e.g. "1234.5", got {value!r}') from None
    if isinstance(value, bool) or not number.is_finite() or abs(number) > MAX_SAMPLE_VALUE:
        raise InvalidInput(f"{where}.value must be a finite number below {MAX_SAMPLE_VALUE}, got {value!r}")
    return number


def parse_sampled_values(meter_values: Sequence[Mapping[str, object]]) -> list[MeterSample]:
    """The samples of a MeterValues / StopTransaction `meterValue` list, in order.

    Accepts the objects with snake_case keys (as the `ocpp` library hands them to handlers) or camelCase
    (as on the wire). kWh/kW are converted to Wh/W. SignedData values are skipped: they are not numbers.
    Raises InvalidInput for a naive or unreadable timestamp, a non-numeric value, or a negative
    energy register.
    """
    samples: list[MeterSample] = []
    if isinstance(meter_values, (str, bytes)) or not isinstance(meter_values, Sequence):
        raise InvalidInput(f"meterValue must be a list of MeterValue objects, got {type(meter_values).__name__}")
    for i, meter_value in enumerate(meter_values):
        where = f"meterValue[{i}]"
        if not isinstance(meter_value, Mapping):
            raise InvalidInput(f"{where} must be an object with timestamp and sampledValue")
        at = _timestamp(_field(meter_value, "timestamp", "timestamp"), where)
        sampled = _field(meter_value, "sampled_value", "sampledValue")
        if isinstance(sampled, (str, bytes)) or not isinstance(sampled, Sequence):
            raise InvalidInput(f"{where}.sampledValue must be a list, got {sampled!r}")
        for j, item in enumerate(sampled):
            item_where = f"{where}.sampledValue[{j}]"
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{item_where} must be an object with a value")
            if _optional_text(item.get("format"), f"{item_where}.format") == "SignedData":
                continue
            measurand = _optional_text(item.get("measurand"), f"{item_where}.measurand") or ENERGY_REGISTER
            unit = _optional_text(item.get("unit"), f"{item_where}.unit") or _default_unit(measurand)
            value = _number(item.get("value"), item_where)
            if unit in _KILO:
                value, unit = value * 1000, _KILO[unit]
            if measurand == ENERGY_REGISTER:
                if unit != "Wh":
                    raise InvalidInput(f"{item_where}: {ENERGY_REGISTER} must be in Wh or kWh, got {unit}")
                if value < 0:
                    raise InvalidInput(f"{item_where}: an energy register cannot be negative, got {value} Wh")
            samples.append(
                MeterSample(
                    at=at,
                    measurand=measurand,
                    value=value,
                    unit=unit,
                    phase=_optional_text(item.get("phase"), f"{item_where}.phase"),
                    context=_optional_text(item.get("context"), f"{item_where}.context"),
                )
            )
    return samples


# ---------------------------------------------------------------------------------------------
# energy per block

_MICROSECOND = timedelta(microseconds=1)
DEFAULT_MAX_RATE_GAP = timedelta(minutes=30)
_LINE = {"L1": "L1", "L2": "L2", "L3": "L3", "L1-N": "L1", "L2-N": "L2", "L3-N": "L3"}


def _micros(delta: timedelta) -> int:
    return delta // _MICROSECOND


def _parts(energy_wh: Decimal, start: datetime, end: datetime, not_before: datetime | None) -> dict[datetime, Decimal]:
    """`energy_wh`, drawn evenly over [start, end), per block it overlaps (pro rata in time).

    The parts are differences of the cumulative share, floored to 0.001 Wh except the last, which is exact:
    they are never negative and add up to `energy_wh` exactly. Blocks before `not_before` are left out;
    the others do not depend on it."""
    total = _micros(end - start)

    def share(moment: datetime) -> Decimal:
        if moment >= end:
            return energy_wh
        return (energy_wh * _micros(moment - start) / total).quantize(GRID, ROUND_FLOOR)

    parts: dict[datetime, Decimal] = {}
    block = block_floor(start if not_before is None else max(start, not_before))
    while block < end:
        parts[block] = share(min(block + BLOCK, end)) - share(max(block, start))
        block += BLOCK
    return parts


def _add(into: dict[datetime, Decimal], parts: Mapping[datetime, Decimal], sign: int = 1) -> None:
    for block, wh in parts.items():
        into[block] = into.get(block, ZERO) + sign * wh


@dataclass(slots=True)
class _Piece:
    """Energy estimated from power or current samples, drawn evenly over [start, end)."""

    start: datetime
    end: datetime
    energy_wh: Decimal

    def outside(self, lo: datetime, hi: datetime) -> list["_Piece"]:
        """What is left of this piece once [lo, hi) is cut out, energy pro rata in time."""
        span = _micros(self.end - self.start)
        left: list[_Piece] = []
        for a, b in ((self.start, min(self.end, lo)), (max(self.start, hi), self.end)):
            if a < b:
                energy = (self.energy_wh * _micros(b - a) / span).quantize(GRID, ROUND_FLOOR)
                left.append(_Piece(a, b, energy))
        return left


@dataclass(slots=True)
class _Connector:
    register: tuple[datetime, Decimal] | None = None  # the last register reading (time, Wh)
    settled: dict[datetime, Decimal] = field(default_factory=dict)  # Wh per block from register intervals
    rate: tuple[datetime, Decimal] | None = None  # the last power sample (time, W)
    estimated: dict[datetime, Decimal] = field(default_factory=dict)  # Wh per block from power samples
    # the estimates a later register interval may still replace: those ending after the last reading
    open_pieces: list[_Piece] = field(default_factory=list)
    uses_power: bool = False  # Power.Active.Import seen: current samples are not needed


class UsageMeter:
    """Energy per 15-minute block for every (charge point, connector) it has heard of.

    Rules:
    - Energy comes from the energy register (Energy.Active.Import.Register; transaction start and stop
      meter values count as readings). The energy between two readings is drawn evenly over the time
      between them: an interval spanning a block boundary is split pro rata in time.
    - A reading at or before the last one (late, duplicate) is ignored. A register that goes backwards
      (a reset or replaced meter) starts over from the new value: that interval adds no energy from the
      register (an estimate from power samples within it stays).
    - Without a register interval, power is integrated: between two samples of Power.Active.Import (W) at
      most `max_rate_gap` apart, the energy is the mean of the two samples times the time between them
      (trapezoid), drawn evenly over that time; a longer gap adds nothing (the charge point was silent or
      idle). Without power samples, Current.Import stands in for power: the sum of the line currents
      (L1, L2, L3) times the voltage, or an unphased current times the voltage and the phases in use.
      Negative power or current (export) counts as 0.
    - A register interval replaces the estimates within it; estimates older than the last register
      reading are ignored.
    Values are kept on the 0.001 Wh grid. `forget_before` drops old blocks.
    """

    def __init__(self, *, max_rate_gap: timedelta = DEFAULT_MAX_RATE_GAP) -> None:
        if max_rate_gap <= timedelta(0):
            raise InvalidInput(f"max_rate_gap must be positive, got {max_rate_gap}")
        self.max_rate_gap = max_rate_gap
        self._connectors: dict[Key, _Connector] = {}
        self._horizon: datetime | None = None  # blocks before this are forgotten

    def _connector(self, charge_point_id: str, connector_id: int) -> _Connector:
        if isinstance(connector_id, bool) or not isinstance(connector_id, int) or connector_id < 0:
            raise InvalidInput(f"connector_id must be >= 0 (0 is the whole charge point), got {connector_id!r}")
        return self._connectors.setdefault((charge_point_id, connector_id), _Connector())

    def reading(self, charge_point_id: str, connector_id: int, at: datetime, energy_wh: Decimal | int) -> None:
        """An energy register reading, e.g. a transaction's meterStart or meterStop."""
        moment = as_utc(at, "reading time")
        value = Decimal(energy_wh) if isinstance(energy_wh, int) else energy_wh
        if isinstance(energy_wh, bool) or not isinstance(value, Decimal) or not value.is_finite() or value < 0:
            raise InvalidInput(f"an energy register reading must be a number >= 0 Wh, got {energy_wh!r}")
        self._register(self._connector(charge_point_id, connector_id), moment, value.quantize(GRID))

    def add(
        self,
        charge_point_id: str,
        connector_id: int,
        samples: Iterable[MeterSample],
        *,
        voltage_v: Decimal = Decimal(230),
        phases: int = 1,
    ) -> None:
        """The samples of one MeterValues message. `voltage_v` and `phases` (in use by the car) turn current
        samples into power when a charge point reports neither register nor power."""
        if isinstance(phases, bool) or phases not in (1, 2, 3):
            raise InvalidInput(f"phases must be 1, 2 or 3, got {phases!r}")
        if not voltage_v.is_finite() or voltage_v <= 0:
            raise InvalidInput(f"voltage_v must be a positive number, got {voltage_v!r}")
        connector = self._connector(charge_point_id, connector_id)
        by_time: dict[datetime, list[MeterSample]] = {}
        for sample in samples:
            by_time.setdefault(as_utc(sample.at, "sample time"), []).append(sample)
        for moment in sorted(by_time):
            group = by_time[moment]
            power_w = _power_w(group, voltage_v, phases)
            if power_w is not None:
                connector.uses_power = connector.uses_power or power_w[1]
                if power_w[1] or not connector.uses_power:
                    self._rate(connector, moment, power_w[0])
            # after the rate: a register interval ending now replaces the estimate ending now
            for sample in group:
                if sample.measurand == ENERGY_REGISTER and sample.unit == "Wh" and sample.value >= 0:
                    self._register(connector, moment, sample.value.quantize(GRID))

    def _register(self, c: _Connector, at: datetime, value_wh: Decimal) -> None:
        if c.register is not None:
            last_at, last_wh = c.register
            if at <= last_at:
                return  # late or duplicate
            if value_wh >= last_wh:
                _add(c.settled, _parts(value_wh - last_wh, last_at, at, self._horizon))
                kept: list[_Piece] = []
                for piece in c.open_pieces:
                    rest = piece.outside(last_at, at)
                    if rest != [piece]:  # the same parts out that went in: exact
                        _add(c.estimated, _parts(piece.energy_wh, piece.start, piece.end, self._horizon), -1)
                        for part in rest:
                            _add(c.estimated, _parts(part.energy_wh, part.start, part.end, self._horizon))
                    kept.extend(rest)
                c.open_pieces = kept
            # else: reset or replaced meter, start over from the new value
        c.register = (at, value_wh)
        # later register intervals start at `at` or later: estimates ending by then stay as they are
        c.open_pieces = [piece for piece in c.open_pieces if piece.end > at]

    def _rate(self, c: _Connector, at: datetime, power_w: Decimal) -> None:
        if c.rate is not None:
            last_at, last_w = c.rate
            if at <= last_at:
                return
            if at - last_at <= self.max_rate_gap:
                energy = ((last_w + power_w) * _micros(at - last_at) / (2 * 3_600_000_000)).quantize(GRID)
                pieces = [_Piece(last_at, at, energy)]
                covered = c.register[0] if c.register is not None else None
                if covered is not None and covered > last_at:  # older than the last register reading
                    pieces = pieces[0].outside(last_at, covered)
                for piece in pieces:
                    _add(c.estimated, _parts(piece.energy_wh, piece.start, piece.end, self._horizon))
                    c.open_pieces.append(piece)
        c.rate = (at, power_w)

    def energy_wh(self, charge_point_id: str, connector_id: int) -> dict[datetime, Decimal]:
        """Energy per block start (UTC) of one connector, measured and estimated; empty if never heard of."""
        c = self._connectors.get((charge_point_id, connector_id))
        if c is None:
            return {}
        blocks = dict(c.settled)
        _add(blocks, c.estimated)
        return blocks

    def connectors(self, charge_point_id: str) -> list[int]:
        """The connectors of a charge point the meter has heard of (0: the charge point's main meter)."""
        return sorted(connector for cp_id, connector in self._connectors if cp_id == charge_point_id)

    def forget_before(self, start: datetime) -> None:
        """Drop the blocks before `start` (an aligned block start); later readings no longer reach them."""
        horizon = aligned(start, "start")
        if self._horizon is not None and horizon <= self._horizon:
            return
        self._horizon = horizon
        for c in self._connectors.values():
            c.settled = {block: wh for block, wh in c.settled.items() if block >= horizon}
            c.estimated = {block: wh for block, wh in c.estimated.items() if block >= horizon}
            # open pieces keep their whole span: removing them later subtracts the same parts (from the
            # horizon on) that went in


def _power_w(group: Sequence[MeterSample], voltage_v: Decimal, phases: int) -> tuple[Decimal, bool] | None:
    """The power of one moment's samples in W and whether it was measured as power (not from current);
    None: neither power nor current was sampled."""
    for measurand, unit in ((POWER_IMPORT, "W"), (CURRENT_IMPORT, "A")):
        total: Decimal | None = None
        lines: dict[str, Decimal] = {}
        for s in group:
            if s.measurand != measurand or s.unit != unit:
                continue
            value = max(ZERO, s.value)
            if s.phase is None:
                total = value
            elif s.phase in _LINE:
                lines[_LINE[s.phase]] = value  # L1 and L1-N are the same line
        if total is None and not lines:
            continue
        if measurand == POWER_IMPORT:
            return (total if total is not None else sum(lines.values(), ZERO)), True
        current_sum = total * phases if total is not None else sum(lines.values(), ZERO)
        return current_sum * voltage_v, False
    return None


# ---------------------------------------------------------------------------------------------
# usage per cable


@dataclass(frozen=True, slots=True)
class BlockUsage:
    """What a cable's charge points drew in one closed block."""

    cable_id: str
    start: datetime
    energy_wh: Decimal
    power_kw: Decimal  # average over the block: energy_kwh * 4, on the 0.001 grid
    current_a: Decimal  # per phase, summed over sessions as if every car loads L1; on the 0.001 grid

    def in_unit(self, unit: Unit) -> Decimal:
        """The usage in the cable's unit: A (current per phase) or KW."""
        return self.current_a if Unit(unit) is Unit.AMPERE else self.power_kw


def _round(value: Decimal) -> Decimal:
    return max(ZERO, value.quantize(GRID, ROUND_HALF_UP)) + ZERO


def block_usage(
    meter: UsageMeter,
    charge_points: Sequence[ChargePoint],
    *,
    now: datetime,
    phases_in_use: Mapping[Key, int] | None = None,
    since: datetime | None = None,
    block_phases: Mapping[tuple[str, int, datetime], int] | None = None,
    settle: timedelta = timedelta(0),
) -> dict[str, dict[datetime, BlockUsage]]:
    """Usage per cable per closed block: ended at least `settle` before `now` (time for the readings at
    the block's end to arrive); from `since` on, if given.

    The current convention: a cable budget in A is "this current on each phase", and without knowing
    the phase rotation the adapter assumes every car loads L1. So a cable's usage in A is the sum over
    connectors of the average current per phase each drew: kW * 1000 / (voltage * phases in use), with
    the phases from `block_phases` per (charge point, connector, block), else `phases_in_use` per
    connector (missing: 1, the highest current for the power). A three-phase car
    drawing 11.04 kW at 230 V counts 16 A, a one-phase car drawing 3.68 kW also 16 A: 32 A in all.

    A charge point's connectors 1..n are used where they have data for the block, else its connector 0
    (the main meter): never both, which would count the energy twice. Blocks without any reading on a
    cable are absent (no data is not zero). Charge points the meter has not heard of add nothing;
    charge points not in `charge_points` are ignored.
    """
    if settle < timedelta(0):
        raise InvalidInput(f"settle must be a duration >= 0, got {settle}")
    moment = as_utc(now, "now") - settle
    first = aligned(since, "since") if since is not None else None
    phases_in_use = phases_in_use or {}
    energy: dict[str, dict[datetime, Decimal]] = {}
    current: dict[str, dict[datetime, Decimal]] = {}
    seen: set[str] = set()
    for cp in charge_points:
        if cp.id in seen:
            raise InvalidInput(f"charge point {cp.id} is listed twice")
        seen.add(cp.id)
        per_connector = {c: meter.energy_wh(cp.id, c) for c in meter.connectors(cp.id)}
        starts = {start for blocks in per_connector.values() for start in blocks}
        for start in starts:
            if start + BLOCK > moment or (first is not None and start < first):
                continue
            used = [c for c, blocks in per_connector.items() if c >= 1 and start in blocks] or [0]
            cable_energy = energy.setdefault(cp.cable_id, {})
            cable_current = current.setdefault(cp.cable_id, {})
            for c in used:
                wh = per_connector[c][start]
                phases = (block_phases or {}).get((cp.id, c, start)) or phases_in_use.get((cp.id, c), 1)
                if isinstance(phases, bool) or phases not in (1, 2, 3):
                    raise InvalidInput(f"phases in use on {cp.id} connector {c} must be 1, 2 or 3, got {phases!r}")
                # average power over the block: wh * 4 W; per phase: / (voltage * phases)
                cable_energy[start] = cable_energy.get(start, ZERO) + wh
                cable_current[start] = cable_current.get(start, ZERO) + wh * 4 / (cp.voltage_v * phases)
    return {
        cable_id: {
            start: BlockUsage(
                cable_id=cable_id,
                start=start,
                energy_wh=max(ZERO, wh),
                power_kw=_round(wh * 4 / 1000),
                current_a=_round(current[cable_id][start]),
            )
            for start, wh in sorted(blocks.items())
        }
        for cable_id, blocks in energy.items()
    }


# ---------------------------------------------------------------------------------------------
# demand, and the request / hand-back decision


def constrained_demand(
    charge_points: Sequence[ChargePoint],
    sessions: Sequence[Session],
    unit: Unit,
    *,
    max_drawn_a: Mapping[Key, Decimal] | None = None,
) -> Decimal:
    """What the cable's sessions would draw without a budget, in the cable's unit (rounded up to 0.001).

    Per session: the most its car has been seen to draw (`max_drawn_a`, per phase), or the connector's
    rating when unknown, never above the rating; the connectors of one charge point together at most its
    rating. An unresponsive charge point counts its full rating (the split reserves it). In A the
    currents add up (every car on L1); in KW each counts current * voltage * phases / 1000, a session on a
    multi-connector charge point at the charge point's phases (as in the split).
    """
    unit = Unit(unit)
    max_drawn_a = max_drawn_a or {}
    points = {cp.id: cp for cp in charge_points}
    if len(points) != len(charge_points):
        raise InvalidInput("a charge point is listed twice")
    per_point: dict[str, list[tuple[Decimal, int]]] = {}  # (current per phase, phases)
    for s in sessions:
        cp = points.get(s.charge_point_id)
        if cp is None:
            raise InvalidInput(f"session on unknown charge point {s.charge_point_id}")
        if cp.unresponsive:
            continue
        drawn = max_drawn_a.get(s.key)
        cap_a = cp.connector_rating_a if drawn is None else min(cp.connector_rating_a, max(ZERO, drawn))
        per_point.setdefault(cp.id, []).append((cap_a, s.phases_in_use if cp.connectors == 1 else cp.phases))
    total = ZERO
    for cp in points.values():
        loads = [(cp.rating_a, cp.phases)] if cp.unresponsive else per_point.get(cp.id, [])
        room_a = cp.rating_a
        for current_a, phases in loads:
            take_a = min(current_a, room_a)
            room_a -= take_a
            total += take_a if unit is Unit.AMPERE else take_a * cp.voltage_v * phases / 1000
    return ceil_grid(total)


@dataclass(frozen=True, slots=True)
class Outlook:
    """One block as the decision sees it, all in the cable's unit."""

    budget: Decimal  # what the DSO granted
    demand: Decimal  # what the sessions would draw without the budget (`constrained_demand`)
    usage: Decimal  # what they draw now
    floor: Decimal = ZERO  # the backup / guaranteed minimum: never hand back below it

    def __post_init__(self) -> None:
        for name in ("budget", "demand", "usage", "floor"):
            object.__setattr__(self, name, to_capacity(getattr(self, name), name))


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """The knobs of `decide`, in the cable's unit."""

    request_band: Decimal  # request when demand exceeds the budget by more than this ...
    handback_band: Decimal  # hand back when the budget exceeds what is kept by more than this
    headroom: Decimal  # kept above the usage when handing back
    confirmations: int = 2  # ... in this many consecutive evaluations
    cooldown: timedelta = timedelta(minutes=30)  # no hand-back this long after a request or a raise

    def __post_init__(self) -> None:
        for name in ("request_band", "handback_band", "headroom"):
            object.__setattr__(self, name, to_capacity(getattr(self, name), name))
        if isinstance(self.confirmations, bool) or not isinstance(self.confirmations, int) or self.confirmations < 1:
            raise InvalidInput(f"confirmations must be an integer >= 1, got {self.confirmations!r}")
        if not isinstance(self.cooldown, timedelta) or self.cooldown < timedelta(0):
            raise InvalidInput(f"cooldown must be a duration >= 0, got {self.cooldown!r}")


Kind = Literal["request", "handback"]


@dataclass(frozen=True, slots=True)
class BlockState:
    """What `decide` remembers of a block between evaluations."""

    over: int = 0  # consecutive evaluations with demand above budget + request band
    budget: Decimal | None = None  # the budget at the last evaluation
    raised_at: datetime | None = None  # the last request, or the last evaluation that saw the budget rise
    sent: tuple[Kind, Decimal, datetime] | None = None  # the last adjustment: kind, capacity, when


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Capacities to ask the DSO for, per block start, in the cable's unit."""

    kind: Kind
    unit: Unit
    blocks: Mapping[datetime, Decimal]


@dataclass(frozen=True, slots=True)
class Decision:
    request: Adjustment | None
    handback: Adjustment | None
    state: Mapping[datetime, BlockState]  # pass to the next `decide`

    @property
    def adjustments(self) -> list[Adjustment]:
        return [a for a in (self.request, self.handback) if a is not None]


def _repeats(
    sent: tuple[Kind, Decimal, datetime] | None, kind: Kind, capacity: Decimal, now: datetime, cooldown: timedelta
) -> bool:
    """Whether asking `kind` for `capacity` now says nothing new: the same kind, asking no further, was
    sent less than `cooldown` ago."""
    if sent is None or sent[0] != kind or now - sent[2] >= cooldown:
        return False
    return sent[1] >= capacity if kind == "request" else sent[1] <= capacity


def decide(
    outlook: Mapping[datetime, Outlook],
    state: Mapping[datetime, BlockState],
    *,
    unit: Unit,
    now: datetime,
    policy: Hysteresis,
) -> Decision:
    """Which blocks to ask more capacity for and which to hand capacity back on.

    Per block:
    - request `demand` when demand > budget + request_band in `confirmations` consecutive evaluations;
      the same (or a smaller) request is not repeated within `cooldown`;
    - hand back down to keep = max(floor, usage + headroom, demand) when budget > keep + handback_band,
      not within `cooldown` after a request or a budget rise for the block, and the same (or a larger)
      hand-back is not repeated within `cooldown`.
    A request needs demand above the budget and a hand-back leaves at least the demand, so no block gets
    both, and granting either never makes the other one due: a steady state does not flap.
    The state keeps only the blocks in `outlook`.
    """
    unit = Unit(unit)
    moment = as_utc(now, "now")
    requests: dict[datetime, Decimal] = {}
    handbacks: dict[datetime, Decimal] = {}
    new_state: dict[datetime, BlockState] = {}
    for raw_start, block in sorted(outlook.items()):
        start = aligned(raw_start, "block start")
        prev = state.get(start, BlockState())
        raised_at = prev.raised_at
        if prev.budget is not None and block.budget > prev.budget:
            raised_at = moment  # a grant, or the DSO raised the budget by itself
        over = prev.over + 1 if block.demand > block.budget + policy.request_band else 0
        sent = prev.sent
        if over >= policy.confirmations:
            target = ceil_grid(block.demand)
            if not _repeats(sent, "request", target, moment, policy.cooldown):
                requests[start] = target
                raised_at = moment
                sent = ("request", target, moment)
        else:
            keep = ceil_grid(max(block.floor, block.usage + policy.headroom, block.demand))
            cooling = raised_at is not None and moment - raised_at < policy.cooldown
            if (
                block.budget > keep + policy.handback_band
                and not cooling
                and not _repeats(sent, "handback", keep, moment, policy.cooldown)
            ):
                handbacks[start] = keep
                sent = ("handback", keep, moment)
        new_state[start] = BlockState(over=over, budget=block.budget, raised_at=raised_at, sent=sent)
    return Decision(
        request=Adjustment("request", unit, requests) if requests else None,
        handback=Adjustment("handback", unit, handbacks) if handbacks else None,
        state=new_state,
    )
