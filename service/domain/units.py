"""Capacity quantities and the one kW <-> A conversion.

Every capacity of a cable (limit, margin, base load, budgets, minimums) is a Decimal in the
cable's own unit, kept on a 0.001 grid. Budgets are always rounded down to that grid, so a sum of
rounded shares never exceeds the whole it was cut from.
"""

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum

from service.domain.errors import InvalidInput

GRID = Decimal("0.001")
ZERO = Decimal(0)
MAX_QUANTITY = Decimal("999999999.999")  # what the database columns hold


class Unit(StrEnum):
    AMPERE = "A"  # current per phase
    KILOWATT = "KW"  # total power over all phases


def floor_grid(value: Decimal) -> Decimal:
    return value.quantize(GRID, rounding=ROUND_FLOOR)


def ceil_grid(value: Decimal) -> Decimal:
    return value.quantize(GRID, rounding=ROUND_CEILING)


def to_capacity(value: object, field: str) -> Decimal:
    """A finite, non-negative quantity on the 0.001 grid (finer digits are rounded down)."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{field} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise InvalidInput(f"{field} must be a finite number, got {value!r}")
    if number < 0:
        raise InvalidInput(f"{field} must be >= 0, got {number}")
    if number > MAX_QUANTITY:
        raise InvalidInput(f"{field} must be at most {MAX_QUANTITY}, got {number}")
    return floor_grid(number) + ZERO  # + ZERO turns -0 into 0


def power_kw_from_current_a(current_a: Decimal, *, phases: int, voltage_v: Decimal) -> Decimal:
    """Total power of a balanced load drawing `current_a` on each of `phases` phases."""
    return current_a * phases * voltage_v / 1000


def current_a_from_power_kw(power_kw: Decimal, *, phases: int, voltage_v: Decimal) -> Decimal:
    """Per-phase current of a balanced load of `power_kw` spread over `phases` phases."""
    return power_kw * 1000 / (phases * voltage_v)


def in_cable_unit(value: Decimal, unit: str, cable_unit: Unit, field: str) -> Decimal:
    """A quantity sent in `unit` as one in the cable's unit: A for cables managed in A (current per
    phase); KW or W for cables managed in KW. Current and power do not convert without a power
    factor, so a mismatch is refused rather than guessed."""
    if cable_unit is Unit.AMPERE and unit == "A":
        return value
    if cable_unit is Unit.KILOWATT and unit in ("KW", "W"):
        return to_capacity(value / 1000, field) if unit == "W" else value
    accepted = "A" if cable_unit is Unit.AMPERE else "KW or W"
    raise InvalidInput(f"{field} is in {unit}, but the cable is managed in {cable_unit}; send {accepted}")
