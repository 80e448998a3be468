"""Simulated OCPP 1.6-J charge points on the `ocpp` library: the test double of the central system, the demo
fleet and the load benchmark. They speak real OCPP-J over real websockets.

A charge point keeps the charging profiles it accepted and answers GetCompositeSchedule from the same
composite its EVs obey: min(ChargePointMaxProfile, TxProfile else TxDefaultProfile), within one purpose the
highest stackLevel that is valid at the time. An EV draws min(offered, its own maximum) until its energy need
is met; an offer below 6 A pauses it (IEC 61851). How SetChargingProfile is answered is scriptable
(`Behaviour`), and every CALL a charge point receives is recorded, so tests wait for it instead of sleeping.
"""

import asyncio
import base64
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from itertools import pairwise
from typing import Any, TypeVar, cast
from urllib.parse import quote

from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from service.cpo.central import QuietLibraryLog
from service.cpo.profiles import MIN_CURRENT_A, ProfileKind
from service.domain.blocks import as_utc
from service.domain.errors import InvalidInput
from service.domain.model import check_id

log = logging.getLogger("gridcap.simulator")

VOLTAGE_V = 230  # phase voltage
DAY_S = 86_400
WEEK_S = 7 * DAY_S
SUPPORTED_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Current.Import",
    "Current.Offered",
    "Power.Active.Import",
    "Power.Offered",
)
FEATURE_PROFILES = "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"
_STEP = Decimal("0.1")
_LIBRARY_LOG = QuietLibraryLog(logging.getLogger("gridcap.simulator.frames"))

_F = TypeVar("_F", bound=Callable[..., Any])


def _on(action: Action) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], on(action))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tenths(value: Decimal) -> float:
    """A current on the 0.1 A grid, rounded down, as the float JSON writes with one decimal."""
    return float((value / _STEP).to_integral_value(ROUND_FLOOR) * _STEP)


# ---------------------------------------------------------------------------------------------
# the composite-schedule engine (pure)


class ProfileRefused(ValueError):
    """A charging profile this charge point answers Rejected; the message says why."""


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    start_period_s: int
    limit_a: Decimal
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class InstalledProfile:
    """A charging profile as a charge point keeps it (limits in A per phase)."""

    id: int
    connector_id: int
    purpose: str
    stack_level: int
    periods: tuple[SchedulePeriod, ...]
    kind: str = "Absolute"
    start_schedule: datetime | None = None
    duration_s: int | None = None
    recurrency_kind: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: int | None = None


