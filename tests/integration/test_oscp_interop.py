"""OSCP 1.0 over real HTTP on 127.0.0.1: a zeep client built from the served WSDL, the JSON variant, raw envelopes.

Every DSO operation goes through both SOAP ports with HTTP Basic and with a WS-Security UsernameToken,
and through the JSON variant. Each scenario runs on cable c1 through the wire and, step by step, on an
identical twin cable c2 through `service.usecases.capacity` (the path the REST API takes): budgets,
decisions and ledger of the two cables must stay equal, so the gateway decides nothing on its own.
Also here: authorization by subscription, the served WSDL and XSD, the published JSON Schema, envelopes
written by hand with unusual prefixes, and the message record.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
import zeep
from jsonschema import Draft202012Validator, FormatChecker
from lxml import etree
from oscp_support import PASSWORD, dso_service, kerkstraat, live_server, make_grid, subscribe
from test_api_support import TOKEN, make_app
from zeep.helpers import serialize_object

from service.app import wiring
from service.domain.model import Binding, Cpo
from service.oscp.v1.gateway import WSDL_DIR
from service.oscp.v1.messages import NAMESPACE
from service.usecases import Context, audit, capacity, cpos, grid
from service.usecases.capacity import BlockQuantity

TIMEOUT = 10
BLOCK = timedelta(minutes=15)
TIME_KEYS = {"startTime", "endTime", "currentTime"}
DECIMAL_KEYS = {"capacity", "averageUsage"}
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"


def at(hour: int, minute: int) -> datetime:
    """A moment on the clock fixture's day (2026-11-24, UTC); the clock stands at 12:07:30."""
    return datetime(2026, 11, 24, hour, minute, tzinfo=UTC)


def block(start: datetime, value: int | str, key: str = "capacity") -> dict[str, Any]:
    return {key: Decimal(value), "phase": "ALL", "unit": "A", "startTime": start, "endTime": start + BLOCK}


def quantities(blocks: list[dict[str, Any]], key: str = "capacity") -> list[BlockQuantity]:
    return [BlockQuantity(b["startTime"], b["endTime"], b[key]) for b in blocks]


# --- the server and the grid ---------------------------------------------------------------------


@contextmanager
def serve(ctx: Context, **settings: Any) -> Iterator[str]:
    """The whole app on a free loopback port (one per test; cheap); its message recorder closed after."""
    app = make_app(ctx, **settings)
    try:
        with live_server(app) as url:
            yield url
    finally:
        wiring(app).close()


def twin_cable(ctx: Context, cable_id: str = "c2", subscribers: tuple[str, ...] = ("a", "b")) -> None:
    """A cable like make_grid's c1, its CPOs subscribed in the same order with the same terms."""
    grid.create_cable(ctx, kerkstraat(cable_id), actor="engineer")
    subscribe(ctx, cable_id, subscribers)


def third_cpo(ctx: Context) -> None:
    """CPO c (user-c): valid credentials, subscribed to nothing."""
    cpos.create_cpo(
        ctx, Cpo("c", "CPO c", "user-c", "http://127.0.0.1:9/oscp/1.0/soap", Binding.SOAP11), PASSWORD, actor="test"
    )


def budgets(ctx: Context, cable_id: str) -> dict[datetime, dict[str, Decimal]]:
    return {b.start: b.budgets for b in capacity.capacity(ctx, cable_id).blocks}


