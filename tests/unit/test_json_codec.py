"""The JSON variant of OSCP 1.0 (service.oscp.v1.json): bodies, schemas, error replies."""

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from service.oscp.v1.json import CONTENT_TYPE, HTTP_STATUS, SCHEMA_DIALECT, JsonCodec, message_schema
from service.oscp.v1.messages import (
    CPO_OPERATIONS,
    DSO_OPERATIONS,
    AdjustStatus,
    BackupCapacity,
    CableCapacityForecast,
    FaultCode,
    ForecastedBlock,
    GetCapacityForecastRequest,
    GetCapacityForecastResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    Message,
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
    UsageBlock,
)
from service.oscp.v1.wire import wire_name

DSO = JsonCodec(DSO_OPERATIONS)
CPO = JsonCodec(CPO_OPERATIONS)
CET = timezone(timedelta(hours=1))
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=CET)
Q = timedelta(minutes=15)


def forecasted(i: int, capacity: str = "12.5", phase: PhaseIndicator = PhaseIndicator.ALL) -> ForecastedBlock:
    return ForecastedBlock(Decimal(capacity), phase, UnitOfMeasure.A, T0 + i * Q, T0 + (i + 1) * Q)


def usage(i: int, average: str) -> UsageBlock:
    return UsageBlock(Decimal(average), PhaseIndicator.ONE, UnitOfMeasure.KW, T0 + i * Q, T0 + (i + 1) * Q)


FORECAST = CableCapacityForecast(
    "cable-1",
    (forecasted(0, "16.000"), forecasted(1, "0"), forecasted(2, "1E+1")),
    BackupCapacity(Decimal("6.5"), PhaseIndicator.ALL, UnitOfMeasure.A),
)
FORECAST_UTC = CableCapacityForecast(
    "kabel-ü-2",  # non-ASCII ids travel as UTF-8
    tuple(
        ForecastedBlock(Decimal("3.680"), PhaseIndicator.THREE, UnitOfMeasure.KW, start, start + Q)
        for start in (datetime(2026, 11, 24, 23, 45, 0, 1, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))
    ),
)

# (codec, operation, message) for every request and response message of both services.
REQUESTS: list[tuple[JsonCodec, str, Message]] = [
    (
        DSO,
        "RequestAdjustedCapacity",
        RequestAdjustedCapacityRequest("cable-1", (forecasted(0), forecasted(1, "0.001"))),
    ),
    (DSO, "RequestAdjustedCapacity", RequestAdjustedCapacityRequest("c", tuple(forecasted(i) for i in range(192)))),
    (DSO, "UpdateAggregatedUsage", UpdateAggregatedUsageRequest("cable-1", (usage(0, "3.2"), usage(1, "0.000")))),
    (DSO, "GetCapacityForecast", GetCapacityForecastRequest()),
    (DSO, "GetCapacityForecast", GetCapacityForecastRequest("cable-1")),
    (DSO, "Heartbeat", HeartbeatRequest()),
    (CPO, "UpdateCableCapacityForecast", UpdateCableCapacityForecastRequest((FORECAST, FORECAST_UTC))),
    (CPO, "Heartbeat", HeartbeatRequest()),
]
RESPONSES: list[tuple[JsonCodec, str, Message]] = [
    (
        DSO,
        "RequestAdjustedCapacity",
        RequestAdjustedCapacityResponse(AdjustStatus.PARTIALLY_ACCEPTED, FORECAST, "only 16 A free from 17:00"),
    ),
    (DSO, "RequestAdjustedCapacity", RequestAdjustedCapacityResponse(AdjustStatus.ACCEPTED, FORECAST_UTC)),
    (DSO, "UpdateAggregatedUsage", UpdateAggregatedUsageResponse(ResponseStatus.ACCEPTED)),
    (DSO, "UpdateAggregatedUsage", UpdateAggregatedUsageResponse(ResponseStatus.REJECTED, "blocks in the past")),
    (DSO, "GetCapacityForecast", GetCapacityForecastResponse()),
    (DSO, "GetCapacityForecast", GetCapacityForecastResponse((FORECAST, FORECAST_UTC))),
    (DSO, "Heartbeat", HeartbeatResponse(datetime(2026, 11, 24, 16, 0, 5, tzinfo=UTC), 60)),
    (CPO, "UpdateCableCapacityForecast", UpdateCableCapacityForecastResponse(ResponseStatus.ACCEPTED)),
    (CPO, "UpdateCableCapacityForecast", UpdateCableCapacityForecastResponse(ResponseStatus.REJECTED, "unknown")),
    (CPO, "Heartbeat", HeartbeatResponse(T0, 1)),
]