def _moment(value: object, field_name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProfileRefused(f"{field_name} must be a date-time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProfileRefused(f"{field_name} {value!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise ProfileRefused(f"{field_name} {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def parse_profile(connector_id: int, profile: Mapping[str, Any], received_at: datetime) -> InstalledProfile:
    """A csChargingProfiles object with snake_case keys (as the `ocpp` library hands it to a handler).
    An Absolute profile without startSchedule starts when it arrives, as many chargers do.
    Raises ProfileRefused for what this charge point does not take."""
    schedule = profile.get("charging_schedule")
    if not isinstance(schedule, Mapping):
        raise ProfileRefused("chargingSchedule is missing")
    if schedule.get("charging_rate_unit") != "A":
        raise ProfileRefused(
            f"chargingRateUnit {schedule.get('charging_rate_unit')}: limits in A only "
            "(ChargingScheduleAllowedChargingRateUnit=Current)"
        )
    try:
        periods = tuple(
            SchedulePeriod(int(p["start_period"]), Decimal(str(p["limit"])), p.get("number_phases"))
            for p in schedule.get("charging_schedule_period") or []
        )
    except (KeyError, TypeError, ArithmeticError, ValueError):
        raise ProfileRefused("every chargingSchedulePeriod needs startPeriod and limit") from None
    if not periods or periods[0].start_period_s != 0:
        raise ProfileRefused("the first chargingSchedulePeriod must start at 0")
    if any(b.start_period_s <= a.start_period_s for a, b in pairwise(periods)):
        raise ProfileRefused("startPeriod must increase from one period to the next")
    if any(not p.limit_a.is_finite() or p.limit_a < 0 for p in periods):
        raise ProfileRefused("a limit must be >= 0")
    kind = str(profile.get("charging_profile_kind"))
    start = _moment(schedule.get("start_schedule"), "startSchedule")
    if kind == "Absolute" and start is None:
        start = received_at
    recurrency = profile.get("recurrency_kind")
    if kind == "Recurring" and (start is None or recurrency not in ("Daily", "Weekly")):
        raise ProfileRefused("a Recurring profile needs startSchedule and recurrencyKind Daily or Weekly")
    duration = schedule.get("duration")
    if duration is not None and duration <= 0:
        raise ProfileRefused("duration must be > 0")
    return InstalledProfile(
        id=int(profile["charging_profile_id"]),
        connector_id=connector_id,
        purpose=str(profile["charging_profile_purpose"]),
        stack_level=int(profile["stack_level"]),
        periods=periods,
        kind=kind,
        start_schedule=start,
        duration_s=duration,
        recurrency_kind=None if recurrency is None else str(recurrency),
        valid_from=_moment(profile.get("valid_from"), "validFrom"),
        valid_to=_moment(profile.get("valid_to"), "validTo"),
        transaction_id=profile.get("transaction_id"),
    )


def install(installed: Iterable[InstalledProfile], new: InstalledProfile) -> list[InstalledProfile]:
    """`new` replaces a profile with the same id, or with the same connector, purpose and stackLevel."""
    return [
        p
        for p in installed
        if p.id != new.id
        and (p.connector_id, p.purpose, p.stack_level) != (new.connector_id, new.purpose, new.stack_level)
    ] + [new]


def clear(
    installed: Iterable[InstalledProfile],
    *,
    profile_id: int | None = None,
    connector_id: int | None = None,
    purpose: str | None = None,
    stack_level: int | None = None,
) -> tuple[list[InstalledProfile], int]:
    """ClearChargingProfile: removes the profiles matching every given filter (ANDed; none: all).
    Returns what stays and how many were removed."""

    def matches(p: InstalledProfile) -> bool:
        return (
            (profile_id is None or p.id == profile_id)
            and (connector_id is None or p.connector_id == connector_id)
            and (purpose is None or p.purpose == purpose)
            and (stack_level is None or p.stack_level == stack_level)
        )

    profiles = list(installed)
    kept = [p for p in profiles if not matches(p)]
    return kept, len(profiles) - len(kept)


def _anchor(profile: InstalledProfile, at: datetime, session_start: datetime | None) -> float | None:
    """Seconds into the profile's schedule at `at`; None before it starts."""
    if profile.kind == "Relative":
        # relative to the start of the session; with none, it starts now
        return (at - session_start).total_seconds() if session_start is not None else 0.0
    if profile.start_schedule is None:
        return None
    offset = (at - profile.start_schedule).total_seconds()
    if offset < 0:
        return None
    if profile.kind == "Recurring":
        return offset % (WEEK_S if profile.recurrency_kind == "Weekly" else DAY_S)
    return offset


def profile_limit(profile: InstalledProfile, at: datetime, *, session_start: datetime | None = None) -> Decimal | None:
    """The limit of one profile at `at`; None when it does not apply then (not yet valid, expired, its
    schedule not started or past its duration)."""
    if (profile.valid_from is not None and at < profile.valid_from) or (
        profile.valid_to is not None and at >= profile.valid_to
    ):
        return None
    offset = _anchor(profile, at, session_start)
    if offset is None or (profile.duration_s is not None and offset >= profile.duration_s):
        return None
    limit = None
    for period in profile.periods:
        if period.start_period_s > offset:
            break
        limit = period.limit_a
    return limit


def _highest(profiles: Iterable[InstalledProfile], at: datetime, session_start: datetime | None) -> Decimal | None:
    for profile in sorted(profiles, key=lambda p: -p.stack_level):
        limit = profile_limit(profile, at, session_start=session_start)
        if limit is not None:
            return limit
    return None


def limits_at(
    installed: Sequence[InstalledProfile],
    connector_id: int,
    at: datetime,
    *,
    transaction_id: int | None = None,
    session_start: datetime | None = None,
) -> tuple[Decimal | None, Decimal | None]:
    """(ChargePointMaxProfile limit, TxProfile-else-TxDefaultProfile limit) for a connector at `at`; None
    where no profile applies. A TxProfile needs the running transaction (`transaction_id`); a TxDefaultProfile
    on the connector itself overrides the one on connector 0."""
    cp_max = _highest(
        (p for p in installed if p.purpose == ProfileKind.CHARGE_POINT_MAX and p.connector_id == 0), at, session_start
    )
    if connector_id == 0:
        return cp_max, None
    tx = None
    if transaction_id is not None:
        tx = _highest(
            (
                p
                for p in installed
                if p.purpose == ProfileKind.TX
                and p.connector_id == connector_id
                and p.transaction_id in (None, transaction_id)
            ),
            at,
            session_start,
        )
    for connector in (connector_id, 0):
        if tx is None:
            defaults = (p for p in installed if p.purpose == ProfileKind.TX_DEFAULT and p.connector_id == connector)
            tx = _highest(defaults, at, session_start)
    return cp_max, tx


def limit_at(
    installed: Sequence[InstalledProfile],
    connector_id: int,
    at: datetime,
    *,
    transaction_id: int | None = None,
    session_start: datetime | None = None,
) -> Decimal | None:
    """The composite limit of a connector at `at` (connector 0: ChargePointMaxProfile); None: no limit."""
    present = [
        limit
        for limit in limits_at(installed, connector_id, at, transaction_id=transaction_id, session_start=session_start)
        if limit is not None
    ]
    return min(present) if present else None


def _change_times(profile: InstalledProfile, start: datetime, end: datetime, anchor: datetime) -> Iterable[datetime]:
    """Moments where this profile's limit may change between `start` and `end`."""
    yield from (t for t in (profile.valid_from, profile.valid_to) if t is not None)
    if profile.kind == "Relative":
        bases = [anchor]
    elif profile.start_schedule is None:
        return
    elif profile.kind == "Recurring":
        every = WEEK_S if profile.recurrency_kind == "Weekly" else DAY_S
        first = max(0, math.floor((start - profile.start_schedule).total_seconds() / every))
        bases = []
        base = profile.start_schedule + timedelta(seconds=first * every)
        while base <= end:
            bases.append(base)
            base += timedelta(seconds=every)
    else:
        bases = [profile.start_schedule]
    for base in bases:
        yield from (base + timedelta(seconds=p.start_period_s) for p in profile.periods)
        if profile.duration_s is not None:
            yield base + timedelta(seconds=profile.duration_s)


def composite_schedule(
    installed: Sequence[InstalledProfile],
    connector_id: int,
    start: datetime,
    duration_s: int,
    *,
    transaction_id: int | None = None,
    session_start: datetime | None = None,
) -> list[tuple[int, Decimal | None]]:
    """GetCompositeSchedule's periods from `start` for `duration_s`: (start_period_s, limit or None for
    unlimited); equal neighbours merged. A Relative profile without a session counts from `start`."""
    end = start + timedelta(seconds=duration_s)
    anchor = session_start or start
    offsets = {0}
    for profile in installed:
        for moment in _change_times(profile, start, end, anchor):
            offset = math.ceil((moment - start).total_seconds())  # evaluate at or just after the change
            if 0 < offset < duration_s:
                offsets.add(offset)
    periods: list[tuple[int, Decimal | None]] = []
    for offset in sorted(offsets):
        limit = limit_at(
            installed,
            connector_id,
            start + timedelta(seconds=offset),
            transaction_id=transaction_id,
            session_start=anchor,
        )
        if not periods or periods[-1][1] != limit:
            periods.append((offset, limit))
    return periods


def share(capacity_a: Decimal, demands_a: Mapping[int, Decimal]) -> dict[int, Decimal]:
    """Connectors share a charge point's capacity: each gets at most its demand, the rest is split equally
    (water-filling); one whose share falls below 6 A pauses (0) and leaves its share to the others, the
    highest connector first."""
    active = {k: d for k, d in demands_a.items() if d > 0}
    while True:
        allocation: dict[int, Decimal] = {}
        remaining, count = capacity_a, len(active)
        for key, demand in sorted(active.items(), key=lambda item: item[1]):
            level = remaining / count
            allocation[key] = min(demand, level)
            remaining -= allocation[key]
            count -= 1
        starving = [k for k, a in allocation.items() if a < MIN_CURRENT_A]
        if not starving:
            return {k: allocation.get(k, Decimal(0)) for k in demands_a}
        del active[max(starving)]


# ---------------------------------------------------------------------------------------------
# scripting


class ProfileAnswer(StrEnum):
    """How a charge point answers SetChargingProfile."""

    ACCEPT = "accept"
    REJECT = "reject"  # Rejected, every time
    NOT_SUPPORTED = "not_supported"  # NotSupported, every time
    TIMEOUT = "timeout"  # never answers
    IGNORE = "ignore"  # Accepted, but keeps drawing its full rating and reports no limit


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a simulated charge point answers SetChargingProfile (accepts everything by default)."""

    answer: ProfileAnswer = ProfileAnswer.ACCEPT
    rejected_purposes: frozenset[str] = frozenset()  # answered Rejected, e.g. {"ChargePointMaxProfile"}

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "answer", ProfileAnswer(self.answer))
        except ValueError:
            names = ", ".join(a.value for a in ProfileAnswer)
            raise InvalidInput(f"behaviour answer must be one of {names}, got {self.answer!r}") from None
        unknown = set(self.rejected_purposes) - {k.value for k in ProfileKind}
        if unknown:
            raise InvalidInput(f"rejected_purposes holds unknown purposes {sorted(unknown)}")
        object.__setattr__(self, "rejected_purposes", frozenset(self.rejected_purposes))


@dataclass(frozen=True, slots=True)
class Car:
    """An EV: the phases it charges on, its own maximum current per phase and the energy it wants."""

    phases: int = 3
    max_current_a: Decimal = Decimal(16)
    energy_need_kwh: Decimal = Decimal(20)

    def __post_init__(self) -> None:
        if self.phases not in (1, 2, 3):
            raise InvalidInput(f"a car charges on 1, 2 or 3 phases, not {self.phases!r}")
        if not Decimal(0) < Decimal(self.max_current_a) <= Decimal(80):
            raise InvalidInput(f"a car's max_current_a must be in (0, 80], got {self.max_current_a!r}")
        if not Decimal(self.energy_need_kwh) >= 0:
            raise InvalidInput(f"energy_need_kwh must be >= 0, got {self.energy_need_kwh!r}")


@dataclass(frozen=True, slots=True)
class Received:
    """A CALL a charge point received: action, payload as on the wire (camelCase; numbers with a fraction
    as Decimal) and time.monotonic() on arrival."""

    action: str
    payload: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class ConnectorState:
    connector_id: int
    status: str
    transaction_id: int | None
    offered_a: Decimal  # what the EVSE offers per phase (Current.Offered)
    drawn_a: Decimal  # what the car draws per phase (Current.Import on the phases in use)
    phases_in_use: int
    register_wh: float  # the connector's energy register
    delivered_wh: float  # in the current session


class SimClock:
    """Simulated time: real time times `speed` (1 in tests; 60 makes a demo minute an hour)."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        if not speed > 0:
            raise InvalidInput(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._origin = time.monotonic()
        self._start = datetime.now(UTC) if start is None else as_utc(start, "start")

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)

    def real_seconds(self, simulated_s: float) -> float:
        return simulated_s / self.speed

    async def sleep(self, simulated_s: float) -> None:
        await asyncio.sleep(max(0.0, simulated_s) / self.speed)


@dataclass
class _Connector:
    id: int
    rating_a: Decimal
    status: str = "Available"
    car: Car | None = None
    id_tag: str | None = None
    transaction_id: int | None = None
    session_start: datetime | None = None
    next_sample: datetime | None = None
    register_wh: float = 0.0
    delivered_wh: float = 0.0
    offered_a: Decimal = Decimal(0)
    drawn_a: Decimal = Decimal(0)
    phases_in_use: int = 0

    @property
    def meter_wh(self) -> int:
        """The register as the meter reports it, in whole Wh."""
        return round(self.register_wh)

    @property
    def remaining_wh(self) -> float:
        return 0.0 if self.car is None else max(0.0, float(self.car.energy_need_kwh) * 1000 - self.delivered_wh)


@dataclass
class _Outgoing:
    payload: Any
    reply: asyncio.Future[Any] | None


# ---------------------------------------------------------------------------------------------
# one simulated charge point


class SimulatedChargePoint(ChargePoint):  # type: ignore[misc]  # the ocpp package ships no type hints
    """One charge point. `connect(url)` opens ws(s)://…/ocpp/{id} (url is the part before the id), boots and
    runs until `close()`; `keep_connected(url)` also reconnects. Time runs on `clock`; physics, meter
    values and heartbeats advance every `tick_s` real seconds."""

    def __init__(
        self,
        charge_point_id: str,
        *,
        connectors: int = 1,
        max_current_a: Decimal = Decimal(16),
        phases: int = 3,
        behaviour: Behaviour | None = None,
        username: str | None = None,
        password: str | None = None,
        clock: SimClock | None = None,
        tick_s: float = 1.0,
        meter_interval_s: int = 60,
        max_periods: int = 100,
        max_stack_level: int = 8,
        max_profiles: int = 20,
        call_timeout_s: float = 30.0,
        register_wh: float = 0.0,
        vendor: str = "gridcap",
        model: str = "Simulator",
    ) -> None:
        check_id(charge_point_id, "charge point id")
        if not 1 <= connectors <= 9 or phases not in (1, 3) or not Decimal(0) < max_current_a <= Decimal(80):
            raise InvalidInput("a simulated charge point has 1-9 connectors, 1 or 3 phases and (0, 80] A")
        super().__init__(charge_point_id, None, response_timeout=call_timeout_s, logger=_LIBRARY_LOG)
        self.rating_a = Decimal(max_current_a)
        self.phases = phases
        self.behaviour = behaviour or Behaviour()
        self.username = charge_point_id if password is not None and username is None else username
        self.password = password
        self.clock = clock or SimClock()
        self.vendor, self.model = vendor, model
        self.received: list[Received] = []
        self.refusals: list[str] = []  # why profiles were Rejected
        self.installed: list[InstalledProfile] = []
        self.ignored: list[dict[str, Any]] = []  # profiles answered Accepted and not applied (IGNORE)
        self.booted = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.configuration: dict[str, tuple[str, bool]] = {  # key -> (value, read-only)
            "ChargeProfileMaxStackLevel": (str(max_stack_level), True),
            "ChargingScheduleAllowedChargingRateUnit": ("Current", True),
            "ChargingScheduleMaxPeriods": (str(max_periods), True),
            "MaxChargingProfilesInstalled": (str(max_profiles), True),
            "SupportedFeatureProfiles": (FEATURE_PROFILES, True),
            "ConnectorPhaseRotation": (",".join(f"{i}.RST" for i in range(connectors + 1)), False),
            "NumberOfConnectors": (str(connectors), True),
            "HeartbeatInterval": ("300", False),
            "MeterValueSampleInterval": (str(meter_interval_s), False),
            "ClockAlignedDataInterval": ("0", False),
            "MeterValuesSampledData": ("Energy.Active.Import.Register", False),
            "MeterValuesAlignedData": ("Energy.Active.Import.Register", False),
        }
        self._tick_s = tick_s
        self._connectors = {n: _Connector(n, self.rating_a, register_wh=register_wh) for n in range(1, connectors + 1)}
        self._websocket: ClientConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self._arrivals = asyncio.Condition()
        self._last = self.clock.now()
        self._next_heartbeat: datetime | None = None

    # -- state for tests and demos

    @property
    def online(self) -> bool:
        return self._websocket is not None and not self.disconnected.is_set()

    @property
    def connector_ids(self) -> list[int]:
        return list(self._connectors)

    def connector(self, connector_id: int) -> ConnectorState:
        c = self._connectors[connector_id]
        return ConnectorState(
            c.id, c.status, c.transaction_id, c.offered_a, c.drawn_a, c.phases_in_use, c.register_wh, c.delivered_wh
        )

    def setting(self, key: str) -> str | None:
        entry = self.configuration.get(key)
        return None if entry is None else entry[0]

    def composite(self, connector_id: int, duration_s: int) -> list[tuple[int, Decimal]]:
        """What GetCompositeSchedule answers now: unlimited periods show the rating."""
        c = self._connectors.get(connector_id)
        rating = self.rating_a if c is None else c.rating_a
        periods = composite_schedule(
            self.installed,
            connector_id,
            self.clock.now(),
            duration_s,
            transaction_id=None if c is None else c.transaction_id,
            session_start=None if c is None else c.session_start,
        )
        capped: list[tuple[int, Decimal]] = []
        for offset, limit in periods:
            value = rating if limit is None else min(limit, rating)
            if not capped or capped[-1][1] != value:
                capped.append((offset, value))
        return capped

    async def wait_for(self, action: str, *, since: float = 0.0, timeout_s: float = 30.0) -> Received:
        """The first `action` received at or after `since` (time.monotonic()), waiting for it to arrive."""

        def found() -> Received | None:
            return next((r for r in self.received if r.action == action and r.at >= since), None)

        async with asyncio.timeout(timeout_s), self._arrivals:
            await self._arrivals.wait_for(lambda: found() is not None)
        return cast(Received, found())

    # -- connection

    async def connect(self, url: str, *, timeout_s: float = 30.0) -> None:
        """Open the websocket to `url`/{id}, start the background work and boot (BootNotification, then a
        StatusNotification per connector). Raises InvalidHandshake / OSError / TimeoutError when it cannot."""
        if self.online:
            raise InvalidInput(f"{self.id} is already connected")
        await self._drop_connection()  # what is left of a lost connection
        headers = None
        if self.password is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers = {"Authorization": f"Basic {token}"}
        websocket = await connect(
            f"{url.rstrip('/')}/{quote(self.id, safe='')}",
            subprotocols=[Subprotocol("ocpp1.6")],
            additional_headers=headers,
            compression=None,
            open_timeout=timeout_s,
        )
        self._websocket = self._connection = websocket
        self.disconnected.clear()
        self.booted.clear()
        self._spawn(self._read(websocket))
        self._spawn(self._send_outbox())
        if self._ticker is None:
            self._last = self.clock.now()
            self._ticker = asyncio.create_task(self._tick_forever())
        try:
            async with asyncio.timeout(timeout_s):
                await self._boot()
        except BaseException:
            await self._drop_connection()
            raise

    async def close(self) -> None:
        """Disconnect and stop all background work. The charge point keeps its state and may connect again."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        await self._drop_connection()

    async def keep_connected(self, url: str, *, retry_s: float = 5.0, gate: asyncio.Semaphore | None = None) -> None:
        """Connect, and connect again after a lost connection, until cancelled (then close)."""
        try:
            while True:
                try:
                    if gate is None:
                        await self.connect(url)
                    else:
                        async with gate:
                            await self.connect(url)
                except (OSError, InvalidHandshake, TimeoutError) as error:
                    log.info("%s could not connect (%s); retrying in %.0f s", self.id, error, retry_s)
                else:
                    await self.disconnected.wait()
                await asyncio.sleep(retry_s * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not a secret
        finally:
            await self.close()

    async def _drop_connection(self) -> None:
        websocket, self._websocket = self._websocket, None
        if websocket is not None:
            await websocket.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.disconnected.set()

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, websocket: ClientConnection) -> None:
        try:
            while True:
                raw = await websocket.recv()
                try:
                    await self.route_message(raw)
                except ConnectionClosed:
                    raise
                except Exception:  # log it and keep the charge point running
                    log.exception("%s: a frame could not be handled", self.id)
        except ConnectionClosed:
            pass
        finally:
            if self._websocket is websocket:
                self.disconnected.set()

    async def route_message(self, raw_msg: str | bytes) -> None:
        try:
            frame = json.loads(raw_msg, parse_float=Decimal)
        except ValueError:
            frame = None
        if not (isinstance(frame, list) and len(frame) == 4 and frame[0] == 2 and isinstance(frame[3], dict)):
            await super().route_message(raw_msg)
            return
        received = Received(str(frame[2]), frame[3], time.monotonic())
        silent = received.action == Action.set_charging_profile and self.behaviour.answer is ProfileAnswer.TIMEOUT
        if not silent:  # the scripted silence: no answer at all
            await super().route_message(raw_msg)
        # recorded once handled, so whoever waits for it sees its effect
        async with self._arrivals:
            self.received.append(received)
            self._arrivals.notify_all()

    async def _send_outbox(self) -> None:
        """Sends queued CALLs one at a time, in order; what is unsent when the connection drops goes next time."""
        while True:
            while not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            item = self._outbox[0]
            try:
                result = await self.call(item.payload, suppress=False)
            except ConnectionClosed:
                return
            except (TimeoutError, OCPPError) as error:
                log.warning("%s: %s failed: %s", self.id, type(item.payload).__name__, error)
                self._outbox.popleft()
                if item.reply is not None and not item.reply.done():
                    item.reply.set_exception(error)
                continue
            self._outbox.popleft()
            if item.reply is not None and not item.reply.done():
                item.reply.set_result(result)

    def _post(self, payload: Any) -> None:
        """Queue a CALL whose answer nobody waits for."""
        self._outbox.append(_Outgoing(payload, None))
        self._outbox_ready.set()

    async def _request(self, payload: Any) -> Any:
        """Queue a CALL and wait for its answer (however long the charge point stays offline)."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.append(_Outgoing(payload, reply))
        self._outbox_ready.set()
        return await reply

    async def _boot(self) -> None:
        while True:
            answer = await self._request(
                call.BootNotification(charge_point_model=self.model, charge_point_vendor=self.vendor)
            )
            interval = int(answer.interval) if answer.interval else 300
            if answer.status == "Accepted":
                break
            await self.clock.sleep(interval)
        self.configuration["HeartbeatInterval"] = (str(interval), False)
        self._next_heartbeat = self.clock.now() + timedelta(seconds=interval)
        now = self.clock.now()
        self._post_status(0, "Available", now)
        for c in self._connectors.values():
            self._post_status(c.id, c.status, now)
        self.booted.set()

    # -- EV sessions

    async def plug_in(self, connector_id: int, car: Car, id_tag: str = "SIM-TAG") -> int | None:
        """A car arrives: Preparing, Authorize, StartTransaction; it then charges as the limits allow.
        Returns the transaction id, or None when the id tag is refused (the car stays plugged in)."""
        c = self._connectors[connector_id]
        if c.car is not None:
            raise InvalidInput(f"{self.id} connector {connector_id} already has a car; unplug it first")
        now = self.clock.now()
        self._refresh(now)
        c.car, c.id_tag, c.delivered_wh = car, id_tag, 0.0
        c.phases_in_use = min(car.phases, self.phases)
        self._set_status(c, "Preparing", now)
        answer = await self._request(call.Authorize(id_tag=id_tag))
        if answer.id_tag_info["status"] != "Accepted":
            return None
        now = self.clock.now()
        self._refresh(now)
        started = await self._request(
            call.StartTransaction(connector_id=connector_id, id_tag=id_tag, meter_start=c.meter_wh, timestamp=_iso(now))
        )
        c.transaction_id, c.session_start = int(started.transaction_id), now
        c.next_sample = now + timedelta(seconds=self._setting_int("MeterValueSampleInterval"))
        self._refresh(self.clock.now())
        return c.transaction_id

    async def unplug(self, connector_id: int, reason: str = "EVDisconnected") -> None:
        """The car leaves: StopTransaction (with the final register reading), Finishing, Available."""
        c = self._connectors[connector_id]
        now = self.clock.now()
        self._refresh(now)
        transaction_id = c.transaction_id
        c.car, c.id_tag, c.transaction_id, c.session_start, c.next_sample = None, None, None, None, None
        c.phases_in_use = 0
        if transaction_id is not None:
            self._set_status(c, "Finishing", now)
            # a TxProfile lives as long as its transaction
            self.installed = [
                p for p in self.installed if not (p.purpose == ProfileKind.TX and p.connector_id == connector_id)
            ]
            reading = {
                "timestamp": _iso(now),
                "sampled_value": [
                    {
                        "value": str(c.meter_wh),
                        "context": "Transaction.End",
                        "measurand": "Energy.Active.Import.Register",
                        "unit": "Wh",
                    }
                ],
            }
            await self._request(
                call.StopTransaction(
                    meter_stop=c.meter_wh,
                    timestamp=_iso(now),
                    transaction_id=transaction_id,
                    reason=reason,
                    transaction_data=[reading],
                )
            )
        self._refresh(self.clock.now())

    # -- physics

    def _setting_int(self, key: str) -> int:
        try:
            return int(self.configuration[key][0])
        except (KeyError, ValueError):
            return 0

    def _measurands(self, key: str) -> list[str]:
        return [m for m in (self.setting(key) or "").split(",") if m]

    def _advance(self, now: datetime) -> None:
        """Energy flows at the present draw until `now`."""
        seconds = (now - self._last).total_seconds()
        if seconds <= 0:
            return
        for c in self._connectors.values():
            if c.drawn_a > 0 and c.car is not None:
                energy_wh = float(c.drawn_a) * VOLTAGE_V * c.phases_in_use * seconds / 3600
                if energy_wh >= c.remaining_wh:  # full: exactly what it needed
                    c.register_wh += c.remaining_wh
                    c.delivered_wh = float(c.car.energy_need_kwh) * 1000
                else:
                    c.register_wh += energy_wh
                    c.delivered_wh += energy_wh
        self._last = now

    def _refresh(self, now: datetime) -> None:
        """Advance to `now`, then apply the limits in force now: offers, draws and statuses."""
        self._advance(now)
        cp_max, _ = limits_at(self.installed, 0, now)
        capacity = self.rating_a if cp_max is None else min(self.rating_a, cp_max)
        offers: dict[int, Decimal] = {}
        demands: dict[int, Decimal] = {}
        for c in self._connectors.values():
            _, tx = limits_at(self.installed, c.id, now, transaction_id=c.transaction_id, session_start=c.session_start)
            offers[c.id] = min(c.rating_a, capacity) if tx is None else min(c.rating_a, capacity, tx)
            charging = c.car is not None and c.transaction_id is not None and c.remaining_wh > 0
            demands[c.id] = min(offers[c.id], c.car.max_current_a) if charging and c.car is not None else Decimal(0)
        shares = share(capacity, demands)
        for c in self._connectors.values():
            # the EVSE signals its limit, or the car's fair share when that is lower (0: paused)
            offered = shares[c.id] if shares[c.id] < demands[c.id] else offers[c.id]
            c.offered_a = offered if offered >= MIN_CURRENT_A else Decimal(0)
            c.drawn_a = shares[c.id]
            if c.car is None:
                status = "Available"
            elif c.transaction_id is None:
                status = "Preparing"
            elif c.remaining_wh <= 0:
                status = "SuspendedEV"
            elif c.drawn_a == 0:
                status = "SuspendedEVSE"
            else:
                status = "Charging"
            self._set_status(c, status, now)

    def _set_status(self, c: _Connector, status: str, now: datetime) -> None:
        if c.status != status:
            c.status = status
            self._post_status(c.id, status, now)

    def _post_status(self, connector_id: int, status: str, now: datetime) -> None:
        self._post(
            call.StatusNotification(connector_id=connector_id, error_code="NoError", status=status, timestamp=_iso(now))
        )

    def _sampled_values(self, c: _Connector, measurands: Sequence[str], context: str) -> list[dict[str, str]]:
        values: list[dict[str, str]] = []
        for measurand in measurands:
            base = {"context": context, "measurand": measurand, "location": "Outlet"}
            if measurand == "Energy.Active.Import.Register":
                values.append({**base, "value": str(c.meter_wh), "unit": "Wh"})
            elif measurand == "Current.Import":
                for n in range(1, self.phases + 1):
                    drawn = c.drawn_a if n <= c.phases_in_use else Decimal(0)
                    values.append({**base, "value": f"{_tenths(drawn):.1f}", "unit": "A", "phase": f"L{n}"})
            elif measurand == "Current.Offered":
                values.append({**base, "value": f"{_tenths(c.offered_a):.1f}", "unit": "A"})
            elif measurand in ("Power.Active.Import", "Power.Offered"):
                current = c.drawn_a if measurand == "Power.Active.Import" else c.offered_a
                phases = max(c.phases_in_use, 1) if measurand == "Power.Active.Import" else self.phases
                values.append({**base, "value": f"{float(current) * VOLTAGE_V * phases:.0f}", "unit": "W"})
        return values

    def _send_meter_values(self, c: _Connector, at: datetime, measurands: Sequence[str], context: str) -> None:
        values = self._sampled_values(c, measurands, context)
        if values:
            meter_value = [{"timestamp": _iso(at), "sampled_value": values}]
            self._post(call.MeterValues(connector_id=c.id, meter_value=meter_value, transaction_id=c.transaction_id))

    def tick(self) -> None:
        """One step of simulated time: clock-aligned readings at their boundaries, physics, sampled readings
        during transactions, heartbeats."""
        now = self.clock.now()
        interval = self._setting_int("ClockAlignedDataInterval")
        if interval > 0:
            boundary = math.floor(now.timestamp() / interval) * interval
            moment = datetime.fromtimestamp(boundary, UTC)
            if self._last < moment <= now:
                self._refresh(moment)
                for c in self._connectors.values():
                    self._send_meter_values(c, moment, self._measurands("MeterValuesAlignedData"), "Sample.Clock")
        self._refresh(now)
        sample_every = timedelta(seconds=max(1, self._setting_int("MeterValueSampleInterval")))
        for c in self._connectors.values():
            if c.transaction_id is not None and c.next_sample is not None and now >= c.next_sample:
                self._send_meter_values(c, now, self._measurands("MeterValuesSampledData"), "Sample.Periodic")
                c.next_sample = max(c.next_sample + sample_every, now)
        if self.online and self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._post(call.Heartbeat())
            self._next_heartbeat = now + timedelta(seconds=max(1, self._setting_int("HeartbeatInterval")))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.tick()

    # -- handlers (never await a CALL here: the answer would wait behind this handler)

    def _check_profile(self, connector_id: int, profile: Mapping[str, Any], now: datetime) -> InstalledProfile:
        purpose = str(profile.get("charging_profile_purpose"))
        if purpose in self.behaviour.rejected_purposes:
            raise ProfileRefused(f"this charge point does not take a {purpose}")
        if connector_id != 0 and connector_id not in self._connectors:
            raise ProfileRefused(f"there is no connector {connector_id}")
        if purpose == ProfileKind.CHARGE_POINT_MAX and connector_id != 0:
            raise ProfileRefused("a ChargePointMaxProfile belongs on connector 0")
        if purpose == ProfileKind.TX:
            c = self._connectors.get(connector_id)
            wanted = profile.get("transaction_id")
            if c is None or c.transaction_id is None or wanted not in (None, c.transaction_id):
                raise ProfileRefused(f"a TxProfile needs a running transaction on connector {connector_id}")
        if not 0 <= int(profile.get("stack_level", -1)) <= self._setting_int("ChargeProfileMaxStackLevel"):
            raise ProfileRefused("stackLevel is above ChargeProfileMaxStackLevel")
        periods = profile.get("charging_schedule", {}).get("charging_schedule_period") or []
        if len(periods) > self._setting_int("ChargingScheduleMaxPeriods"):
            raise ProfileRefused(f"{len(periods)} periods is more than ChargingScheduleMaxPeriods")
        new = parse_profile(connector_id, profile, now)
        if len(install(self.installed, new)) > self._setting_int("MaxChargingProfilesInstalled"):
            raise ProfileRefused("MaxChargingProfilesInstalled reached")
        return new

    @_on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any]
    ) -> call_result.SetChargingProfile:
        if self.behaviour.answer is ProfileAnswer.REJECT:
            return call_result.SetChargingProfile(status="Rejected")
        if self.behaviour.answer is ProfileAnswer.NOT_SUPPORTED:
            return call_result.SetChargingProfile(status="NotSupported")
        now = self.clock.now()
        try:
            new = self._check_profile(connector_id, cs_charging_profiles, now)
        except ProfileRefused as refusal:
            log.info("%s rejected a charging profile: %s", self.id, refusal)
            self.refusals.append(str(refusal))
            return call_result.SetChargingProfile(status="Rejected")
        if self.behaviour.answer is ProfileAnswer.IGNORE:
            self.ignored.append(cs_charging_profiles)
        else:
            self._refresh(now)
            self.installed = install(self.installed, new)
            self._refresh(now)
        return call_result.SetChargingProfile(status="Accepted")

    @_on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,  # noqa: A002 - the OCPP field name
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
    ) -> call_result.ClearChargingProfile:
        now = self.clock.now()
        self._refresh(now)
        self.installed, removed = clear(
            self.installed,
            profile_id=id,
            connector_id=connector_id,
            purpose=charging_profile_purpose,
            stack_level=stack_level,
        )
        self._refresh(now)
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @_on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None
    ) -> call_result.GetCompositeSchedule:
        if charging_rate_unit not in (None, "A") or (connector_id != 0 and connector_id not in self._connectors):
            return call_result.GetCompositeSchedule(status="Rejected")
        now = self.clock.now()
        periods = self.composite(connector_id, duration)
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=_iso(now),
            charging_schedule={
                "duration": duration,
                "start_schedule": _iso(now),
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": s, "limit": _tenths(limit)} for s, limit in periods],
            },
        )

    @_on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> call_result.GetConfiguration:
        wanted = key or list(self.configuration)
        known = [k for k in wanted if k in self.configuration]
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": self.configuration[k][1], "value": self.configuration[k][0]} for k in known
            ],
            unknown_key=[k for k in wanted if k not in self.configuration] or None,
        )

    @_on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        entry = self.configuration.get(key)
        if entry is None:
            return call_result.ChangeConfiguration(status="NotSupported")
        if entry[1] or not _valid_setting(key, value):
            return call_result.ChangeConfiguration(status="Rejected")
        self.configuration[key] = (value, False)
        if key == "HeartbeatInterval":
            self._next_heartbeat = self.clock.now() + timedelta(seconds=max(1, int(value)))
        return call_result.ChangeConfiguration(status="Accepted")


