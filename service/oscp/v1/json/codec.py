"""OSCP 1.0 messages <-> JSON bodies, checked against a JSON Schema (draft 2020-12) of each message.

Wire rules (contract, "The JSON variant"): the body of `POST /oscp/1.0/json/<Operation>` is the request
element's children as keys (camelCase, repeated elements as arrays), the reply is the response element's
children; errors are `{"code": FaultCode, "message": "..."}` with an HTTP status.

What this codec writes:
- decimals as JSON numbers with their exact decimal text, never in exponent form and never through a
  float (Decimal("12.500") -> 12.500, Decimal("1E+1") -> 10);
- dateTimes always in UTC with a "Z" suffix (2026-11-24T16:00:00Z), fractional seconds only when present;
- compact separators, UTF-8.

What it reads: UTF-8 JSON (a BOM is tolerated), numbers with a fraction or exponent as Decimal (never
float), no NaN/Infinity, no duplicate keys, a top-level object; dateTimes must carry an offset.
"""

import copy
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, NoReturn

import fastjsonschema

# No stubs ship with jsonschema; unused-ignore keeps this line valid once types-jsonschema is installed.
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped, unused-ignore]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped, unused-ignore]

from service.oscp.v1 import wire
from service.oscp.v1.messages import (
    CPO_OPERATIONS,
    DSO_OPERATIONS,
    MAX_BLOCKS,
    AdjustStatus,
    FaultCode,
    GetCapacityForecastRequest,
    GetCapacityForecastResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    Message,
    Operation,
    OscpFault,
    PhaseIndicator,
    RequestAdjustedCapacityRequest,
    RequestAdjustedCapacityResponse,
    ResponseStatus,
    UnitOfMeasure,
    UpdateAggregatedUsageRequest,
    UpdateAggregatedUsageResponse,
    UpdateCableCapacityForecastRequest,
    UpdateCableCapacityForecastResponse,
)

CONTENT_TYPE: Final = "application/json"
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX: Final = "urn:oscp:1.0:json:"
PATH_PREFIX: Final = "/oscp/1.0/json/"
MAX_CABLE_ID = 64

HTTP_STATUS: Final[Mapping[FaultCode, int]] = {
    FaultCode.INVALID_REQUEST: 400,
    FaultCode.NOT_AUTHORIZED: 401,
    FaultCode.NOT_SUBSCRIBED: 403,
    FaultCode.UNKNOWN_CABLE: 404,
    FaultCode.INTERNAL_ERROR: 500,
}

# --- JSON Schema -------------------------------------------------------------------------------

# RFC 3339 with a mandatory offset. [0-9], not \d: Python's \d also matches non-ASCII digits. Formats are
# optional in JSON Schema, so the pattern carries the rule for any validator; `format` adds the calendar check.
# No leap second (:60): Python's datetime cannot hold one, so the published schema refuses it too.
DATE_TIME_PATTERN: Final = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_DATE_TIME = re.compile(DATE_TIME_PATTERN.removeprefix("^").removesuffix("$"))
_NAIVE_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


def _enum(cls: type[StrEnum], description: str) -> dict[str, Any]:
    return {"title": cls.__name__, "description": description, "type": "string", "enum": [m.value for m in cls]}


