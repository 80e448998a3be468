"""OSCP 1.0 messages as typed values, named as in the contract (wire names only at the edge).

Pure: no I/O, no framework. The SOAP and JSON codecs turn wire documents into these and back
through `service.oscp.v1.wire`; handlers see nothing else.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

NAMESPACE = "urn://OSCP/2015/04/"
MAX_BLOCKS = 192


class PhaseIndicator(StrEnum):
    ONE = "ONE"
    TWO = "TWO"
    THREE = "THREE"
    ALL = "ALL"


class UnitOfMeasure(StrEnum):
    A = "A"
    W = "W"
    KW = "KW"


class ResponseStatus(StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"


class AdjustStatus(StrEnum):
    ACCEPTED = "Accepted"
    PARTIALLY_ACCEPTED = "PartiallyAccepted"
    REJECTED = "Rejected"


class FaultCode(StrEnum):
    UNKNOWN_CABLE = "UnknownCable"
    NOT_SUBSCRIBED = "NotSubscribed"
    INVALID_REQUEST = "InvalidRequest"
    NOT_AUTHORIZED = "NotAuthorized"
    INTERNAL_ERROR = "InternalError"


class OscpFault(Exception):
    """A fault the peer must see: the codecs render it as a SOAP Fault or a JSON error."""

    def __init__(self, code: FaultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type["OscpFault"], tuple[FaultCode, str]]:
        return (type(self), (self.code, self.message))  # picklable, e.g. across worker processes


# --- types -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForecastedBlock:
    capacity: Decimal
    phase: PhaseIndicator
    unit: UnitOfMeasure
    start_time: datetime
    end_time: datetime


@dataclass(frozen=True, slots=True)
class UsageBlock:
    average_usage: Decimal
    phase: PhaseIndicator
    unit: UnitOfMeasure
    start_time: datetime
    end_time: datetime


@dataclass(frozen=True, slots=True)
class BackupCapacity:
    capacity: Decimal
    phase: PhaseIndicator
    unit: UnitOfMeasure


@dataclass(frozen=True, slots=True)
class CableCapacityForecast:
    cable_id: str
    forecasted_block: tuple[ForecastedBlock, ...]
    backup_capacity: BackupCapacity | None = None


# --- messages: operation X has XRequest and XResponse ------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestAdjustedCapacityRequest:
    cable_id: str
    requested_block: tuple[ForecastedBlock, ...]


@dataclass(frozen=True, slots=True)
class RequestAdjustedCapacityResponse:
    status: AdjustStatus
    capacity_forecast: CableCapacityForecast
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateAggregatedUsageRequest:
    cable_id: str
    usage_block: tuple[UsageBlock, ...]


@dataclass(frozen=True, slots=True)
class UpdateAggregatedUsageResponse:
    status: ResponseStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class GetCapacityForecastRequest:
    cable_id: str | None = None


@dataclass(frozen=True, slots=True)
class GetCapacityForecastResponse:
    capacity_forecast: tuple[CableCapacityForecast, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateCableCapacityForecastRequest:
    capacity_forecast: tuple[CableCapacityForecast, ...]


@dataclass(frozen=True, slots=True)
class UpdateCableCapacityForecastResponse:
    status: ResponseStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    pass


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    current_time: datetime
    heartbeat_interval: int  # seconds


Message = (
    RequestAdjustedCapacityRequest
    | RequestAdjustedCapacityResponse
    | UpdateAggregatedUsageRequest
    | UpdateAggregatedUsageResponse
    | GetCapacityForecastRequest
    | GetCapacityForecastResponse
    | UpdateCableCapacityForecastRequest
    | UpdateCableCapacityForecastResponse
    | HeartbeatRequest
    | HeartbeatResponse
)


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    request: type
    response: type


DSO_OPERATIONS = {
    op.name: op
    for op in (
        Operation("RequestAdjustedCapacity", RequestAdjustedCapacityRequest, RequestAdjustedCapacityResponse),
        Operation("UpdateAggregatedUsage", UpdateAggregatedUsageRequest, UpdateAggregatedUsageResponse),
        Operation("GetCapacityForecast", GetCapacityForecastRequest, GetCapacityForecastResponse),
        Operation("Heartbeat", HeartbeatRequest, HeartbeatResponse),
    )
}
CPO_OPERATIONS = {
    op.name: op
    for op in (
        Operation(
            "UpdateCableCapacityForecast", UpdateCableCapacityForecastRequest, UpdateCableCapacityForecastResponse
        ),
        Operation("Heartbeat", HeartbeatRequest, HeartbeatResponse),
    )
}