def _valid_setting(key: str, value: str) -> bool:
    if key in ("HeartbeatInterval", "MeterValueSampleInterval", "ClockAlignedDataInterval"):
        return value.isdigit() and (int(value) > 0 or key == "ClockAlignedDataInterval")
    if key in ("MeterValuesSampledData", "MeterValuesAlignedData"):
        return all(m.strip() in SUPPORTED_MEASURANDS for m in value.split(",") if m.strip())
    return True


# ---------------------------------------------------------------------------------------------
# fleets


@dataclass(frozen=True, slots=True)
class ChargePointSpec:
    id: str
    connectors: int = 1
    max_current_a: Decimal = Decimal(16)
    phases: int = 3
    behaviour: Behaviour = field(default_factory=Behaviour)
    username: str | None = None
    password: str | None = None


def fleet_specs(
    count: int, *, prefix: str = "sim", seed: int = 0, password: str | None = None
) -> list[ChargePointSpec]:
    """`count` charge points {prefix}-0001…: mostly one connector at 16 A, some with two, some at 32 A."""
    rng = random.Random(seed)  # noqa: S311 - simulation, not secrets
    specs = []
    for n in range(1, count + 1):
        specs.append(
            ChargePointSpec(
                id=f"{prefix}-{n:04d}",
                connectors=2 if rng.random() < 0.3 else 1,
                max_current_a=Decimal(32) if rng.random() < 0.2 else Decimal(16),
                password=password,
            )
        )
    return specs


