"""The CPO adapter's side of OSCP 1.0: the endpoint the DSO calls, and the calls to the DSO.

The endpoint is the same gateway as the DSO's (codec, credentials, rate limit, hardening), with the CPO
role: UpdateCableCapacityForecast and Heartbeat. The DSO identifies itself with one username and password
(the DSO's `oscp_username`/`oscp_password`), compared in constant time.

Outbound calls go through OscpClient (zeep for SOAP, the JSON codec for JSON) and are recorded.
"""

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from service.domain.blocks import BLOCK, aligned
from service.domain.errors import InvalidInput, NotAuthorized
from service.domain.model import check_id
from service.oscp.v1 import messages as m
from service.oscp.v1.client import CallFailed, OscpClient
from service.oscp.v1.gateway import WSDL_DIR, Role
from service.security import same_secret

log = logging.getLogger("gridcap.cpo")
DSO_CALLER = "dso"
_R = TypeVar("_R")
MAX_RECORDS = 2_000


@dataclass(frozen=True, slots=True)
class ReceivedBudgets:
    """One cable's budgets as the DSO sent them: per block in the cable's unit, and the backup capacity."""

    cable_id: str
    unit: str  # A | KW
    blocks: dict[datetime, Decimal]
    backup: Decimal | None


class DsoUnreachable(Exception):
    """A call to the DSO failed; the message says which and why."""


class DsoRefused(DsoUnreachable):
    """The DSO answered with a fault: sending the same again will not help."""


@dataclass(frozen=True, slots=True)
class Record:
    at: datetime
    direction: str  # in | out
    operation: str
    outcome: str
    http_status: int | None
    duration_ms: float
    detail: str | None


