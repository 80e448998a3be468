"""Golden end-to-end OSCP 1.0 exchanges: full requests through the Flask test client of a fresh app.

Each case in gateway/ is `<binding>-<rule>.request.<xml|json>` and `<binding>-<rule>.response.<xml|json>`:
the request is sent byte for byte to a new app on make_grid's cable c1 (CPOs a and b; the clock at
2026-11-24 12:07:30 UTC), and the reply must be exactly the response file: XML compared canonicalised
(C14N, blank text dropped, so indentation is free), JSON compared with numbers as written (30.000 is not
30). Volatile values are normalised first: a currentTime becomes CURRENT-TIME. The HTTP side of each case
(credentials, operation, content type, expected status) is in CASES below.

GRIDCAP_UPDATE_GOLDEN=1 rewrites the response files from what the gateway answers; review the diff by eye.
"""

import base64
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from integration.oscp_support import PASSWORD, make_grid
from lxml import etree

from service.app import create_app, wiring
from service.oscp.v1.messages import NAMESPACE
from service.settings import Settings
from service.usecases import Context

HERE = Path(__file__).resolve().parent / "gateway"
UPDATE = os.environ.get("GRIDCAP_UPDATE_GOLDEN") == "1"
CURRENT_TIME = "CURRENT-TIME"


@dataclass(frozen=True)
class Case:
    status: int
    user: str | None = "user-a"  # HTTP Basic; None: no Authorization header
    operation: str | None = None  # the JSON variant's path; SOAP posts to /oscp/1.0/soap
    content_type: str | None = None  # default: the binding's (text/xml, application/soap+xml, application/json)


CASES = {
    "soap11-request-accepted": Case(200),
    "soap12-request-partial-grant": Case(200),
    "soap11-hand-back-with-usernametoken": Case(200, user=None),
    "soap12-usage-accepted": Case(200, user="user-b"),
    "soap11-heartbeat": Case(200),
    "soap12-unknown-cable-fault": Case(400),
    "soap11-missing-credentials-fault": Case(500, user=None),
    "soap12-version-mismatch-fault": Case(500),
    "soap11-xxe-refused-fault": Case(500),
    "json-request-partial-grant": Case(200, operation="RequestAdjustedCapacity"),
    "json-unknown-cable-error": Case(404, operation="GetCapacityForecast"),
    "json-heartbeat": Case(200, operation="Heartbeat"),
    "json-naive-datetime-error": Case(400, operation="UpdateAggregatedUsage"),
}
MEDIA_TYPES = {"soap11": "text/xml", "soap12": "application/soap+xml", "json": "application/json"}


def extension(name: str) -> str:
    return "json" if name.startswith("json-") else "xml"


# --- normalising and comparing --------------------------------------------------------------------------


def normalised_xml(data: bytes) -> bytes:
    """C14N without blank text, each currentTime replaced by CURRENT-TIME (after checking it is one)."""
    root = etree.fromstring(data, etree.XMLParser(remove_blank_text=True, remove_comments=True))
    for node in root.iter(f"{{{NAMESPACE}}}currentTime"):
        if node.text != CURRENT_TIME:
            assert datetime.fromisoformat(node.text).utcoffset() is not None, node.text
            node.text = CURRENT_TIME
    canonical: bytes = etree.tostring(root, method="c14n")
    return canonical


def _number(text: str) -> tuple[str, str]:
    return ("number", text)  # not equal to the string "text", nor to the same number written otherwise


def normalised_json(data: bytes) -> Any:
    """The document with numbers kept as their text; a currentTime replaced by CURRENT-TIME."""
    document = json.loads(data, parse_float=_number, parse_int=_number)
    if isinstance(document, dict) and document.get("currentTime", CURRENT_TIME) != CURRENT_TIME:
        assert datetime.fromisoformat(document["currentTime"]).utcoffset() is not None
        document["currentTime"] = CURRENT_TIME
    return document


def pretty_xml(data: bytes) -> bytes:
    root = etree.fromstring(data, etree.XMLParser(remove_blank_text=True))
    for node in root.iter(f"{{{NAMESPACE}}}currentTime"):
        node.text = CURRENT_TIME
    pretty: bytes = etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="utf-8")
    return pretty


def pretty_json(data: bytes) -> bytes:
    """Indented, numbers exactly as the gateway wrote them."""
    document = json.loads(data, parse_float=lambda s: f"\x00{s}\x00", parse_int=lambda s: f"\x00{s}\x00")
    if "currentTime" in document:
        document["currentTime"] = CURRENT_TIME
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return re.sub(r'"\\u0000([^"\\]*)\\u0000"', r"\1", text).encode() + b"\n"


# --- the cases -------------------------------------------------------------------------------------------


def send(ctx: Context, name: str) -> Any:
    case = CASES[name]
    binding = name.partition("-")[0]
    make_grid(ctx)
    app = create_app(Settings(admin_token="t" * 32), ctx)
    headers = {}
    if case.user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{case.user}:{PASSWORD}".encode()).decode()
    path = f"/oscp/1.0/json/{case.operation}" if binding == "json" else "/oscp/1.0/soap"
    try:
        return app.test_client().post(
            path,
            data=(HERE / f"{name}.request.{extension(name)}").read_bytes(),
            content_type=case.content_type or MEDIA_TYPES[binding],
            headers=headers,
        )
    finally:
        wiring(app).close()


@pytest.mark.parametrize("name", list(CASES))
def test_the_gateway_answers_the_golden_request_with_the_golden_response(ctx: Context, name: str) -> None:
    response = send(ctx, name)
    binding = name.partition("-")[0]
    assert response.status_code == CASES[name].status, response.get_data(as_text=True)
    assert response.mimetype == MEDIA_TYPES[binding if name != "soap12-version-mismatch-fault" else "soap12"]
    expected = HERE / f"{name}.response.{extension(name)}"
    body = response.get_data()
    if UPDATE:
        expected.write_bytes(pretty_json(body) if binding == "json" else pretty_xml(body))
    if binding == "json":
        assert normalised_json(body) == normalised_json(expected.read_bytes())
    else:
        assert normalised_xml(body) == normalised_xml(expected.read_bytes())


def test_every_golden_file_belongs_to_a_case_and_every_case_has_both_files() -> None:
    names = {p.name for p in HERE.iterdir()}
    expected = {f"{name}.{kind}.{extension(name)}" for name in CASES for kind in ("request", "response")}
    assert names == expected, f"unexpected: {sorted(names - expected)}, missing: {sorted(expected - names)}"
    for name in CASES:
        binding, _, rule = name.partition("-")
        assert binding in MEDIA_TYPES, name
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule), name
