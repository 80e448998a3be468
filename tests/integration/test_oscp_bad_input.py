"""Bad input at the OSCP 1.0 gateway: each kind the contract names gets the contract's fault, says what is
wrong, leaks no stack trace and changes nothing.

SOAP 1.1 faults are HTTP 500 with faultcode Client (or Server, VersionMismatch); SOAP 1.2 Sender faults
are 400, Receiver and VersionMismatch 500; the JSON variant answers {"code", "message"} with the status
of the code. Every call runs inside `unchanged`, which compares the decisions, the ledger and cable c1's
capacity view before and after. Flask's test client throughout; one XXE over a live server.
"""

import base64
import io
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from lxml import etree
from oscp_support import PASSWORD, live_server, make_grid
from test_api_support import make_app
from werkzeug.test import TestResponse

from service.app import wiring
from service.oscp.v1.messages import NAMESPACE
from service.usecases import Context, audit, capacity, oscp

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
ENVELOPE = {"soap11": SOAP11, "soap12": SOAP12}
MEDIA_TYPE = {"soap11": "text/xml", "soap12": "application/soap+xml"}
JSON_STATUS = {"InvalidRequest": 400, "NotAuthorized": 401, "NotSubscribed": 403, "UnknownCable": 404}
SOAP = ["soap11", "soap12"]
ALL = [*SOAP, "json"]
SERVER = {"soap11": "Server", "soap12": "Receiver", "json": None}  # the fault code of a failure of ours

# What must never reach a caller: tracebacks, source paths, Python exception names, object reprs.
LEAKS = re.compile(
    r"Traceback|File \"|\bline \d+, in\b|object at 0x|<class '|\b(?!InternalError\b)[A-Z]\w*(?:Error|Exception)\b"
    r"|\b(?:InvalidInput|GridcapError|SoapFault|RequestEntityTooLarge|zeep|lxml|sqlalchemy|werkzeug|service\.\w+)\b"
)


# --- the app and the state that must not change ---------------------------------------------------


@pytest.fixture
def gateway(ctx: Context) -> Iterator[Callable[..., Flask]]:
    """make_grid's c1 with CPOs a and b, and apps on it with the given settings (recorders closed after)."""
    make_grid(ctx)
    apps: list[Flask] = []

    def make(**settings: Any) -> Flask:
        apps.append(make_app(ctx, **settings))
        return apps[-1]

    yield make
    for app in apps:
        wiring(app).close()


@pytest.fixture
def client(gateway: Callable[..., Flask]) -> Any:
    return gateway().test_client()


def snapshot(ctx: Context) -> list[Any]:
    return [audit.decisions(ctx, limit=10_000), audit.ledger(ctx, limit=10_000), capacity.capacity(ctx, "c1")]


@contextmanager
def unchanged(ctx: Context) -> Iterator[None]:
    before = snapshot(ctx)
    yield
    assert snapshot(ctx) == before


# --- requests ----------------------------------------------------------------------------------------


