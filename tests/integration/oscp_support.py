"""Helpers for the OSCP tests: live servers on 127.0.0.1 and a CPO endpoint; this module holds no tests."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests
import zeep
from flask import Flask, Response, request
from werkzeug.serving import make_server
from zeep.wsse.username import UsernameToken

from service.domain.model import Binding, Cable, Cpo, Subscription
from service.domain.units import Unit
from service.oscp.v1 import messages as m
from service.oscp.v1.gateway import WSDL_DIR
from service.oscp.v1.json import JsonCodec
from service.oscp.v1.soap import SoapCodec, SoapFault
from service.usecases import Context, cpos, grid

PASSWORD = "a long enough password"  # noqa: S105 - test credentials
DSO_USER, DSO_PASSWORD = "dso", "the DSO's own password"


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve `app` over real HTTP on a free loopback port; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def kerkstraat(cable_id: str = "c1") -> Cable:
    """A cable in A: limit 100, base load 20, margin 10, so 70 available per block. Its own copy of
    test_usecases.make_cable: tests/contract imports this module, where test_usecases is not on the path."""
    return Cable(
        id=cable_id,
        name=f"Kerkstraat {cable_id}",
        unit=Unit.AMPERE,
        rated_limit=Decimal(100),
        phases=3,
        voltage_v=Decimal(230),
        margin=Decimal(10),
        base_load=Decimal(20),
    )


TERMS = {"a": (1, 10), "b": (2, 5)}  # CPO -> (weight, guaranteed minimum)


def subscribe(ctx: Context, cable_id: str, cpo_ids: tuple[str, ...] = ("a", "b")) -> None:
    for cpo_id in cpo_ids:
        weight, minimum = TERMS[cpo_id]
        grid.subscribe(ctx, Subscription(cable_id, cpo_id, Decimal(weight), Decimal(minimum)), actor="engineer")


def make_grid(
    ctx: Context, *, endpoint: str = "http://127.0.0.1:9/oscp/1.0", binding: Binding = Binding.SOAP11
) -> None:
    """Cable c1 (see kerkstraat) with CPOs a (weight 1, minimum 10) and b (weight 2, minimum 5),
    usernames user-a and user-b, whose OSCP endpoints are under `endpoint`."""
    grid.create_cable(ctx, kerkstraat(), actor="engineer")
    url = f"{endpoint}/json" if binding is Binding.JSON else f"{endpoint}/soap"
    for cpo_id in TERMS:
        cpos.create_cpo(ctx, Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", url, binding), PASSWORD, actor="test")
        subscribe(ctx, "c1", (cpo_id,))


def dso_service(base_url: str, version: str = "1.1", *, username: str = "user-a", wsse: bool = False) -> Any:
    """A real zeep client built from the WSDL the server serves, bound to its SOAP 1.1 or 1.2 port."""
    session = requests.Session()
    if not wsse:
        session.auth = (username, PASSWORD)
    client = zeep.Client(
        f"{base_url}/oscp/1.0/soap?wsdl",
        transport=zeep.Transport(session=session),
        wsse=UsernameToken(username, PASSWORD) if wsse else None,
    )
    ports = client.wsdl.services["OscpDsoService"].ports
    port = next(name for name, p in ports.items() if (version == "1.2") == ("12" in type(p.binding).__name__))
    return client.bind("OscpDsoService", port)


@dataclass
class CpoEndpoint:
    """A CPO's OSCP endpoint on loopback: serves the CPO WSDL, answers UpdateCableCapacityForecast
    and Heartbeat over SOAP 1.1/1.2 and JSON, and records what it received."""

    answer: str = "Accepted"  # Accepted | Rejected | fail (HTTP 500 without a body)
    received: list[tuple[str, Any, str | None]] = field(default_factory=list)  # (binding, message, user)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pushes(self) -> list[m.UpdateCableCapacityForecastRequest]:
        with self.lock:
            return [msg for _, msg, _ in self.received if isinstance(msg, m.UpdateCableCapacityForecastRequest)]

    def app(self) -> Flask:
        soap = SoapCodec(WSDL_DIR / "oscp-1.0-cpo.wsdl", m.CPO_OPERATIONS)
        json_codec = JsonCodec(m.CPO_OPERATIONS)
        app = Flask("cpo-endpoint")

        def reply(message: Any) -> Any:
            if isinstance(message, m.HeartbeatRequest):
                return m.HeartbeatResponse(datetime.now(UTC), 60)
            status = m.ResponseStatus.ACCEPTED if self.answer == "Accepted" else m.ResponseStatus.REJECTED
            return m.UpdateCableCapacityForecastResponse(status, None if self.answer == "Accepted" else "test says no")

        @app.post("/oscp/1.0/soap")
        def soap_post() -> Response:
            if self.answer == "fail":
                return Response("down", 500)
            try:
                call = soap.decode_request(request.get_data(), request.content_type)
            except SoapFault as fault:
                status, body, content_type = soap.encode_fault(fault)
                return Response(body, status, content_type=content_type)
            binding = "soap12" if call.version.value == "1.2" else "soap11"
            user = request.authorization.username if request.authorization else call.username
            with self.lock:
                self.received.append((binding, call.message, user))
            body = soap.encode_response(call.version, call.operation, reply(call.message))
            return Response(body, 200, content_type=call.version.content_type)

        @app.get("/oscp/1.0/soap")
        def wsdl() -> Response:
            return Response(soap.wsdl_document(request.host_url + "oscp/1.0/soap"), content_type="text/xml")

        @app.post("/oscp/1.0/json/<operation>")
        def json_post(operation: str) -> Response:
            if self.answer == "fail":
                return Response("down", 500)
            op = json_codec.operation(operation)
            message = json_codec.decode_request(op, request.get_data())
            with self.lock:
                user = request.authorization.username if request.authorization else None
                self.received.append(("json", message, user))
            return Response(json_codec.encode_response(reply(message)), 200, content_type="application/json")

        return app
