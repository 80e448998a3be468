"""Cables, CPOs and subscriptions, validated on construction so invalid states cannot exist."""

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum

from service.domain.blocks import aligned
from service.domain.errors import InvalidInput
from service.domain.units import Unit, to_capacity

# Text limits: the sizes of the database columns that hold them.
MAX_NAME, MAX_USERNAME, MAX_ENDPOINT_URL, MAX_REASON = 200, 64, 2000, 1000

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_USERNAME = re.compile(rf"[A-Za-z0-9._@-]{{1,{MAX_USERNAME}}}")
_URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?")


def check_text(value: str, field_name: str, max_length: int) -> str:
    """Printable text a database column can hold: no NUL, no lone surrogates, not too long."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field_name} must not be empty")
    if len(value) > max_length:
        raise InvalidInput(f"{field_name} must be at most {max_length} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidInput(f"{field_name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field_name} must be valid Unicode text (it contains a lone surrogate)") from None
    return value


def check_id(value: str, field_name: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInput(
            f"{field_name} {value!r} is not a valid id: use 1-64 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit"
        )
    return value


def _number(value: object, field_name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"{field_name} must be a number, got {value!r}") from None
    if not number.is_finite() or abs(number) > 10**9:
        raise InvalidInput(f"{field_name} must be a finite number of sensible size, got {value!r}")
    return number


class Binding(StrEnum):
    """How the DSO pushes to a CPO (the gateway issue adds the pushes)."""

    SOAP11 = "soap11"
    SOAP12 = "soap12"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """A limit that replaces the rated limit in [start, end): maintenance, seasonal rating."""

    start: datetime
    end: datetime
    limit: Decimal
    reason: str
    id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", aligned(self.start, "override.start"))
        object.__setattr__(self, "end", aligned(self.end, "override.end"))
        object.__setattr__(self, "limit", to_capacity(self.limit, "override.limit"))
        if self.end <= self.start:
            raise InvalidInput("override.end must be after override.start")
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise InvalidInput("override.reason must say why (e.g. 'maintenance on joint 4')")
        check_text(self.reason, "override.reason", MAX_REASON)

    def covers(self, block_start: datetime) -> bool:
        return self.start <= block_start < self.end


@dataclass(frozen=True, slots=True)
class Cable:
    id: str
    name: str
    unit: Unit
    rated_limit: Decimal
    phases: int
    voltage_v: Decimal
    margin: Decimal = Decimal(0)
    reserve_share: Decimal = Decimal("0.1")
    base_load: Decimal = Decimal(0)  # static base load until forecasts provide one per block
    overrides: tuple[LimitOverride, ...] = field(default=())

    def __post_init__(self) -> None:
        check_id(self.id, "cable id")
        check_text(self.name, "cable name", MAX_NAME)
        try:
            object.__setattr__(self, "unit", Unit(self.unit))
        except ValueError:
            raise InvalidInput(
                f"unit must be 'A' (current per phase) or 'KW' (total power), got {self.unit!r}"
            ) from None
        for name in ("rated_limit", "margin", "base_load"):
            object.__setattr__(self, name, to_capacity(getattr(self, name), name))
        if isinstance(self.phases, bool) or self.phases not in (1, 2, 3):
            raise InvalidInput(f"phases must be 1, 2 or 3, got {self.phases}")
        voltage = _number(self.voltage_v, "voltage_v").quantize(Decimal("0.01"), ROUND_FLOOR)  # as stored
        if voltage <= 0 or voltage > 1000:
            raise InvalidInput(f"voltage_v must be a low-voltage phase voltage such as 230, got {self.voltage_v}")
        object.__setattr__(self, "voltage_v", voltage)
        share = _number(self.reserve_share, "reserve_share").quantize(Decimal("0.0001"), ROUND_FLOOR)  # as stored
        if not Decimal(0) <= share < 1:
            raise InvalidInput(f"reserve_share must be in [0, 1), got {self.reserve_share}")
        object.__setattr__(self, "reserve_share", share)

    def limit_at(self, block_start: datetime) -> Decimal:
        """Effective limit of a block: the lowest override covering it, else the rated limit."""
        covering = [o.limit for o in self.overrides if o.covers(block_start)]
        return min(covering) if covering else self.rated_limit


@dataclass(frozen=True, slots=True)
class Cpo:
    id: str
    name: str
    username: str
    endpoint_url: str
    binding: Binding

    def __post_init__(self) -> None:
        check_id(self.id, "cpo id")
        check_text(self.name, "cpo name", MAX_NAME)
        if not isinstance(self.username, str) or not _USERNAME.fullmatch(self.username):
            raise InvalidInput("username must be 1-64 letters, digits, '.', '_', '@' or '-'")
        if not isinstance(self.endpoint_url, str) or not _URL.fullmatch(self.endpoint_url):
            raise InvalidInput(f"endpoint_url must be an http(s) URL, got {self.endpoint_url!r}")
        check_text(self.endpoint_url, "endpoint_url", MAX_ENDPOINT_URL)
        try:
            object.__setattr__(self, "binding", Binding(self.binding))
        except ValueError:
            raise InvalidInput(f"binding must be soap11, soap12 or json, got {self.binding!r}") from None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A CPO with charge points on a cable: its share weight and the budget it is guaranteed."""

    cable_id: str
    cpo_id: str
    weight: Decimal
    guaranteed_minimum: Decimal

    def __post_init__(self) -> None:
        check_id(self.cable_id, "cable id")
        check_id(self.cpo_id, "cpo id")
        object.__setattr__(self, "weight", to_capacity(self.weight, "weight"))
        object.__setattr__(self, "guaranteed_minimum", to_capacity(self.guaranteed_minimum, "guaranteed_minimum"))