def ids(cases: list[tuple[JsonCodec, str, Message]]) -> list[str]:
    return [
        f"{'dso' if codec is DSO else 'cpo'}-{type(message).__name__}-{i}"
        for i, (codec, _, message) in enumerate(cases)
    ]


def standalone_validator(codec: JsonCodec, operation: str, part: str) -> Any:
    """A stock validator on one message schema taken from the published document, as a CPO would use it."""
    schema = codec.schema_document()["operations"][operation][part]
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def fault_of(call: Callable[[], object]) -> OscpFault:
    with pytest.raises(OscpFault) as info:
        call()
    return info.value


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(("codec", "operation", "message"), REQUESTS, ids=ids(REQUESTS))
def test_every_request_survives_encode_and_decode(codec: JsonCodec, operation: str, message: Message) -> None:
    body = codec.encode_request(message)
    assert codec.decode_request(codec.operation(operation), body) == message


@pytest.mark.parametrize(("codec", "operation", "message"), RESPONSES, ids=ids(RESPONSES))
def test_every_response_survives_encode_and_decode(codec: JsonCodec, operation: str, message: Message) -> None:
    body = codec.encode_response(message)
    assert codec.decode_response(codec.operation(operation), 200, body) == message


@pytest.mark.parametrize(("codec", "operation", "message"), REQUESTS, ids=ids(REQUESTS))
def test_the_published_schema_accepts_every_encoded_request(codec: JsonCodec, operation: str, message: Message) -> None:
    body = codec.encode_request(message)
    validator = standalone_validator(codec, operation, "request")
    assert list(validator.iter_errors(json.loads(body, parse_float=Decimal))) == []
    assert list(validator.iter_errors(json.loads(body))) == []  # a CPO parsing numbers as floats


@pytest.mark.parametrize(("codec", "operation", "message"), RESPONSES, ids=ids(RESPONSES))
def test_the_published_schema_accepts_every_encoded_response(
    codec: JsonCodec, operation: str, message: Message
) -> None:
    body = codec.encode_response(message)
    validator = standalone_validator(codec, operation, "response")
    assert list(validator.iter_errors(json.loads(body, parse_float=Decimal))) == []
    assert list(validator.iter_errors(json.loads(body))) == []


def test_the_wire_text_of_a_request() -> None:
    message = RequestAdjustedCapacityRequest("cable-1", (forecasted(0, "12.500"), forecasted(1, "1E+1")))
    assert DSO.encode_request(message) == (
        b'{"cableId":"cable-1","requestedBlock":['
        b'{"capacity":12.500,"phase":"ALL","unit":"A","startTime":"2026-11-24T16:00:00Z","endTime":"2026-11-24T16:15:00Z"},'
        b'{"capacity":10,"phase":"ALL","unit":"A","startTime":"2026-11-24T16:15:00Z","endTime":"2026-11-24T16:30:00Z"}]}'
    )


@pytest.mark.parametrize(
    ("capacity", "text"),
    [
        ("12.5", "12.5"),
        ("12.500", "12.500"),
        ("1E+1", "10"),
        ("1E-7", "0.0000001"),
        ("0.1", "0.1"),
        ("123456789012345678901234567890.123", "123456789012345678901234567890.123"),
    ],
)
def test_decimals_are_written_exactly_and_without_exponent(capacity: str, text: str) -> None:
    body = DSO.encode_request(RequestAdjustedCapacityRequest("c", (forecasted(0, capacity),)))
    assert f'"capacity":{text},'.encode() in body
    decoded = DSO.decode_request(DSO.operation("RequestAdjustedCapacity"), body)
    assert isinstance(decoded, RequestAdjustedCapacityRequest)
    assert decoded.requested_block[0].capacity == Decimal(capacity)


