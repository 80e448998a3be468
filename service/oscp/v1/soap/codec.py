"""SOAP 1.1 / 1.2 envelopes <-> OSCP messages, driven by the contract files in wsdl/.

The only server-side module that imports zeep or lxml. zeep is a client library, so the server
side uses its WSDL model directly; lxml builds the envelope scaffolding, parses untrusted bytes
with DTDs and entities refused, and validates every Body element against the XSD first (zeep's
parser alone accepts wrong enums, empty lists and turns a bad dateTime into None).

zeep internals relied on (zeep is pinned in pyproject.toml; each is exercised by
tests/unit/test_soap_codec.py and tests/contract):
- `zeep.wsdl.Document(location, transport)` and `.bindings` (QName text -> binding object);
  `zeep.wsdl.bindings.soap.Soap11Binding` / `Soap12Binding` tell the bindings apart.
- `binding.get(name)` -> operation with `.soapaction`, `.input.body` / `.output.body`: for
  document/literal with one part, the xsd Element of the wrapper (XRequest / XResponse).
- xsd `Element.__call__(**values)`, `.render(parent, value)`, `.parse(node, schema)`, `.qname`,
  `.type.elements`; `Document.types.get_element(qname)` (the OscpFault detail element).
- `zeep.helpers.serialize_object(value, target_cls=dict)`; `zeep.wsse.username.UsernameToken.apply`.
"""

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse

import zeep
import zeep.exceptions
from lxml import etree  # type: ignore[import-untyped, unused-ignore]  # no lxml-stubs in the venv (yet)
from zeep.helpers import serialize_object
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding
from zeep.wsse.username import UsernameToken

from service.oscp.v1 import wire
from service.oscp.v1.messages import MAX_BLOCKS, NAMESPACE, FaultCode, Message, Operation, OscpFault

SOAP11_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENVELOPE = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
# A WS-Security type URI, not a secret.
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"  # noqa: S105
_XSD = "http://www.w3.org/2001/XMLSchema"
_WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
_WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

_Element = Any  # lxml.etree._Element; lxml has no type hints here

# zeep ships py.typed but is mostly unannotated (and Document's transport hint is wrong): its entry
# points are used through Any, so mypy --strict checks this module rather than zeep.
_Document: Any = zeep.wsdl.Document
_serialize_object: Any = serialize_object
_UsernameToken: Any = UsernameToken

EnvelopeFault = Literal["VersionMismatch", "MustUnderstand"]


class SoapVersion(StrEnum):
    SOAP11 = "1.1"
    SOAP12 = "1.2"

    @property
    def envelope_namespace(self) -> str:
        return SOAP11_ENVELOPE if self is SoapVersion.SOAP11 else SOAP12_ENVELOPE

    @property
    def media_type(self) -> str:
        return "text/xml" if self is SoapVersion.SOAP11 else "application/soap+xml"

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


@dataclass(frozen=True)
class SoapCall:
    """A decoded request: what to run, and the WS-Security UsernameToken credentials if any."""

    version: SoapVersion
    operation: Operation
    message: Message
    username: str | None
    password: str | None


class SoapFault(Exception):
    """A fault to send back in the request's SOAP version.

    `sender` is True when the caller must change the request (SOAP 1.1 Client, 1.2 Sender) and False
    for our own failures (Server / Receiver). `envelope_fault` marks the SOAP-level faults
    VersionMismatch and MustUnderstand, which replace the Client/Sender code.
    """

    def __init__(
        self,
        version: SoapVersion,
        code: FaultCode,
        message: str,
        *,
        sender: bool = True,
        envelope_fault: EnvelopeFault | None = None,
    ) -> None:
        super().__init__(message)
        self.version = version
        self.code = code
        self.message = message
        self.sender = sender
        self.envelope_fault = envelope_fault
        self.credentials: tuple[str | None, str | None] = (None, None)  # the UsernameToken, if read before

    @classmethod
    def from_oscp_fault(cls, version: SoapVersion, fault: OscpFault) -> "SoapFault":
        """A handler's OscpFault: only InternalError is our side's fault."""
        return cls(version, fault.code, fault.message, sender=fault.code is not FaultCode.INTERNAL_ERROR)


