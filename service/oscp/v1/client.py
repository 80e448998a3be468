"""Outbound OSCP 1.0 calls: the DSO pushing to CPOs, and the CPO adapter calling the DSO.

SOAP goes through a real zeep.Client built from the peer's checked-in WSDL (the same path a partner's
client takes), with HTTP Basic *and* a WS-Security UsernameToken (PasswordText); JSON goes through
JsonCodec. There are no retries here: the outbox retries, in order, with backoff.

One requests.Session per OscpClient carries the credentials and pools connections. The session and
the cached zeep clients are not changed after construction, so one OscpClient may be shared by the
outbox workers (requests' connection pool is thread-safe; sessions are not formally so, which is
fine while nobody mutates them).
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast

import requests
import zeep
import zeep.exceptions
from zeep.helpers import serialize_object
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding
from zeep.wsse.username import UsernameToken
from zeep.xsd.valueobjects import CompoundValue

from service.oscp.v1 import wire
from service.oscp.v1.json.codec import CONTENT_TYPE, JsonCodec
from service.oscp.v1.messages import CPO_OPERATIONS, DSO_OPERATIONS, NAMESPACE, FaultCode, Message, Operation, OscpFault
from service.oscp.v1.soap.codec import SoapVersion, from_zeep_values, to_zeep_values

Peer = Literal["cpo", "dso"]

_WSDL_FILES: dict[Peer, str] = {"cpo": "oscp-1.0-cpo.wsdl", "dso": "oscp-1.0-dso.wsdl"}
_OPERATIONS: dict[Peer, dict[str, Operation]] = {"cpo": CPO_OPERATIONS, "dso": DSO_OPERATIONS}
_SOAP_BINDINGS = {"soap11": SoapVersion.SOAP11, "soap12": SoapVersion.SOAP12}

# zeep ships py.typed but is mostly unannotated: used through Any so mypy --strict checks this module.
_Client: Any = zeep.Client
_UsernameToken: Any = UsernameToken
_serialize_object: Any = serialize_object


class _StatusRecordingTransport(zeep.Transport):
    """zeep's Transport, remembering each reply's HTTP status per thread.

    zeep turns an error reply that holds no SOAP Fault into a Fault without the status; we want to say it.
    """

    def __init__(self, *, session: requests.Session, timeout_s: float, record: threading.local) -> None:
        cast(Any, super()).__init__(session=session, timeout=timeout_s, operation_timeout=timeout_s)
        self._record = record

    def post(self, address: str, message: Any, headers: Any) -> Any:
        response = cast(Any, super()).post(address, message, headers)
        self._record.status = response.status_code
        return response


class CallFailed(Exception):
    """An outbound call did not produce a response message; the message says why and names the URL.

    `fault` is the OscpFault the peer answered with (a SOAP Fault's detail or a JSON error body); for a
    JSON reply that is neither a response nor an error body it is the JSON codec's InternalError.
    """

    def __init__(self, message: str, *, url: str, fault: OscpFault | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.fault = fault


class OscpClient:
    def __init__(self, *, wsdl_dir: Path, username: str, password: str, timeout_s: float = 10.0) -> None:
        self._wsdl_dir = wsdl_dir
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._session = requests.Session()
        self._credentials = bool(password)  # no password: calls carry no credentials at all
        if self._credentials:
            self._session.auth = (username, password)
        self._lock = threading.Lock()
        self._last_reply = threading.local()
        self._soap_clients: dict[tuple[Peer, SoapVersion], tuple[Any, str]] = {}
        self._json = {peer: JsonCodec(operations) for peer, operations in _OPERATIONS.items()}

    def call(self, endpoint_url: str, binding: str, message: Message, *, peer: Peer) -> Message:
        """Send `message` (a request the peer serves) and return the peer's response message.

        `endpoint_url` is the SOAP endpoint, or for the json binding the base the operation name is
        appended to. Raises CallFailed for transport errors, timeouts, HTTP errors, faults and invalid replies.
        """
        operation = _operation_for(peer, message)
        if binding == "json":
            return self._call_json(endpoint_url, operation, message, peer)
        version = _SOAP_BINDINGS.get(binding)
        if version is None:
            raise ValueError(f"unknown binding {binding!r}; use soap11, soap12 or json")
        return self._call_soap(endpoint_url, version, operation, message, peer)

    def close(self) -> None:
        self._session.close()

    @contextmanager
    def _transport_errors(self, what: str, url: str) -> Iterator[None]:
        """HTTP-level failures (both bindings) as CallFailed saying what happened."""
        try:
            yield
        except requests.Timeout:
            raise CallFailed(f"{what} timed out after {self._timeout_s:g} s", url=url) from None
        except requests.ConnectionError as exc:
            raise CallFailed(f"{what} failed: cannot connect ({_first_line(exc)})", url=url) from None
        except requests.RequestException as exc:
            raise CallFailed(f"{what} failed: {_first_line(exc)}", url=url) from None

    # --- SOAP -------------------------------------------------------------------------------------

    def _call_soap(self, url: str, version: SoapVersion, operation: Operation, message: Message, peer: Peer) -> Message:
        client, binding_name = self._soap_client(peer, version)
        what = f"{operation.name} (SOAP {version}) to {url}"
        values = to_zeep_values(wire.to_wire(message))
        try:
            service = client.create_service(binding_name, url)
            with self._transport_errors(what, url):
                result = service[operation.name](**values)
        except zeep.exceptions.Fault as exc:
            if exc.code is None and isinstance(exc.detail, bytes | None):  # zeep: the reply held no SOAP Fault
                status = getattr(self._last_reply, "status", "?")
                snippet = _first_line(exc.detail[:200].decode("utf-8", "replace") if exc.detail else exc)
                raise CallFailed(f"{what} failed: HTTP {status} without a SOAP Fault: {snippet}", url=url) from None
            fault = _oscp_fault(exc)
            message_text = f"{what} answered a SOAP Fault: {fault.code}: {fault.message}"
            raise CallFailed(message_text, url=url, fault=fault) from None
        except zeep.exceptions.TransportError as exc:
            raise CallFailed(f"{what} failed: HTTP {exc.status_code}: {_first_line(exc)}", url=url) from None
        except zeep.exceptions.Error as exc:
            raise CallFailed(f"{what} returned an invalid reply: {_first_line(exc)}", url=url) from None
        zeep_operation = client.wsdl.bindings[binding_name].get(operation.name)
        data = from_zeep_values(_rewrap(zeep_operation.output.body, result))
        try:
            response: Message = wire.from_wire(operation.response, data)
        except OscpFault as exc:
            raise CallFailed(f"{what} returned an invalid reply: {exc.message}", url=url) from None
        return response

    def _soap_client(self, peer: Peer, version: SoapVersion) -> tuple[Any, str]:
        """A zeep.Client on the peer's local WSDL and the name of its binding for `version` (cached)."""
        with self._lock:
            found = self._soap_clients.get((peer, version))
            if found is None:
                transport = _StatusRecordingTransport(
                    session=self._session, timeout_s=self._timeout_s, record=self._last_reply
                )
                client = _Client(
                    str(self._wsdl_dir / _WSDL_FILES[peer]),
                    transport=transport,
                    wsse=_UsernameToken(self._username, self._password) if self._credentials else None,
                )
                kind = Soap11Binding if version is SoapVersion.SOAP11 else Soap12Binding
                names = [name for name, b in client.wsdl.bindings.items() if type(b) is kind]
                if len(names) != 1:
                    raise ValueError(f"{_WSDL_FILES[peer]} must have exactly one SOAP {version} binding")
                found = (client, str(names[0]))
                self._soap_clients[(peer, version)] = found
            return found

    # --- JSON -------------------------------------------------------------------------------------

    def _call_json(self, endpoint_url: str, operation: Operation, message: Message, peer: Peer) -> Message:
        url = f"{endpoint_url.rstrip('/')}/{operation.name}"
        what = f"{operation.name} (JSON) to {url}"
        codec = self._json[peer]
        body = codec.encode_request(message)
        headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json"}
        with self._transport_errors(what, url):
            reply = self._session.post(url, data=body, headers=headers, timeout=self._timeout_s)
        try:
            return codec.decode_response(operation, reply.status_code, reply.content)
        except OscpFault as exc:
            message_text = f"{what} failed: HTTP {reply.status_code}: {exc.code}: {exc.message}"
            raise CallFailed(message_text, url=url, fault=exc) from None


def _operation_for(peer: Peer, message: Message) -> Operation:
    for operation in _OPERATIONS[peer].values():
        if isinstance(message, operation.request):
            return operation
    served = ", ".join(op.request.__name__ for op in _OPERATIONS[peer].values())
    raise TypeError(f"the {peer.upper()} does not serve {type(message).__name__}; it takes {served}")


def _rewrap(element: Any, result: Any) -> dict[str, Any]:
    """Undo zeep's convenience unwrapping of a document/literal reply back into the XResponse's fields.

    zeep 4.3 (SoapMessage.deserialize) returns None for an empty response, the XResponse value when it
    has several fields, and otherwise the single field's value, itself unwrapped once more when it is a
    complex value with exactly one child element.
    """
    if result is None:
        return {}
    if isinstance(result, CompoundValue) and result._xsd_type is element.type:
        data: dict[str, Any] = _serialize_object(result, target_cls=dict)
        return data
    ((name, child),) = element.type.elements
    value = _serialize_object(result, target_cls=dict)
    inner: list[tuple[str, Any]] = list(getattr(child.type, "elements", None) or [])
    single_complex = not child.accepts_multiple and len(inner) == 1
    if single_complex and not (isinstance(result, CompoundValue) and result._xsd_type is child.type):
        value = {inner[0][0]: value}
    return {name: value}


def _oscp_fault(fault: Any) -> OscpFault:
    """The OscpFault detail of a zeep Fault; without one, the SOAP fault code decides sender vs receiver."""
    detail = fault.detail
    node = detail.find(f"{{{NAMESPACE}}}OscpFault") if detail is not None else None
    if node is not None:
        code = node.findtext(f"{{{NAMESPACE}}}code")
        text = node.findtext(f"{{{NAMESPACE}}}message")
        if code in {c.value for c in FaultCode} and text is not None:
            return OscpFault(FaultCode(code), str(text))
    sender = str(fault.code or "").rpartition(":")[2] in ("Client", "Sender")
    return OscpFault(FaultCode.INVALID_REQUEST if sender else FaultCode.INTERNAL_ERROR, str(fault.message))


def _first_line(what: BaseException | str) -> str:
    text = str(what).strip()
    return text.splitlines()[0] if text else type(what).__name__