def test_datetimes_are_written_in_utc_with_z_and_microseconds_only_when_present() -> None:
    body = DSO.encode_response(HeartbeatResponse(datetime(2026, 6, 1, 2, 0, 0, 250000, tzinfo=CET), 30))
    assert body == b'{"currentTime":"2026-06-01T01:00:00.250000Z","heartbeatInterval":30}'
    odd_offset = timezone(timedelta(minutes=17, seconds=30))  # not writable as +hh:mm, fine in UTC
    body = DSO.encode_response(HeartbeatResponse(datetime(2026, 6, 1, 2, 0, tzinfo=odd_offset), 30))
    assert body == b'{"currentTime":"2026-06-01T01:42:30Z","heartbeatInterval":30}'


def test_non_ascii_is_written_as_utf8_and_a_lone_surrogate_as_its_escape() -> None:
    body = DSO.encode_response(UpdateAggregatedUsageResponse(ResponseStatus.REJECTED, "Größe \ud800"))
    assert body == '{"status":"Rejected","reason":"Größe \\ud800"}'.encode()
    body.decode("utf-8")  # valid UTF-8


def test_a_message_that_cannot_be_written_is_a_programming_error() -> None:
    naive = datetime(2026, 6, 1, 2, 0)  # noqa: DTZ001 - the thing under test
    with pytest.raises(ValueError, match="naive"):
        DSO.encode_response(HeartbeatResponse(naive, 30))
    with pytest.raises(ValueError, match="JSON number"):
        DSO.encode_request(RequestAdjustedCapacityRequest("c", (forecasted(0, "NaN"),)))
    with pytest.raises(ValueError, match="1000 digits"):
        DSO.encode_request(RequestAdjustedCapacityRequest("c", (forecasted(0, "1E+999999"),)))
    with pytest.raises(TypeError, match="not a response of OscpDsoService"):
        DSO.encode_response(HeartbeatRequest())
    with pytest.raises(TypeError, match="not a request of OscpCpoService"):
        CPO.encode_request(GetCapacityForecastRequest())


# ---------------------------------------------------------------------------------------------
# bad input


def block(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "capacity": 12.5,
        "phase": "ALL",
        "unit": "A",
        "startTime": "2026-11-24T17:00:00+01:00",
        "endTime": "2026-11-24T17:15:00+01:00",
    }
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not DROP}


DROP = object()


def adjust(*blocks: object, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"cableId": "cable-1", "requestedBlock": list(blocks) or [block()]}
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not DROP}


# (name, body, fragments the message must contain); all for RequestAdjustedCapacity unless named.
SCHEMA_VIOLATIONS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("unknown field", adjust(block(), block(colour="red")), ("requestedBlock[1].colour: unknown field", "capacity")),
    ("unknown top-level field", adjust(extra=1), ("extra: unknown field", "cableId, requestedBlock")),
    ("missing cableId", adjust(cableId=DROP), ("cableId: missing",)),
    ("missing block field", adjust(block(), block(unit=DROP)), ("requestedBlock[1].unit: missing",)),
    ("bad phase", adjust(block(phase="FOUR")), ("requestedBlock[0].phase", "'FOUR'", "ONE, TWO, THREE, ALL")),
    ("bad unit", adjust(block(unit="kW")), ("requestedBlock[0].unit", "'kW'", "A, W, KW")),
    ("negative capacity", adjust(block(capacity=-0.5)), ("requestedBlock[0].capacity", "-0.5", "0 or more")),
    (
        "naive dateTime",
        adjust(block(), block(), block(), block(startTime="2026-11-24T17:00:00")),
        ("requestedBlock[3].startTime: '2026-11-24T17:00:00' has no UTC offset; add one, e.g. Z or +01:00",),
    ),
    (
        "naive dateTime without seconds",
        adjust(block(endTime="2026-11-24T17:15")),
        ("requestedBlock[0].endTime", "no UTC offset"),
    ),
    (
        "not a dateTime",
        adjust(block(startTime="tomorrow 5pm")),
        ("requestedBlock[0].startTime", "not a valid dateTime"),
    ),
    ("month 13", adjust(block(startTime="2026-13-01T00:00:00Z")), ("requestedBlock[0].startTime", "not a valid")),
    ("date only", adjust(block(endTime="2026-11-24")), ("requestedBlock[0].endTime", "not a valid dateTime")),
    ("193 blocks", adjust(*[block()] * 193), ("requestedBlock: 193 entries", "at most 192")),
    ("no blocks", adjust(requestedBlock=[]), ("requestedBlock: empty",)),
    ("cableId of 65", adjust(cableId="x" * 65), ("cableId: 65 characters", "at most 64")),
    ("empty cableId", adjust(cableId=""), ("cableId: empty",)),
    ("capacity as string", adjust(block(capacity="12.5")), ("requestedBlock[0].capacity: must be a number",)),
    ("capacity as bool", adjust(block(capacity=True)), ("requestedBlock[0].capacity: must be a number", "true")),
    ("cableId as number", adjust(cableId=7), ("cableId: must be a string", "the number 7")),
    ("block as string", adjust(block(), "x"), ("requestedBlock[1]: must be a ForecastedBlock object",)),
    ("blocks as object", adjust(requestedBlock=block()), ("requestedBlock: must be an array", "an object")),
    ("null cableId", adjust(cableId=None), ("cableId: must be a string", "null")),
]