class _LocalOnlyTransport(zeep.Transport):
    """Loads the contract files from disk and refuses the network: the served contract is the checked-in one."""

    def __init__(self) -> None:
        cast(Any, super()).__init__()

    def load(self, url: str) -> bytes:
        if urlparse(url).scheme in ("http", "https", "ftp"):
            raise ValueError(f"the contract files must be local; refusing to fetch {url}")
        content: bytes = cast(Any, super()).load(url)
        return content


def _hardened_parser(*, compact: bool = True) -> Any:
    """A new parser per document (lxml parsers must not be shared between threads); no DTD, no entities.

    `compact` drops blank text, comments and processing instructions, so only elements remain.
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=compact,
        remove_comments=compact,
        remove_pis=compact,
    )


class SoapCodec:
    """Decode requests and encode replies of the services in one WSDL (both SOAP versions)."""

    def __init__(
        self, wsdl_path: Path, operations: Mapping[str, Operation], *, max_body_bytes: int = 8 * 1024 * 1024
    ) -> None:
        self._wsdl_path = wsdl_path.resolve()
        self._wsdl_bytes = self._wsdl_path.read_bytes()
        self._xsd_path = _schema_location(self._wsdl_path, self._wsdl_bytes)
        self._xsd_bytes = self._xsd_path.read_bytes()
        self._max_body_bytes = max_body_bytes
        # lxml records the last validation's errors on the schema object: one validation at a time.
        xsd = etree.fromstring(self._xsd_bytes, _hardened_parser(), base_url=str(self._xsd_path))
        self._schema = etree.XMLSchema(xsd)
        self._schema_lock = threading.Lock()
        self._document = _Document(str(self._wsdl_path), _LocalOnlyTransport())
        self._bindings: dict[SoapVersion, Any] = {}
        for binding in self._document.bindings.values():
            version = SoapVersion.SOAP12 if isinstance(binding, Soap12Binding) else SoapVersion.SOAP11
            if not isinstance(binding, Soap11Binding | Soap12Binding) or version in self._bindings:
                raise ValueError(f"{wsdl_path} must have exactly one SOAP 1.1 and one SOAP 1.2 binding")
            self._bindings[version] = binding
        if len(self._bindings) != 2:
            raise ValueError(f"{wsdl_path} must have a SOAP 1.1 and a SOAP 1.2 binding")
        self._operations = dict(operations)
        self._routes: dict[str, Operation] = {}
        for operation in self._operations.values():
            qnames = {self._zeep_operation(v, operation).input.body.qname.text for v in SoapVersion}
            if len(qnames) != 1:
                raise ValueError(f"{wsdl_path}: the bindings disagree on the body of {operation.name}")
            self._routes[qnames.pop()] = operation
        self._fault_element = self._document.types.get_element(etree.QName(NAMESPACE, "OscpFault"))

    # --- content type -------------------------------------------------------------------------

    def version_of(self, content_type: str | None) -> SoapVersion | None:
        """text/xml is SOAP 1.1, application/soap+xml SOAP 1.2 (parameters such as charset allowed)."""
        media_type, _ = _split_content_type(content_type)
        for version in SoapVersion:
            if media_type == version.media_type:
                return version
        return None

    # --- server side --------------------------------------------------------------------------

    def decode_request(self, body: bytes, content_type: str | None, soap_action: str | None = None) -> SoapCall:
        """A request's bytes as a typed call; any problem is a SoapFault in the request's version."""
        version = self.version_of(content_type)
        if version is None:
            raise SoapFault(
                SoapVersion.SOAP11,
                FaultCode.INVALID_REQUEST,
                f"content type {content_type or '(none)'} is not SOAP; send text/xml (SOAP 1.1) "
                "or application/soap+xml (SOAP 1.2)",
            )
        if len(body) > self._max_body_bytes:
            raise _client(version, f"the request is {len(body)} bytes; the limit is {self._max_body_bytes}")
        envelope = self._parse(version, body, "request")
        header, soap_body = self._envelope_parts(version, envelope)
        username, password = self._credentials(version, header)
        try:
            child = _single_child(version, soap_body)
            qname = etree.QName(child)
            operation = self._routes.get(qname.text)
            if operation is None:
                served = ", ".join(self._operations)
                raise _client(version, f"unknown operation {_display(qname)}; this endpoint serves {served}")
            if soap_action is None and version is SoapVersion.SOAP12:
                soap_action = _split_content_type(content_type)[1].get("action")
            self._check_action(version, operation, qname, soap_action)
            self._validate(version, child, "request")
            data = self._parse_element(version, self._zeep_operation(version, operation).input.body, child)
            try:
                message: Message = wire.from_wire(operation.request, data)
            except OscpFault as exc:
                raise SoapFault.from_oscp_fault(version, exc) from None
        except SoapFault as fault:  # the caller can still be told apart from an anonymous one
            fault.credentials = (username, password)
            raise
        return SoapCall(version, operation, message, username, password)

    def encode_response(self, version: SoapVersion, operation: Operation, message: Message) -> bytes:
        if not isinstance(message, operation.response):
            expected = operation.response.__name__
            raise TypeError(f"{operation.name} answers with {expected}, not {type(message).__name__}")
        envelope, soap_body = _new_envelope(version)
        self._render(self._zeep_operation(version, operation).output.body, soap_body, message)
        return _to_bytes(envelope)

    def encode_fault(self, fault: SoapFault) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) of a SOAP Fault with an OscpFault detail; never a stack trace."""
        version = fault.version
        envelope, soap_body = _new_envelope(version)
        env = version.envelope_namespace
        node = etree.SubElement(soap_body, f"{{{env}}}Fault")
        code: str
        if fault.envelope_fault is not None:
            code = fault.envelope_fault
        elif version is SoapVersion.SOAP11:
            code = "Client" if fault.sender else "Server"
        else:
            code = "Sender" if fault.sender else "Receiver"
        prefix = envelope.prefix
        if version is SoapVersion.SOAP11:
            etree.SubElement(node, "faultcode").text = f"{prefix}:{code}"
            etree.SubElement(node, "faultstring").text = fault.message
            detail = etree.SubElement(node, "detail")
            status = 500
        else:
            if fault.envelope_fault == "VersionMismatch":
                _add_upgrade_header(envelope)
            value = etree.SubElement(etree.SubElement(node, f"{{{env}}}Code"), f"{{{env}}}Value")
            value.text = f"{prefix}:{code}"
            text = etree.SubElement(etree.SubElement(node, f"{{{env}}}Reason"), f"{{{env}}}Text")
            text.set(_XML_LANG, "en")
            text.text = fault.message
            detail = etree.SubElement(node, f"{{{env}}}Detail")
            status = 400 if code == "Sender" else 500
        self._fault_element.render(detail, self._fault_element(code=fault.code.value, message=fault.message))
        return status, _to_bytes(envelope), version.content_type

    def wsdl_document(self, address: str, *, xsd_location: str | None = None) -> bytes:
        """The WSDL with every soap:address / soap12:address location set to `address`.

        `xsd_location` replaces the schema import's relative location when the XSD is served at a
        URL that the relative name does not resolve to (e.g. "soap?xsd").
        """
        root = etree.fromstring(self._wsdl_bytes, _hardened_parser(compact=False))  # keep its comments
        for namespace in (_WSDL_SOAP11, _WSDL_SOAP12):
            for node in root.iter(f"{{{namespace}}}address"):
                node.set("location", address)
        if xsd_location is not None:
            for node in root.iter(f"{{{_XSD}}}import"):
                if node.get("schemaLocation"):
                    node.set("schemaLocation", xsd_location)
        return _to_bytes(root)

    def xsd_document(self) -> bytes:
        return self._xsd_bytes

    # --- client side (tests, outbound calls) ---------------------------------------------------

    def encode_request(
        self,
        version: SoapVersion,
        operation: Operation,
        message: Message,
        username: str | None = None,
        password: str | None = None,
    ) -> bytes:
        """A request envelope; with credentials, a wsse:Security UsernameToken (PasswordText) header."""
        if not isinstance(message, operation.request):
            raise TypeError(f"{operation.name} takes {operation.request.__name__}, not {type(message).__name__}")
        envelope, soap_body = _new_envelope(version)
        self._render(self._zeep_operation(version, operation).input.body, soap_body, message)
        if username is not None and password is not None:
            _UsernameToken(username, password).apply(envelope, {})
        return _to_bytes(envelope)

    def decode_response(self, version: SoapVersion, operation: Operation, body: bytes) -> Message:
        """A reply envelope as the operation's response message.

        Raises OscpFault (the detail's code) for a SOAP Fault, ValueError for anything that is not a
        valid reply.
        """
        try:
            envelope = self._parse(version, body, "reply")
            _, soap_body = self._envelope_parts(version, envelope)
            child = _single_child(version, soap_body)
        except SoapFault as exc:
            raise ValueError(exc.message) from None
        if etree.QName(child).text == f"{{{version.envelope_namespace}}}Fault":
            raise self._fault_of(version, child)
        element = self._zeep_operation(version, operation).output.body
        if etree.QName(child).text != element.qname.text:
            raise ValueError(f"the reply holds {_display(etree.QName(child))}, not {_display(element.qname)}")
        try:
            self._validate(version, child, "reply")
            data = self._parse_element(version, element, child)
            return cast(Message, wire.from_wire(operation.response, data))
        except (SoapFault, OscpFault) as exc:
            raise ValueError(f"invalid {operation.name} reply: {exc.message}") from None

    # --- helpers ------------------------------------------------------------------------------

    def _zeep_operation(self, version: SoapVersion, operation: Operation) -> Any:
        try:
            return self._bindings[version].get(operation.name)
        except ValueError:  # zeep: "Operation 'X' not found"
            raise ValueError(f"{self._wsdl_path.name} has no operation {operation.name}") from None

    def _parse(self, version: SoapVersion, body: bytes, what: str) -> _Element:
        if not body.strip():
            raise _client(version, f"the {what} body is empty; send a SOAP {version} Envelope")
        if _has_dtd_markup(body):
            raise _client(version, f"the {what} contains a DTD or an entity declaration; DTDs are not accepted")
        try:
            root = etree.fromstring(body, _hardened_parser())
        except etree.XMLSyntaxError as exc:
            detail = _STRING_SOURCE.sub("", " ".join(str(exc).split()))
            raise _client(version, f"the {what} is not well-formed XML: {detail}") from None
        if root.getroottree().docinfo.doctype:  # markup in an encoding the byte check cannot see
            raise _client(version, f"the {what} contains a DTD; DTDs are not accepted")
        return root

    def _envelope_parts(self, version: SoapVersion, envelope: _Element) -> tuple[_Element | None, _Element]:
        qname = etree.QName(envelope)
        if qname.localname != "Envelope":
            raise _client(version, f"the document element is {_display(qname)}, not a SOAP Envelope")
        env = version.envelope_namespace
        if qname.namespace != env:
            other = {SOAP11_ENVELOPE: "SOAP 1.1", SOAP12_ENVELOPE: "SOAP 1.2"}.get(qname.namespace or "", "unknown")
            raise SoapFault(
                version,
                FaultCode.INVALID_REQUEST,
                f"the Envelope is in namespace {qname.namespace or '(none)'} ({other}) but the content type "
                f"says SOAP {version} ({env}); send SOAP 1.1 as text/xml, SOAP 1.2 as application/soap+xml",
                envelope_fault="VersionMismatch",
            )
        children = list(envelope)
        header = children.pop(0) if children and children[0].tag == f"{{{env}}}Header" else None
        if len(children) != 1 or children[0].tag != f"{{{env}}}Body":
            names = ", ".join(_display(etree.QName(c)) for c in children) or "nothing"
            raise _client(version, f"the Envelope must hold an optional Header and then one Body; it holds {names}")
        return header, children[0]

    def _credentials(self, version: SoapVersion, header: _Element | None) -> tuple[str | None, str | None]:
        if header is None:
            return None, None
        env = version.envelope_namespace
        tokens = []
        for block in header:
            if not _targets_us(version, block):
                continue
            if block.tag == f"{{{WSSE}}}Security":
                tokens.extend(block.findall(f"{{{WSSE}}}UsernameToken"))
            elif (block.get(f"{{{env}}}mustUnderstand") or "").strip() in ("1", "true"):
                raise SoapFault(
                    version,
                    FaultCode.INVALID_REQUEST,
                    f"header {_display(etree.QName(block))} is marked mustUnderstand but this endpoint does not "
                    "process it; the only header understood is wsse:Security",
                    envelope_fault="MustUnderstand",
                )
        if not tokens:
            return None, None
        if len(tokens) > 1:
            raise _client(version, "the request carries more than one UsernameToken; send one")
        username = tokens[0].findtext(f"{{{WSSE}}}Username")
        password_node = tokens[0].find(f"{{{WSSE}}}Password")
        if not username or password_node is None:
            raise _client(version, "the UsernameToken needs a Username and a Password")
        password_type = password_node.get("Type")
        if password_type not in (None, PASSWORD_TEXT):
            raise SoapFault(
                version,
                FaultCode.NOT_AUTHORIZED,
                f"the UsernameToken password type is {password_type.rpartition('#')[2]}; only PasswordText is "
                "supported (or send the credentials as HTTP Basic)",
            )
        return str(username), str(password_node.text or "")

    def _check_action(self, version: SoapVersion, operation: Operation, qname: Any, soap_action: str | None) -> None:
        """SOAPAction is only a cross-check: empty is fine, a different operation is an error."""
        action = (soap_action or "").strip().strip('"')
        expected = str(self._zeep_operation(version, operation).soapaction or "")
        if action and action not in (expected, operation.name):
            raise _client(
                version,
                f"SOAPAction {action!r} does not match the Body, which holds {_display(qname)}; "
                f"send SOAPAction {expected!r} or none",
            )

    def _validate(self, version: SoapVersion, node: _Element, what: str) -> None:
        with self._schema_lock:
            if self._schema.validate(node):
                return
            error = next(iter(self._schema.error_log))
            line, path, text = error.line, error.path, error.message
        problem = _describe(node, line, path, text)
        raise _client(version, f"the {what} does not match the OSCP 1.0 schema: {problem}")

    def _parse_element(self, version: SoapVersion, element: Any, node: _Element) -> dict[str, Any]:
        try:
            value = element.parse(node, self._document.types)
        except (zeep.exceptions.Error, ValueError) as exc:  # after XSD validation only a schema gap gets here
            raise _client(version, f"cannot read {_display(etree.QName(node))}: {exc}") from None
        data = from_zeep_values(_serialize_object(value, target_cls=dict)) if value is not None else {}
        return cast(dict[str, Any], data)

    def _render(self, element: Any, parent: _Element, message: Message) -> None:
        values = to_zeep_values(wire.to_wire(message))
        element.render(parent, element(**values))

    def _fault_of(self, version: SoapVersion, fault: _Element) -> OscpFault:
        env = version.envelope_namespace
        if version is SoapVersion.SOAP11:
            text = fault.findtext("faultstring") or ""
            code = fault.findtext("faultcode") or ""
            detail = fault.find("detail")
        else:
            text = fault.findtext(f"{{{env}}}Reason/{{{env}}}Text") or ""
            code = fault.findtext(f"{{{env}}}Code/{{{env}}}Value") or ""
            detail = fault.find(f"{{{env}}}Detail")
        node = detail.find(self._fault_element.qname.text) if detail is not None else None
        if node is not None:
            with self._schema_lock:
                valid = self._schema.validate(node)
            if valid:
                data = _serialize_object(self._fault_element.parse(node, self._document.types), target_cls=dict)
                return OscpFault(FaultCode(data["code"]), str(data["message"]))
        sender = code.rpartition(":")[2] in ("Client", "Sender")
        return OscpFault(FaultCode.INVALID_REQUEST if sender else FaultCode.INTERNAL_ERROR, f"{code}: {text}")


