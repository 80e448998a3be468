"""Measurement, tag and field names of the points written to InfluxDB for monitoring.

Every measurement the service writes back starts with the setting `results_prefix` ("gridcap_" by
default): `measurement(prefix)` gives the full name. The measured cable load the forecasts read is
named by settings (`load_measurement`, `load_field`, `load_cable_tag`), not here: it belongs to
whoever measures the grid.
"""

from dataclasses import dataclass

DEFAULT_PREFIX = "gridcap_"


class Named:
    """A measurement: its `name`, and its full name with a deployment's prefix."""

    name: str

    def measurement(self, prefix: str = DEFAULT_PREFIX) -> str:
        return f"{prefix}{self.name}"


@dataclass(frozen=True)
class Forecast(Named):
    """One point per cable, forecast issue and block: the base-load forecast and its band."""

    name: str = "forecast"
    # tags
    cable: str = "cable"
    issued_at: str = "issued_at"  # ISO 8601: each refresh is its own series
    # fields (in the cable's unit)
    p50: str = "p50"
    lower: str = "lower"
    upper: str = "upper"
    model: str = "model"  # a string field: the model that made the forecast


@dataclass(frozen=True)
class Capacity(Named):
    """One point per cable and horizon block: what allocation works with."""

    name: str = "capacity"
    # tags
    cable: str = "cable"
    unit: str = "unit"  # the cable's unit: A or KW
    # fields (in the cable's unit, apart from pending and congested)
    limit: str = "limit"  # the effective limit of the block
    base_load: str = "base_load"  # the base load allocation uses (the forecast's upper bound)
    margin: str = "margin"
    available: str = "available"  # limit - base load - margin
    allocated: str = "allocated"  # the sum of the CPOs' budgets
    unallocated: str = "unallocated"
    pending: str = "pending"  # an integer: requests waiting for capacity
    congested: str = "congested"  # a boolean: requests pending, or less available than the guaranteed minimums


@dataclass(frozen=True)
class Budget(Named):
    """One point per cable, CPO and horizon block: the budget the CPO holds."""

    name: str = "budget"
    cable: str = "cable"
    cpo: str = "cpo"
    unit: str = "unit"
    budget: str = "budget"


@dataclass(frozen=True)
class Usage(Named):
    """One point per cable, CPO and block: the average EV load the CPO reported."""

    name: str = "usage"
    cable: str = "cable"
    cpo: str = "cpo"
    unit: str = "unit"
    usage: str = "usage"


@dataclass(frozen=True)
class ForecastQuality(Named):
    """One point per cable and local day of a backtest (time: the day's start): how good the day-ahead
    forecast was. Written by every backtest; a later one overwrites the days it covers again."""

    name: str = "forecast_quality"
    cable: str = "cable"
    model: str = "model"  # a string field, not a tag: a later backtest may choose another one for the day
    rmae: str = "rmae"  # mean absolute error / the spread of the day's load (P99 - P1)
    coverage: str = "coverage"  # share of measured blocks inside the forecast band (0..1)
    mae: str = "mae"  # in the cable's unit
    overload_rate: str = "overload_rate"  # share of blocks where the load exceeded what was available


@dataclass(frozen=True)
class LimitChange(Named):
    """One point per decision that changed a cable's limit (time: when it was taken), for annotations."""

    name: str = "limit_change"
    cable: str = "cable"
    action: str = "action"  # tag: cable_created, cable_updated, override_added, override_removed
    text: str = "text"  # a string field: who did what, as audited
    actor: str = "actor"  # a string field


@dataclass(frozen=True)
class OscpTraffic(Named):
    """One point per minute, CPO, direction, operation and outcome: the OSCP messages recorded."""

    name: str = "oscp"
    cpo: str = "cpo"  # "-" when the caller was not identified
    direction: str = "direction"  # in | out
    operation: str = "operation"
    outcome: str = "outcome"  # ok, a fault code, RateLimited, Unreachable
    count: str = "count"  # an integer
    mean_ms: str = "mean_ms"
    p95_ms: str = "p95_ms"
    max_ms: str = "max_ms"


@dataclass(frozen=True)
class Allocation(Named):
    """One point per minute, cable, CPO and reason: how the CPO's budgets changed (the ledger)."""

    name: str = "allocation"
    cable: str = "cable"
    cpo: str = "cpo"
    reason: str = "reason"  # service.domain.allocation.Reason: request_granted, handed_back, ...
    unit: str = "unit"  # a string field, not a tag: a minute exported again must hit the same series
    changes: str = "changes"  # an integer: budget changes (one per block)
    increase: str = "increase"  # sum of the increases, in the cable's unit
    decrease: str = "decrease"  # sum of the decreases (a positive number)


@dataclass(frozen=True)
class Requests(Named):
    """One point per minute, cable, CPO and status: RequestAdjustedCapacity decisions."""

    name: str = "requests"
    cable: str = "cable"
    cpo: str = "cpo"
    status: str = "status"  # Accepted, PartiallyAccepted, Rejected
    count: str = "count"  # an integer


@dataclass(frozen=True)
class CpoState(Named):
    """One point per CPO at every export: its heartbeat and its owed pushes."""

    name: str = "cpo_state"
    cpo: str = "cpo"
    online: str = "online"  # an integer: 1 heard from within 3 heartbeat intervals, else 0
    heartbeat_age_s: str = "heartbeat_age_s"  # since it was last heard from (absent: never)
    outbox_depth: str = "outbox_depth"  # an integer: pushes owed
    push_attempts: str = "push_attempts"  # an integer: the most attempts an owed push has had (0: none failed)
    oldest_push_age_s: str = "oldest_push_age_s"  # age of the oldest owed push (0: none)


@dataclass(frozen=True)
class JobRun(Named):
    """One point per run of a scheduled job (time: its start)."""

    name: str = "job"
    job: str = "job"  # the job's name as the scheduler lists it
    duration_s: str = "duration_s"
    ok: str = "ok"  # an integer: 1 finished, 0 raised


FORECAST = Forecast()
CAPACITY = Capacity()
BUDGET = Budget()
USAGE = Usage()
FORECAST_QUALITY = ForecastQuality()
LIMIT_CHANGE = LimitChange()
OSCP = OscpTraffic()
ALLOCATION = Allocation()
REQUESTS = Requests()
CPO_STATE = CpoState()
JOB = JobRun()