def history(ctx: Context, cable_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The cable's decisions and ledger, its id written as "<cable>" so that twins compare equal."""

    def plain(text: str | None) -> str | None:
        return text.replace(cable_id, "<cable>") if text else text

    decisions = [
        (d.actor, d.action, d.cpo_id, d.status, d.severity, plain(d.message))
        for d in audit.decisions(ctx, cable_id=cable_id, limit=10_000)
    ]
    ledger = [
        (e.actor, e.action, e.cpo_id, e.start, e.old_capacity, e.new_capacity, e.reason)
        for e in audit.ledger(ctx, cable_id=cable_id, limit=10_000)
    ]
    return decisions, ledger


def everything(ctx: Context, *cable_ids: str) -> list[Any]:
    """All decisions, the whole ledger and every cable's budgets: what a refused call must leave alone."""
    return [
        audit.decisions(ctx, limit=10_000),
        audit.ledger(ctx, limit=10_000),
        *(capacity.capacity(ctx, c) for c in cable_ids),
    ]


# --- callers: one CPO's view of the wire ---------------------------------------------------------


class Refused(Exception):
    def __init__(self, code: str, message: str, detail: str) -> None:
        super().__init__(f"{code}: {message} ({detail})")
        self.code, self.message, self.detail = code, message, detail


def normalise(value: Any, key: str | None = None) -> Any:
    """A response as comparable values: absent optionals dropped, dateTimes in UTC, quantities as Decimal."""
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normalise(v, key) for v in value]
    if key in TIME_KEYS:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert moment.utcoffset() is not None, (key, value)
        return moment.astimezone(UTC)
    if key in DECIMAL_KEYS and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class SoapCaller:
    """A CPO calling through a zeep client made from the served WSDL, on the SOAP 1.1 or 1.2 port."""

    def __init__(self, url: str, version: str, user: str, *, wsse: bool) -> None:
        self.version = version
        self.service = dso_service(url, version, username=user, wsse=wsse)

    def __call__(self, operation: str, **body: Any) -> dict[str, Any]:
        try:
            result = getattr(self.service, operation)(**body)
        except zeep.exceptions.Fault as fault:
            raise self.refused(fault) from None
        data = serialize_object(result, target_cls=dict)
        if operation == "GetCapacityForecast":  # zeep unwraps a response with one (repeated) child
            data = {"capacityForecast": data or []}
        return dict(normalise(data))

    def refused(self, fault: zeep.exceptions.Fault) -> Refused:
        """A client fault (the caller must change the request) with an OscpFault detail saying the same."""
        assert fault.code == ("soap:Client" if self.version == "1.1" else "env:Sender"), (fault.code, fault.message)
        node = fault.detail.find(f"{{{NAMESPACE}}}OscpFault")
        code, message = node.findtext(f"{{{NAMESPACE}}}code"), node.findtext(f"{{{NAMESPACE}}}message")
        assert message == fault.message
        return Refused(code, message, fault.code)


@dataclass
class JsonCaller:
    """A CPO calling the JSON variant with HTTP Basic; keeps what it sent and received (for the schema test)."""

    url: str
    user: str
    sent: list[tuple[str, Any]] = field(default_factory=list)
    received: list[tuple[str, int, Any]] = field(default_factory=list)

    def __call__(self, operation: str, **body: Any) -> dict[str, Any]:
        document = to_json(body)
        self.sent.append((operation, document))
        response = requests.post(
            f"{self.url}/oscp/1.0/json/{operation}",
            data=json.dumps(document),
            headers={"Content-Type": "application/json"},
            auth=(self.user, PASSWORD),
            timeout=TIMEOUT,
        )
        assert response.headers["Content-Type"] == "application/json"
        self.received.append((operation, response.status_code, response.json()))
        if response.status_code != 200:
            error = response.json()
            assert set(error) == {"code", "message"}, error
            raise Refused(error["code"], error["message"], str(response.status_code))
        data = response.json(parse_float=Decimal)
        if operation == "GetCapacityForecast":  # an empty repeated element is left out, as in XML
            data.setdefault("capacityForecast", [])
        return dict(normalise(data))


TRANSPORTS = ["soap11-basic", "soap11-wsse", "soap12-basic", "soap12-wsse", "json-basic"]


def caller(url: str, transport: str, user: str) -> Any:
    binding, auth = transport.split("-")
    if binding == "json":
        return JsonCaller(url, user)
    return SoapCaller(url, "1.1" if binding == "soap11" else "1.2", user, wsse=auth == "wsse")