@pytest.mark.parametrize(
    ("body", "fragments"), [c[1:] for c in SCHEMA_VIOLATIONS], ids=[c[0] for c in SCHEMA_VIOLATIONS]
)
def test_a_schema_violation_is_invalid_request_naming_the_field(
    body: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    fault = fault_of(lambda: DSO.decode_request(DSO.operation("RequestAdjustedCapacity"), json.dumps(body).encode()))
    assert fault.code is FaultCode.INVALID_REQUEST
    for fragment in fragments:
        assert fragment in fault.message


@pytest.mark.parametrize("body", [c[1] for c in SCHEMA_VIOLATIONS], ids=[c[0] for c in SCHEMA_VIOLATIONS])
def test_the_published_schema_alone_rejects_each_violation(body: dict[str, Any]) -> None:
    validator = standalone_validator(DSO, "RequestAdjustedCapacity", "request")
    assert not validator.is_valid(json.loads(json.dumps(body)))


@pytest.mark.parametrize(
    ("operation", "body", "fragments"),
    [
        ("RequestAdjustedCapacity", b"{'cableId': 1}", ("body is not valid JSON", "line 1 column 2")),
        ("RequestAdjustedCapacity", b'{"cableId": "caf\xe9"}', ("not UTF-8", "byte 16")),
        ("RequestAdjustedCapacity", b"[]", ("body: must be a JSON object", "an array")),
        ("RequestAdjustedCapacity", b'"cable-1"', ("body: must be a JSON object", "the string 'cable-1'")),
        ("RequestAdjustedCapacity", b'{"cableId":"c","requestedBlock":[{"capacity":NaN}]}', ("NaN is not a JSON",)),
        ("RequestAdjustedCapacity", b'{"cableId":"c","requestedBlock":[{"capacity":-Infinity}]}', ("-Infinity",)),
        ("RequestAdjustedCapacity", b'{"cableId":"a","cableId":"b"}', ("cableId appears twice",)),
        ("RequestAdjustedCapacity", b"", ("body: empty", "cableId, requestedBlock")),
        ("UpdateAggregatedUsage", b" \r\n", ("body: empty", "cableId, usageBlock")),
        ("RequestAdjustedCapacity", b'{"cableId":"\\ud800"}', ("cableId: has an unpaired UTF-16 surrogate",)),
        ("RequestAdjustedCapacity", b"[" * 100_000, ("nested too deeply",)),
        ("RequestAdjustedCapacity", b'{"cableId":' + b"9" * 5000 + b"}", ("body is not valid JSON",)),
        ("Heartbeat", b'{"ping":1}', ("ping: unknown field", "no fields")),
        ("GetCapacityForecast", b'{"cableId":"x","requestedBlock":[]}', ("requestedBlock: unknown field",)),
        (
            "UpdateAggregatedUsage",
            b'{"cableId":"c","usageBlock":[{"averageUsage":-1,"phase":"ONE","unit":"W",'
            b'"startTime":"2026-11-24T17:00:00Z","endTime":"2026-11-24T17:15:00Z"}]}',
            ("usageBlock[0].averageUsage", "-1 is negative"),
        ),
        (
            "RequestAdjustedCapacity",
            json.dumps(adjust(block(startTime="2026-02-30T17:00:00Z"))).encode(),
            ("requestedBlock[0].startTime: '2026-02-30T17:00:00Z' is not a valid dateTime",),
        ),
        (
            "RequestAdjustedCapacity",
            json.dumps(adjust(block(startTime="2026-11-24T17:00:00Z\n"))).encode(),
            ("requestedBlock[0].startTime", "not a valid dateTime"),
        ),
        (
            "RequestAdjustedCapacity",
            json.dumps(adjust(block(capacity=1)))
            .replace('"capacity": 1', '"capacity": 1E+4250000000000000000')
            .encode(),
            ("body is not valid JSON", "out of range"),
        ),
    ],
    ids=[
        "not JSON",
        "not UTF-8",
        "top-level array",
        "top-level string",
        "NaN",
        "-Infinity",
        "duplicate keys",
        "empty body, required fields",
        "blank body, required fields",
        "lone surrogate",
        "deep nesting",
        "integer too long",
        "heartbeat takes nothing",
        "field of another message",
        "negative usage",
        "February 30",
        "trailing newline in dateTime",
        "exponent out of range",
    ],
)
def test_bad_bodies_are_invalid_request_with_a_clear_message(
    operation: str, body: bytes, fragments: tuple[str, ...]
) -> None:
    fault = fault_of(lambda: DSO.decode_request(DSO.operation(operation), body))
    assert fault.code is FaultCode.INVALID_REQUEST
    for fragment in fragments:
        assert fragment in fault.message


def test_empty_bodies_are_empty_objects_where_nothing_is_required() -> None:
    assert DSO.decode_request(DSO.operation("Heartbeat"), b"") == HeartbeatRequest()
    assert DSO.decode_request(DSO.operation("GetCapacityForecast"), b"") == GetCapacityForecastRequest()
    assert CPO.decode_request(CPO.operation("Heartbeat"), b"{}") == HeartbeatRequest()


def test_a_utf8_bom_and_integers_for_decimals_are_accepted() -> None:
    body = b"\xef\xbb\xbf" + json.dumps(adjust(block(capacity=16))).encode()
    decoded = DSO.decode_request(DSO.operation("RequestAdjustedCapacity"), body)
    assert isinstance(decoded, RequestAdjustedCapacityRequest)
    assert decoded.requested_block[0].capacity == Decimal(16)
    assert decoded.requested_block[0].start_time == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


def test_decimals_are_read_exactly_never_through_a_float() -> None:
    body = json.dumps(adjust(block(capacity=0))).replace('"capacity": 0', '"capacity": 0.30000000000000004441').encode()
    decoded = DSO.decode_request(DSO.operation("RequestAdjustedCapacity"), body)
    assert isinstance(decoded, RequestAdjustedCapacityRequest)
    assert decoded.requested_block[0].capacity == Decimal("0.30000000000000004441")


def test_an_unknown_operation_names_the_ones_served() -> None:
    fault = fault_of(lambda: DSO.operation("UpdateCableCapacityForecast"))
    assert fault.code is FaultCode.INVALID_REQUEST
    assert fault.message == (
        "unknown operation 'UpdateCableCapacityForecast'; this endpoint serves "
        "RequestAdjustedCapacity, UpdateAggregatedUsage, GetCapacityForecast, Heartbeat"
    )
    fault = fault_of(lambda: CPO.operation("heartbeat"))
    assert fault.message.endswith("serves UpdateCableCapacityForecast, Heartbeat; names are case-sensitive: Heartbeat")


# ---------------------------------------------------------------------------------------------
# schemas


def test_the_schema_document_and_each_schema_in_it_are_valid_draft_2020_12() -> None:
    for codec, operations in ((DSO, DSO_OPERATIONS), (CPO, CPO_OPERATIONS)):
        document = codec.schema_document()
        Draft202012Validator.check_schema(document)
        assert document["$schema"] == SCHEMA_DIALECT
        assert list(document["operations"]) == list(operations)
        for name, entry in document["operations"].items():
            assert entry["method"] == "POST"
            assert entry["path"] == f"/oscp/1.0/json/{name}"
            for part in ("request", "response"):
                Draft202012Validator.check_schema(entry[part])
                assert entry[part]["$schema"] == SCHEMA_DIALECT
        Draft202012Validator.check_schema(document["error"])
        assert document["errorStatus"] == {code.value: status for code, status in HTTP_STATUS.items()}
    assert DSO.schema_document()["$id"] != CPO.schema_document()["$id"]


def test_schema_document_returns_a_copy() -> None:
    document = DSO.schema_document()
    document["operations"]["Heartbeat"]["request"]["properties"]["x"] = {}
    assert "x" not in DSO.schema_document()["operations"]["Heartbeat"]["request"]["properties"]


OPERATIONS = [*DSO_OPERATIONS.values(), *CPO_OPERATIONS.values()]
MESSAGE_TYPES: list[type] = sorted(
    {op.request for op in OPERATIONS} | {op.response for op in OPERATIONS}, key=lambda cls: cls.__name__
)


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=[cls.__name__ for cls in MESSAGE_TYPES])
def test_each_message_schema_has_the_message_fields_and_requires_exactly_the_mandatory_ones(message_type: type) -> None:
    schema = message_schema(message_type)
    fields = dataclasses.fields(message_type)
    # Sets: the schema lists fields in contract order; the dataclass puts defaulted fields last.
    assert set(schema["properties"]) == {wire_name(f.name) for f in fields}
    mandatory = [
        wire_name(f.name)
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    assert schema["required"] == mandatory
    assert schema["additionalProperties"] is False
    assert schema["$id"] == f"urn:oscp:1.0:json:{message_type.__name__}"


def test_every_object_in_the_definitions_refuses_unknown_fields() -> None:
    definitions = DSO.schema_document()["$defs"]
    objects = {name for name, schema in definitions.items() if schema.get("type") == "object"}
    assert objects == {"ForecastedBlock", "UsageBlock", "BackupCapacity", "CableCapacityForecast", "OscpFault"}
    assert all(definitions[name]["additionalProperties"] is False for name in objects)


def test_the_schema_follows_the_contract_types() -> None:
    definitions = DSO.schema_document()["$defs"]
    assert definitions["CableId"] == {"title": "CableId", "type": "string", "minLength": 1, "maxLength": 64}
    assert definitions["Quantity"]["minimum"] == 0
    assert definitions["PhaseIndicator"]["enum"] == ["ONE", "TWO", "THREE", "ALL"]
    assert definitions["UnitOfMeasure"]["enum"] == ["A", "W", "KW"]
    assert definitions["AdjustStatus"]["enum"] == ["Accepted", "PartiallyAccepted", "Rejected"]
    assert definitions["ResponseStatus"]["enum"] == ["Accepted", "Rejected"]
    assert set(definitions["FaultCode"]["enum"]) == {code.value for code in FaultCode}
    forecast = definitions["CableCapacityForecast"]
    assert forecast["properties"]["forecastedBlock"]["minItems"] == 1
    assert forecast["properties"]["forecastedBlock"]["maxItems"] == 192
    assert forecast["required"] == ["cableId", "forecastedBlock"]
    heartbeat = message_schema(HeartbeatResponse)["properties"]["heartbeatInterval"]
    assert heartbeat == {"type": "integer", "minimum": 1}


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-11-24T17:00:00Z", True),
        ("2026-11-24T17:00:00.5+01:00", True),
        ("2026-11-24T17:00:00-09:30", True),
        ("2026-11-24T17:00:00", False),
        ("2026-11-24 17:00:00Z", False),
        ("2026-11-24T17:00Z", False),
        ("2026-11-24T17:00:00+0100", False),
        ("2026-11-24T24:00:00Z", False),
        ("2016-12-31T23:59:60Z", False),  # a leap second: datetime cannot hold it
        ("\uff12\uff10\uff12\uff16-11-24T17:00:00Z", False),  # fullwidth digits: Python's \d would take them
    ],
)
def test_the_datetime_pattern_alone_requires_an_offset(value: str, valid: bool) -> None:
    validator = Draft202012Validator(message_schema(HeartbeatResponse))  # no format checking at all
    assert validator.is_valid({"currentTime": value, "heartbeatInterval": 60}) is valid


