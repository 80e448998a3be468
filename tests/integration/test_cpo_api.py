"""The CPO adapter's REST API (/api/v1/cpo) on a real adapter store (SQLite): charge points in and out,
the views of sessions, limits, profiles, budgets and the DSO link, the admin token, bad input that must
write nothing, and the OpenAPI document.

The adapter runs without its event loop (and without a DSO link): recomputing is then left undone, which
these tests do not need; where they need profiles sent, they run one `enforce` against a fake OCPP side.
"""

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from conftest import Clock
from flask import Flask
from test_api_support import TOKEN, Client, assert_error

from service.cpo.adapter import Adapter
from service.cpo.api import register_cpo_api
from service.cpo.dso import MessageLog
from service.cpo.store import CpoStore

D = Decimal
NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # the current block
Q = timedelta(minutes=15)
CP_PASSWORD = "charge point secret 42"  # noqa: S105 - a test password
CPO = "cpo"


def point(cp_id: str = "cp-1", **changes: Any) -> dict[str, Any]:
    return {"id": cp_id, "cable_id": "cable-1", "max_current_a": 32, "phases": 3, **changes}


@dataclass
class Env:
    """An adapter on a SQLite file with its API, and what the tests look at behind the API."""

    store: CpoStore
    adapter: Adapter
    messages: MessageLog
    api: Client
    path: Path
    clock: Clock
    sent: list[tuple[str, int, str]] = field(default_factory=list)

    def rows(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of every table, straight from the file: to show a refused call wrote nothing."""
        with sqlite3.connect(self.path) as raw:
            tables = [name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: raw.execute(f"SELECT * FROM {t}").fetchall() for t in tables}  # noqa: S608 - names from sqlite

    def enforce(self, answers: Mapping[str, str]) -> None:
        """Compute and send the profiles of cable-1 once; each charge point answers as `answers` says."""

        async def set_charging_profile(charge_point_id: str, connector_id: int, profile: Mapping[str, Any]) -> str:
            self.sent.append((charge_point_id, connector_id, str(profile["chargingProfilePurpose"])))
            return answers[charge_point_id]

        self.adapter.central.set_charging_profile = set_charging_profile  # type: ignore[method-assign]
        asyncio.run(self.adapter.enforce("cable-1"))


def make_env(path: Path, clock: Clock) -> Env:
    store = CpoStore(f"sqlite:///{path}", clock=clock)
    adapter = Adapter(store, dso=None, clock=clock)
    messages = MessageLog()
    app = Flask("gridcap-cpo-test")
    register_cpo_api(app, adapter, admin_token=TOKEN, messages=messages)
    return Env(store, adapter, messages, Client(app), path, clock)


@pytest.fixture
def env(tmp_path: Path, clock: Clock) -> Iterator[Env]:
    made = make_env(tmp_path / "cpo.db", clock)
    yield made
    made.store.close()


@pytest.fixture
def api(env: Env) -> Client:
    return env.api


# ---------------------------------------------------------------------------------------------
# charge points


def test_charge_point_lifecycle(env: Env, api: Client) -> None:
    assert api.get("cpo/charge-points") == []
    body = point(voltage_v="231.5", connectors=2, protection_a=25, connector_max_current_a="16.5")
    response = api.call("POST", "cpo/charge-points", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/api/v1/cpo/charge-points/cp-1")
    created = response.get_json()
    assert created == {
        "id": "cp-1",
        "cable_id": "cable-1",
        "max_current_a": 32,
        "phases": 3,
        "voltage_v": 231.5,
        "connectors": 2,
        "protection_a": 25,
        "connector_max_current_a": 16.5,
        "username": None,
        "has_password": False,
        "connected": False,
        "boot": None,
        "profile_kind": "ChargePointMaxProfile",
        "excluded": None,
        "unconfirmed": None,
        "connector_states": [
            {"connector_id": 1, "status": None, "limit_a": None, "transaction_id": None},
            {"connector_id": 2, "status": None, "limit_a": None, "transaction_id": None},
        ],
    }
    assert api.get(response.headers["Location"]) == created
    record = env.store.get_charge_point("cp-1")
    assert record is not None
    assert record.charge_point.voltage_v == D("231.5")
    assert record.charge_point.connector_max_current_a == D("16.5")

    minimal = api.post("cpo/charge-points", point("cp-0", cable_id="cable-2", phases=1))
    assert (minimal["voltage_v"], minimal["connectors"], minimal["protection_a"]) == (230, 1, None)
    assert [cp["id"] for cp in api.get("cpo/charge-points")] == ["cp-0", "cp-1"]

    changed = api.patch("cpo/charge-points/cp-1", {"cable_id": "cable-2", "max_current_a": "16", "protection_a": None})
    assert changed == {**created, "cable_id": "cable-2", "max_current_a": 16, "protection_a": None}
    assert api.get("cpo/charge-points/cp-1") == changed
    record = env.store.get_charge_point("cp-1")
    assert record is not None
    assert (record.charge_point.cable_id, record.charge_point.max_current_a) == ("cable-2", D(16))
    assert record.charge_point.protection_a is None
    assert record.charge_point.connectors == 2  # not in the patch: kept
    assert api.patch("cpo/charge-points/cp-1", {}) == changed

    api.delete("cpo/charge-points/cp-1")
    assert_error(api.call("GET", "cpo/charge-points/cp-1"), 404, "cp-1")
    assert [cp["id"] for cp in api.get("cpo/charge-points")] == ["cp-0"]
    assert env.store.get_charge_point("cp-1") is None


def test_status_reported_by_the_charge_point_shows(env: Env, api: Client) -> None:
    api.post("cpo/charge-points", point(connectors=2))
    env.adapter.booted("cp-1", "Alfen", "NG9", None)
    env.adapter.status("cp-1", 2, "Preparing", "NoError", NOW)
    shown = api.get("cpo/charge-points/cp-1")
    assert shown["connected"] is True
    assert shown["boot"] == {"vendor": "Alfen", "model": "NG9", "firmware": None}
    assert [c["status"] for c in shown["connector_states"]] == [None, "Preparing"]


def test_passwords_go_in_hashed_and_never_come_out(env: Env, api: Client) -> None:
    created = api.post("cpo/charge-points", point(username="box-1", password=CP_PASSWORD))
    assert (created["username"], created["has_password"]) == ("box-1", True)
    assert "password" not in created
    api.post("cpo/charge-points", point("cp-2", password=CP_PASSWORD))  # the username defaults to the id
    assert api.post("cpo/charge-points", point("cp-3", password="p" * 12))["has_password"] is True  # the shortest
    api.get("cpo/charge-points")
    api.get("cpo/charge-points/cp-1")
    api.patch("cpo/charge-points/cp-1", {"max_current_a": 20})
    api.post("cpo/charge-points/cp-1/retry", {}, status=200)
    assert env.store.verify_charge_point("cp-1", "box-1", CP_PASSWORD)
    assert env.store.verify_charge_point("cp-2", "cp-2", CP_PASSWORD)
    assert not env.store.verify_charge_point("cp-1", "box-1", CP_PASSWORD + "x")

    seen = b"".join(api.bodies)
    assert CP_PASSWORD.encode() not in seen
    assert b"scrypt" not in seen
    stored = json.dumps(env.rows(), default=str)
    assert CP_PASSWORD not in stored
    assert "scrypt" in stored


def test_a_duplicate_id_is_refused_and_the_first_stays(env: Env, api: Client) -> None:
    first = api.post("cpo/charge-points", point(max_current_a=32))
    before = env.rows()
    assert_error(api.call("POST", "cpo/charge-points", json=point(max_current_a=16)), 409, "cp-1", "exists")
    assert env.rows() == before
    assert api.get("cpo/charge-points/cp-1") == first


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "cpo/charge-points/ghost", None),
        ("PATCH", "cpo/charge-points/ghost", {"max_current_a": 16}),
        ("DELETE", "cpo/charge-points/ghost", None),
        ("POST", "cpo/charge-points/ghost/retry", {}),
    ],
    ids=["get", "patch", "delete", "retry"],
)
def test_unknown_charge_points_are_404(env: Env, api: Client, method: str, path: str, body: Any) -> None:
    api.post("cpo/charge-points", point())
    before = env.rows()
    assert_error(api.call(method, path, json=body), 404, "charge point ghost is not registered")
    assert env.rows() == before


def test_unknown_routes_point_to_the_docs(api: Client) -> None:
    assert_error(api.call("GET", "cpo/charge-point"), 404, "/api/v1/cpo/charge-point", "/api/v1/cpo/docs")
    assert_error(api.call("GET", "cpo/charge-points/a%00b"), 404, "NUL")
    response = api.call("PUT", "cpo/charge-points/cp-1", json=point())
    assert_error(response, 405, "PUT is not allowed", "DELETE, GET, HEAD, OPTIONS, PATCH")
    assert response.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH"


# ---------------------------------------------------------------------------------------------
# bad input: a JSON error that says what to fix, and nothing written


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    needles: tuple[str, ...]
    kwargs: dict[str, Any]


def case(name: str, method: str, path: str, status: int, *needles: str, **kwargs: Any) -> Any:
    return pytest.param(Case(method, path, status, needles, kwargs), id=name)


def post(name: str, *needles: str, **changes: Any) -> Any:
    return case(name, "POST", "cpo/charge-points", 422, *needles, json=point("cp-new", **changes))


def patch(name: str, body: dict[str, Any], *needles: str) -> Any:
    return case(name, "PATCH", "cpo/charge-points/cp-1", 422, *needles, json=body)


def without(name: str) -> dict[str, Any]:
    body = point("cp-new")
    del body[name]
    return body


BAD_INPUT = [
    # missing or malformed fields
    *(case(f"missing-{name}", "POST", "cpo/charge-points", 422, f"{name}: Missing data", json=without(name))
      for name in ("id", "cable_id", "max_current_a", "phases")),
    post("id-number", "id", id=5),
    post("bad-id", "charge point id", "not a valid id", "letters, digits", id="cp 1"),
    post("long-id", "charge point id", "not a valid id", id="c" * 65),
    post("nul-id", "id", "NUL", id="cp\x001"),
    post("bad-cable-id", "cable id", "not a valid id", cable_id="cable/1"),
    post("current-text", "max_current_a", "number", max_current_a="lots"),
    post("current-bool", "max_current_a", max_current_a=True),
    post("current-negative", "max_current_a must be in [0, 10000]", max_current_a=-1),
    post("current-too-high", "max_current_a must be in [0, 10000]", max_current_a=10001),
    post("current-huge", "max_current_a", "at most", max_current_a=1e15),
    post("current-null", "max_current_a", "null", max_current_a=None),
    case("current-nan", "POST", "cpo/charge-points", 422, "max_current_a", "finite",
         data=json.dumps(point(max_current_a=float("nan"))), content_type="application/json"),
    post("phases-4", "phases must be 1, 2 or 3", phases=4),
    post("phases-0", "phases must be 1, 2 or 3", phases=0),
    post("phases-text", "phases", "integer", phases="three"),
    post("phases-float", "phases", "integer", phases=2.5),
    post("phases-bool", "phases", "integer", phases=True),
    post("voltage-zero", "voltage_v must be a phase voltage such as 230", voltage_v=0),
    post("voltage-high", "voltage_v must be a phase voltage such as 230", voltage_v=1001),
    post("voltage-text", "voltage_v", "number", voltage_v="mains"),
    post("connectors-0", "connectors must be 1-99", connectors=0),
    post("connectors-100", "connectors must be 1-99", connectors=100),
    post("connectors-float", "connectors", "integer", connectors=1.5),
    post("protection-negative", "protection_a must be in [0, 10000]", protection_a=-6),
    post("connector-rating-high", "connector_max_current_a must be in [0, 10000]", connector_max_current_a=20000),
    # credentials
    post("short-password", "password", "12 to 256 characters", password="short"),  # noqa: S106
    post("password-11", "password", "12 to 256 characters", password="p" * 11),
    post("long-password", "password", "12 to 256 characters", password="p" * 257),
    post("null-password", "password", "null", password=None),
    post("nul-password", "password", "NUL", password="twelve chars\x00"),  # noqa: S106
    post("username-without-password", "username needs a password", username="box-1"),
    post("empty-username", "username", "1 to 64 characters", username="", password=CP_PASSWORD),
    post("long-username", "username", "1 to 64 characters", username="u" * 65, password=CP_PASSWORD),
    # unknown fields, and fields only the adapter writes
    post("unknown-field", "colour: unknown field", "accepted here", "max_current_a", colour="red"),
    post("has-password", "has_password: unknown field", has_password=True),
    post("connected", "connected: unknown field", connected=True),
    post("excluded", "excluded: unknown field", excluded=None),
    post("unresponsive", "unresponsive: unknown field", unresponsive=True),
    # bodies
    case("array-body", "POST", "cpo/charge-points", 422, "JSON object", json=[point("cp-new")]),
    case("malformed-json", "POST", "cpo/charge-points", 400, "not valid JSON",
         data='{"id": "cp-new",', content_type="application/json"),
    case("text-body", "POST", "cpo/charge-points", 415, "Content-Type: application/json",
         data=json.dumps(point("cp-new")), content_type="text/plain"),
    case("no-body", "POST", "cpo/charge-points", 415, "Content-Type: application/json"),
    case("empty-json", "POST", "cpo/charge-points", 422, "id: Missing data", data="", content_type="application/json"),
    # patches
    patch("patch-id", {"id": "cp-9"}, "id: unknown field"),
    patch("patch-password", {"password": CP_PASSWORD}, "password: unknown field"),
    patch("patch-username", {"username": "box-2"}, "username: unknown field"),
    patch("patch-current-negative", {"max_current_a": -1}, "max_current_a must be in [0, 10000]"),
    patch("patch-phases", {"phases": 5}, "phases must be 1, 2 or 3"),
    patch("patch-connectors", {"connectors": 0}, "connectors must be 1-99"),
    patch("patch-voltage-null", {"voltage_v": None}, "voltage_v", "null"),
    patch("patch-cable-id", {"cable_id": "cable 2"}, "cable id", "not a valid id"),
    patch("patch-cable-null", {"cable_id": None}, "cable_id", "null"),
    patch("patch-array", [{"max_current_a": 16}], "JSON object"),  # type: ignore[arg-type]
    case("patch-form", "PATCH", "cpo/charge-points/cp-1", 415, "Content-Type: application/json",
         data={"max_current_a": "16"}),
    case("retry-body", "POST", "cpo/charge-points/cp-1/retry", 422, "now: unknown field", "accepted here: nothing",
         json={"now": True}),
    case("retry-no-content-type", "POST", "cpo/charge-points/cp-1/retry", 415, "Content-Type: application/json"),
    # query parameters
    case("profiles-limit-0", "GET", "cpo/profiles?limit=0", 422, "query parameter limit: must be between 1 and 1000"),
    case("profiles-limit-high", "GET", "cpo/profiles?limit=1001", 422, "query parameter limit", "1000"),
    case("profiles-limit-text", "GET", "cpo/profiles?limit=all", 422, "query parameter limit", "integer"),
    case("profiles-unknown", "GET", "cpo/profiles?charge_point=cp-1", 422, "query parameter charge_point: unknown"),
    case("sessions-all-text", "GET", "cpo/sessions?all=maybe", 422, "query parameter all", "boolean"),
    case("sessions-limit-0", "GET", "cpo/sessions?all=true&limit=0", 422, "query parameter limit"),
    case("sessions-unknown", "GET", "cpo/sessions?running=1", 422, "query parameter running: unknown"),
    case("messages-limit-0", "GET", "cpo/oscp/messages?limit=0", 422, "query parameter limit"),
]  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One adapter for all bad-input cases (each checks that it changed nothing): cp-1 with a login and
    cp-2 with a session running."""
    made = make_env(tmp_path_factory.mktemp("cpo-api") / "cpo.db", Clock(NOW))
    made.api.post("cpo/charge-points", point(username="box-1", password=CP_PASSWORD))
    made.api.post("cpo/charge-points", point("cp-2", connectors=2))
    made.adapter.transaction_started("cp-2", 2, "TAG-2", 0, NOW)
    yield made
    made.store.close()


@pytest.mark.parametrize("bad", BAD_INPUT)
def test_bad_input_is_refused_and_writes_nothing(seeded: Env, bad: Case) -> None:
    seeded.clock.advance(timedelta(minutes=1))  # any write would at least change updated_at
    before = seeded.rows()
    charge_points = seeded.api.get("cpo/charge-points")
    response = seeded.api.call(bad.method, bad.path, **bad.kwargs)
    assert_error(response, bad.status, *bad.needles)
    assert seeded.rows() == before
    assert seeded.api.get("cpo/charge-points") == charge_points


def test_a_charge_point_with_a_session_running_is_not_removed(seeded: Env) -> None:
    before = seeded.rows()
    assert_error(seeded.api.call("DELETE", "cpo/charge-points/cp-2"), 409, "cp-2", "session running")
    assert seeded.rows() == before
    assert seeded.api.get("cpo/charge-points/cp-2")["connector_states"][1]["transaction_id"] == 1


# ---------------------------------------------------------------------------------------------
# the admin token, the public routes


PROTECTED: list[tuple[str, str, Any]] = [
    ("GET", "cpo/charge-points", None),
    ("POST", "cpo/charge-points", point("cp-9")),
    ("GET", "cpo/charge-points/cp-1", None),
    ("PATCH", "cpo/charge-points/cp-1", {"max_current_a": 10}),
    ("DELETE", "cpo/charge-points/cp-1", None),
    ("POST", "cpo/charge-points/cp-1/retry", {}),
    ("GET", "cpo/sessions", None),
    ("GET", "cpo/limits", None),
    ("GET", "cpo/profiles", None),
    ("GET", "cpo/budgets", None),
    ("GET", "cpo/status", None),
    ("GET", "cpo/oscp/messages", None),
    ("GET", "cpo/oscp/messages/counts", None),
]
PUBLIC_ENDPOINTS = {
    "cpo_health.health",
    "cpo-api-docs.openapi_json",
    "cpo-api-docs.openapi_swagger_ui",
    "docs_assets.asset",
}


def test_the_route_table_covers_every_data_route(seeded: Env) -> None:
    app = seeded.api.app
    adapter = app.url_map.bind("localhost")
    tested = {(adapter.match(f"/api/v1/{path}", method=method)[0], method) for method, path, _ in PROTECTED}
    served = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1") and rule.endpoint not in PUBLIC_ENDPOINTS
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    assert tested == served


@pytest.mark.parametrize(
    "authorization", [None, f"Bearer {'x' * 32}", f"Basic {TOKEN}"], ids=["none", "wrong", "basic"]
)
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_data_routes_need_the_admin_token(
    seeded: Env, method: str, path: str, body: Any, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = seeded.rows()
    response = seeded.api.call(method, path, token=None, headers=headers, json=body)
    assert_error(response, 401, "token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert seeded.rows() == before


def test_health_needs_no_token(seeded: Env) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = seeded.api.call("GET", "cpo/health", token=None, headers=headers)
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok", "database": "ok"}


def test_health_reports_an_unreachable_database(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'cpo.db'}")
    monkeypatch.setattr(env.store, "engine", broken)
    response = env.api.call("GET", "cpo/health", token=None)
    broken.dispose()
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unavailable"}
    assert "database does not answer" in caplog.text


def test_unexpected_errors_are_logged_not_shown(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(env.adapter, "limits_view", broken)
    with caplog.at_level(logging.ERROR, logger="gridcap.api"):
        response = env.api.call("GET", "cpo/limits")
    assert_error(response, 500, "internal error", "logged")
    assert "secret detail" not in response.get_data(as_text=True)
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


def test_openapi_document(seeded: Env) -> None:
    response = seeded.api.call("GET", "cpo/openapi.json", token=None)
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"] == "3.0.3"
    assert spec["info"]["title"] == "gridcap CPO adapter"
    documented = {(path, key.upper()) for path, item in spec["paths"].items() for key in item if key != "parameters"}
    adapter = seeded.api.app.url_map.bind("localhost")
    expected = {("/api/v1/cpo/health", "GET")}
    for method, path, _ in PROTECTED:
        rule, _ = adapter.match(f"/api/v1/{path}", method=method, return_rule=True)
        expected.add((re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method))
    assert documented == expected
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the admin token",
    }
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/api/v1/cpo/health"]["get"]["security"] == []
    charge_point = spec["components"]["schemas"]["ChargePoint"]
    assert charge_point["properties"]["password"]["writeOnly"] is True
    assert charge_point["properties"]["connected"]["readOnly"] is True
    assert set(charge_point["required"]) == {"id", "cable_id", "max_current_a", "phases"}
    assert spec["paths"]["/api/v1/cpo/charge-points/{charge_point_id}"]["delete"]["responses"].keys() >= {"204", "409"}
    query = {p["name"] for p in spec["paths"]["/api/v1/cpo/profiles"]["get"]["parameters"]}
    assert query == {"charge_point_id", "limit"}


def test_swagger_ui_is_served_from_local_assets(seeded: Env) -> None:
    page = seeded.api.call("GET", "cpo/docs", token=None)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/api/v1/cpo/openapi.json" in html
    assert "/api/v1/docs/assets/swagger-ui-bundle.js" in html
    asset = seeded.api.call("GET", "/api/v1/docs/assets/swagger-ui.css", token=None)
    assert asset.status_code == 200
    assert asset.mimetype == "text/css"
    asset.close()


# ---------------------------------------------------------------------------------------------
# views


def test_sessions_running_and_finished(env: Env, api: Client) -> None:
    api.post("cpo/charge-points", point(connectors=2))
    api.post("cpo/charge-points", point("cp-2"))
    running = env.adapter.transaction_started("cp-1", 2, "TAG-C", 100, NOW - timedelta(hours=3))  # the oldest
    first = env.adapter.transaction_started("cp-2", 1, "TAG-A", 5000, NOW - timedelta(hours=2))
    env.adapter.transaction_stopped("cp-2", first, 12_500, NOW - timedelta(hours=1), "EVDisconnected")
    second = env.adapter.transaction_started("cp-2", 1, "TAG-B", 12_500, NOW - timedelta(minutes=50))
    env.adapter.transaction_stopped("cp-2", second, 12_750, NOW - timedelta(minutes=40), None)
    assert api.get("cpo/sessions") == [
        {
            "transaction_id": running,
            "charge_point_id": "cp-1",
            "connector_id": 2,
            "id_tag": "TAG-C",
            "running": True,
            "started_at": "2026-11-24T09:07:30Z",
            "stopped_at": None,
            "reason": None,
            "energy_kwh": 0,
            "drawn_a": None,
            "phases_in_use": None,
            "limit_a": None,
        }
    ]
    everything = api.get("cpo/sessions?all=true")
    assert [(s["transaction_id"], s["running"]) for s in everything] == [
        (running, True),
        (second, False),
        (first, False),
    ]
    assert everything[2] == {
        "transaction_id": first,
        "charge_point_id": "cp-2",
        "connector_id": 1,
        "id_tag": "TAG-A",
        "running": False,
        "started_at": "2026-11-24T10:07:30Z",
        "stopped_at": "2026-11-24T11:07:30Z",
        "reason": "EVDisconnected",
        "energy_kwh": 7.5,
        "drawn_a": None,
        "phases_in_use": None,
        "limit_a": None,
    }
    assert everything[1]["energy_kwh"] == 0.25
    # the limit counts finished transactions; running ones come anyway
    assert [s["transaction_id"] for s in api.get("cpo/sessions?all=true&limit=1")] == [running, second]
    assert api.get("cpo/sessions?all=false") == api.get("cpo/sessions")
    assert api.get("cpo/charge-points/cp-1")["connector_states"][1]["transaction_id"] == running


def test_limits_profiles_and_retry_after_enforcing(env: Env, api: Client) -> None:
    api.post("cpo/charge-points", point(connectors=2))
    api.post("cpo/charge-points", point("cp-2", max_current_a=16, phases=1))
    env.store.replace_budgets("cable-1", {T0: D(40), T0 + Q: D(30)}, "A", backup=D(12), received_at=NOW)
    env.adapter.connected("cp-1")
    env.adapter.connected("cp-2")
    env.adapter.transaction_started("cp-1", 1, "TAG-1", 0, NOW)
    env.adapter.transaction_started("cp-2", 1, "TAG-2", 0, NOW)
    env.enforce({"cp-1": "Accepted", "cp-2": "NotSupported"})  # cp-2 refuses every profile kind
    assert {(cp, kind) for cp, _, kind in env.sent} >= {
        ("cp-1", "ChargePointMaxProfile"),
        ("cp-2", "ChargePointMaxProfile"),
        ("cp-2", "TxDefaultProfile"),
        ("cp-2", "TxProfile"),
    }

    in_force = {(v["charge_point_id"], v["connector_id"]): v["limit_a"] for v in env.adapter.limits_view()}
    assert isinstance(in_force["cp-1", 1], Decimal)
    limits = api.get("cpo/limits")
    assert [(v["charge_point_id"], v["connector_id"]) for v in limits] == [("cp-1", 1), ("cp-1", 2), ("cp-2", 1)]
    for view in limits:
        expected = in_force[view["charge_point_id"], view["connector_id"]]
        assert view["limit_a"] == (None if expected is None else float(expected))
        assert view["cable_id"] == "cable-1"
    assert limits[0]["limit_a"] > 0
    assert limits[0]["profile_kind"] == "ChargePointMaxProfile"
    assert limits[2]["excluded"] is not None
    assert api.get("cpo/status")["ocpp"]["excluded"] == ["cp-2"]

    stored = env.store.recent_profiles(1000)
    profiles = api.get("cpo/profiles")["profiles"]
    assert [p["id"] for p in profiles] == [r.id for r in stored]
    assert len(profiles) == len(env.sent)
    accepted = next(p for p in profiles if p["charge_point_id"] == "cp-1")
    assert accepted["status"] == "Accepted"
    assert accepted["connector_id"] == 0
    period = accepted["schedule"]["chargingSchedulePeriod"][0]
    assert isinstance(period["limit"], float)
    sent = next(r for r in stored if r.id == accepted["id"])
    assert period["limit"] == float(sent.schedule["chargingSchedulePeriod"][0]["limit"])
    assert {p["status"] for p in profiles if p["charge_point_id"] == "cp-2"} == {"NotSupported"}

    retried = api.post("cpo/charge-points/cp-2/retry", {}, status=200)
    assert (retried["excluded"], retried["profile_kind"]) == (None, "ChargePointMaxProfile")
    assert api.get("cpo/status")["ocpp"]["excluded"] == []
    again = api.call("POST", "cpo/charge-points/cp-2/retry", content_type="application/json")  # no body at all
    assert again.status_code == 200


def test_profiles_newest_first_filtered_and_limited(env: Env, api: Client) -> None:
    schedule = {
        "chargingRateUnit": "A",
        "startSchedule": "2026-11-24T12:00:00Z",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": D("16.5"), "numberPhases": 3},
            {"startPeriod": 900, "limit": D(6), "numberPhases": 3},
        ],
    }
    for n, (cp_id, status) in enumerate([("cp-1", "Accepted"), ("cp-2", "Rejected"), ("cp-1", "Timeout")]):
        env.store.record_profile(
            cp_id,
            0,
            purpose="ChargePointMaxProfile",
            stack_level=1,
            schedule=schedule,
            status=status,
            charging_profile_id=1000,
            detail=None if status == "Accepted" else f"answered {status}",
            sent_at=NOW + timedelta(seconds=n),
        )
    profiles = api.get("cpo/profiles")["profiles"]
    assert [(p["charge_point_id"], p["status"]) for p in profiles] == [
        ("cp-1", "Timeout"),
        ("cp-2", "Rejected"),
        ("cp-1", "Accepted"),
    ]
    assert profiles[0] == {
        "id": 3,
        "charge_point_id": "cp-1",
        "connector_id": 0,
        "purpose": "ChargePointMaxProfile",
        "stack_level": 1,
        "charging_profile_id": 1000,
        "transaction_id": None,
        "sent_at": "2026-11-24T12:07:32Z",
        "status": "Timeout",
        "detail": "answered Timeout",
        "schedule": {
            "chargingRateUnit": "A",
            "startSchedule": "2026-11-24T12:00:00Z",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 16.5, "numberPhases": 3},
                {"startPeriod": 900, "limit": 6, "numberPhases": 3},
            ],
        },
    }
    raw = api.call("GET", "cpo/profiles?limit=1").get_data(as_text=True)
    assert '"limit":16.5' in raw.replace(" ", "")  # a JSON number, not a string
    assert [p["id"] for p in api.get("cpo/profiles?limit=1")["profiles"]] == [3]
    assert [p["id"] for p in api.get("cpo/profiles?charge_point_id=cp-1")["profiles"]] == [3, 1]
    assert [p["id"] for p in api.get("cpo/profiles?charge_point_id=cp-1&limit=1")["profiles"]] == [3]
    assert api.get("cpo/profiles?charge_point_id=ghost") == {"profiles": []}