class MessageLog:
    """Every OSCP message in and out, the last MAX_RECORDS kept in memory and all of them counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def record(
        self,
        *,
        direction: str,
        cpo_id: str | None,
        binding: str,
        operation: str,
        outcome: str,
        http_status: int | None,
        started: float,
        detail: str | None = None,
    ) -> None:
        entry = Record(
            datetime.now(UTC),
            direction,
            operation[:64],
            outcome,
            http_status,
            round((time.perf_counter() - started) * 1000, 3),
            detail[:500] if detail else None,
        )
        with self._lock:
            self._records.append(entry)
            self._counts[(direction, entry.operation, outcome)] += 1

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in list(self._records)[-limit:]][::-1]

    def counts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"direction": d, "operation": op, "outcome": outcome, "count": n}
                for (d, op, outcome), n in sorted(self._counts.items())
            ]


def budgets_of(forecast: m.CableCapacityForecast) -> ReceivedBudgets:
    """A CableCapacityForecast as budgets per block. Refused (InvalidInput, nothing kept) when blocks mix
    units, are not single 15-minute blocks, or repeat a block with another phase in an inconsistent way.
    Per-phase budgets in A (ONE/TWO/THREE) become the lowest of the phases: without knowing which phase each
    car loads, only the lowest is safe on every phase."""
    check_id(forecast.cable_id, "cableId")
    units = {b.unit for b in forecast.forecasted_block}
    if forecast.backup_capacity is not None:
        units.add(forecast.backup_capacity.unit)
    if len(units) != 1 or m.UnitOfMeasure.W in units:
        raise InvalidInput(
            f"cable {forecast.cable_id}: every block and the backup capacity must be in one unit, A or KW "
            f"(got {', '.join(sorted(u.value for u in units))})"
        )
    unit = units.pop().value
    blocks: dict[datetime, Decimal] = {}
    for i, block in enumerate(forecast.forecasted_block):
        if block.end_time - block.start_time != BLOCK:
            raise InvalidInput(
                f"cable {forecast.cable_id} forecastedBlock[{i}] spans {block.start_time.isoformat()} to "
                f"{block.end_time.isoformat()}; each block is one quarter hour"
            )
        start = aligned(block.start_time, f"cable {forecast.cable_id} forecastedBlock[{i}].startTime")
        blocks[start] = min(blocks.get(start, block.capacity), block.capacity)
    backup = forecast.backup_capacity.capacity if forecast.backup_capacity is not None else None
    return ReceivedBudgets(forecast.cable_id, unit, blocks, backup)


def cpo_role(
    *,
    receive: Callable[[Sequence[ReceivedBudgets]], None],
    seen: Callable[[], None],
    heartbeat_interval_s: Callable[[], int],
    dso_username: str,
    dso_password: str,
) -> Role:
    """The gateway role of the CPO adapter. `receive` keeps the budgets (raising InvalidInput refuses the
    whole message); `seen` notes the DSO is alive."""

    def authenticate(username: str, password: str) -> str:
        # both compared, always, so the time taken says nothing about which one was wrong
        user_ok = same_secret(username, dso_username)
        password_ok = same_secret(password, dso_password)
        if user_ok and password_ok:
            return DSO_CALLER
        raise NotAuthorized("unknown username or wrong password")

    def handle(_caller: str, message: Any) -> Any:
        if isinstance(message, m.HeartbeatRequest):
            seen()
            return m.HeartbeatResponse(current_time=datetime.now(UTC), heartbeat_interval=heartbeat_interval_s())
        if isinstance(message, m.UpdateCableCapacityForecastRequest):
            receive([budgets_of(f) for f in message.capacity_forecast])
            return m.UpdateCableCapacityForecastResponse(status=m.ResponseStatus.ACCEPTED)
        raise TypeError(f"no handler for {type(message).__name__}")  # the codec only passes CPO operations

    return Role(
        side="CPO",
        wsdl=WSDL_DIR / "oscp-1.0-cpo.wsdl",
        operations=m.CPO_OPERATIONS,
        handle=handle,
        authenticate=authenticate,
        seen=lambda _caller: seen(),
        seen_every_s=5.0,
    )


@dataclass(frozen=True, slots=True)
class Adjusted:
    status: str  # Accepted | PartiallyAccepted | Rejected
    reason: str | None
    budgets: ReceivedBudgets


class DsoLink:
    """Calls to the DSO's OSCP endpoint, each recorded; failures raise DsoUnreachable."""

    def __init__(self, client: OscpClient, log: MessageLog, *, url: str, binding: str) -> None:
        self._client = client
        self.messages = log
        self.url = url
        self.binding = binding

    def heartbeat(self) -> int:
        """The DSO's heartbeat interval in seconds."""
        reply = self._call("Heartbeat", m.HeartbeatRequest(), m.HeartbeatResponse)
        return reply.heartbeat_interval

    def capacity_forecasts(self) -> list[ReceivedBudgets]:
        reply = self._call("GetCapacityForecast", m.GetCapacityForecastRequest(), m.GetCapacityForecastResponse)
        kept = []
        for forecast in reply.capacity_forecast:
            try:
                kept.append(budgets_of(forecast))
            except InvalidInput as exc:  # one cable the adapter cannot keep must not cost it the others
                log.error("the DSO's forecast for cable %s is not kept: %s", forecast.cable_id, exc.message)  # noqa: TRY400
        return kept

    def request(self, cable_id: str, unit: str, blocks: dict[datetime, Decimal]) -> Adjusted:
        """Ask for these budgets (more or less than now): the DSO answers with the budgets it decided."""
        request = m.RequestAdjustedCapacityRequest(cable_id, _blocks(blocks, unit, m.ForecastedBlock))
        reply = self._call("RequestAdjustedCapacity", request, m.RequestAdjustedCapacityResponse)
        return Adjusted(reply.status.value, reply.reason, budgets_of(reply.capacity_forecast))

    def report_usage(self, cable_id: str, unit: str, blocks: dict[datetime, Decimal]) -> None:
        request = m.UpdateAggregatedUsageRequest(cable_id, _blocks(blocks, unit, m.UsageBlock))
        reply = self._call("UpdateAggregatedUsage", request, m.UpdateAggregatedUsageResponse)
        if reply.status is not m.ResponseStatus.ACCEPTED:
            raise DsoRefused(f"the DSO rejected the usage of cable {cable_id}: {reply.reason or 'no reason'}")

    def close(self) -> None:
        self._client.close()

    def _call(self, operation: str, request: m.Message, expected: type[_R]) -> _R:
        started = time.perf_counter()
        try:
            reply = self._client.call(self.url, self.binding, request, peer="dso")
        except CallFailed as exc:
            outcome = exc.fault.code.value if exc.fault else "Unreachable"
            self._record(operation, outcome, started, str(exc))
            # only an unknown or unsubscribed cable is final; a rate limit or a login being changed pass
            refused = exc.fault is not None and exc.fault.code in (
                m.FaultCode.UNKNOWN_CABLE,
                m.FaultCode.NOT_SUBSCRIBED,
            )
            raise (DsoRefused if refused else DsoUnreachable)(str(exc)) from None
        self._record(operation, "ok", started, None)
        if not isinstance(reply, expected):  # the client decodes by operation: a bug if this fails
            raise DsoUnreachable(f"{operation} answered {type(reply).__name__}, not {expected.__name__}")
        return reply

    def _record(self, operation: str, outcome: str, started: float, detail: str | None) -> None:
        self.messages.record(
            direction="out",
            cpo_id=None,
            binding=self.binding,
            operation=operation,
            outcome=outcome,
            http_status=None,
            started=started,
            detail=detail,
        )


def _blocks(blocks: dict[datetime, Decimal], unit: str, kind: Any) -> tuple[Any, ...]:
    wire_unit = m.UnitOfMeasure(unit)
    return tuple(
        kind(value, m.PhaseIndicator.ALL, wire_unit, start, start + BLOCK) for start, value in sorted(blocks.items())
    )