# ---------------------------------------------------------------------------------------------
# error replies


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (FaultCode.INVALID_REQUEST, 400),
        (FaultCode.NOT_AUTHORIZED, 401),
        (FaultCode.NOT_SUBSCRIBED, 403),
        (FaultCode.UNKNOWN_CABLE, 404),
        (FaultCode.INTERNAL_ERROR, 500),
    ],
)
def test_error_bodies_carry_code_and_message_with_the_http_status(code: FaultCode, status: int) -> None:
    got_status, body = DSO.encode_error(code, "cable 'x' is not known — check the id")
    assert got_status == status
    assert json.loads(body) == {"code": code.value, "message": "cable 'x' is not known — check the id"}
    assert Draft202012Validator(DSO.schema_document()["error"]).is_valid(json.loads(body))
    with pytest.raises(OscpFault) as info:
        DSO.decode_response(DSO.operation("GetCapacityForecast"), status, body)
    assert info.value.code is code
    assert info.value.message == "cable 'x' is not known — check the id"


def test_decode_response_raises_the_peers_fault() -> None:
    operation = CPO.operation("UpdateCableCapacityForecast")
    body = b'{"code":"NotAuthorized","message":"bad password","traceId":"42"}'  # extra keys tolerated
    fault = fault_of(lambda: CPO.decode_response(operation, 401, body))
    assert (fault.code, fault.message) == (FaultCode.NOT_AUTHORIZED, "bad password")
    fault = fault_of(lambda: CPO.decode_response(operation, 200, b'{"code":"UnknownCable","message":"no c-9"}'))
    assert (fault.code, fault.message) == (FaultCode.UNKNOWN_CABLE, "no c-9")