def random_car(rng: random.Random) -> Car:
    """A mix of cars: a third charge on one phase; most take 16 A, some 32 A; they need 5-45 kWh."""
    phases = 1 if rng.random() < 1 / 3 else 3
    max_current = Decimal(32) if rng.random() < 0.25 else Decimal(16)
    need = Decimal(rng.randint(5, 45))
    return Car(phases=phases, max_current_a=max_current, energy_need_kwh=need)


class Fleet:
    """Many simulated charge points in one event loop. `async with Fleet(...) as fleet:` connects them all
    (at most `connect_concurrency` handshakes at once) and waits until each booted; they reconnect when
    their connection drops. With `sessions`, cars arrive at random (seeded) and leave after a while."""

    def __init__(
        self,
        specs: Sequence[ChargePointSpec],
        url: str,
        *,
        clock: SimClock | None = None,
        seed: int = 0,
        sessions: bool = False,
        mean_idle_s: float = 3600.0,
        mean_stay_s: float = 4 * 3600.0,
        tick_s: float = 1.0,
        meter_interval_s: int = 60,
        call_timeout_s: float = 30.0,
        connect_concurrency: int = 50,
        retry_s: float = 5.0,
    ) -> None:
        ids = [s.id for s in specs]
        if len(set(ids)) != len(ids):
            raise InvalidInput("every charge point in a fleet needs its own id")
        self.url = url
        self.clock = clock or SimClock()
        self.seed = seed
        self.sessions = sessions
        self.mean_idle_s, self.mean_stay_s = mean_idle_s, mean_stay_s
        self.retry_s = retry_s
        self._gate = asyncio.Semaphore(connect_concurrency)
        self.charge_points: dict[str, SimulatedChargePoint] = {
            s.id: SimulatedChargePoint(
                s.id,
                connectors=s.connectors,
                max_current_a=s.max_current_a,
                phases=s.phases,
                behaviour=s.behaviour,
                username=s.username,
                password=s.password,
                clock=self.clock,
                tick_s=tick_s,
                meter_interval_s=meter_interval_s,
                call_timeout_s=call_timeout_s,
                register_wh=float(random.Random(f"{seed}:{s.id}").randint(0, 5_000_000)),  # noqa: S311
            )
            for s in specs
        }
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, timeout_s: float = 120.0) -> None:
        """Connect every charge point and wait until each has booted."""
        for cp in self.charge_points.values():
            self._tasks.append(asyncio.create_task(cp.keep_connected(self.url, retry_s=self.retry_s, gate=self._gate)))
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(cp.booted.wait() for cp in self.charge_points.values()))
        except TimeoutError:
            booted = sum(cp.booted.is_set() for cp in self.charge_points.values())
            await self.stop()
            raise TimeoutError(
                f"{booted} of {len(self.charge_points)} charge points booted within {timeout_s:.0f} s; "
                f"is the central system at {self.url} running and does it know these ids?"
            ) from None
        if self.sessions:
            for cp in self.charge_points.values():
                for connector in cp.connector_ids:
                    rng = random.Random(f"{self.seed}:{cp.id}:{connector}")  # noqa: S311
                    self._tasks.append(asyncio.create_task(self._drive(cp, connector, rng)))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(cp.close() for cp in self.charge_points.values()), return_exceptions=True)

    async def __aenter__(self) -> "Fleet":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set (or this task is cancelled), then disconnect cleanly."""
        async with self:
            await stop.wait()

    async def wait_all(self, action: str, *, since: float = 0.0, timeout_s: float = 60.0) -> dict[str, Received]:
        """Waits until every charge point received `action` at or after `since` (time.monotonic())."""
        async with asyncio.timeout(timeout_s):
            found = await asyncio.gather(
                *(cp.wait_for(action, since=since, timeout_s=timeout_s) for cp in self.charge_points.values())
            )
        return dict(zip(self.charge_points, found, strict=True))

    async def _drive(self, cp: SimulatedChargePoint, connector: int, rng: random.Random) -> None:
        """Cars come and go on one connector."""
        n = 0
        while True:
            await self.clock.sleep(rng.expovariate(1 / self.mean_idle_s))
            n += 1
            await cp.plug_in(connector, random_car(rng), id_tag=f"{cp.id}-{connector}-{n}"[:20])
            await self.clock.sleep(min(max(rng.expovariate(1 / self.mean_stay_s), 900.0), 12 * 3600.0))
            await cp.unplug(connector)


async def run_fleet(
    specs: Sequence[ChargePointSpec],
    url: str,
    *,
    stop: asyncio.Event | None = None,
    speed: float = 1.0,
    seed: int = 0,
    sessions: bool = True,
    **options: Any,
) -> None:
    """Run `specs` against the central system at `url` (e.g. ws://127.0.0.1:9000/ocpp) until `stop` is set
    or the task is cancelled. `speed` > 1 runs simulated time faster (demos); options go to Fleet."""
    fleet = Fleet(specs, url, clock=SimClock(speed), seed=seed, sessions=sessions, **options)
    await fleet.run(stop or asyncio.Event())


__all__ = [
    "Behaviour",
    "Car",
    "ChargePointSpec",
    "ConnectorState",
    "Fleet",
    "InstalledProfile",
    "ProfileAnswer",
    "ProfileRefused",
    "Received",
    "SchedulePeriod",
    "SimClock",
    "SimulatedChargePoint",
    "clear",
    "composite_schedule",
    "fleet_specs",
    "install",
    "limit_at",
    "limits_at",
    "parse_profile",
    "profile_limit",
    "random_car",
    "run_fleet",
    "share",
]