# --- one decision path ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_dso_operation_changes_exactly_what_the_use_cases_change(
    ctx: Context, clock: Any, transport: str
) -> None:
    make_grid(ctx)
    twin_cable(ctx)
    assert budgets(ctx, "c1") == budgets(ctx, "c2")

    def same_state() -> None:
        assert budgets(ctx, "c1") == budgets(ctx, "c2")

    def granted(reply: dict[str, Any], cpo_id: str, asked: list[dict[str, Any]]) -> dict[datetime, Decimal]:
        """The reply's forecast: the caller's budget for exactly the blocks it asked about, as the view has it."""
        forecast = reply["capacityForecast"]
        assert forecast["cableId"] == "c1"
        assert forecast["backupCapacity"] == {"capacity": Decimal(10), "phase": "ALL", "unit": "A"}
        got = {b["startTime"]: b["capacity"] for b in forecast["forecastedBlock"]}
        assert list(got) == sorted(b["startTime"] for b in asked)
        assert all(
            (b["phase"], b["unit"], b["endTime"] - b["startTime"]) == ("ALL", "A", BLOCK)
            for b in forecast["forecastedBlock"]
        )
        view = budgets(ctx, "c1")
        assert got == {s: view[s].get(cpo_id, Decimal(0)) for s in got}
        return got

    with serve(ctx) as url:
        cpo_a, cpo_b = caller(url, transport, "user-a"), caller(url, transport, "user-b")

        assert cpo_a("Heartbeat") == {"currentTime": clock.now, "heartbeatInterval": 60}

        def request(blocks: list[dict[str, Any]]) -> dict[str, Any]:
            reply = cpo_a("RequestAdjustedCapacity", cableId="c1", requestedBlock=blocks)
            twin = capacity.request(ctx, "c2", "a", quantities(blocks), actor="cpo:a")
            assert reply["status"] == twin.status.value
            assert granted(reply, "a", blocks) == twin.budgets
            same_state()
            return reply

        # Within the unallocated headroom: granted in full.
        raised = [block(at(13, 0), 30), block(at(13, 15), 30)]
        reply = request(raised)
        assert (reply["status"], reply.get("reason")) == ("Accepted", None)
        assert [b["capacity"] for b in reply["capacityForecast"]["forecastedBlock"]] == [30, 30]

        # More than the headroom, and b has reported nothing: part of it, and why.
        reply = request([block(at(14, 0), 50)])
        assert reply["status"] == "PartiallyAccepted"
        assert "could be granted" in reply["reason"]
        assert Decimal(0) < reply["capacityForecast"]["forecastedBlock"][0]["capacity"] < Decimal(50)

        # Hand back part of a budget: always accepted, the budget is what was asked.
        handed = [block(at(13, 0), 12)]
        reply = request(handed)
        assert (reply["status"], reply.get("reason")) == ("Accepted", None)
        assert reply["capacityForecast"]["forecastedBlock"][0]["capacity"] == Decimal(12)

        # b reports its usage: the past block 11:45 (before the service knew the cable) and the current one.
        usage = [block(at(11, 45), 2, "averageUsage"), block(at(12, 0), "2.5", "averageUsage")]
        assert cpo_b("UpdateAggregatedUsage", cableId="c1", usageBlock=usage) == {"status": "Accepted"}
        capacity.report_usage(ctx, "c2", "b", quantities(usage, "averageUsage"), actor="cpo:b")
        same_state()

        # With b's unused budget shown, a gets more than the headroom: the usage took the same path too.
        reply = request([block(at(15, 0), 60)])
        assert reply["status"] == "Accepted"
        reclaimed = [e for e in audit.ledger(ctx, cable_id="c1") if e.reason == "reclaimed_unused"]
        assert [(e.cpo_id, e.start) for e in reclaimed] == [("b", at(15, 0))]

        # GetCapacityForecast: each caller its own budgets for the whole horizon, with and without cableId.
        view = budgets(ctx, "c1")
        for cpo_id, who in (("a", cpo_a), ("b", cpo_b)):
            (forecast,) = who("GetCapacityForecast", cableId="c1")["capacityForecast"]
            assert forecast["cableId"] == "c1"
            assert [(b["startTime"], b["capacity"]) for b in forecast["forecastedBlock"]] == [
                (s, v.get(cpo_id, Decimal(0))) for s, v in view.items()
            ]
        everywhere = cpo_a("GetCapacityForecast")["capacityForecast"]
        assert sorted(f["cableId"] for f in everywhere) == ["c1", "c2"]
        for forecast in everywhere:
            cable_view = budgets(ctx, forecast["cableId"])
            assert {b["startTime"]: b["capacity"] for b in forecast["forecastedBlock"]} == {
                s: v.get("a", Decimal(0)) for s, v in cable_view.items()
            }

        if isinstance(cpo_a, JsonCaller):  # every body sent and received fits the published JSON Schema
            assert_fit_the_published_schema(url, [cpo_a, cpo_b])

    assert history(ctx, "c1") == history(ctx, "c2")
    decisions, _ = history(ctx, "c1")
    assert [d[1:4] for d in decisions if d[0].startswith("cpo:")] == [
        ("request", "a", "Accepted"),
        ("request", "a", "PartiallyAccepted"),
        ("request", "a", "Accepted"),
        ("usage_reported", "b", None),
        ("request", "a", "Accepted"),
    ]


