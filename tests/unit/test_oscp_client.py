"""OscpClient against a real HTTP server on 127.0.0.1: SOAP 1.1, SOAP 1.2 (a real zeep.Client) and JSON.

The server is a tiny Flask app on werkzeug that answers through SoapCodec / JsonCodec, so both sides of
the wire run through the checked-in contract. It records the credentials of every call.
"""

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

from service.oscp.v1.client import CallFailed, OscpClient
from service.oscp.v1.json import JsonCodec
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
from service.oscp.v1.soap import SoapCodec, SoapFault

WSDL_DIR = Path(__file__).resolve().parents[2] / "wsdl"
USERNAME, PASSWORD = "dso-enexis", "p4ss: with spaces & <markup>"
NOW = datetime(2026, 11, 24, 16, 7, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
SLOW_S = 1.5
TIMEOUT_S = 0.5


def forecast(cable: str, *capacities: str) -> CableCapacityForecast:
    blocks = tuple(
        ForecastedBlock(Decimal(c), PhaseIndicator.ALL, UnitOfMeasure.A, T0 + i * Q, T0 + (i + 1) * Q)
        for i, c in enumerate(capacities)
    )
    return CableCapacityForecast(cable, blocks, BackupCapacity(Decimal("6"), PhaseIndicator.ALL, UnitOfMeasure.A))


def handle(message: Message) -> Message:
    """The peer's behaviour: enough to exercise every reply shape and a handler fault."""
    match message:
        case UpdateCableCapacityForecastRequest(capacity_forecast=forecasts):
            cables = {f.cable_id for f in forecasts}
            if "CABLE-SLOW" in cables:
                time.sleep(SLOW_S)
            if "CABLE-9999" in cables:
                raise OscpFault(FaultCode.UNKNOWN_CABLE, "there is no cable CABLE-9999 here")
            return UpdateCableCapacityForecastResponse(ResponseStatus.ACCEPTED)
        case HeartbeatRequest():
            return HeartbeatResponse(NOW, 60)
        case GetCapacityForecastRequest(cable_id=cable):
            if cable == "NONE":
                return GetCapacityForecastResponse()
            return GetCapacityForecastResponse((forecast("CABLE-1", "16", "16.5"), forecast("CABLE-2", "40")))
        case RequestAdjustedCapacityRequest(cable_id=cable):
            return RequestAdjustedCapacityResponse(AdjustStatus.PARTIALLY_ACCEPTED, forecast(cable, "24"), "only 8 A")
        case UpdateAggregatedUsageRequest():
            return UpdateAggregatedUsageResponse(ResponseStatus.ACCEPTED, "thanks")
    raise AssertionError(message)


@dataclass
class Peer:
    base_url: str
    seen: list[dict[str, object]] = field(default_factory=list)


def create_peer_app(seen: list[dict[str, object]]) -> Flask:
    app = Flask(__name__)
    soap = {
        "cpo": SoapCodec(WSDL_DIR / "oscp-1.0-cpo.wsdl", CPO_OPERATIONS),
        "dso": SoapCodec(WSDL_DIR / "oscp-1.0-dso.wsdl", DSO_OPERATIONS),
    }
    json_codecs = {"cpo": JsonCodec(CPO_OPERATIONS), "dso": JsonCodec(DSO_OPERATIONS)}

    def basic() -> tuple[str | None, str | None]:
        auth = request.authorization
        return (auth.username, auth.password) if auth else (None, None)

    def soap_fault(codec: SoapCodec, fault: SoapFault) -> Response:
        status, body, content_type = codec.encode_fault(fault)
        return Response(body, status, content_type=content_type)

    @app.post("/<role>/soap")
    def soap_endpoint(role: str) -> Response:
        codec = soap[role]
        try:
            call = codec.decode_request(request.get_data(), request.content_type, request.headers.get("SOAPAction"))
        except SoapFault as fault:
            return soap_fault(codec, fault)
        token = (call.username, call.password)
        seen.append({"binding": "soap1" + call.version.value[-1], "basic": basic(), "token": token})
        if basic() != (USERNAME, PASSWORD) or token != (USERNAME, PASSWORD):
            return soap_fault(codec, SoapFault(call.version, FaultCode.NOT_AUTHORIZED, "wrong credentials"))
        try:
            reply = handle(call.message)
        except OscpFault as exc:
            return soap_fault(codec, SoapFault.from_oscp_fault(call.version, exc))
        body = codec.encode_response(call.version, call.operation, reply)
        return Response(body, 200, content_type=call.version.content_type)

    @app.post("/<role>/json/<name>")
    def json_endpoint(role: str, name: str) -> Response:
        codec = json_codecs[role]
        seen.append({"binding": "json", "basic": basic(), "content_type": request.content_type})
        try:
            if basic() != (USERNAME, PASSWORD):
                return json_error(codec, OscpFault(FaultCode.NOT_AUTHORIZED, "wrong credentials"))
            reply = handle(codec.decode_request(codec.operation(name), request.get_data()))
        except OscpFault as exc:
            return json_error(codec, exc)
        return Response(codec.encode_response(reply), 200, content_type="application/json")

    def json_error(codec: JsonCodec, fault: OscpFault) -> Response:
        status, body = codec.encode_error(fault.code, fault.message)
        return Response(body, status, content_type="application/json")

    @app.post("/broken/<kind>")
    @app.post("/broken/<kind>/<path:rest>")
    def broken(kind: str, rest: str = "") -> Response:
        if kind == "http500":
            return Response("<html><body>Internal Server Error</body></html>", 500, content_type="text/html")
        if kind == "http404":
            return Response("", 404)
        return Response("this is not XML", 200, content_type="text/xml")

    return app


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    seen: list[dict[str, object]] = []
    server = make_server("127.0.0.1", 0, create_peer_app(seen), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="oscp-peer", daemon=True)
    thread.start()
    try:
        yield Peer(f"http://127.0.0.1:{server.server_port}", seen)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture
def client() -> Iterator[OscpClient]:
    oscp = OscpClient(wsdl_dir=WSDL_DIR, username=USERNAME, password=PASSWORD, timeout_s=TIMEOUT_S)
    yield oscp
    oscp.close()


def endpoint(peer: Peer, role: str, binding: str) -> str:
    return f"{peer.base_url}/{role}/json/" if binding == "json" else f"{peer.base_url}/{role}/soap"


BINDINGS = ["soap11", "soap12", "json"]
PUSH = UpdateCableCapacityForecastRequest((forecast("CABLE-1", "16", "0"), forecast("CABLE-2", "10.5")))
CPO_CALLS = [
    (PUSH, UpdateCableCapacityForecastResponse(ResponseStatus.ACCEPTED)),
    (HeartbeatRequest(), HeartbeatResponse(NOW, 60)),
]
DSO_CALLS = [
    (
        GetCapacityForecastRequest(),
        GetCapacityForecastResponse((forecast("CABLE-1", "16", "16.5"), forecast("CABLE-2", "40"))),
    ),
    (GetCapacityForecastRequest("NONE"), GetCapacityForecastResponse()),
    (
        RequestAdjustedCapacityRequest("CABLE-1", forecast("CABLE-1", "32").forecasted_block),
        RequestAdjustedCapacityResponse(AdjustStatus.PARTIALLY_ACCEPTED, forecast("CABLE-1", "24"), "only 8 A"),
    ),
    (
        UpdateAggregatedUsageRequest(
            "CABLE-1", (UsageBlock(Decimal("7.5"), PhaseIndicator.ONE, UnitOfMeasure.KW, T0, T0 + Q),)
        ),
        UpdateAggregatedUsageResponse(ResponseStatus.ACCEPTED, "thanks"),
    ),
    (HeartbeatRequest(), HeartbeatResponse(NOW, 60)),
]


@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize(("message", "expected"), CPO_CALLS, ids=["push", "heartbeat"])
def test_the_dso_pushes_to_a_cpo_with_both_kinds_of_credentials(
    peer: Peer, client: OscpClient, binding: str, message: Message, expected: Message
) -> None:
    before = len(peer.seen)
    assert client.call(endpoint(peer, "cpo", binding), binding, message, peer="cpo") == expected
    (seen,) = peer.seen[before:]
    assert seen["basic"] == (USERNAME, PASSWORD)
    if binding == "json":
        assert seen["content_type"] == "application/json"
    else:
        assert seen == {"binding": binding, "basic": (USERNAME, PASSWORD), "token": (USERNAME, PASSWORD)}


@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize(
    ("message", "expected"), DSO_CALLS, ids=["get-all", "get-none", "request", "usage", "heartbeat"]
)
def test_a_cpo_adapter_calls_the_dso_and_gets_every_reply_shape_back(
    peer: Peer, client: OscpClient, binding: str, message: Message, expected: Message
) -> None:
    assert client.call(endpoint(peer, "dso", binding), binding, message, peer="dso") == expected


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_peer_fault_is_call_failed_with_the_peers_code(peer: Peer, client: OscpClient, binding: str) -> None:
    message = UpdateCableCapacityForecastRequest((forecast("CABLE-9999", "1"),))
    url = endpoint(peer, "cpo", binding)
    with pytest.raises(CallFailed) as caught:
        client.call(url, binding, message, peer="cpo")
    failure = caught.value
    assert failure.fault is not None
    assert (failure.fault.code, failure.fault.message) == (FaultCode.UNKNOWN_CABLE, "there is no cable CABLE-9999 here")
    assert "UnknownCable: there is no cable CABLE-9999 here" in str(failure)
    assert failure.url.startswith(url.rstrip("/"))
    assert failure.url in str(failure)


@pytest.mark.parametrize("binding", BINDINGS)
def test_wrong_credentials_are_a_not_authorized_call_failed(peer: Peer, binding: str) -> None:
    intruder = OscpClient(wsdl_dir=WSDL_DIR, username=USERNAME, password="guess", timeout_s=TIMEOUT_S)  # noqa: S106
    try:
        with pytest.raises(CallFailed) as caught:
            intruder.call(endpoint(peer, "cpo", binding), binding, HeartbeatRequest(), peer="cpo")
    finally:
        intruder.close()
    assert caught.value.fault is not None
    assert caught.value.fault.code is FaultCode.NOT_AUTHORIZED


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_timeout_is_call_failed_naming_the_url(peer: Peer, client: OscpClient, binding: str) -> None:
    url = endpoint(peer, "cpo", binding)
    message = UpdateCableCapacityForecastRequest((forecast("CABLE-SLOW", "1"),))
    with pytest.raises(CallFailed, match=r"UpdateCableCapacityForecast .* timed out after 0.5 s") as caught:
        client.call(url, binding, message, peer="cpo")
    assert url.rstrip("/") in str(caught.value)
    assert caught.value.fault is None


@pytest.mark.parametrize("binding", BINDINGS)
def test_http_500_without_a_fault_is_call_failed(peer: Peer, client: OscpClient, binding: str) -> None:
    url = f"{peer.base_url}/broken/http500"
    with pytest.raises(CallFailed, match=r"HTTP 500") as caught:
        client.call(url, binding, HeartbeatRequest(), peer="cpo")
    assert url in str(caught.value)


@pytest.mark.parametrize("binding", ["soap11", "soap12"])
def test_a_reply_that_is_not_xml_is_call_failed(peer: Peer, client: OscpClient, binding: str) -> None:
    with pytest.raises(CallFailed, match=r"(?i)invalid xml"):
        client.call(f"{peer.base_url}/broken/notxml", binding, HeartbeatRequest(), peer="cpo")


@pytest.mark.parametrize("binding", BINDINGS)
def test_connection_refused_is_call_failed(client: OscpClient, binding: str) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/oscp/1.0/soap"
    with pytest.raises(CallFailed, match="cannot connect") as caught:
        client.call(url, binding, HeartbeatRequest(), peer="cpo")
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_an_unknown_binding_or_a_message_the_peer_does_not_serve_is_a_programming_error(client: OscpClient) -> None:
    with pytest.raises(ValueError, match="unknown binding 'soap13'"):
        client.call("http://127.0.0.1:9/", "soap13", HeartbeatRequest(), peer="cpo")
    with pytest.raises(TypeError, match="the CPO does not serve GetCapacityForecastRequest"):
        client.call("http://127.0.0.1:9/", "soap11", GetCapacityForecastRequest(), peer="cpo")
