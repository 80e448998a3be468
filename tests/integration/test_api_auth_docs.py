"""The admin token on every data route, the public health check and docs, and internal errors.

SQLite only: nothing here depends on the database engine.
"""

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_api_support import TOKEN, Client, assert_error, cable_body, cpo_body, make_app, seed, unchanged

from service.domain.errors import InvariantViolation
from service.store import Database
from service.usecases import Context, grid

NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
X0, X1 = "2026-11-24T14:00:00Z", "2026-11-24T14:15:00Z"
WATCHED = ("cables", "cpos", "cables/c1", "cables/c1/subscriptions", "cables/c1/capacity")

# Every protected route, with a body it would accept: only the missing token stops it.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "cables", None),
    ("POST", "cables", cable_body("c9")),
    ("GET", "cables/c1", None),
    ("PATCH", "cables/c1", {"rated_limit": 50}),
    ("DELETE", "cables/c2", None),
    ("GET", "cables/c1/overrides", None),
    ("POST", "cables/c1/overrides", {"start": X0, "end": X1, "limit": 10, "reason": "test"}),
    ("DELETE", "cables/c1/overrides/1", None),
    ("GET", "cables/c1/subscriptions", None),
    ("POST", "cables/c1/subscriptions", {"cpo_id": "cpo-c", "weight": 1, "guaranteed_minimum": 0}),
    ("GET", "cables/c1/subscriptions/cpo-a", None),
    ("PATCH", "cables/c1/subscriptions/cpo-a", {"weight": 3}),
    ("DELETE", "cables/c1/subscriptions/cpo-a", None),
    ("GET", "cpos", None),
    ("POST", "cpos", cpo_body("cpo-z")),
    ("GET", "cpos/cpo-c", None),
    ("PATCH", "cpos/cpo-c", {"name": "renamed"}),
    ("DELETE", "cpos/cpo-c", None),
    ("GET", "cables/c1/capacity", None),
    ("GET", "cables/c1/forecast", None),
    ("GET", "cables/c1/forecast/metrics", None),
    ("POST", "cables/c1/requests", {"cpo_id": "cpo-a", "blocks": [{"start": X0, "end": X1, "capacity": 60}]}),
    ("POST", "cables/c1/usage", {"cpo_id": "cpo-a", "blocks": [
        {"start": "2026-11-24T12:00:00Z", "end": "2026-11-24T12:15:00Z", "average_usage": 5}]}),
    ("GET", "audit", None),
    ("GET", "audit/decisions", None),
    ("GET", "oscp/cpos", None),
    ("GET", "oscp/outbox", None),
    ("GET", "oscp/messages", None),
    ("GET", "oscp/messages/counts", None),
]  # fmt: skip
PUBLIC_ENDPOINTS = {"health.health", "api-docs.openapi_json", "api-docs.openapi_swagger_ui", "docs_assets.asset"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('auth') / 'gridcap.db'}")
    db.create_schema()
    client = Client(make_app(Context(db, clock=lambda: NOW)))
    seed(client)
    client.post("cpos", cpo_body("cpo-c"))
    client.post("cables", cable_body("c2"))
    override = client.post("cables/c1/overrides", {"start": X0, "end": X1, "limit": 80, "reason": "existing"})
    assert override["id"] == 1
    yield client
    db.dispose()