@pytest.mark.parametrize(
    ("status", "body", "fragments"),
    [
        (502, b"<html>Bad Gateway</html>", ("HTTP 502", "UpdateCableCapacityForecast", "no OSCP error body")),
        (500, b'{"code":"Oops","message":"x"}', ("HTTP 500", "no OSCP error body")),
        (200, b"<html>", ("HTTP 200", "not valid JSON")),
        (200, b"", ("body: empty", "status")),
        (200, b'{"status":"Maybe"}', ("status", "'Maybe'", "Accepted, Rejected")),
        (200, b'{"status":"Accepted","extra":1}', ("extra: unknown field",)),
        (302, b"", ("HTTP 302",)),
    ],
)
def test_an_unusable_reply_is_an_internal_error(status: int, body: bytes, fragments: tuple[str, ...]) -> None:
    fault = fault_of(lambda: CPO.decode_response(CPO.operation("UpdateCableCapacityForecast"), status, body))
    assert fault.code is FaultCode.INTERNAL_ERROR
    for fragment in fragments:
        assert fragment in fault.message


def test_a_reply_with_a_naive_datetime_is_an_internal_error() -> None:
    body = b'{"currentTime":"2026-11-24T17:00:00","heartbeatInterval":60}'
    fault = fault_of(lambda: DSO.decode_response(DSO.operation("Heartbeat"), 200, body))
    assert fault.code is FaultCode.INTERNAL_ERROR
    assert "currentTime: '2026-11-24T17:00:00' has no UTC offset" in fault.message
    fault = fault_of(lambda: DSO.decode_response(DSO.operation("Heartbeat"), 200, body.replace(b"60", b"0")))
    assert "heartbeatInterval: 0 is too small; it must be at least 1" in fault.message