def _object(title: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "title": title,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _array(item: str, min_items: int, max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": _ref(item)}
    if min_items:
        schema["minItems"] = min_items
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


_BLOCK_DEFINITION = {"phase": _ref("PhaseIndicator"), "unit": _ref("UnitOfMeasure")}
_BLOCK_TIMES = {"startTime": _ref("DateTime"), "endTime": _ref("DateTime")}

DEFINITIONS: Final[Mapping[str, dict[str, Any]]] = {
    "CableId": {"title": "CableId", "type": "string", "minLength": 1, "maxLength": MAX_CABLE_ID},
    "Quantity": {
        "title": "Quantity",
        "description": "A decimal >= 0 in `unit`, written as a JSON number.",
        "type": "number",
        "minimum": 0,
    },
    "DateTime": {
        "title": "DateTime",
        "description": "RFC 3339 date-time with a UTC offset (Z or +hh:mm / -hh:mm); without one it is invalid.",
        "type": "string",
        "format": "date-time",
        "pattern": DATE_TIME_PATTERN,
    },
    "PhaseIndicator": _enum(
        PhaseIndicator, "ALL with unit A: this current on each phase; with W/KW: the total over all phases."
    ),
    "UnitOfMeasure": _enum(UnitOfMeasure, "Ampere, watt or kilowatt."),
    "ResponseStatus": _enum(ResponseStatus, "Outcome of an update."),
    "AdjustStatus": _enum(AdjustStatus, "Outcome of a RequestAdjustedCapacity."),
    "FaultCode": _enum(FaultCode, "Why a call failed."),
    "ForecastedBlock": _object(
        "ForecastedBlock",
        "Capacity for one 15-minute block, aligned to the quarter hour, startTime < endTime.",
        {"capacity": _ref("Quantity"), **_BLOCK_DEFINITION, **_BLOCK_TIMES},
        ["capacity", "phase", "unit", "startTime", "endTime"],
    ),
    "UsageBlock": _object(
        "UsageBlock",
        "Measured average load for one 15-minute block.",
        {"averageUsage": _ref("Quantity"), **_BLOCK_DEFINITION, **_BLOCK_TIMES},
        ["averageUsage", "phase", "unit", "startTime", "endTime"],
    ),
    "BackupCapacity": _object(
        "BackupCapacity",
        "What the CPO may use once its budget runs out while it cannot reach the DSO.",
        {"capacity": _ref("Quantity"), **_BLOCK_DEFINITION},
        ["capacity", "phase", "unit"],
    ),
    "CableCapacityForecast": _object(
        "CableCapacityForecast",
        "A CPO's budget on one cable, per block.",
        {
            "cableId": _ref("CableId"),
            "forecastedBlock": _array("ForecastedBlock", 1, MAX_BLOCKS),
            "backupCapacity": _ref("BackupCapacity"),
        },
        ["cableId", "forecastedBlock"],
    ),
    "OscpFault": _object(
        "OscpFault",
        "The body of every error reply (HTTP 4xx/5xx).",
        {"code": _ref("FaultCode"), "message": {"type": "string"}},
        ["code", "message"],
    ),
}

_REASON = {"type": "string", "description": "Why, in words, when not simply accepted."}

_MESSAGES: Final[Mapping[type, tuple[str, dict[str, Any], list[str]]]] = {
    RequestAdjustedCapacityRequest: (
        "Ask for more capacity (or hand some back) on a cable for the given blocks.",
        {"cableId": _ref("CableId"), "requestedBlock": _array("ForecastedBlock", 1, MAX_BLOCKS)},
        ["cableId", "requestedBlock"],
    ),
    RequestAdjustedCapacityResponse: (
        "The decision and the requester's budget, after it, for the blocks it asked about.",
        {"status": _ref("AdjustStatus"), "reason": _REASON, "capacityForecast": _ref("CableCapacityForecast")},
        ["status", "capacityForecast"],
    ),
    UpdateAggregatedUsageRequest: (
        "Report the measured average load per block on a cable.",
        {"cableId": _ref("CableId"), "usageBlock": _array("UsageBlock", 1, MAX_BLOCKS)},
        ["cableId", "usageBlock"],
    ),
    UpdateAggregatedUsageResponse: (
        "Whether the usage report was taken.",
        {"status": _ref("ResponseStatus"), "reason": _REASON},
        ["status"],
    ),
    GetCapacityForecastRequest: (
        "Read the caller's budget; without cableId, on every cable it is subscribed to.",
        {"cableId": _ref("CableId")},
        [],
    ),
    GetCapacityForecastResponse: (
        "One forecast per cable; the key is left out when there is none.",
        {"capacityForecast": _array("CableCapacityForecast", 0)},
        [],
    ),
    UpdateCableCapacityForecastRequest: (
        "The DSO tells a CPO its new budget.",
        {"capacityForecast": _array("CableCapacityForecast", 1)},
        ["capacityForecast"],
    ),
    UpdateCableCapacityForecastResponse: (
        "Whether the CPO took the new budget.",
        {"status": _ref("ResponseStatus"), "reason": _REASON},
        ["status"],
    ),
    HeartbeatRequest: ("Liveness; the body is {} (or empty).", {}, []),
    HeartbeatResponse: (
        "The peer's clock and how often (seconds) it expects a Heartbeat.",
        {"currentTime": _ref("DateTime"), "heartbeatInterval": {"type": "integer", "minimum": 1}},
        ["currentTime", "heartbeatInterval"],
    ),
}


def _used_definitions(schema: object, found: dict[str, dict[str, Any]]) -> None:
    """Collect the $defs that `schema` refers to, transitively, so a message schema can stand alone."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in found:
                found[name] = DEFINITIONS[name]
                _used_definitions(DEFINITIONS[name], found)
        for value in schema.values():
            _used_definitions(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _used_definitions(value, found)


def _standalone(title: str, body: dict[str, Any]) -> dict[str, Any]:
    schema = {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID_PREFIX + title, **body}
    used: dict[str, dict[str, Any]] = {}
    _used_definitions(body, used)
    if used:
        schema["$defs"] = {name: DEFINITIONS[name] for name in DEFINITIONS if name in used}
    return schema


_SCHEMAS: Final[dict[type, dict[str, Any]]] = {
    cls: _standalone(cls.__name__, _object(cls.__name__, description, properties, required))
    for cls, (description, properties, required) in _MESSAGES.items()
}
ERROR_SCHEMA: Final = _standalone("OscpFault", DEFINITIONS["OscpFault"])


def message_schema(message_type: type) -> dict[str, Any]:
    """The standalone JSON Schema of one request or response message type (a copy)."""
    return copy.deepcopy(_SCHEMAS[message_type])


def _parse_date_time(text: str) -> datetime | None:
    """An RFC 3339 dateTime with offset (as DATE_TIME_PATTERN), or None."""
    if not _DATE_TIME.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# Our own checker: jsonschema only checks "date-time" when the optional rfc3339-validator is installed.
_FORMATS = FormatChecker(formats=())


def _is_date_time(instance: object) -> bool:
    return not isinstance(instance, str) or _parse_date_time(instance) is not None


_FORMATS.checks("date-time")(_is_date_time)


def _fast_check(schema: dict[str, Any]) -> Callable[[object], bool]:
    """Whether a document is valid, from the same schema compiled to Python (fastjsonschema,
    15 times faster). It checks draft-07, whose keywords are all the schemas use; jsonschema
    then says what is wrong with a document it finds invalid."""
    draft7 = {**schema, "$schema": "http://json-schema.org/draft-07/schema#"}
    del draft7["$id"]  # a URN base that draft-07 resolution would try to fetch
    validate = fastjsonschema.compile(draft7, formats={"date-time": _is_date_time})

    def check(document: object) -> bool:
        try:
            validate(document)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return check


# --- reading JSON ------------------------------------------------------------------------------


class _Unreadable(Exception):
    """The body is not a JSON document this codec accepts; the message says why."""


def _reject_constant(name: str) -> NoReturn:
    raise _Unreadable(f"{name} is not a JSON number; send a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Unreadable(f"the key {_show_key(key)} appears twice in one object; send each field once")
        out[key] = value
    return out


def _read(body: bytes) -> object:
    """Parse a JSON body strictly; None for an empty one. Raises _Unreadable."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"body is not UTF-8 (byte {exc.start} is invalid); send UTF-8 JSON") from None
    if not text.strip():
        return None
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _Unreadable:
        raise
    except RecursionError:
        raise _Unreadable("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise _Unreadable(f"body is not valid JSON: {exc}") from None
    except ArithmeticError:  # a Decimal whose exponent is out of range
        raise _Unreadable("body is not valid JSON: a number is out of range; send plain decimals") from None
    _reject_lone_surrogates(data)
    return data


def _reject_lone_surrogates(data: object) -> None:
    """A \\ud800 escape decodes to a string no UTF-8 store or encoder accepts; refuse it at the door.

    Iterative, because the parser accepts nesting deeper than Python's recursion limit allows us."""
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                raise _Unreadable(f"{path or 'body'}: has an unpaired UTF-16 surrogate escape; send valid Unicode")
        elif isinstance(value, dict):
            for key, item in value.items():
                if _has_surrogate(key):
                    raise _Unreadable(f"{path or 'body'}: a key has an unpaired UTF-16 surrogate escape")
                stack.append((_join(path, key), item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


# --- writing JSON ------------------------------------------------------------------------------


def _dumps(value: object) -> bytes:
    """Compact UTF-8 JSON with exact decimals and UTC dateTimes (see the module docstring)."""
    out: list[str] = []
    _write(value, out)
    # Inside a JSON string a lone surrogate can only be written as its \\uXXXX escape, which is exactly
    # what backslashreplace produces; everything outside strings is ASCII.
    return "".join(out).encode("utf-8", "backslashreplace")


def _write(value: object, out: list[str]) -> None:  # noqa: PLR0912 - one branch per JSON type
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, str):
        out.append(json.dumps(str(value), ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Decimal):
        out.append(_decimal_text(value))
    elif isinstance(value, datetime):
        out.append(f'"{_date_time_text(value)}"')
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as OSCP JSON")


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"cannot write {value} as a JSON number")
    exponent = int(value.as_tuple().exponent)  # finite, so an int (not 'n'/'N'/'F')
    if value.adjusted() > 1000 or exponent < -1000:  # fixed notation of such a number runs to megabytes
        raise ValueError(f"refusing to write {value} as a JSON number: over 1000 digits")
    return format(value, "f")


def _date_time_text(value: datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError(f"cannot write the naive dateTime {value.isoformat()}; OSCP needs an offset")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


# --- error messages ----------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_JSON_TYPES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "null": "null",
}


def _show_key(key: str) -> str:
    return key if _IDENTIFIER.fullmatch(key) else repr(key[:64])


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{_show_key(key)}" if path else _show_key(key)


def _path(parts: Iterable[str | int]) -> str:
    path = ""
    for part in parts:
        path = _join(path, part)
    return path


def _show(value: object) -> str:  # noqa: PLR0911 - one rendering per JSON type
    """A short rendering of a value taken from the request, for messages."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | Decimal):
        text = str(value)  # a number can have thousands of digits
        return text if len(text) <= 40 else text[:40] + "..."
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _type_of(value: object) -> str:
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, bool | type(None)):
        return _show(value)
    if isinstance(value, int | Decimal):
        return f"the number {_show(value)}"
    return _show(value)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in ("A", "E", "I", "O", "U") else f"a {noun}"


def _date_time_problem(value: str) -> str:
    if _NAIVE_DATE_TIME.fullmatch(value):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return f"{_show(value)} has no UTC offset; add one, e.g. Z or +01:00"
    return f"{_show(value)} is not a valid dateTime; use RFC 3339 with an offset, e.g. 2026-11-24T17:00:00+01:00"


def _describe(error: ValidationError) -> str:  # noqa: PLR0911, PLR0912 - one answer per kind of mistake
    """One sentence naming the JSON path, what is wrong there, and how to fix it."""
    path = _path(error.absolute_path)
    where = path or "body"
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    title = schema.get("title", "")
    value = error.instance
    kind = error.validator
    if kind == "required" and isinstance(value, dict):
        required = list(schema.get("required", []))
        missing = next((key for key in required if key not in value), "?")
        return f"{_join(path, missing)}: missing; {_a(title)} requires {', '.join(required)}"
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = list(schema.get("properties", {}))
        fields = f"has the fields {', '.join(allowed)}" if allowed else "has no fields; send {}"
        extra = sorted(set(value) - set(allowed))
        if len(extra) == 1:
            return f"{_join(path, extra[0])}: unknown field; {_a(title)} {fields}"
        names = ", ".join(_show_key(key) for key in extra[:10]) + (", ..." if len(extra) > 10 else "")
        return f"{where}: unknown fields {names}; {_a(title)} {fields}"
    if kind == "type":
        expected = schema.get("type")
        wanted = _JSON_TYPES.get(expected, str(expected)) if isinstance(expected, str) else "another type"
        if expected == "object" and title:
            wanted = f"{_a(title)} object"
        return f"{where}: must be {wanted}, got {_type_of(value)}"
    if kind == "enum":
        allowed_values = ", ".join(str(v) for v in schema.get("enum", []))
        return f"{where}: {_show(value)} is not {_a(title or 'valid value')}; use one of {allowed_values}"
    if kind == "minimum":
        minimum = schema.get("minimum")
        if minimum == 0:
            return f"{where}: {_show(value)} is negative; it must be 0 or more"
        return f"{where}: {_show(value)} is too small; it must be at least {minimum}"
    if kind in ("pattern", "format") and schema.get("format") == "date-time" and isinstance(value, str):
        return f"{where}: {_date_time_problem(value)}"
    if kind == "maxItems" and isinstance(value, list):
        return f"{where}: {len(value)} entries; at most {schema.get('maxItems')} are allowed in one message"
    if kind == "minItems":
        return f"{where}: empty; send at least {schema.get('minItems')}"
    if kind == "maxLength" and isinstance(value, str):
        return f"{where}: {len(value)} characters long; at most {schema.get('maxLength')} are allowed"
    if kind == "minLength":
        return f"{where}: empty; it needs at least {schema.get('minLength')} character(s)"
    text = error.message
    return f"{where}: {text if len(text) <= 200 else text[:200] + '...'}"


# --- the codec ---------------------------------------------------------------------------------


class JsonCodec:
    """Requests and responses of one OSCP service (DSO_OPERATIONS or CPO_OPERATIONS) as JSON bodies.

    Server side: `operation`, `decode_request`, `encode_response`, `encode_error`, `schema_document`.
    Client side (calling that service): `encode_request`, `decode_response`.
    """

    def __init__(self, operations: Mapping[str, Operation]) -> None:
        self._operations = dict(operations)
        names = set(self._operations)
        self._service = (
            "OscpDsoService"
            if names == set(DSO_OPERATIONS)
            else "OscpCpoService"
            if names == set(CPO_OPERATIONS)
            else "OscpService"
        )
        self._requests = {op.request for op in self._operations.values()}
        self._responses = {op.response for op in self._operations.values()}
        self._validators = {
            cls: Draft202012Validator(_SCHEMAS[cls], format_checker=_FORMATS)
            for cls in self._requests | self._responses
        }
        self._fast_checks = {cls: _fast_check(_SCHEMAS[cls]) for cls in self._requests | self._responses}

    # server side

    def serves(self, name: str) -> bool:
        return name in self._operations

    def operation(self, name: str) -> Operation:
        found = self._operations.get(name)
        if found is not None:
            return found
        served = ", ".join(self._operations)
        hint = next((f"; names are case-sensitive: {op}" for op in self._operations if op.lower() == name.lower()), "")
        message = f"unknown operation {_show(name)}; this endpoint serves {served}{hint}"
        raise OscpFault(FaultCode.INVALID_REQUEST, message)

    def decode_request(self, operation: Operation, body: bytes) -> Message:
        """The request message of `operation`; OscpFault(InvalidRequest) names the first thing wrong."""

        def fault(message: str) -> OscpFault:
            return OscpFault(FaultCode.INVALID_REQUEST, message)

        return self._decode(operation.request, body, fault)

    def encode_response(self, message: Message) -> bytes:
        return self._encode(message, self._responses, "response")

    def encode_error(self, code: FaultCode, message: str) -> tuple[int, bytes]:
        """(HTTP status, body) of an error reply."""
        return HTTP_STATUS[code], _dumps({"code": code.value, "message": message})

    def schema_document(self) -> dict[str, Any]:
        """Everything a CPO developer needs to validate bodies; each message schema stands alone."""
        return copy.deepcopy(
            {
                "$schema": SCHEMA_DIALECT,
                "$id": SCHEMA_ID_PREFIX + self._service,
                "title": f"OSCP 1.0 JSON variant: {self._service}",
                "description": (
                    f"POST {PATH_PREFIX}<operation> with the request object as body (Content-Type {CONTENT_TYPE});"
                    " a 2xx reply carries the response object, any other status the error object. Decimals are"
                    " JSON numbers, dateTimes RFC 3339 with an offset (this service writes UTC with Z). Each"
                    " request, response and error schema below is standalone (its own $id and $defs); the"
                    " top-level $defs lists the shared types once."
                ),
                "operations": {
                    name: {
                        "method": "POST",
                        "path": PATH_PREFIX + name,
                        "request": _SCHEMAS[op.request],
                        "response": _SCHEMAS[op.response],
                    }
                    for name, op in self._operations.items()
                },
                "error": ERROR_SCHEMA,
                "errorStatus": {code.value: status for code, status in HTTP_STATUS.items()},
                "$defs": dict(DEFINITIONS),
            }
        )

    # client side

    def encode_request(self, message: Message) -> bytes:
        return self._encode(message, self._requests, "request")

    def decode_response(self, operation: Operation, status_code: int, body: bytes) -> Message:
        """The peer's reply; its error body is raised as OscpFault with the peer's code and message.

        A reply that is not an OSCP response or error is OscpFault(InternalError): the peer broke the contract.
        """

        def fault(message: str) -> OscpFault:
            return OscpFault(
                FaultCode.INTERNAL_ERROR, f"unusable reply (HTTP {status_code}) to {operation.name}: {message}"
            )

        if 200 <= status_code < 300:
            try:
                return self._decode(operation.response, body, fault)
            except OscpFault:
                peer_fault = _peer_fault(_read_quietly(body))  # an error body under a 2xx status still counts
                if peer_fault is not None:
                    raise peer_fault from None
                raise
        peer_fault = _peer_fault(_read_quietly(body))
        if peer_fault is not None:
            raise peer_fault
        snippet = body[:200].decode("utf-8", "replace")
        raise fault(f"no OSCP error body: {snippet!r}")

    # shared

    def _decode(self, cls: type, body: bytes, fault: Callable[[str], OscpFault]) -> Message:
        schema = _SCHEMAS[cls]
        try:
            data = _read(body)
        except _Unreadable as exc:
            raise fault(str(exc)) from None
        if data is None:
            if schema["required"]:
                needed = ", ".join(schema["required"])
                raise fault(f"body: empty; {_a(cls.__name__)} needs a JSON object with {needed}")
            data = {}
        if not isinstance(data, dict):
            raise fault(f"body: must be a JSON object with the {cls.__name__} fields, got {_type_of(data)}")
        error = None if self._fast_checks[cls](data) else best_match(self._validators[cls].iter_errors(data))
        if error is not None:
            raise fault(_describe(error))
        try:
            message: Message = wire.from_wire(cls, data)
        except OscpFault as exc:
            raise fault(exc.message) from None
        return message

    def _encode(self, message: Message, allowed: Collection[type], kind: str) -> bytes:
        if type(message) not in allowed:
            raise TypeError(f"{type(message).__name__} is not a {kind} of {self._service}")
        return _dumps(wire.to_wire(message))


def _read_quietly(body: bytes) -> object:
    try:
        return _read(body)
    except _Unreadable:
        return None


def _peer_fault(data: object) -> OscpFault | None:
    """The peer's error body as an OscpFault; lenient about extra keys, strict about code and message.

    The message is capped: it travels on into logs and the outbox."""
    if not isinstance(data, dict):
        return None
    code, message = data.get("code"), data.get("message")
    if not isinstance(message, str) or code not in {c.value for c in FaultCode}:
        return None
    return OscpFault(FaultCode(code), message if len(message) <= 2000 else message[:2000] + "...")