def test_the_route_table_covers_every_data_route(api: Client) -> None:
    adapter = api.app.url_map.bind("localhost")
    tested = {(adapter.match(f"/api/v1/{path}", method=method)[0], method) for method, path, _ in ROUTES}
    served = {
        (rule.endpoint, method)
        for rule in api.app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1") and rule.endpoint not in PUBLIC_ENDPOINTS
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    assert tested == served


@pytest.mark.parametrize("authorization", [None, f"Bearer {'x' * 32}"], ids=["no-token", "wrong-token"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_data_routes_need_the_admin_token(
    api: Client, method: str, path: str, body: Any, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with unchanged(api, *WATCHED):
        response = api.call(method, path, token=None, headers=headers, json=body)
        assert_error(response, 401, "token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer ", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Bearer  {TOKEN[1:]}"],
    ids=["empty", "blank", "prefix", "longer", "basic", "no-scheme", "shifted"],
)
def test_near_misses_are_refused(api: Client, authorization: str) -> None:
    with unchanged(api, *WATCHED):
        response = api.call("DELETE", "cables/c2", token=None, headers={"Authorization": authorization})
        assert_error(response, 401, "token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_token_scheme_is_case_insensitive(api: Client) -> None:
    assert api.call("GET", "cables", token=None, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_health_needs_no_token(api: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = api.call("GET", "health", token=None, headers=headers)
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok", "database": "ok"}


def test_health_reports_an_unreachable_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'gridcap.db'}")
    try:
        response = Client(make_app(Context(db))).call("GET", "health", token=None)
    finally:
        db.dispose()
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unavailable"}
    assert "database does not answer" in caplog.text


@pytest.mark.parametrize("error", [RuntimeError("secret detail"), InvariantViolation("secret detail")])
def test_unexpected_errors_are_logged_not_shown(
    api: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    def broken(ctx: Context) -> None:
        raise error

    monkeypatch.setattr(grid, "list_cables", broken)
    with caplog.at_level(logging.ERROR, logger="gridcap.api"):
        response = api.call("GET", "cables")
    body = assert_error(response, 500, "internal error", "logged")
    assert "secret detail" not in response.get_data(as_text=True)
    record = next(r for r in caplog.records if r.name == "gridcap.api")
    assert record.exc_info is not None
    assert record.exc_info[1] is error
    reference = body["message"].split("reference ")[1].split(")")[0]
    assert reference in record.getMessage()


def test_openapi_document(api: Client) -> None:
    response = api.call("GET", "openapi.json", token=None)
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"] == "3.0.3"
    assert spec["info"]["title"] == "gridcap"
    adapter = api.app.url_map.bind("localhost")
    documented = {(path, key.upper()) for path, item in spec["paths"].items() for key in item if key != "parameters"}
    expected = {("/api/v1/health", "GET")}
    for method, path, _ in ROUTES:
        rule, _ = adapter.match(f"/api/v1/{path}", method=method, return_rule=True)
        expected.add((re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method))  # <int:id> -> {id}
    assert documented == expected
    assert spec["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/api/v1/health"]["get"]["security"] == []
    assert spec["components"]["schemas"]["Cpo"]["properties"]["password"]["writeOnly"] is True
    request_body = spec["paths"]["/api/v1/cables/{cable_id}/requests"]["post"]["requestBody"]
    assert request_body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CapacityRequest"}
    block_view = set(spec["components"]["schemas"]["BlockView"]["properties"])
    assert block_view == {
        "start",
        "end",
        "limit",
        "base_load",
        "margin",
        "available",
        "unallocated",
        "budgets",
        "handed_out",
    }


def test_swagger_ui_is_served_from_local_assets(api: Client) -> None:
    page = api.call("GET", "docs", token=None)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/api/v1/docs/assets/swagger-ui-bundle.js" in html
    assert "/api/v1/openapi.json" in html
    for cdn in ("cdn", "unpkg", "jsdelivr", "//"):
        assert cdn not in html.lower().replace("http://www.w3.org", "")
    for asset, mimetype in [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui-standalone-preset.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
    ]:
        response = api.call("GET", f"docs/assets/{asset}", token=None)
        assert response.status_code == 200, asset
        assert response.mimetype == mimetype
        assert len(response.get_data()) > 1000
        response.close()
    assert_error(api.call("GET", "docs/assets/nothing.js", token=None), 404)
    assert_error(api.call("GET", "docs/assets/../__init__.py", token=None), 404)
