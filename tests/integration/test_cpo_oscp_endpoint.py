"""The CPO adapter's OSCP endpoint: the DSO's calls (UpdateCableCapacityForecast, Heartbeat) over
SOAP 1.1, SOAP 1.2 (a real zeep client from the served WSDL, over HTTP) and JSON; and what it refuses,
with nothing kept. The gateway's hardening itself is tested at length on the DSO side
(test_oscp_bad_input.py); here each kind of refusal is checked once on the CPO role."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
from flask.testing import FlaskClient
from oscp_support import live_server
from zeep.wsse.username import UsernameToken

from service.cpo.app import AdapterService, build_adapter_service, load_charge_points
from service.domain.blocks import BLOCK, block_floor
from service.settings import ConfigError, load_settings

D = Decimal
TOKEN = "an admin token for the adapter tests"  # noqa: S105 - test credentials
DSO_USER, DSO_PASSWORD = "dso", "the DSO's password to the adapter"
FIRST = block_floor(datetime.now(UTC)) + BLOCK


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AdapterService]:
    settings = load_settings(
        {
            "GRIDCAP_CPO_DATABASE_URL": f"sqlite:///{tmp_path / 'cpo.db'}",
            "GRIDCAP_CPO_DSO_USERNAME": DSO_USER,
            "GRIDCAP_CPO_DSO_PASSWORD": DSO_PASSWORD,
            "GRIDCAP_ADMIN_TOKEN": TOKEN,
        }
    )
    built = build_adapter_service(settings, admin_token=TOKEN)
    yield built
    built.close()


def forecast(cable_id: str = "c1", capacity: object = 20, unit: str = "A", **block: Any) -> dict[str, Any]:
    entry = {
        "capacity": capacity,
        "phase": "ALL",
        "unit": unit,
        "startTime": FIRST.isoformat(),
        "endTime": (FIRST + BLOCK).isoformat(),
    }
    return {
        "cableId": cable_id,
        "forecastedBlock": [entry | block],
        "backupCapacity": {"capacity": 6, "phase": "ALL", "unit": unit},
    }


def push(client: FlaskClient, *forecasts: dict[str, Any], auth: tuple[str, str] = (DSO_USER, DSO_PASSWORD)) -> Any:
    return client.post(
        "/oscp/1.0/json/UpdateCableCapacityForecast",
        json={"capacityForecast": list(forecasts)},
        auth=auth,
    )


def stored(service: AdapterService) -> dict[str, list[Decimal]]:
    store = service.adapter.store
    return {cable: [b.capacity for b in store.budgets(cable)] for cable in store.budget_cables()}


def test_a_json_push_is_accepted_and_kept_per_block(service: AdapterService) -> None:
    client = service.app.test_client()
    reply = push(client, forecast("c1", 20.5), forecast("c2", 30, "KW"))
    assert reply.status_code == 200, reply.text
    assert reply.json == {"status": "Accepted"}
    assert stored(service) == {"c1": [D("20.5")], "c2": [D(30)]}
    assert service.adapter.store.backup("c1").capacity == 6  # type: ignore[union-attr]
    # the last budget per block counts; blocks not mentioned keep theirs
    later = forecast("c1", 12, startTime=(FIRST + BLOCK).isoformat(), endTime=(FIRST + 2 * BLOCK).isoformat())
    assert push(client, later).status_code == 200
    assert stored(service)["c1"] == [D("20.5"), D(12)]
    assert service.adapter.dso_state.last_heard is not None


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_the_dso_pushes_over_soap_with_a_zeep_client_from_the_served_wsdl(
    service: AdapterService, version: str
) -> None:
    with live_server(service.app) as url:
        session = requests.Session()
        session.auth = (DSO_USER, DSO_PASSWORD)
        client = zeep.Client(f"{url}/oscp/1.0/soap?wsdl", transport=zeep.Transport(session=session))
        ports = client.wsdl.services["OscpCpoService"].ports
        port = next(name for name, p in ports.items() if (version == "1.2") == ("12" in type(p.binding).__name__))
        cpo = client.bind("OscpCpoService", port)
        block = {"capacity": D(16), "phase": "ALL", "unit": "A", "startTime": FIRST, "endTime": FIRST + BLOCK}
        answer = cpo.UpdateCableCapacityForecast(capacityForecast=[{"cableId": "c9", "forecastedBlock": [block]}])
        assert answer.status == "Accepted"
        beat = cpo.Heartbeat()
        assert beat.heartbeatInterval == 60
        assert beat.currentTime.tzinfo is not None
        with_token = zeep.Client(f"{url}/oscp/1.0/soap?wsdl", wsse=UsernameToken(DSO_USER, DSO_PASSWORD)).bind(
            "OscpCpoService", port
        )
        assert with_token.Heartbeat().heartbeatInterval == 60
    assert stored(service) == {"c9": [D(16)]}


@pytest.mark.parametrize(
    ("auth", "status"),
    [
        (("dso", "wrong password"), 401),
        (("user-a", DSO_PASSWORD), 401),  # the DSO's password under another name
    ],
)
def test_callers_other_than_the_dso_are_refused(service: AdapterService, auth: tuple[str, str], status: int) -> None:
    reply = push(service.app.test_client(), forecast(), auth=auth)
    assert reply.status_code == status
    assert reply.json["code"] == "NotAuthorized"
    assert stored(service) == {}


def test_no_credentials_are_refused(service: AdapterService) -> None:
    client = service.app.test_client()
    reply = client.post("/oscp/1.0/json/UpdateCableCapacityForecast", json={"capacityForecast": [forecast()]})
    assert reply.status_code == 401
    assert "WWW-Authenticate" in reply.headers
    assert stored(service) == {}


@pytest.mark.parametrize(
    ("forecasts", "needle"),
    [
        ([forecast(capacity=-1)], "capacity"),
        ([forecast(startTime=FIRST.replace(tzinfo=None).isoformat())], "offset"),
        ([forecast(endTime=(FIRST + 2 * BLOCK).isoformat())], "quarter hour"),
        ([forecast(startTime=(FIRST + timedelta(minutes=5)).isoformat())], "quarter"),
        ([forecast(unit="W")], "A or KW"),
        ([forecast("c1"), forecast("c2", capacity="lots")], "capacity"),
        ([forecast("c1"), forecast("bad id!")], "cableId"),
    ],
    ids=["negative", "naive", "two-blocks-long", "misaligned", "watts", "second-cable-bad", "bad-cable-id"],
)
def test_bad_budgets_are_refused_whole_and_nothing_is_kept(
    service: AdapterService, forecasts: list[dict[str, Any]], needle: str
) -> None:
    reply = push(service.app.test_client(), *forecasts)
    assert reply.status_code == 400, reply.text
    assert reply.json["code"] == "InvalidRequest"
    assert needle.lower() in reply.json["message"].lower(), reply.json["message"]
    assert "Traceback" not in reply.text
    assert stored(service) == {}


def test_a_forecast_mixing_units_is_refused(service: AdapterService) -> None:
    mixed = forecast(unit="A") | {"backupCapacity": {"capacity": 6, "phase": "ALL", "unit": "KW"}}
    reply = push(service.app.test_client(), mixed)
    assert reply.status_code == 400
    assert "one unit" in reply.json["message"]
    assert stored(service) == {}


def test_a_dtd_is_refused_before_parsing(service: AdapterService) -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x "y">]>'
        b'<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        b'<o:HeartbeatRequest xmlns:o="urn://OSCP/2015/04/"/></S:Body></S:Envelope>'
    )
    client = service.app.test_client()
    reply = client.post("/oscp/1.0/soap", data=body, content_type="text/xml", auth=(DSO_USER, DSO_PASSWORD))
    assert reply.status_code == 500  # SOAP 1.1: a Client fault
    assert b"InvalidRequest" in reply.data
    assert b"DTD" in reply.data or b"DOCTYPE" in reply.data


def test_the_dso_operations_are_not_served_here(service: AdapterService) -> None:
    reply = service.app.test_client().post(
        "/oscp/1.0/json/RequestAdjustedCapacity", json={"cableId": "c1"}, auth=(DSO_USER, DSO_PASSWORD)
    )
    assert reply.status_code in (400, 404)
    assert "UpdateCableCapacityForecast" in reply.json["message"]


def test_the_adapter_needs_the_dsos_password(tmp_path: Path) -> None:
    settings = load_settings({"GRIDCAP_CPO_DATABASE_URL": f"sqlite:///{tmp_path / 'cpo.db'}"})
    with pytest.raises(ConfigError, match="cpo_dso_password"):
        build_adapter_service(settings, admin_token=TOKEN)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[charge_point]]\nid = "a"\ncable_id = "c1"\nmax_current_a = 16\n', "misses phases"),
        ('[[charge_point]]\nid = "a"\ncable_id = "c1"\nmax_current_a = 16\nphases = 4\n', "phases"),
        ('[[charge_point]]\nid = "a"\ncable_id = "c1"\nmax_current_a = 16\nphases = 3\ncolour = 1\n', "unknown key"),
        ('[[charge_point]]\nid = "a"\ncable_id = "c1"\nmax_current_a = 16\nphases = 3\n' * 2, "listed twice"),
        ("charge_point = 3\n", "[[charge_point]]"),
        ("[[charge_point]\n", "not valid"),
    ],
)
def test_the_charge_points_file_is_checked_entry_by_entry(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "points.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as refused:
        load_charge_points(str(path))
    assert needle in str(refused.value)


def test_charge_points_from_the_file_are_registered_at_start(tmp_path: Path) -> None:
    path = tmp_path / "points.toml"
    path.write_text(
        '[[charge_point]]\nid = "kerk-01"\ncable_id = "c1"\nmax_current_a = 16\nphases = 3\n'
        'password = "twelve chars at least"\n'
        '[[charge_point]]\nid = "kerk-02"\ncable_id = "c1"\nmax_current_a = 32\nphases = 1\nconnectors = 2\n'
    )
    settings = load_settings(
        {
            "GRIDCAP_CPO_DATABASE_URL": f"sqlite:///{tmp_path / 'cpo.db'}",
            "GRIDCAP_CPO_DSO_PASSWORD": DSO_PASSWORD,
            "GRIDCAP_CPO_CHARGE_POINTS_FILE": str(path),
        }
    )
    built = build_adapter_service(settings, admin_token=TOKEN)
    try:
        records = {r.charge_point.id: r for r in built.adapter.store.charge_points()}
        assert set(records) == {"kerk-01", "kerk-02"}
        assert records["kerk-01"].has_password
        assert records["kerk-02"].charge_point.connectors == 2
        assert built.adapter.store.verify_charge_point("kerk-01", "kerk-01", "twelve chars at least")
        assert not built.adapter.store.verify_charge_point("kerk-02", "kerk-02", "")  # no password, not open
    finally:
        built.close()
