"""OSCP 1.0 endpoints (Flask): SOAP 1.1/1.2 at /oscp/1.0/soap, JSON at /oscp/1.0/json/<Op>.

One gateway serves either side: the DSO (to its CPOs) or a CPO adapter (to its DSO); a `Role` says
which operations, handlers and credentials. Every request: body size, decode and validate (codec),
credentials (HTTP Basic or a WS-Security UsernameToken), the caller's rate limit, the handler, encode.
Every outcome is recorded and counted; every failure is the contract's fault or JSON error, never a
stack trace.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from service.domain.errors import GridcapError, NotAuthorized
from service.oscp.v1 import messages as m
from service.oscp.v1.guard import CredentialCache, RateLimited, RateLimiter
from service.oscp.v1.handlers import DSO_HANDLERS, fault_of
from service.oscp.v1.json import JsonCodec
from service.oscp.v1.soap import SoapCodec, SoapFault, SoapVersion
from service.usecases import Context
from service.usecases import cpos as cpo_cases
from service.usecases import oscp as uc

log = logging.getLogger("gridcap.oscp")

WSDL_DIR = Path(__file__).resolve().parents[3] / "wsdl"
PREFIX = "/oscp/1.0"
_REALM = 'Basic realm="gridcap OSCP", charset="UTF-8"'
FAILED_LOGINS_PER_MINUTE = 20  # each costs a password hash; a caller that mistyped is not locked out long


class MessageRecorder(Protocol):
    def record(
        self,
        *,
        direction: str,
        cpo_id: str | None,
        binding: str,
        operation: str,
        outcome: str,
        http_status: int | None,
        started: float,
        detail: str | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Role:
    """What one side serves. `handle(caller, request)` returns the response or raises GridcapError or
    OscpFault; `authenticate(username, password)` returns the caller's id or raises NotAuthorized;
    `seen(caller)` notes that the caller is alive, at most a few times per `seen_every_s`."""

    side: str  # "DSO" or "CPO", as named in texts to the caller
    wsdl: Path
    operations: Mapping[str, m.Operation]
    handle: Callable[[str, Any], Any]
    authenticate: Callable[[str, str], str]
    seen: Callable[[str], None]
    seen_every_s: float


def dso_role(ctx: Context) -> Role:
    def handle(cpo_id: str, message: Any) -> Any:
        return DSO_HANDLERS[type(message)](ctx, cpo_id, message)

    return Role(
        side="DSO",
        wsdl=WSDL_DIR / "oscp-1.0-dso.wsdl",
        operations=m.DSO_OPERATIONS,
        handle=handle,
        authenticate=lambda username, password: cpo_cases.authenticate(ctx, username, password),
        seen=lambda cpo_id: uc.seen(ctx, cpo_id),
        seen_every_s=ctx.policy.heartbeat_interval.total_seconds() / 4,
    )


@dataclass(frozen=True)
class GatewaySettings:
    max_body_bytes: int
    rate_per_minute: int
    public_url: str = ""  # the base URL the WSDL advertises; empty: the host the client used


RATE_LIMITED = "RateLimited"  # the outcome recorded for a call refused by the rate limit
UNKNOWN_OPERATION = "unknown"  # recorded until the request names an operation this endpoint serves


@dataclass
class _Exchange:
    """One request as it will be recorded; filled in as far as it got."""

    binding: str
    operation: str = UNKNOWN_OPERATION
    caller: str | None = None
    started: float = field(default_factory=time.perf_counter)


class _Outcome(Exception):
    """A failure on its way to the wire: the fault, and the HTTP extras it needs."""

    def __init__(self, fault: m.OscpFault, *, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(fault.message)
        self.fault = fault
        self.status = status
        self.headers = headers or {}
        self.caller: str | None = None  # who it was, when known: a throttled CPO is still that CPO


class OscpGateway:
    def __init__(self, role: Role, settings: GatewaySettings, recorder: MessageRecorder) -> None:
        self.role = role
        self.settings = settings
        self.recorder = recorder
        self.soap = SoapCodec(role.wsdl, role.operations, max_body_bytes=settings.max_body_bytes)
        self.json = JsonCodec(role.operations)
        self.credentials = CredentialCache(role.authenticate)
        self.limiter = RateLimiter(settings.rate_per_minute)
        self.failed_logins = RateLimiter(FAILED_LOGINS_PER_MINUTE)  # per client address
        self._seen_lock = threading.Lock()
        self._seen_at: dict[str, float] = {}

    # --- shared steps ---------------------------------------------------------------------------

    def _body(self) -> bytes:
        limit = self.settings.max_body_bytes
        # The contract's fault and status (SOAP 1.1: 500, 1.2 Sender: 400, JSON: 400), not 413.
        too_big = _Outcome(
            m.OscpFault(m.FaultCode.INVALID_REQUEST, f"the request body exceeds the limit of {limit} bytes")
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        # Without a Content-Length (chunked), werkzeug stops reading at the limit without an error:
        # allow one byte more, so that a longer body shows and is refused rather than cut short.
        request.max_content_length = limit + 1
        try:
            data = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise too_big from None
        if len(data) > limit:
            raise too_big
        return data

    def _authenticate(self, token: tuple[str | None, str | None] = (None, None), *, count: bool = True) -> str:
        """The caller the credentials belong to: HTTP Basic, a UsernameToken, or both naming one CPO.
        `count` False: the request was counted against the rate limit already (Basic, checked first)."""
        pairs = []
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            pairs.append((auth.username or "", auth.password or ""))
        if token[0] is not None:
            pairs.append((token[0], token[1] or ""))
        if not pairs:
            self._throttle_failures()
            raise _Outcome(
                m.OscpFault(
                    m.FaultCode.NOT_AUTHORIZED,
                    "no credentials: send HTTP Basic authentication or a WS-Security UsernameToken (PasswordText)",
                ),
                headers={"WWW-Authenticate": _REALM},
            )
        self._limited(self.failed_logins.check, self._address())  # a client that keeps failing is not checked
        try:
            callers = {self.credentials.cpo_of(user, password) for user, password in pairs}
        except NotAuthorized:
            self._throttle_failures()
            raise _Outcome(
                m.OscpFault(m.FaultCode.NOT_AUTHORIZED, "unknown username or wrong password"),
                headers={"WWW-Authenticate": _REALM},
            ) from None
        if len(callers) != 1:
            raise _Outcome(
                m.OscpFault(m.FaultCode.NOT_AUTHORIZED, "HTTP Basic and the UsernameToken name different callers")
            )
        caller = callers.pop()
        if count:
            try:
                self._take(caller)
            except _Outcome as out:
                out.caller = caller
                raise
            self._seen(caller)
        return caller

    def _throttle_failures(self) -> None:
        """Failed logins count against the client's address: guessing passwords is rate limited too."""
        self._limited(self.failed_logins.take, self._address())

    @staticmethod
    def _address() -> str:
        return f"address:{request.remote_addr}"

    def _take(self, key: str) -> None:
        self._limited(self.limiter.take, key)

    @staticmethod
    def _limited(step: Callable[[str], None], key: str) -> None:
        try:
            step(key)
        except RateLimited as exc:
            raise _Outcome(
                m.OscpFault(m.FaultCode.INVALID_REQUEST, str(exc)),
                status=429,
                headers={"Retry-After": str(exc.retry_after_s)},
            ) from None

    def _seen(self, caller: str) -> None:
        """Note that the caller is alive, at most a few times per heartbeat interval (it is a write)."""
        now = time.monotonic()
        every = self.role.seen_every_s
        with self._seen_lock:
            if now - self._seen_at.get(caller, -every) < every:
                return
            self._seen_at[caller] = now
        self.role.seen(caller)

    def _handle(self, caller: str, message: Any) -> Any:
        try:
            return self.role.handle(caller, message)
        except GridcapError as exc:
            if exc.code == "InternalError":  # an invariant held: a bug, worth its traceback in the log
                log.exception("OSCP %s by %s failed", type(message).__name__, caller)
            raise _Outcome(fault_of(exc, self.role.side)) from None
        except m.OscpFault as exc:
            raise _Outcome(exc) from None

    def _record(self, ex: "_Exchange", outcome: str, status: int, detail: str | None = None) -> None:
        self.recorder.record(
            direction="in",
            cpo_id=ex.caller,
            binding=ex.binding,
            operation=ex.operation,
            outcome=RATE_LIMITED if status == 429 else outcome,  # an InvalidRequest on the wire; told apart here
            http_status=status,
            started=ex.started,
            detail=detail,
        )

    # --- SOAP -----------------------------------------------------------------------------------

    def soap_post(self) -> Response:
        version = self.soap.version_of(request.content_type) or SoapVersion.SOAP11
        ex = _Exchange("soap12" if version is SoapVersion.SOAP12 else "soap11")
        try:
            body, content_type = self._soap_exchange(ex)
        except _Outcome as out:
            ex.caller = ex.caller or out.caller
            return self._soap_fault(ex, SoapFault.from_oscp_fault(version, out.fault), out.status, out.headers)
        except SoapFault as fault:
            return self._soap_fault(ex, fault)
        except Exception:
            log.exception("OSCP SOAP %s failed", ex.operation)
            internal = SoapFault(version, m.FaultCode.INTERNAL_ERROR, self._internal, sender=False)
            return self._soap_fault(ex, internal)
        self._record(ex, "ok", 200)
        return Response(body, 200, content_type=content_type)

    def _soap_exchange(self, ex: "_Exchange") -> tuple[bytes, str]:
        auth = request.authorization
        if auth is not None and auth.type == "basic":  # check Basic before parsing anything
            ex.caller = self._authenticate()
        else:  # credentials, if any, are in the body: a client that keeps failing is not parsed
            self._limited(self.failed_logins.check, self._address())
        try:
            call = self.soap.decode_request(self._body(), request.content_type, request.headers.get("SOAPAction"))
        except SoapFault as fault:
            if ex.caller is None:
                ex.caller = self._answerable_for(fault.credentials)
            raise
        except _Outcome:  # too big to read: nobody logged in
            if ex.caller is None:
                self._throttle_failures()
            raise
        ex.operation = call.operation.name
        if ex.caller is None or call.username is not None:
            ex.caller = self._authenticate((call.username, call.password), count=ex.caller is None)
        reply = self._handle(ex.caller, call.message)
        return self.soap.encode_response(call.version, call.operation, reply), call.version.content_type

    def _answerable_for(self, token: tuple[str | None, str | None]) -> str | None:
        """Who answers for a body refused before anyone logged in: the CPO its UsernameToken names,
        if that holds (the request counts against its rate limit, and it was heard from); else
        the client's address, as for a failed login. Wrong credentials are the fault then."""
        if token[0] is None:
            self._throttle_failures()
            return None
        return self._authenticate(token)

    def _soap_fault(
        self, ex: "_Exchange", fault: SoapFault, status: int | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        code, body, content_type = self.soap.encode_fault(fault)
        status = status or code
        self._record(ex, fault.code.value, status, fault.message)
        return Response(body, status, content_type=content_type, headers=headers)

    def soap_get(self) -> Response:
        if "wsdl" in request.args:
            base = self.settings.public_url or request.host_url  # behind a TLS proxy, set public_url
            address = base.rstrip("/") + PREFIX + "/soap"
            return Response(self.soap.wsdl_document(address), 200, content_type="text/xml; charset=utf-8")
        if "xsd" in request.args:
            return self.xsd()
        return Response(
            f"This is the OSCP 1.0 SOAP endpoint of the {self.role.side}: POST SOAP 1.1 (text/xml) or SOAP 1.2 "
            f"(application/soap+xml) envelopes here. The contract: {PREFIX}/soap?wsdl\n",
            200,
            content_type="text/plain; charset=utf-8",
        )

    def xsd(self) -> Response:
        return Response(self.soap.xsd_document(), 200, content_type="text/xml; charset=utf-8")

    # --- JSON -----------------------------------------------------------------------------------

    def json_post(self, operation_name: str) -> Response:
        # a name it does not serve stays unknown: callers cannot make up operations to record
        ex = _Exchange("json", operation_name if self.json.serves(operation_name) else UNKNOWN_OPERATION)
        try:
            body = self._json_exchange(ex, operation_name)
        except _Outcome as out:
            ex.caller = ex.caller or out.caller
            return self._json_error(ex, out.fault, out.status, out.headers)
        except m.OscpFault as fault:
            return self._json_error(ex, fault)
        except Exception:
            log.exception("OSCP JSON %s failed", ex.operation)
            return self._json_error(ex, m.OscpFault(m.FaultCode.INTERNAL_ERROR, self._internal))
        self._record(ex, "ok", 200)
        return Response(body, 200, content_type="application/json")

    def _json_exchange(self, ex: "_Exchange", operation_name: str) -> bytes:
        ex.caller = self._authenticate()
        operation = self.json.operation(operation_name)
        ex.operation = operation.name
        if request.mimetype != "application/json":
            raise _Outcome(
                m.OscpFault(
                    m.FaultCode.INVALID_REQUEST,
                    "send the body as JSON with 'Content-Type: application/json' "
                    f"(got {request.mimetype or 'no content type'!r})",
                ),
                status=415,
            )
        message = self.json.decode_request(operation, self._body())
        return self.json.encode_response(self._handle(ex.caller, message))

    def _json_error(
        self, ex: "_Exchange", fault: m.OscpFault, status: int | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        code, body = self.json.encode_error(fault.code, fault.message)
        status = status or code
        self._record(ex, fault.code.value, status, fault.message)
        return Response(body, status, content_type="application/json", headers=headers)

    @property
    def _internal(self) -> str:
        return f"the {self.role.side} could not process the request; it has been logged, retry later"

    def json_schema(self) -> Response:
        return Response(_dumps(self.json.schema_document()), 200, content_type="application/schema+json; charset=utf-8")


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def register_oscp(app: Flask, gateway: OscpGateway) -> None:
    blueprint = Blueprint("oscp_v1", __name__, url_prefix=PREFIX)
    routes: list[tuple[str, Callable[..., Response], list[str]]] = [
        ("/soap", gateway.soap_post, ["POST"]),
        ("/soap", gateway.soap_get, ["GET"]),
        ("/oscp-1.0.xsd", gateway.xsd, ["GET"]),  # where the WSDL's relative schema import resolves
        ("/json/schema", gateway.json_schema, ["GET"]),
        ("/json/<operation_name>", gateway.json_post, ["POST"]),
    ]
    for rule, view, methods in routes:
        blueprint.add_url_rule(rule, f"{view.__name__}_{'_'.join(methods).lower()}", view, methods=methods)
    app.register_blueprint(blueprint)