def test_an_empty_2xx_reply_is_an_empty_response_where_nothing_is_required() -> None:
    assert DSO.decode_response(DSO.operation("GetCapacityForecast"), 200, b"") == GetCapacityForecastResponse()
    assert DSO.decode_response(DSO.operation("GetCapacityForecast"), 200, b"{}") == GetCapacityForecastResponse()


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/json"


# ---------------------------------------------------------------------------------------------
# property: any valid request survives the trip

OFFSETS = st.sampled_from(
    [
        UTC,
        CET,
        timezone(timedelta(hours=14)),
        timezone(-timedelta(hours=12)),
        timezone(timedelta(hours=5, minutes=45)),
        timezone(-timedelta(hours=3, minutes=30)),
        timezone(timedelta(minutes=17, seconds=30)),
        ZoneInfo("Europe/Amsterdam"),
        ZoneInfo("America/St_Johns"),
    ]
)
# hypothesis takes naive bounds and attaches the time zones itself
INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=OFFSETS,
)
CAPACITIES = st.integers(min_value=0, max_value=10**12).map(lambda n: Decimal(n).scaleb(-3))
BLOCKS = st.builds(
    ForecastedBlock,
    capacity=CAPACITIES,
    phase=st.sampled_from(PhaseIndicator),
    unit=st.sampled_from(UnitOfMeasure),
    start_time=INSTANTS,
    end_time=INSTANTS,
)
ADJUST_REQUESTS = st.builds(
    RequestAdjustedCapacityRequest,
    cable_id=st.text(min_size=1, max_size=64),
    requested_block=st.lists(BLOCKS, min_size=1, max_size=12).map(tuple),
)


