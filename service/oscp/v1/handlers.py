"""The DSO's OSCP 1.0 operations: typed request in, use case, typed response out.

One handler per operation in an explicit table; SOAP and JSON share it, and both reach the
decisions only through the use cases the REST API calls. Domain errors become OscpFaults here,
in one table.
"""

from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

from service.domain.blocks import BLOCK
from service.domain.errors import (
    Conflict,
    GridcapError,
    InvalidInput,
    NotAuthorized,
    NotFound,
    NotSubscribed,
    UnknownCable,
    UnknownCpo,
)
from service.domain.units import Unit
from service.oscp.v1 import messages as m
from service.usecases import Context
from service.usecases import oscp as uc
from service.usecases.capacity import BlockQuantity

Handler = Callable[[Context, str, Any], Any]


def _unit(unit: Unit) -> m.UnitOfMeasure:
    return m.UnitOfMeasure.A if unit is Unit.AMPERE else m.UnitOfMeasure.KW


def capacity_forecast(forecast: uc.CpoForecast) -> m.CableCapacityForecast:
    """A CPO's budgets as the contract's CableCapacityForecast, always with its backup capacity.
    A cable in A has one budget per phase (phase ALL: this current on each); in KW the total."""
    unit = _unit(forecast.unit)
    return m.CableCapacityForecast(
        cable_id=forecast.cable_id,
        forecasted_block=tuple(
            m.ForecastedBlock(budget, m.PhaseIndicator.ALL, unit, start, start + BLOCK)
            for start, budget in sorted(forecast.budgets.items())
        ),
        backup_capacity=m.BackupCapacity(forecast.backup, m.PhaseIndicator.ALL, unit),
    )


def _quantities(blocks: Sequence[m.ForecastedBlock | m.UsageBlock], field: str) -> list[BlockQuantity]:
    out = []
    for i, block in enumerate(blocks):
        if block.phase is not m.PhaseIndicator.ALL:
            raise InvalidInput(
                f"{field}[{i}].phase is {block.phase}; this DSO allocates per cable, all phases alike: send phase ALL"
            )
        value = block.capacity if isinstance(block, m.ForecastedBlock) else block.average_usage
        out.append(BlockQuantity(block.start_time, block.end_time, value, block.unit.value))
    return out


def request_adjusted_capacity(
    ctx: Context, cpo_id: str, req: m.RequestAdjustedCapacityRequest
) -> m.RequestAdjustedCapacityResponse:
    outcome = uc.request(ctx, cpo_id, req.cable_id, _quantities(req.requested_block, "requestedBlock"))
    return m.RequestAdjustedCapacityResponse(
        status=m.AdjustStatus(outcome.result.status.value),
        capacity_forecast=capacity_forecast(outcome.forecast),
        reason=outcome.reason,
    )


def update_aggregated_usage(
    ctx: Context, cpo_id: str, req: m.UpdateAggregatedUsageRequest
) -> m.UpdateAggregatedUsageResponse:
    uc.report_usage(ctx, cpo_id, req.cable_id, _quantities(req.usage_block, "usageBlock"))
    return m.UpdateAggregatedUsageResponse(status=m.ResponseStatus.ACCEPTED)


def get_capacity_forecast(
    ctx: Context, cpo_id: str, req: m.GetCapacityForecastRequest
) -> m.GetCapacityForecastResponse:
    return m.GetCapacityForecastResponse(
        capacity_forecast=tuple(capacity_forecast(f) for f in uc.forecasts(ctx, cpo_id, req.cable_id))
    )


def heartbeat(ctx: Context, cpo_id: str, _req: m.HeartbeatRequest) -> m.HeartbeatResponse:
    uc.seen(ctx, cpo_id)
    interval = int(ctx.policy.heartbeat_interval.total_seconds())
    return m.HeartbeatResponse(current_time=ctx.clock().astimezone(UTC), heartbeat_interval=interval)


DSO_HANDLERS: dict[type, Handler] = {
    m.RequestAdjustedCapacityRequest: request_adjusted_capacity,
    m.UpdateAggregatedUsageRequest: update_aggregated_usage,
    m.GetCapacityForecastRequest: get_capacity_forecast,
    m.HeartbeatRequest: heartbeat,
}


# Domain errors as the contract's faults. NotAuthorized for an unknown CPO: the caller's
# credentials named a CPO that no longer exists.
_FAULTS: list[tuple[type[GridcapError], m.FaultCode]] = [
    (UnknownCable, m.FaultCode.UNKNOWN_CABLE),
    (NotSubscribed, m.FaultCode.NOT_SUBSCRIBED),
    (UnknownCpo, m.FaultCode.NOT_AUTHORIZED),
    (NotAuthorized, m.FaultCode.NOT_AUTHORIZED),
    (NotFound, m.FaultCode.INVALID_REQUEST),
    (InvalidInput, m.FaultCode.INVALID_REQUEST),
    (Conflict, m.FaultCode.INVALID_REQUEST),
]


def fault_of(error: GridcapError, side: str = "DSO") -> m.OscpFault:
    for kind, code in _FAULTS:
        if isinstance(error, kind):
            return m.OscpFault(code, error.message)
    return m.OscpFault(m.FaultCode.INTERNAL_ERROR, f"the {side} could not process the request; retry later")