def test_budgets_per_cable(env: Env, api: Client) -> None:
    assert api.get("cpo/budgets") == []
    blocks = {T0 - Q: D(50), T0: D("40.5"), T0 + Q: D(35), T0 + 3 * Q: D(30)}  # a gap at T0 + 2Q, which gets the backup
    env.store.replace_budgets("cable-1", blocks, "A", backup=D(20), received_at=NOW - timedelta(minutes=5))
    env.store.replace_budgets("cable-2", {}, "KW", backup=D("11.5"), received_at=NOW)
    assert api.get("cpo/budgets") == [
        {
            "cable_id": "cable-1",
            "unit": "A",
            "backup_capacity": 20,
            "known_until": "2026-11-24T13:00:00Z",  # the gap gets the backup; the last block counts
            "blocks": [
                {"start": "2026-11-24T12:00:00Z", "capacity": 40.5, "received_at": "2026-11-24T12:02:30Z"},
                {"start": "2026-11-24T12:15:00Z", "capacity": 35, "received_at": "2026-11-24T12:02:30Z"},
                {"start": "2026-11-24T12:45:00Z", "capacity": 30, "received_at": "2026-11-24T12:02:30Z"},
            ],
        },
        {"cable_id": "cable-2", "unit": "KW", "backup_capacity": 11.5, "known_until": None, "blocks": []},
    ]