@settings(deadline=None)
@given(ADJUST_REQUESTS)
def test_any_valid_adjust_request_survives_encode_and_decode(message: RequestAdjustedCapacityRequest) -> None:
    body = DSO.encode_request(message)
    decoded = DSO.decode_request(DSO.operation("RequestAdjustedCapacity"), body)
    assert isinstance(decoded, RequestAdjustedCapacityRequest)
    assert decoded.cable_id == message.cable_id
    assert len(decoded.requested_block) == len(message.requested_block)
    for got, sent in zip(decoded.requested_block, message.requested_block, strict=True):
        assert got.capacity == sent.capacity
        assert str(got.capacity) == str(sent.capacity)  # same digits, same scale
        assert (got.phase, got.unit) == (sent.phase, sent.unit)
        # Compare instants in UTC: == between zones is never true for a time in a DST fold or gap.
        assert got.start_time.astimezone(UTC) == sent.start_time.astimezone(UTC)
        assert got.end_time.astimezone(UTC) == sent.end_time.astimezone(UTC)
        assert got.start_time.utcoffset() is not None


# ---------------------------------------------------------------------------------------------
# the compiled check agrees with jsonschema


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.sampled_from(["", "c1", "x" * 64, "x" * 65, "ALL", "ONE", "A", "KW", "Accepted", "Rejected", "é"]),
    st.sampled_from(
        [
            "2026-11-24T14:00:00Z",
            "2026-11-24T14:00:00",
            "2026-11-24T14:00:00+01:00",
            "2026-02-30T14:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24 14:00:00Z",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["capacity", "extra"]), st.integers(), max_size=2),
)


def _paths(document: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*path, key))
    elif isinstance(document, list):
        for i, value in enumerate(document):
            found += _paths(value, (*path, i))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> tuple[JsonCodec, type, object]:
    """An encoded message with a few of its values replaced, keys dropped or added, or lists
    emptied or grown past their limit."""
    codec, _, message = draw(st.sampled_from(REQUESTS + RESPONSES))
    encode = codec.encode_request if any(message is m for _, _, m in REQUESTS) else codec.encode_response
    document = json.loads(encode(message), parse_float=Decimal)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]  # type: ignore[index]
        kind = draw(st.sampled_from(["replace", "drop", "add", "grow", "empty"]))
        if kind == "replace":
            parent[path[-1]] = draw(_SCALARS)  # type: ignore[index]
        elif kind == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "cableId", "reason"]))] = draw(_SCALARS)
        elif kind == "grow" and isinstance(parent, list):
            parent.extend([parent[0]] * 200)
        elif kind == "empty" and isinstance(parent, list):
            parent.clear()
    return codec, type(message), document


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_the_compiled_check_accepts_exactly_what_jsonschema_accepts(case: tuple[JsonCodec, type, object]) -> None:
    codec, cls, document = case
    assert codec._fast_checks[cls](document) == codec._validators[cls].is_valid(document)