# --- authorization by subscription ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["soap11-basic", "soap12-wsse", "json-basic"])
def test_a_cpo_reaches_only_the_cables_it_is_subscribed_to_and_reads_only_its_own_budgets(
    ctx: Context, transport: str
) -> None:
    make_grid(ctx)
    twin_cable(ctx, "c2", subscribers=("a",))
    third_cpo(ctx)
    status = {"NotSubscribed": "403", "UnknownCable": "404"}
    ahead = [block(at(13, 0), 60)]
    used = [block(at(12, 0), 1, "averageUsage")]

    with serve(ctx) as url:
        callers = {user: caller(url, transport, f"user-{user}") for user in "abc"}
        before = everything(ctx, "c1", "c2")
        refusals = [(user, "c2", "NotSubscribed") for user in "bc"] + [(user, "zz", "UnknownCable") for user in "abc"]
        for user, cable_id, code in refusals:
            calls = [
                ("GetCapacityForecast", {"cableId": cable_id}),
                ("RequestAdjustedCapacity", {"cableId": cable_id, "requestedBlock": ahead}),
                ("UpdateAggregatedUsage", {"cableId": cable_id, "usageBlock": used}),
            ]
            for operation, body in calls:
                with pytest.raises(Refused) as refused:
                    callers[user](operation, **body)
                assert refused.value.code == code, (user, operation, refused.value)
                assert repr(cable_id) in refused.value.message
                if transport.startswith("json"):
                    assert refused.value.detail == status[code]
        assert everything(ctx, "c1", "c2") == before

        # Each reads its own budgets, never another's: b's and a's differ on c1, and each gets its own.
        view = budgets(ctx, "c1")
        assert any(v.get("a") != v.get("b") for v in view.values())
        mine = {user: callers[user]("GetCapacityForecast")["capacityForecast"] for user in "abc"}
        assert [f["cableId"] for f in mine["b"]] == ["c1"]
        assert sorted(f["cableId"] for f in mine["a"]) == ["c1", "c2"]
        assert mine["c"] == []
        for user in "ab":
            (on_c1,) = [f for f in mine[user] if f["cableId"] == "c1"]
            assert {b["startTime"]: b["capacity"] for b in on_c1["forecastedBlock"]} == {
                s: v.get(user, Decimal(0)) for s, v in view.items()
            }
        assert everything(ctx, "c1", "c2") == before


# --- the served contract --------------------------------------------------------------------------


def addresses(wsdl: bytes) -> list[str]:
    root = etree.fromstring(wsdl)
    return [node.get("location") for ns in (WSDL_SOAP11, WSDL_SOAP12) for node in root.iter(f"{{{ns}}}address")]


def without_addresses(wsdl: bytes) -> bytes:
    root = etree.fromstring(wsdl, etree.XMLParser(remove_blank_text=True, remove_comments=True))
    for ns in (WSDL_SOAP11, WSDL_SOAP12):
        for node in root.iter(f"{{{ns}}}address"):
            node.set("location", "-")
    canonical: bytes = etree.tostring(root, method="c14n")
    return canonical


def test_the_wsdl_names_the_host_the_client_used_and_its_schema_import_resolves(ctx: Context) -> None:
    make_grid(ctx)
    with serve(ctx) as url:
        port = url.rpartition(":")[2]
        wsdl_url = f"{url}/oscp/1.0/soap?wsdl"
        checked_in = (WSDL_DIR / "oscp-1.0-dso.wsdl").read_bytes()
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "gridcap.example.net:8443", "[::1]:8080"):
            served = requests.get(wsdl_url, headers={"Host": host}, timeout=TIMEOUT)
            assert served.status_code == 200
            assert served.headers["Content-Type"].startswith("text/xml")
            assert addresses(served.content) == [f"http://{host}/oscp/1.0/soap"] * 2
            assert without_addresses(served.content) == without_addresses(checked_in)  # nothing else rewritten

        # A client that reached the server as "localhost" is sent back to "localhost" and works there.
        service = dso_service(f"http://localhost:{port}", "1.2")
        assert service._binding_options["address"] == f"http://localhost:{port}/oscp/1.0/soap"
        assert service.Heartbeat()["heartbeatInterval"] == 60

        # The XSD is served where the WSDL's relative import resolves, byte for byte the checked-in file.
        (location,) = etree.fromstring(checked_in).xpath(
            "//xsd:import/@schemaLocation", namespaces={"xsd": "http://www.w3.org/2001/XMLSchema"}
        )
        xsd = requests.get(urljoin(wsdl_url, location), timeout=TIMEOUT)
        assert xsd.status_code == 200
        assert xsd.headers["Content-Type"].startswith("text/xml")
        assert xsd.content == (WSDL_DIR / "oscp-1.0.xsd").read_bytes()
        assert requests.get(f"{url}/oscp/1.0/soap?xsd", timeout=TIMEOUT).content == xsd.content

        hint = requests.get(f"{url}/oscp/1.0/soap", timeout=TIMEOUT)
        assert hint.status_code == 200
        assert "?wsdl" in hint.text


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=FormatChecker())