def _schema_location(wsdl_path: Path, wsdl_bytes: bytes) -> Path:
    root = etree.fromstring(wsdl_bytes, _hardened_parser())
    locations = [node.get("schemaLocation") for node in root.iter(f"{{{_XSD}}}import") if node.get("schemaLocation")]
    if len(locations) != 1:
        raise ValueError(f"{wsdl_path} must import exactly one XSD by schemaLocation, found {len(locations)}")
    location = str(locations[0])
    if urlparse(location).scheme:
        raise ValueError(f"the contract files must be local; refusing to fetch {location}")
    return (wsdl_path.parent / location).resolve()


# --- module helpers ---------------------------------------------------------------------------------


def _client(version: SoapVersion, message: str) -> SoapFault:
    return SoapFault(version, FaultCode.INVALID_REQUEST, message)


def _split_content_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    media_type, *parameters = (content_type or "").split(";")
    params = {}
    for parameter in parameters:
        key, sep, value = parameter.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return media_type.strip().lower(), params


_DTD_MARKERS = tuple(
    marker.encode(encoding) for marker in ("<!doctype", "<!entity") for encoding in ("ascii", "utf-16-le", "utf-16-be")
)


def _has_dtd_markup(body: bytes) -> bool:
    lowered = body.lower()  # ASCII case folding also folds the ASCII bytes of UTF-16
    return any(marker in lowered for marker in _DTD_MARKERS)


