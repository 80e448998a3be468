"""Measurement, tag and field names of the points written to InfluxDB for monitoring.

Every measurement the service writes back starts with the setting `results_prefix` ("gridcap_" by
default): `measurement(prefix)` gives the full name. The measured cable load the forecasts read is
named by settings (`load_measurement`, `load_field`, `load_cable_tag`), not here: it belongs to
whoever measures the grid.
"""

from dataclasses import dataclass

DEFAULT_PREFIX = "gridcap_"


@dataclass(frozen=True)
class Forecast:
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

    def measurement(self, prefix: str = DEFAULT_PREFIX) -> str:
        return f"{prefix}{self.name}"


@dataclass(frozen=True)
class Capacity:
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

    def measurement(self, prefix: str = DEFAULT_PREFIX) -> str:
        return f"{prefix}{self.name}"


@dataclass(frozen=True)
class Budget:
    """One point per cable, CPO and horizon block: the budget the CPO holds."""

    name: str = "budget"
    cable: str = "cable"
    cpo: str = "cpo"
    unit: str = "unit"
    budget: str = "budget"

    def measurement(self, prefix: str = DEFAULT_PREFIX) -> str:
        return f"{prefix}{self.name}"


@dataclass(frozen=True)
class Usage:
    """One point per cable, CPO and block: the average EV load the CPO reported."""

    name: str = "usage"
    cable: str = "cable"
    cpo: str = "cpo"
    unit: str = "unit"
    usage: str = "usage"

    def measurement(self, prefix: str = DEFAULT_PREFIX) -> str:
        return f"{prefix}{self.name}"


FORECAST = Forecast()
CAPACITY = Capacity()
BUDGET = Budget()
USAGE = Usage()
