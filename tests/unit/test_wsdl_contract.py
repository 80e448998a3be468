"""The checked-in OSCP 1.0 contract files: they load in zeep and lxml, match wsdl/README.md, and are served as is."""

import hashlib
import re
from pathlib import Path

import pytest
import zeep
from lxml import etree
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding

from service.oscp.v1.messages import CPO_OPERATIONS, DSO_OPERATIONS, NAMESPACE, Operation
from service.oscp.v1.soap import SoapCodec

WSDL_DIR = Path(__file__).resolve().parents[2] / "wsdl"
FILES = ("oscp-1.0.xsd", "oscp-1.0-dso.wsdl", "oscp-1.0-cpo.wsdl")
SERVICES = {
    "oscp-1.0-dso.wsdl": ("OscpDsoService", DSO_OPERATIONS),
    "oscp-1.0-cpo.wsdl": ("OscpCpoService", CPO_OPERATIONS),
}


def _readme_hashes() -> dict[str, str]:
    text = (WSDL_DIR / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\|\s*`([^`]+)`\s*\|.*\|\s*`([0-9a-f]{64})`\s*\|\s*$", text, flags=re.MULTILINE)
    return dict(rows)


def test_readme_states_the_sha256_of_every_contract_file() -> None:
    hashes = _readme_hashes()
    assert sorted(hashes) == sorted(FILES)
    for name in FILES:
        actual = hashlib.sha256((WSDL_DIR / name).read_bytes()).hexdigest()
        assert hashes[name] == actual, f"wsdl/{name} changed: update its SHA-256 in wsdl/README.md to {actual}"


def test_the_xsd_builds_in_lxml_with_the_oscp_target_namespace() -> None:
    document = etree.parse(str(WSDL_DIR / "oscp-1.0.xsd"))
    etree.XMLSchema(document)
    assert document.getroot().get("targetNamespace") == NAMESPACE
    assert document.getroot().get("version") == "1.0.0"


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_wsdl_loads_in_a_zeep_client_with_both_bindings_serving_every_operation(name: str) -> None:
    service_name, operations = SERVICES[name]
    client = zeep.Client(str(WSDL_DIR / name))
    bindings = client.wsdl.bindings.values()
    assert sorted(type(b).__name__ for b in bindings) == ["Soap11Binding", "Soap12Binding"]
    for binding in bindings:
        assert isinstance(binding, Soap11Binding | Soap12Binding)
        assert sorted(binding.all()) == sorted(operations)
        for op_name in operations:
            operation = binding.get(op_name)
            assert operation.soapaction == f"urn://OSCP/2015/04/{op_name}"
            assert operation.input.body.qname == etree.QName(NAMESPACE, f"{op_name}Request")
            assert operation.output.body.qname == etree.QName(NAMESPACE, f"{op_name}Response")
            assert sorted(operation.faults) == ["OscpFault"]
    (service,) = client.wsdl.services.values()
    assert service.name == service_name
    assert sorted(service.ports) == sorted(
        f"{service_name.removesuffix('Service')}{v}Port" for v in ("Soap11", "Soap12")
    )


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_wsdl_imports_the_shared_xsd_by_relative_location_and_documents_the_credentials(name: str) -> None:
    root = etree.parse(str(WSDL_DIR / name)).getroot()
    imports = root.findall(".//{http://www.w3.org/2001/XMLSchema}import")
    assert [(i.get("namespace"), i.get("schemaLocation")) for i in imports] == [(NAMESPACE, "oscp-1.0.xsd")]
    documentation = " ".join(root.findtext("{http://schemas.xmlsoap.org/wsdl/}documentation", "").split())
    assert "HTTP Basic" in documentation
    assert "UsernameToken" in documentation
    assert "PasswordText" in documentation


@pytest.mark.parametrize("name", list(SERVICES))
def test_wsdl_document_rewrites_every_address_and_keeps_the_rest(name: str) -> None:
    _, operations = SERVICES[name]
    codec = SoapCodec(WSDL_DIR / name, operations)
    served = codec.wsdl_document("https://dso.example/oscp/1.0/soap")
    root = etree.fromstring(served)
    addresses = [
        node.get("location")
        for ns in ("http://schemas.xmlsoap.org/wsdl/soap/", "http://schemas.xmlsoap.org/wsdl/soap12/")
        for node in root.iter(f"{{{ns}}}address")
    ]
    assert addresses == ["https://dso.example/oscp/1.0/soap"] * 2
    original = etree.parse(str(WSDL_DIR / name)).getroot()
    for node in original.iter("{*}address"):
        node.set("location", "https://dso.example/oscp/1.0/soap")
    assert etree.tostring(root, method="c14n") == etree.tostring(original, method="c14n")


def test_wsdl_document_can_point_the_schema_import_at_where_the_xsd_is_served() -> None:
    codec = SoapCodec(WSDL_DIR / "oscp-1.0-dso.wsdl", DSO_OPERATIONS)
    root = etree.fromstring(codec.wsdl_document("http://h/oscp/1.0/soap", xsd_location="soap?xsd"))
    (node,) = root.iter("{http://www.w3.org/2001/XMLSchema}import")
    assert node.get("schemaLocation") == "soap?xsd"
    assert codec.xsd_document() == (WSDL_DIR / "oscp-1.0.xsd").read_bytes()


def test_a_codec_refuses_operations_its_wsdl_does_not_define() -> None:
    stray = Operation("Teleport", object, object)
    with pytest.raises(ValueError, match="has no operation Teleport"):
        SoapCodec(WSDL_DIR / "oscp-1.0-cpo.wsdl", {**CPO_OPERATIONS, "Teleport": stray})


def test_the_codec_never_fetches_contract_files_over_the_network(tmp_path: Path) -> None:
    wsdl = (WSDL_DIR / "oscp-1.0-cpo.wsdl").read_text(encoding="utf-8")
    (tmp_path / "remote.wsdl").write_text(
        wsdl.replace('schemaLocation="oscp-1.0.xsd"', 'schemaLocation="http://192.0.2.1/oscp-1.0.xsd"'),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"refusing to fetch http://192\.0\.2\.1/oscp-1\.0\.xsd"):
        SoapCodec(tmp_path / "remote.wsdl", CPO_OPERATIONS)