def _single_child(version: SoapVersion, soap_body: _Element) -> _Element:
    children = list(soap_body)
    stray_text = (soap_body.text or "").strip() or any((c.tail or "").strip() for c in children)
    if len(children) != 1 or stray_text:
        found = ", ".join(_display(etree.QName(c)) for c in children) or "nothing"
        raise _client(version, f"the SOAP Body must hold exactly one element, e.g. HeartbeatRequest; it holds {found}")
    child = children[0]
    if len(child) == 0 and child.text is not None and not child.text.strip():
        child.text = None  # a pretty-printed empty request (<HeartbeatRequest>\n</HeartbeatRequest>) is empty
    return child


def _targets_us(version: SoapVersion, block: _Element) -> bool:
    """Header blocks for another actor/role are not ours to understand."""
    if version is SoapVersion.SOAP11:
        actor = block.get(f"{{{SOAP11_ENVELOPE}}}actor")
        return actor in (None, "", "http://schemas.xmlsoap.org/soap/actor/next")
    role = block.get(f"{{{SOAP12_ENVELOPE}}}role")
    return role in (None, "", f"{SOAP12_ENVELOPE}/role/next", f"{SOAP12_ENVELOPE}/role/ultimateReceiver")


def _display(qname: Any) -> str:
    """OSCP names bare, others in Clark notation, so messages stay readable."""
    namespace, localname = qname.namespace, qname.localname
    return str(localname) if namespace == NAMESPACE else f"{{{namespace or ''}}}{localname}"