def assert_fit_the_published_schema(url: str, callers: list[JsonCaller]) -> None:
    """Each request sent fits its operation's request schema, each reply its response or the error schema."""
    document = requests.get(f"{url}/oscp/1.0/json/schema", timeout=TIMEOUT).json()
    operations = document["operations"]
    for who in callers:
        for op, body in who.sent:
            validator(operations[op]["request"]).validate(body)
        for op, status, body in who.received:
            validator(operations[op]["response"] if status == 200 else document["error"]).validate(body)
            if status != 200:
                assert document["errorStatus"][body["code"]] == status


def test_the_published_json_schema_is_draft_2020_12_and_holds_the_bodies_sent_and_received(ctx: Context) -> None:
    make_grid(ctx)
    with serve(ctx) as url:
        published = requests.get(f"{url}/oscp/1.0/json/schema", timeout=TIMEOUT)
        assert published.status_code == 200
        assert published.headers["Content-Type"].startswith("application/schema+json")
        document = published.json()
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(document)
        operations = document["operations"]
        assert set(operations) == {
            "RequestAdjustedCapacity",
            "UpdateAggregatedUsage",
            "GetCapacityForecast",
            "Heartbeat",
        }
        for name, op in operations.items():
            assert (op["method"], op["path"]) == ("POST", f"/oscp/1.0/json/{name}")
            Draft202012Validator.check_schema(op["request"])
            Draft202012Validator.check_schema(op["response"])
        Draft202012Validator.check_schema(document["error"])

        cpo_a = JsonCaller(url, "user-a")
        cpo_a("Heartbeat")
        cpo_a("RequestAdjustedCapacity", cableId="c1", requestedBlock=[block(at(13, 0), 30), block(at(13, 15), 50)])
        cpo_a("RequestAdjustedCapacity", cableId="c1", requestedBlock=[block(at(13, 15), 5)])
        cpo_a("UpdateAggregatedUsage", cableId="c1", usageBlock=[block(at(12, 0), "1.5", "averageUsage")])
        cpo_a("GetCapacityForecast", cableId="c1")
        cpo_a("GetCapacityForecast")
        with pytest.raises(Refused):
            cpo_a("GetCapacityForecast", cableId="zz")
        assert {op for op, _ in cpo_a.sent} == set(operations)
        assert {status for _, status, _ in cpo_a.received} == {200, 404}
        assert_fit_the_published_schema(url, [cpo_a])

        # The schema says what the service refuses: a dateTime without an offset, a negative capacity.
        one = to_json(block(at(13, 0), 1))
        naive = {"cableId": "c1", "requestedBlock": [one | {"startTime": "2026-11-24T13:00:00"}]}
        negative = {"cableId": "c1", "requestedBlock": [one | {"capacity": -1}]}
        request_schema = validator(operations["RequestAdjustedCapacity"]["request"])
        assert not request_schema.is_valid(naive)
        assert not request_schema.is_valid(negative)


# --- envelopes written by hand --------------------------------------------------------------------


def _token(prefix: str, user: str = "user-a") -> str:
    return (
        f'<{prefix}:Security xmlns:{prefix}="{WSSE}"><{prefix}:UsernameToken>'
        f"<{prefix}:Username>{user}</{prefix}:Username><{prefix}:Password>{PASSWORD}</{prefix}:Password>"
        f"</{prefix}:UsernameToken></{prefix}:Security>"
    )