def basic(user: str = "user-a", password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def token(user: str = "user-a", password: str = PASSWORD) -> str:
    return (
        f'<S:Header><wsse:Security xmlns:wsse="{WSSE}"><wsse:UsernameToken><wsse:Username>{user}</wsse:Username>'
        f"<wsse:Password>{password}</wsse:Password></wsse:UsernameToken></wsse:Security></S:Header>"
    )


def xml(name: str, value: Any) -> str:
    """A wire dictionary as OSCP elements (prefix o), repeated elements for lists, in dictionary order."""
    if isinstance(value, list):
        return "".join(xml(name, item) for item in value)
    inner = "".join(xml(k, v) for k, v in value.items()) if isinstance(value, dict) else str(value)
    return f"<o:{name}>{inner}</o:{name}>"


def envelope(version: str, body: str, header: str = "") -> bytes:
    return (
        f'<S:Envelope xmlns:S="{ENVELOPE[version]}" xmlns:o="{NAMESPACE}">{header}<S:Body>{body}</S:Body></S:Envelope>'
    ).encode()


def blk(
    start: str = "2026-11-24T13:00:00Z",
    end: str = "2026-11-24T13:15:00Z",
    value: Any = 40,
    *,
    key: str = "capacity",
    phase: str = "ALL",
    unit: str = "A",
) -> dict[str, Any]:
    return {key: value, "phase": phase, "unit": unit, "startTime": start, "endTime": end}


def usage(start: str = "2026-11-24T12:00:00Z", end: str = "2026-11-24T12:15:00Z", value: Any = 5) -> dict[str, Any]:
    return blk(start, end, value, key="averageUsage")


def send(
    client: Any,
    transport: str,
    operation: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    header: str = "",
) -> TestResponse:
    """One OSCP call as SOAP 1.1, SOAP 1.2 or JSON; HTTP Basic as a unless `headers` say otherwise."""
    headers = basic() if headers is None else headers
    if transport == "json":
        return client.post(
            f"/oscp/1.0/json/{operation}", data=json.dumps(body), content_type="application/json", headers=headers
        )
    return client.post(
        "/oscp/1.0/soap",
        data=envelope(transport, xml(f"{operation}Request", body), header),
        content_type=MEDIA_TYPE[transport],
        headers=headers,
    )


# --- what a refusal looks like -------------------------------------------------------------------------


def resolved(node: Any) -> tuple[str, str]:
    """A QName-valued element (faultcode, Code/Value) as (namespace, local name)."""
    prefix, _, local = node.text.strip().rpartition(":")
    return node.nsmap.get(prefix or None), local


@dataclass
class Fault:
    code: str
    message: str
    status: int


def assert_no_leak(text: str) -> None:
    leak = LEAKS.search(text)
    assert leak is None, f"the reply leaks {leak.group(0)!r}: {text}"


def assert_refused(
    response: TestResponse,
    transport: str,
    code: str,
    *needles: str,
    status: int | None = None,
    soap_code: str | None = None,
) -> Fault:
    """The contract's fault for `transport`: status, envelope or JSON shape, OscpFault code; the message names
    every needle; nothing leaks."""
    text = response.get_data(as_text=True)
    assert_no_leak(text)
    if transport == "json":
        assert response.status_code == (status or JSON_STATUS[code]), text
        assert response.mimetype == "application/json"
        body = response.get_json()
        assert set(body) == {"code", "message"}, body
        fault = Fault(body["code"], body["message"], response.status_code)
    else:
        env = ENVELOPE[transport]
        assert response.mimetype == MEDIA_TYPE[transport], (response.mimetype, text)
        root = etree.fromstring(response.get_data())
        assert root.tag == f"{{{env}}}Envelope"
        node = root.find(f"{{{env}}}Body/{{{env}}}Fault")
        assert node is not None, text
        if transport == "soap11":
            expected_code = soap_code or "Client"
            expected_status = status or 500
            value, reason, detail = node.find("faultcode"), node.findtext("faultstring"), node.find("detail")
        else:
            expected_code = soap_code or "Sender"
            expected_status = status or (400 if expected_code == "Sender" else 500)
            value = node.find(f"{{{env}}}Code/{{{env}}}Value")
            reason = node.findtext(f"{{{env}}}Reason/{{{env}}}Text")
            detail = node.find(f"{{{env}}}Detail")
        assert resolved(value) == (env, expected_code), text
        assert response.status_code == expected_status, text
        oscp = detail.find(f"{{{NAMESPACE}}}OscpFault")
        fault = Fault(oscp.findtext(f"{{{NAMESPACE}}}code"), oscp.findtext(f"{{{NAMESPACE}}}message"), expected_status)
        assert fault.message == reason
    assert fault.code == code, (fault, text)
    assert len(fault.message) >= 20, fault
    for needle in needles:
        assert needle.lower() in fault.message.lower(), (needle, fault.message)
    return fault


# --- the body is wrong: both SOAP versions and JSON ----------------------------------------------------

RAC, UAU, GCF = "RequestAdjustedCapacity", "UpdateAggregatedUsage", "GetCapacityForecast"


def rac(*blocks: dict[str, Any], cable: str | None = "c1") -> dict[str, Any]:
    body: dict[str, Any] = {} if cable is None else {"cableId": cable}
    return body | {"requestedBlock": list(blocks)}


def uau(*blocks: dict[str, Any], cable: str = "c1") -> dict[str, Any]:
    return {"cableId": cable, "usageBlock": list(blocks)}


def many(n: int) -> list[dict[str, Any]]:
    """n valid consecutive blocks from 12:30."""
    first = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
    starts = [first + i * timedelta(minutes=15) for i in range(n)]
    return [blk(s.isoformat(), (s + timedelta(minutes=15)).isoformat(), 1) for s in starts]


BAD_BODIES = {
    # id: (operation, body, fault code, words the message must contain)
    "bad-enum": (RAC, rac(blk(phase="FOUR")), "InvalidRequest", ["phase", "FOUR"]),
    "bad-unit-enum": (RAC, rac(blk(unit="mA")), "InvalidRequest", ["unit", "mA"]),
    "negative-capacity": (RAC, rac(blk(value=-5)), "InvalidRequest", ["capacity", "-5"]),
    "negative-usage": (UAU, uau(usage(value=-1)), "InvalidRequest", ["averageUsage", "-1"]),
    "missing-cableId": (RAC, rac(blk(), cable=None), "InvalidRequest", ["cableId"]),
    "no-blocks": (RAC, rac(), "InvalidRequest", ["requestedBlock"]),
    "193-blocks": (RAC, rac(*many(193)), "InvalidRequest", ["192"]),
    "naive-dateTime": (RAC, rac(blk(start="2026-11-24T13:00:00")), "InvalidRequest", ["2026-11-24T13:00:00", "offset"]),
    "naive-usage-dateTime": (UAU, uau(usage(end="2026-11-24T12:15:00")), "InvalidRequest", ["offset"]),
    "misaligned-block": (
        RAC,
        rac(blk("2026-11-24T13:05:00Z", "2026-11-24T13:20:00Z")),
        "InvalidRequest",
        ["13:05", "quarter hour"],
    ),
    "duplicate-blocks": (RAC, rac(blk(), blk(value=50)), "InvalidRequest", ["[1]", "already covers"]),
    "overlapping-blocks-in-other-offset": (
        RAC,
        rac(blk(), blk("2026-11-24T14:00:00+01:00", "2026-11-24T14:15:00+01:00")),
        "InvalidRequest",
        ["[1]", "already covers"],
    ),
    "block-of-30-minutes": (RAC, rac(blk(end="2026-11-24T13:30:00Z")), "InvalidRequest", ["15 minutes"]),
    "end-before-start": (
        RAC,
        rac(blk("2026-11-24T13:15:00Z", "2026-11-24T13:00:00Z")),
        "InvalidRequest",
        ["15 minutes"],
    ),
    "usage-block-of-5-minutes": (UAU, uau(usage(end="2026-11-24T12:05:00Z")), "InvalidRequest", ["15 minutes"]),
    "block-already-ended": (
        RAC,
        rac(blk("2026-11-24T11:45:00Z", "2026-11-24T12:00:00Z")),
        "InvalidRequest",
        ["11:45", "ended"],
    ),
    "block-beyond-horizon": (
        RAC,
        rac(blk("2026-11-26T12:00:00Z", "2026-11-26T12:15:00Z")),
        "InvalidRequest",
        ["horizon"],
    ),
    "usage-not-begun": (
        UAU,
        uau(usage("2026-11-24T12:15:00Z", "2026-11-24T12:30:00Z")),
        "InvalidRequest",
        ["12:15", "not begun"],
    ),
    "one-phase": (RAC, rac(blk(phase="ONE")), "InvalidRequest", ["phase", "ALL"]),
    "kw-on-an-ampere-cable": (RAC, rac(blk(unit="KW")), "InvalidRequest", ["KW", "send A"]),
    "unknown-cable-request": (RAC, rac(blk(), cable="zz"), "UnknownCable", ["'zz'"]),
    "unknown-cable-usage": (UAU, uau(usage(), cable="zz"), "UnknownCable", ["'zz'"]),
    "unknown-cable-forecast": (GCF, {"cableId": "zz"}, "UnknownCable", ["'zz'"]),
    "cableId-too-long": (GCF, {"cableId": "c" * 65}, "InvalidRequest", ["cableId"]),
}


@pytest.mark.parametrize("transport", ALL)
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_bad_body_gets_the_contracts_fault_and_changes_nothing(
    ctx: Context, client: Any, transport: str, case: str
) -> None:
    operation, body, code, needles = BAD_BODIES[case]
    with unchanged(ctx):
        response = send(client, transport, operation, body)
    assert_refused(response, transport, code, *needles)


def test_the_snapshot_sees_what_a_good_request_changes(ctx: Context, client: Any) -> None:
    """The counter-check of `unchanged`: the valid form of the bad bodies does change the snapshot."""
    calls = [(transport, RAC, rac(blk(value=40 + len(transport)))) for transport in ALL]
    for transport, operation, body in [*calls, ("soap12", UAU, uau(usage()))]:
        before = snapshot(ctx)
        response = send(client, transport, operation, body)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert snapshot(ctx) != before, (transport, operation)


@pytest.mark.parametrize("transport", ALL)
def test_an_unknown_operation_is_refused(ctx: Context, client: Any, transport: str) -> None:
    with unchanged(ctx):
        if transport == "json":
            response = client.post("/oscp/1.0/json/RequestMoreCapacity", json={"cableId": "c1"}, headers=basic())
        else:
            body = "<o:RequestMoreCapacityRequest><o:cableId>c1</o:cableId></o:RequestMoreCapacityRequest>"
            response = client.post(
                "/oscp/1.0/soap", data=envelope(transport, body), content_type=MEDIA_TYPE[transport], headers=basic()
            )
    fault = assert_refused(response, transport, "InvalidRequest", "unknown operation", "RequestMoreCapacity")
    assert "RequestAdjustedCapacity" in fault.message  # and it says which ones exist


def test_an_unknown_json_operation_is_recorded_as_unknown(ctx: Context, gateway: Callable[..., Flask]) -> None:
    app = gateway()
    client = app.test_client()
    for made_up in ("RequestMoreCapacity", "x" * 60, "Heartbeat"):
        client.post(f"/oscp/1.0/json/{made_up}", json={}, headers=basic())
    client.post("/oscp/1.0/json/Heartbeat", json={}, headers=basic(password="wrong"))  # noqa: S106 - a wrong password on purpose
    wiring(app).recorder.flush()
    recorded = [r["operation"] for r in oscp.messages(ctx)]
    assert recorded == ["unknown", "unknown", "Heartbeat", "Heartbeat"]  # no name a caller made up


# --- the document is wrong: SOAP only -------------------------------------------------------------------

_XXE_BODY = "<o:GetCapacityForecastRequest><o:cableId>&x;</o:cableId></o:GetCapacityForecastRequest>"


def _doctype(version: str, subset: str, body: str = "<o:HeartbeatRequest/>") -> bytes:
    return b'<?xml version="1.0"?>\n<!DOCTYPE S:Envelope [' + subset.encode() + b"]>" + envelope(version, body)


BAD_DOCUMENTS: dict[str, tuple[Callable[[str], bytes], list[str]]] = {
    "not-well-formed": (lambda v: envelope(v, "<o:HeartbeatRequest>")[:-20], ["not well-formed"]),
    "empty-body": (lambda v: b"", ["empty"]),
    "not-an-envelope": (lambda v: f'<o:HeartbeatRequest xmlns:o="{NAMESPACE}"/>'.encode(), ["not a SOAP Envelope"]),
    "two-body-elements": (lambda v: envelope(v, "<o:HeartbeatRequest/><o:HeartbeatRequest/>"), ["exactly one"]),
    "dtd": (lambda v: b"<!DOCTYPE S:Envelope>" + envelope(v, "<o:HeartbeatRequest/>"), ["DTD"]),
    "xxe-external-entity": (lambda v: _doctype(v, '<!ENTITY x SYSTEM "file:///etc/passwd">', _XXE_BODY), ["DTD"]),
    "xxe-parameter-entity": (
        lambda v: _doctype(v, '<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;', _XXE_BODY.replace("&x;", "c1")),
        ["DTD"],
    ),
    "billion-laughs": (
        lambda v: _doctype(
            v,
            '<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)),
            _XXE_BODY.replace("&x;", "&l9;"),
        ),
        ["DTD"],
    ),
    "dtd-in-utf-16": (
        lambda v: (
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE S:Envelope [<!ENTITY x "c1">]>'
            + envelope(v, _XXE_BODY).decode()
        ).encode("utf-16"),
        ["DTD"],
    ),
}


@pytest.mark.parametrize("transport", SOAP)
@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_a_bad_document_gets_a_client_fault(ctx: Context, client: Any, transport: str, case: str) -> None:
    make, needles = BAD_DOCUMENTS[case]
    with unchanged(ctx):
        response = client.post(
            "/oscp/1.0/soap", data=make(transport), content_type=MEDIA_TYPE[transport], headers=basic()
        )
    assert_refused(response, transport, "InvalidRequest", *needles)
    assert "root:" not in response.get_data(as_text=True)


def test_an_xxe_over_real_http_reads_no_file(ctx: Context, gateway: Callable[..., Flask]) -> None:
    body = _doctype("soap11", '<!ENTITY x SYSTEM "file:///etc/passwd">', _XXE_BODY)
    with live_server(gateway()) as url, unchanged(ctx):
        response = requests.post(
            f"{url}/oscp/1.0/soap",
            data=body,
            headers={"Content-Type": "text/xml"},
            auth=("user-a", PASSWORD),
            timeout=10,
        )
    assert response.status_code == 500
    assert "root:" not in response.text
    assert_no_leak(response.text)
    root = etree.fromstring(response.content)
    assert root.findtext(f".//{{{NAMESPACE}}}code") == "InvalidRequest"
    assert "DTD" in root.findtext(f".//{{{NAMESPACE}}}message")


@pytest.mark.parametrize(
    ("sent", "content_type", "answered"),
    [
        ("soap12", "text/xml", "soap11"),
        ("soap11", "application/soap+xml", "soap12"),
    ],
)
def test_the_wrong_soap_version_for_the_content_type_is_a_version_mismatch(
    ctx: Context, client: Any, sent: str, content_type: str, answered: str
) -> None:
    with unchanged(ctx):
        response = client.post(
            "/oscp/1.0/soap",
            data=envelope(sent, xml(f"{RAC}Request", rac(blk()))),
            content_type=content_type,
            headers=basic(),
        )
    # VersionMismatch is answered in the version the content type named, HTTP 500 in both (SOAP 1.2 part 2, 7.5.2).
    assert_refused(
        response,
        answered,
        "InvalidRequest",
        ENVELOPE[sent],
        "application/soap+xml",
        soap_code="VersionMismatch",
        status=500,
    )
    if answered == "soap12":
        upgrade = etree.fromstring(response.get_data()).find(f"{{{SOAP12}}}Header/{{{SOAP12}}}Upgrade")
        assert upgrade is not None
        assert len(upgrade) == 2


def test_a_body_that_is_not_soap_at_the_soap_endpoint_is_refused(ctx: Context, client: Any) -> None:
    with unchanged(ctx):
        response = client.post("/oscp/1.0/soap", json=rac(blk()), headers=basic())
    assert_refused(response, "soap11", "InvalidRequest", "application/json", "text/xml")


def test_json_sent_as_something_else_is_refused(ctx: Context, client: Any) -> None:
    with unchanged(ctx):
        response = client.post(
            f"/oscp/1.0/json/{RAC}", data=json.dumps(rac(blk())), content_type="text/plain", headers=basic()
        )
    # 415, one of the gateway's additions to the contract's list of statuses (see the report).
    assert_refused(response, "json", "InvalidRequest", "application/json", status=415)


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b'{"cableId": "c1", "cableId": "c2"}', b"{'a': 1}", b'{"x": NaN}'])
def test_a_json_body_that_is_not_one_object_is_refused(ctx: Context, client: Any, body: bytes) -> None:
    with unchanged(ctx):
        response = client.post(f"/oscp/1.0/json/{RAC}", data=body, content_type="application/json", headers=basic())
    assert_refused(response, "json", "InvalidRequest")


