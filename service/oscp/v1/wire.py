"""Messages <-> plain wire dictionaries: camelCase keys, lists for repeated elements.

Values keep their Python types (Decimal, datetime, str, int); each codec renders them its own way.
The codecs validate documents against their schema (XSD, JSON Schema) before calling `from_wire`,
which still refuses anything that does not fit the message type, so a schema gap cannot smuggle
a wrong type into a handler.
"""

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeVar

from service.oscp.v1.messages import FaultCode, OscpFault

T = TypeVar("T")


def wire_name(field_name: str) -> str:
    head, *rest = field_name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_FIELDS: dict[type, tuple[tuple[str, str, Any], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    # A plain dict, not functools.cache: mypy --strict rejects type objects as Hashable cache keys.
    found = _FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _FIELDS[cls] = tuple((f.name, wire_name(f.name), hints[f.name]) for f in dataclasses.fields(cls))
    return found


def to_wire(message: object) -> dict[str, Any]:
    """A message as a dictionary in wire order; absent optionals and empty lists are left out."""
    out: dict[str, Any] = {}
    for name, key, _ in _fields(type(message)):
        value = _to_wire_value(getattr(message, name))
        if value is None or value == []:
            continue
        out[key] = value
    return out


def _to_wire_value(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(value)
    if isinstance(value, tuple):
        return [_to_wire_value(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


def from_wire(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build message `cls` from a wire dictionary; an OscpFault(InvalidRequest) names what is wrong."""
    if not isinstance(data, Mapping):
        raise _invalid(path or cls.__name__, "must be an object")
    known = {key for _, key, _ in _fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _invalid(path or cls.__name__, f"has unknown field(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, key, hint in _fields(cls):
        where = f"{path}.{key}" if path else key
        value = data.get(key)
        kwargs[name] = _from_wire_value(hint, value, where)
    return cls(**kwargs)


def _from_wire_value(hint: Any, value: Any, where: str) -> Any:  # noqa: PLR0911, PLR0912 - one branch per wire type
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):  # X | None: optional
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _from_wire_value(inner, value, where)
    if value is None:
        if origin is tuple:
            return ()
        raise _invalid(where, "is required")
    if origin is tuple:
        item = typing.get_args(hint)[0]
        items = value if isinstance(value, list) else [value]
        return tuple(_from_wire_value(item, v, f"{where}[{i}]") for i, v in enumerate(items))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_wire(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(m.value for m in hint)
            raise _invalid(where, f"is {value!r}; use one of {allowed}") from None
    if hint is Decimal:
        return _decimal(value, where)
    if hint is datetime:
        return _datetime(value, where)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(where, f"must be a whole number, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _invalid(where, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"no wire conversion for {hint!r}")  # a programming error, not bad input


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise _invalid(where, f"must be a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(where, f"must be a number, got {value!r}") from None
    if not number.is_finite():
        raise _invalid(where, f"must be a finite number, got {value!r}")
    return number


def _datetime(value: Any, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _invalid(where, f"must be a dateTime such as 2026-11-24T17:00:00+01:00, got {value!r}") from None
    if not isinstance(value, datetime):
        raise _invalid(where, f"must be a dateTime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise _invalid(where, f"{value.isoformat()} has no UTC offset; add one, e.g. Z or +01:00")
    return value


def _invalid(where: str, what: str) -> OscpFault:
    return OscpFault(FaultCode.INVALID_REQUEST, f"{where} {what}")