RAW_ENVELOPES = {
    # SoapUI style: soapenv and urn prefixes, pretty-printed, a comment, SOAPAction quoted.
    "soapui-soapenv-urn": (
        "text/xml; charset=UTF-8",
        {"SOAPAction": '"urn://OSCP/2015/04/RequestAdjustedCapacity"'},
        f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{SOAP11}" xmlns:urn="{NAMESPACE}">
   <soapenv:Header/>
   <soapenv:Body>
      <!-- a raise for one block -->
      <urn:RequestAdjustedCapacityRequest>
         <urn:cableId>c1</urn:cableId>
         <urn:requestedBlock>
            <urn:capacity>30.0</urn:capacity>
            <urn:phase>ALL</urn:phase>
            <urn:unit>A</urn:unit>
            <urn:startTime>2026-11-24T14:00:00+01:00</urn:startTime>
            <urn:endTime>2026-11-24T14:15:00+01:00</urn:endTime>
         </urn:requestedBlock>
      </urn:RequestAdjustedCapacityRequest>
   </soapenv:Body>
</soapenv:Envelope>""",
    ),
    # SOAP 1.2 with S and ns9, the action as a content-type parameter, credentials in a UsernameToken.
    "soap12-S-ns9-usernametoken": (
        'application/soap+xml; charset=utf-8; action="urn://OSCP/2015/04/RequestAdjustedCapacity"',
        {},
        f'<S:Envelope xmlns:S="{SOAP12}"><S:Header>{_token("o")}</S:Header><S:Body>'
        f'<ns9:RequestAdjustedCapacityRequest xmlns:ns9="{NAMESPACE}"><ns9:cableId>c1</ns9:cableId>'
        "<ns9:requestedBlock><ns9:capacity>30</ns9:capacity><ns9:phase>ALL</ns9:phase><ns9:unit>A</ns9:unit>"
        "<ns9:startTime>2026-11-24T13:00:00Z</ns9:startTime><ns9:endTime>2026-11-24T13:15:00Z</ns9:endTime>"
        "</ns9:requestedBlock></ns9:RequestAdjustedCapacityRequest></S:Body></S:Envelope>",
    ),
    # The OSCP namespace as the default namespace of the body element, its children unprefixed.
    "default-namespace-on-body-element": (
        "text/xml",
        {},
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP11}"><SOAP-ENV:Body>'
        f'<RequestAdjustedCapacityRequest xmlns="{NAMESPACE}"><cableId>c1</cableId><requestedBlock>'
        "<capacity>30.000</capacity><phase>ALL</phase><unit>A</unit>"
        "<startTime>2026-11-24T13:00:00.000Z</startTime><endTime>2026-11-24T13:15:00.000Z</endTime>"
        "</requestedBlock></RequestAdjustedCapacityRequest></SOAP-ENV:Body></SOAP-ENV:Envelope>",
    ),
    # The envelope namespace as the default, the OSCP one declared on the Envelope under an odd prefix.
    "default-envelope-namespace": (
        "application/soap+xml",
        {},
        f'<Envelope xmlns="{SOAP12}" xmlns:x_1="{NAMESPACE}"><Body><x_1:RequestAdjustedCapacityRequest>'
        "<x_1:cableId>c1</x_1:cableId><x_1:requestedBlock><x_1:capacity>30</x_1:capacity><x_1:phase>ALL</x_1:phase>"
        "<x_1:unit>A</x_1:unit><x_1:startTime>2026-11-24T08:00:00-05:00</x_1:startTime>"
        "<x_1:endTime>2026-11-24T08:15:00-05:00</x_1:endTime></x_1:requestedBlock>"
        "</x_1:RequestAdjustedCapacityRequest></Body></Envelope>",
    ),
}


@pytest.mark.parametrize("name", list(RAW_ENVELOPES))
def test_hand_written_envelopes_with_unusual_prefixes_are_understood(ctx: Context, name: str) -> None:
    make_grid(ctx)
    content_type, headers, envelope = RAW_ENVELOPES[name]
    wsse = "UsernameToken" in envelope
    with serve(ctx) as url:
        response = requests.post(
            f"{url}/oscp/1.0/soap",
            data=envelope.encode(),
            headers={"Content-Type": content_type, **headers},
            auth=None if wsse else ("user-a", PASSWORD),
            timeout=TIMEOUT,
        )
    assert response.status_code == 200, response.text
    env = SOAP12 if content_type.startswith("application/soap+xml") else SOAP11
    assert response.headers["Content-Type"].startswith(content_type.split(";")[0])
    root = etree.fromstring(response.content)
    (reply,) = root.find(f"{{{env}}}Body")
    assert reply.tag == f"{{{NAMESPACE}}}RequestAdjustedCapacityResponse"
    assert reply.findtext(f"{{{NAMESPACE}}}status") == "Accepted"
    forecast = reply.find(f"{{{NAMESPACE}}}capacityForecast")
    starts = [datetime.fromisoformat(t.text) for t in forecast.iter(f"{{{NAMESPACE}}}startTime")]
    assert starts == [at(13, 0)]  # every envelope asks for 13:00 UTC, in its own offset
    assert Decimal(forecast.findtext(f"{{{NAMESPACE}}}forecastedBlock/{{{NAMESPACE}}}capacity")) == 30
    assert budgets(ctx, "c1")[at(13, 0)]["a"] == 30
    (decision,) = [d for d in audit.decisions(ctx) if d.action == "request"]
    assert (decision.actor, decision.cpo_id, decision.status) == ("cpo:a", "a", "Accepted")


# --- the message record ---------------------------------------------------------------------------

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def exchange_a_few(url: str) -> None:
    """Five exchanges: three answered, one fault from a handler, one refused before any CPO was known."""
    SoapCaller(url, "1.1", "user-a", wsse=False)("Heartbeat")
    SoapCaller(url, "1.2", "user-b", wsse=True)("GetCapacityForecast", cableId="c1")
    JsonCaller(url, "user-a")("RequestAdjustedCapacity", cableId="c1", requestedBlock=[block(at(13, 0), 30)])
    with pytest.raises(Refused):
        SoapCaller(url, "1.1", "user-a", wsse=False)("GetCapacityForecast", cableId="zz")
    assert requests.post(f"{url}/oscp/1.0/json/Heartbeat", json={}, timeout=TIMEOUT).status_code == 401


def test_every_exchange_is_recorded_with_direction_cpo_operation_outcome_and_duration(ctx: Context) -> None:
    make_grid(ctx)
    with serve(ctx) as url:
        exchange_a_few(url)
        assert requests.get(f"{url}/api/v1/oscp/messages", timeout=TIMEOUT).status_code == 401
        listed = requests.get(f"{url}/api/v1/oscp/messages", headers=ADMIN, timeout=TIMEOUT)
        assert listed.status_code == 200
        messages = listed.json()["messages"]
        assert [
            (m["direction"], m["cpo_id"], m["binding"], m["operation"], m["outcome"], m["http_status"])
            for m in messages
        ] == [
            ("in", "a", "soap11", "Heartbeat", "ok", 200),
            ("in", "b", "soap12", "GetCapacityForecast", "ok", 200),
            ("in", "a", "json", "RequestAdjustedCapacity", "ok", 200),
            ("in", "a", "soap11", "GetCapacityForecast", "UnknownCable", 500),
            ("in", None, "json", "Heartbeat", "NotAuthorized", 401),
        ]
        assert all(isinstance(m["duration_ms"], int | float) and m["duration_ms"] >= 0 for m in messages)
        assert [m["detail"] for m in messages][:3] == [None, None, None]
        assert "'zz'" in messages[3]["detail"]
        assert "no credentials" in messages[4]["detail"]
        assert all(datetime.fromisoformat(m["at"]).tzinfo is not None for m in messages)

        only_b = requests.get(f"{url}/api/v1/oscp/messages", params={"cpo": "b"}, headers=ADMIN, timeout=TIMEOUT)
        assert [m["operation"] for m in only_b.json()["messages"]] == ["GetCapacityForecast"]


def test_the_exchanges_are_counted_by_direction_operation_and_outcome(ctx: Context) -> None:
    make_grid(ctx)
    with serve(ctx) as url:
        exchange_a_few(url)
        counted = requests.get(f"{url}/api/v1/oscp/messages/counts", headers=ADMIN, timeout=TIMEOUT)
        assert counted.status_code == 200, counted.text
        assert sorted((c["direction"], c["operation"], c["outcome"], c["count"]) for c in counted.json()["counts"]) == [
            ("in", "GetCapacityForecast", "UnknownCable", 1),
            ("in", "GetCapacityForecast", "ok", 1),
            ("in", "Heartbeat", "NotAuthorized", 1),
            ("in", "Heartbeat", "ok", 1),
            ("in", "RequestAdjustedCapacity", "ok", 1),
        ]
