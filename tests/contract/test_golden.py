"""Golden OSCP 1.0 SOAP wire cases: every file pair under soap11/ and soap12/ runs through the codec.

File names are `<Operation>.<rule>.<kind>`; the pairs (see README.md):
- `.request.xml` + `.request.json`: the request decodes to exactly that message;
- `.request.xml` + `.fault.xml`: the request is refused with exactly that fault;
- `.response.json` + `.response.xml`: the response message encodes to exactly that envelope;
- `.handler-fault.json` + `.fault.xml`: a handler's OscpFault encodes to exactly that fault.
XML is compared canonicalised (C14N) after dropping blank text, so indentation in the files is free.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from service.oscp.v1 import wire
from service.oscp.v1.messages import CPO_OPERATIONS, DSO_OPERATIONS, FaultCode, Operation, OscpFault
from service.oscp.v1.soap import SoapCodec, SoapFault, SoapVersion

HERE = Path(__file__).resolve().parent
WSDL_DIR = HERE.parents[1] / "wsdl"
VERSIONS = {"soap11": SoapVersion.SOAP11, "soap12": SoapVersion.SOAP12}
KINDS = ("request.xml", "request.json", "response.json", "response.xml", "handler-fault.json", "fault.xml")


@pytest.fixture(scope="module")
def codecs() -> dict[str, SoapCodec]:
    return {
        "dso": SoapCodec(WSDL_DIR / "oscp-1.0-dso.wsdl", DSO_OPERATIONS),
        "cpo": SoapCodec(WSDL_DIR / "oscp-1.0-cpo.wsdl", CPO_OPERATIONS),
    }


def split(path: Path) -> tuple[SoapVersion, str, str]:
    """(version, operation, "<Operation>.<rule>") of a golden file."""
    kind = next(k for k in KINDS if path.name.endswith("." + k))
    stem = path.name.removesuffix("." + kind)
    return VERSIONS[path.parent.name], stem.split(".")[0], stem


def codec_and_operation(codecs: dict[str, SoapCodec], name: str) -> tuple[SoapCodec, Operation]:
    # Heartbeat is served by both; the DSO's codec stands for it.
    if name in DSO_OPERATIONS:
        return codecs["dso"], DSO_OPERATIONS[name]
    return codecs["cpo"], CPO_OPERATIONS[name]


def pairs(first: str, second: str) -> list[Any]:
    found = []
    for path in sorted(HERE.glob(f"soap1*/*.{first}")):
        partner = path.with_name(path.name.removesuffix(first) + second)
        if partner.exists():
            found.append(pytest.param(path, partner, id=f"{path.parent.name}/{path.name.removesuffix('.' + first)}"))
    return found


def c14n(data: bytes) -> bytes:
    root = etree.fromstring(data, etree.XMLParser(remove_blank_text=True))
    canonical: bytes = etree.tostring(root, method="c14n")
    return canonical


def fault_status(version: SoapVersion, fault_xml: bytes) -> int:
    """What the golden fault says the HTTP status must be: only a SOAP 1.2 Sender fault is a 400."""
    root = etree.fromstring(fault_xml)
    env = version.envelope_namespace
    value = root.findtext(f"{{{env}}}Body/{{{env}}}Fault/{{{env}}}Code/{{{env}}}Value")
    return 400 if value == "env:Sender" else 500


@pytest.mark.parametrize(("request_file", "message_file"), pairs("request.xml", "request.json"))
def test_golden_requests_decode_to_the_stated_message(
    codecs: dict[str, SoapCodec], request_file: Path, message_file: Path
) -> None:
    version, name, _ = split(request_file)
    codec, operation = codec_and_operation(codecs, name)
    call = codec.decode_request(request_file.read_bytes(), version.content_type)
    assert call.version is version
    assert call.operation == operation
    expected = wire.from_wire(operation.request, json.loads(message_file.read_text(encoding="utf-8")))
    assert call.message == expected


@pytest.mark.parametrize(("request_file", "fault_file"), pairs("request.xml", "fault.xml"))
def test_golden_bad_requests_get_the_stated_fault(
    codecs: dict[str, SoapCodec], request_file: Path, fault_file: Path
) -> None:
    version, name, _ = split(request_file)
    codec, _ = codec_and_operation(codecs, name)
    with pytest.raises(SoapFault) as caught:
        codec.decode_request(request_file.read_bytes(), version.content_type)
    status, body, reply_type = codec.encode_fault(caught.value)
    assert c14n(body) == c14n(fault_file.read_bytes())
    assert status == fault_status(version, fault_file.read_bytes())
    assert reply_type == version.content_type


@pytest.mark.parametrize(("message_file", "response_file"), pairs("response.json", "response.xml"))
def test_golden_responses_encode_to_the_stated_envelope(
    codecs: dict[str, SoapCodec], message_file: Path, response_file: Path
) -> None:
    version, name, _ = split(message_file)
    codec, operation = codec_and_operation(codecs, name)
    message = wire.from_wire(operation.response, json.loads(message_file.read_text(encoding="utf-8")))
    body = codec.encode_response(version, operation, message)
    assert c14n(body) == c14n(response_file.read_bytes())
    assert codec.decode_response(version, operation, response_file.read_bytes()) == message


@pytest.mark.parametrize(("fault_json", "fault_file"), pairs("handler-fault.json", "fault.xml"))
def test_golden_handler_faults_encode_to_the_stated_fault(
    codecs: dict[str, SoapCodec], fault_json: Path, fault_file: Path
) -> None:
    version, name, _ = split(fault_json)
    codec, operation = codec_and_operation(codecs, name)
    stated = json.loads(fault_json.read_text(encoding="utf-8"))
    oscp_fault = OscpFault(FaultCode(stated["code"]), stated["message"])
    status, body, _ = codec.encode_fault(SoapFault.from_oscp_fault(version, oscp_fault))
    assert c14n(body) == c14n(fault_file.read_bytes())
    assert status == fault_status(version, fault_file.read_bytes())
    with pytest.raises(OscpFault) as caught:
        codec.decode_response(version, operation, fault_file.read_bytes())
    assert (caught.value.code, caught.value.message) == (oscp_fault.code, oscp_fault.message)


def test_every_golden_file_is_part_of_a_pair_and_named_after_an_operation() -> None:
    served = set(DSO_OPERATIONS) | set(CPO_OPERATIONS)
    for path in sorted(HERE.glob("soap1*/*")):
        version, name, stem = split(path)
        assert name in served, f"{path.name}: {name} is not an OSCP 1.0 operation"
        assert len(stem.split(".")) == 2, f"{path.name}: name it <Operation>.<rule>.<kind>"
        kinds = {k for k in KINDS if path.with_name(f"{stem}.{k}").exists()}
        assert kinds in (
            {"request.xml", "request.json"},
            {"request.xml", "fault.xml"},
            {"response.json", "response.xml"},
            {"handler-fault.json", "fault.xml"},
        ), f"{path.parent.name}/{stem}: unpaired files {sorted(kinds)}"
        assert version in VERSIONS.values()


@pytest.mark.parametrize("folder", list(VERSIONS))
def test_every_operation_has_a_golden_request_and_response_in_both_versions(folder: str) -> None:
    for name in set(DSO_OPERATIONS) | set(CPO_OPERATIONS):
        for kind in ("request.json", "response.xml"):
            assert list((HERE / folder).glob(f"{name}.*.{kind}")), f"{folder}: no golden {name} {kind}"