def test_status_and_oscp_messages(env: Env, api: Client) -> None:
    assert api.get("cpo/status") == {
        "dso": {
            "url": None,
            "binding": None,
            "online": False,
            "last_heard": None,
            "heartbeat_interval_s": 60,
            "forecasts_pulled": False,
            "last_error": None,
            "usage_buffered": 0,
        },
        "ocpp": {"connected": [], "excluded": []},
    }
    env.adapter.heard_from_dso()
    env.store.enqueue_usage("cable-1", {T0 - Q: D(12)}, "A")
    status = api.get("cpo/status")["dso"]
    assert (status["online"], status["last_heard"], status["usage_buffered"]) == (True, "2026-11-24T12:07:30Z", 1)

    assert api.get("cpo/oscp/messages") == {"messages": []}
    assert api.get("cpo/oscp/messages/counts") == {"counts": []}
    for operation, outcome, status_code in [
        ("Heartbeat", "ok", 204),
        ("Heartbeat", "ok", 204),
        ("Usage", "Rejected", 400),
    ]:
        env.messages.record(
            direction="out",
            cpo_id=None,
            binding="json",
            operation=operation,
            outcome=outcome,
            http_status=status_code,
            started=time.perf_counter(),
            detail=None if outcome == "ok" else "no such cable",
        )
    env.messages.record(
        direction="in", cpo_id=None, binding="json", operation="UpdateCableCapacityForecast", outcome="ok",
        http_status=204, started=time.perf_counter(),
    )  # fmt: skip
    messages = api.get("cpo/oscp/messages")["messages"]
    assert [m["operation"] for m in messages] == ["UpdateCableCapacityForecast", "Usage", "Heartbeat", "Heartbeat"]
    assert set(messages[1]) == {"at", "direction", "operation", "outcome", "http_status", "duration_ms", "detail"}
    assert (messages[1]["outcome"], messages[1]["http_status"], messages[1]["detail"]) == (
        "Rejected",
        400,
        "no such cable",
    )
    assert messages[1]["at"].endswith("Z")
    assert isinstance(messages[1]["duration_ms"], float)
    assert [m["operation"] for m in api.get("cpo/oscp/messages?limit=2")["messages"]] == [
        "UpdateCableCapacityForecast",
        "Usage",
    ]
    assert api.get("cpo/oscp/messages/counts") == {
        "counts": [
            {"direction": "in", "operation": "UpdateCableCapacityForecast", "outcome": "ok", "count": 1},
            {"direction": "out", "operation": "Heartbeat", "outcome": "ok", "count": 2},
            {"direction": "out", "operation": "Usage", "outcome": "Rejected", "count": 1},
        ]
    }