# --- oversized bodies ------------------------------------------------------------------------------------

LIMIT = 4096


def oversized(transport: str) -> bytes:
    """A request over LIMIT bytes that would be valid (and change budgets) if it were accepted."""
    blocks = many(40)
    if transport == "json":
        data = json.dumps(rac(*blocks)).encode()
    else:
        data = envelope(transport, xml(f"{RAC}Request", rac(*blocks)))
    assert len(data) > LIMIT
    return data


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("transport", ALL)
def test_an_oversized_body_is_refused(
    ctx: Context, gateway: Callable[..., Flask], transport: str, chunked: bool
) -> None:
    client = gateway(max_body_bytes=LIMIT).test_client()
    data = oversized(transport)
    content_type = "application/json" if transport == "json" else MEDIA_TYPE[transport]
    path = f"/oscp/1.0/json/{RAC}" if transport == "json" else "/oscp/1.0/soap"
    with unchanged(ctx):
        if chunked:
            # What werkzeug's server and waitress hand the app for Transfer-Encoding: chunked.
            response = client.post(
                path,
                input_stream=io.BytesIO(data),
                content_type=content_type,
                headers={**basic(), "Transfer-Encoding": "chunked"},
                environ_overrides={"wsgi.input_terminated": True},
            )
        else:
            response = client.post(path, data=data, content_type=content_type, headers=basic())
    assert_refused(response, transport, "InvalidRequest", f"limit of {LIMIT} bytes")