_STRING_SOURCE = re.compile(r" \(<string>, line \d+\)$")  # lxml's name for an in-memory document
_NAMESPACE_IN_BRACES = re.compile(r"\{[^{}'\s]*\}")
_ELEMENT_LEAD = re.compile(r"^Element '[^']*': ")
_FACET = re.compile(r"\[facet '\w+'\] ")
_DATETIME_WITHOUT_OFFSET = re.compile(r"The value '(\d{4}-\d{2}-\d{2}T[^']*)' is not accepted by the pattern")


def _describe(root: _Element, line: int, path: str | None, text: str) -> str:
    """libxml2's first error as: line, element path, what is wrong (namespaces left out)."""
    element = _element_at(root, path)
    if element is not None:
        line = element.sourceline or line
    where = _readable_path(root, element) if element is not None else (path or "?")
    naive = _DATETIME_WITHOUT_OFFSET.search(text)
    if naive:
        text = f"{naive.group(1)} has no UTC offset; add one, e.g. Z or +01:00"
    else:
        text = _FACET.sub("", _ELEMENT_LEAD.sub("", _NAMESPACE_IN_BRACES.sub("", text.strip())))
    too_many = re.search(r"\[(\d+)\]$", where)
    if too_many and int(too_many.group(1)) > MAX_BLOCKS:
        text += f" At most {MAX_BLOCKS} blocks per message."
    return f"line {line}, {where}: {text}"


def _element_at(root: _Element, path: str | None) -> _Element | None:
    """The element libxml2's error path names: "/*/*[2]" or "/o:X/o:y[2]", the validated element first."""
    steps = (path or "").split("/")[2:]
    namespaces = {prefix: uri for prefix, uri in root.nsmap.items() if prefix}
    try:
        found = root.xpath("/".join([".", *steps]), namespaces=namespaces) if path else []
    except etree.XPathError:  # a prefix declared below the validated element: fall back to libxml2's path
        return None
    return found[0] if found and isinstance(found[0], etree._Element) else None


def _readable_path(root: _Element, element: _Element) -> str:
    steps = []
    node = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent() if node is not root else None
        if parent is not None and len(parent.findall(node.tag)) > 1:
            name += f"[{parent.findall(node.tag).index(node) + 1}]"
        steps.append(name)
        node = parent
    return "/".join(reversed(steps))


def from_zeep_values(value: Any) -> Any:
    """zeep's values with plain datetime.timezone offsets (zeep uses isodate's tzinfo classes)."""
    if isinstance(value, dict):
        return {key: from_zeep_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_zeep_values(item) for item in value]
    if isinstance(value, datetime) and value.tzinfo is not None:
        offset = value.utcoffset()
        if offset is not None:
            return value.replace(tzinfo=UTC if not offset else timezone(offset))
    return value