@pytest.mark.parametrize("transport", ALL)
def test_a_chunked_body_within_the_limit_is_read_whole(
    ctx: Context, gateway: Callable[..., Flask], transport: str
) -> None:
    client = gateway(max_body_bytes=LIMIT).test_client()
    body = rac(*many(2))
    data = json.dumps(body).encode() if transport == "json" else envelope(transport, xml(f"{RAC}Request", body))
    content_type = "application/json" if transport == "json" else MEDIA_TYPE[transport]
    path = f"/oscp/1.0/json/{RAC}" if transport == "json" else "/oscp/1.0/soap"
    response = client.post(
        path,
        input_stream=io.BytesIO(data),
        content_type=content_type,
        headers={**basic(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# --- credentials -------------------------------------------------------------------------------------------

WRONG = "not the password"
CREDENTIALS = {
    "missing": ({}, "", ["no credentials", "HTTP Basic", "UsernameToken"]),
    "wrong-password": (basic("user-a", WRONG), "", ["wrong password"]),
    "unknown-user": (basic(user="mallory"), "", ["unknown username"]),
    "usernametoken-wrong-password": ({}, token("user-a", WRONG), ["wrong password"]),
    "basic-and-usernametoken-name-different-cpos": (basic("user-a"), token("user-b"), ["name different callers"]),
    "basic-wrong-usernametoken-right": (basic("user-a", WRONG), token(), ["wrong password"]),
}


@pytest.mark.parametrize(
    ("case", "transport"),
    [(case, t) for case, (_, header, _) in CREDENTIALS.items() for t in (SOAP if header else ALL)],  # JSON: no token
)
def test_bad_credentials_are_not_authorized(ctx: Context, client: Any, transport: str, case: str) -> None:
    headers, header, needles = CREDENTIALS[case]
    with unchanged(ctx):
        response = send(client, transport, RAC, rac(blk()), headers=headers, header=header)
    assert_refused(response, transport, "NotAuthorized", *needles)
    if case in ("missing", "wrong-password", "unknown-user"):
        assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("transport", SOAP)
def test_a_usernametoken_is_not_hidden_by_an_authorization_header_of_another_scheme(
    ctx: Context, client: Any, transport: str
) -> None:
    response = send(client, transport, "Heartbeat", {}, headers={"Authorization": "Bearer proxy-token"}, header=token())
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("transport", SOAP)
def test_a_client_that_keeps_sending_bodies_nobody_logged_in_with_is_no_longer_parsed(
    ctx: Context, client: Any, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.oscp.v1.gateway import FAILED_LOGINS_PER_MINUTE

    soap = wiring(client.application).gateway.soap
    parsed = []
    decode = soap.decode_request
    monkeypatch.setattr(soap, "decode_request", lambda *args: parsed.append(1) or decode(*args))

    def garbage() -> TestResponse:  # no Basic: its credentials could only be in the body, which fails the XSD
        return send(client, transport, RAC, {"cableId": "c1", "noSuchElement": 1}, headers={})

    with unchanged(ctx):
        refused = [garbage() for _ in range(FAILED_LOGINS_PER_MINUTE)]
        assert all(r.status_code in (400, 500) and b"InvalidRequest" in r.data for r in refused)
        throttled = send(client, transport, "Heartbeat", {}, headers={}, header=token())
    # a good UsernameToken too: the body is not read once the address has used up its failures
    assert_refused(throttled, transport, "InvalidRequest", "retry after", status=429)
    assert len(parsed) == FAILED_LOGINS_PER_MINUTE
    other_client = client.post(
        "/oscp/1.0/soap",
        data=envelope(transport, "<o:HeartbeatRequest/>", token()),
        content_type=MEDIA_TYPE[transport],
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert other_client.status_code == 200  # the allowance is the address's


@pytest.mark.parametrize("transport", SOAP)
def test_bad_bodies_with_a_good_usernametoken_count_against_that_cpo_not_its_address(
    ctx: Context, client: Any, transport: str
) -> None:
    from service.oscp.v1.gateway import FAILED_LOGINS_PER_MINUTE

    with unchanged(ctx):
        for _ in range(FAILED_LOGINS_PER_MINUTE + 1):
            refused = send(client, transport, RAC, {"cableId": "c1", "noSuchElement": 1}, headers={}, header=token())
            assert_refused(refused, transport, "InvalidRequest", "noSuchElement")
        wrong = send(
            client, transport, RAC, {"cableId": "c1", "noSuchElement": 1}, headers={}, header=token(password="x" * 12)
        )
    assert_refused(wrong, transport, "NotAuthorized", "wrong password")  # nothing about the body to a stranger
    assert send(client, transport, "Heartbeat", {}, headers={}, header=token()).status_code == 200
    wiring(client.application).recorder.flush()
    callers = [(r["cpo_id"], r["outcome"]) for r in oscp.messages(ctx, limit=1000)]
    assert callers == [("a", "InvalidRequest")] * (FAILED_LOGINS_PER_MINUTE + 1) + [
        (None, "NotAuthorized"),
        ("a", "ok"),
    ]


@pytest.mark.parametrize("transport", ALL)
def test_a_failure_inside_the_service_is_an_internal_error_that_says_nothing_of_it(
    ctx: Context, client: Any, transport: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from service.oscp.v1 import handlers
    from service.oscp.v1 import messages as m

    def broken(*_: Any) -> Any:
        raise RuntimeError("secret detail at /srv/gridcap/db")

    monkeypatch.setitem(handlers.DSO_HANDLERS, m.HeartbeatRequest, broken)
    with unchanged(ctx):
        response = send(client, transport, "Heartbeat", {})
    fault = assert_refused(response, transport, "InternalError", "retry later", status=500, soap_code=SERVER[transport])
    assert "secret" not in response.get_data(as_text=True)
    assert "secret detail" in caplog.text  # the log has it, for whoever runs the service
    wiring(client.application).recorder.flush()
    (record,) = oscp.messages(ctx)
    assert (record["cpo_id"], record["operation"], record["outcome"], record["http_status"]) == (
        "a", "Heartbeat", "InternalError", fault.status
    )  # fmt: skip


# --- the rate limit ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "auth"), [("soap11", "basic"), ("soap12", "usernametoken"), ("soap11", "both"), ("json", "basic")]
)
def test_the_fourth_call_in_a_minute_is_refused_for_that_cpo_only(
    ctx: Context, gateway: Callable[..., Flask], transport: str, auth: str
) -> None:
    client = gateway(oscp_rate_per_minute=3).test_client()

    def call(user: str, operation: str = "Heartbeat", body: dict[str, Any] | None = None) -> TestResponse:
        headers = {} if auth == "usernametoken" else basic(f"user-{user}")
        header = token(f"user-{user}") if auth in ("usernametoken", "both") else ""
        return send(client, transport, operation, body or {}, headers=headers, header=header)

    for _ in range(3):  # credentials sent twice (Basic and a UsernameToken) still count once
        assert call("a").status_code == 200
    with unchanged(ctx):
        refused = call("a", RAC, rac(blk()))
    assert_refused(refused, transport, "InvalidRequest", "rate limit", "3", "retry after", status=429)
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert f"retry after {retry_after} s" in refused.get_data(as_text=True)
    assert call("b").status_code == 200  # another CPO has its own allowance
    wiring(client.application).recorder.flush()
    outcomes = [(r["cpo_id"], r["outcome"]) for r in oscp.messages(ctx)]
    # throttling told apart from bad requests, and put down to the CPO it throttled
    assert outcomes == [("a", "ok")] * 3 + [("a", "RateLimited"), ("b", "ok")]