_RESOLUTION = Decimal("0.001")


def to_zeep_values(value: Any) -> Any:
    """Wire values ready for zeep: decimals within the XSD's 3 fraction digits, datetimes with an offset."""
    if isinstance(value, dict):
        return {key: to_zeep_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_zeep_values(item) for item in value]
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot send the number {value}")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -3:
            # Floor: a budget rounded for the wire must never promise more than was decided.
            value = value.quantize(_RESOLUTION, rounding=ROUND_FLOOR)
        return value + 0 if value.is_zero() else value  # no "-0"; zeep renders plain digits ("{:f}")
    if isinstance(value, datetime) and value.utcoffset() is None:
        raise ValueError(f"cannot send the naive datetime {value.isoformat()}; OSCP needs a UTC offset")
    return value


def _new_envelope(version: SoapVersion) -> tuple[_Element, _Element]:
    prefix = "soap" if version is SoapVersion.SOAP11 else "env"
    env = version.envelope_namespace
    # The OSCP prefix declared on the Envelope is reused by the body zeep renders.
    envelope = etree.Element(f"{{{env}}}Envelope", nsmap={prefix: env, "oscp": NAMESPACE})
    return envelope, etree.SubElement(envelope, f"{{{env}}}Body")


def _add_upgrade_header(envelope: _Element) -> None:
    """SOAP 1.2 VersionMismatch names the envelopes this node supports (SOAP 1.2 part 1, 5.4.7)."""
    header = etree.Element(f"{{{SOAP12_ENVELOPE}}}Header")
    envelope.insert(0, header)
    upgrade = etree.SubElement(header, f"{{{SOAP12_ENVELOPE}}}Upgrade")
    etree.SubElement(upgrade, f"{{{SOAP12_ENVELOPE}}}SupportedEnvelope").set("qname", f"{envelope.prefix}:Envelope")
    soap11 = etree.SubElement(upgrade, f"{{{SOAP12_ENVELOPE}}}SupportedEnvelope", nsmap={"soap11": SOAP11_ENVELOPE})
    soap11.set("qname", "soap11:Envelope")


def _to_bytes(root: _Element) -> bytes:
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    return data
