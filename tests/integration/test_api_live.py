"""The API over real HTTP: the app under waitress on loopback, driven with requests."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from test_api_support import PASSWORD, TOKEN, cable_body, cpo_body, make_app
from waitress import wasyncore
from waitress.server import create_server

from service.store import Database
from service.usecases import Context


@pytest.fixture
def base_url(sqlite_url: str) -> Iterator[str]:
    db = Database(sqlite_url)
    db.create_schema()
    ctx = Context(db, clock=lambda: datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC))
    server = create_server(make_app(ctx), host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}/api/v1"
    finally:
        # Close the sockets from the server's own loop, which then ends; then stop its workers.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()
        db.dispose()
    assert not thread.is_alive()


def test_over_real_http(base_url: str) -> None:
    with requests.Session() as http:
        health = http.get(f"{base_url}/health", timeout=10)
        assert (health.status_code, health.json()) == (200, {"status": "ok", "database": "ok"})

        refused = http.get(f"{base_url}/cables", timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.json()["code"] == 401

        http.headers["Authorization"] = f"Bearer {TOKEN}"
        created = http.post(f"{base_url}/cables", json=cable_body("c1"), timeout=10)
        assert created.status_code == 201
        assert created.headers["Location"].endswith("/api/v1/cables/c1")
        cpo = http.post(f"{base_url}/cpos", json=cpo_body("cpo-a"), timeout=10)
        assert cpo.status_code == 201
        sub = {"cpo_id": "cpo-a", "weight": 1, "guaranteed_minimum": 0}
        assert http.post(f"{base_url}/cables/c1/subscriptions", json=sub, timeout=10).status_code == 201

        view = http.get(
            f"{base_url}/cables/c1/capacity",
            params={"start": "2026-11-24T15:00:00+01:00", "end": "2026-11-24T16:00:00+01:00"},
            timeout=10,
        )
        assert view.status_code == 200
        assert view.headers["Content-Type"] == "application/json"
        assert [b["budgets"] for b in view.json()["blocks"]] == [{"cpo-a": 90}] * 4

        wish = {"start": "2026-11-24T14:00:00Z", "end": "2026-11-24T14:15:00Z", "capacity": 95}
        decision = http.post(f"{base_url}/cables/c1/requests", json={"cpo_id": "cpo-a", "blocks": [wish]}, timeout=10)
        assert decision.status_code == 200
        assert decision.json()["status"] == "Accepted"

        broken = http.post(f"{base_url}/cables", data=b"{", headers={"Content-Type": "application/json"}, timeout=10)
        assert (broken.status_code, broken.json()["code"]) == (400, 400)
        too_big = http.post(f"{base_url}/cables", json=cable_body("c2", name="x" * 1_100_000), timeout=10)
        assert (too_big.status_code, too_big.json()["code"]) == (413, 413)
        missing = http.get(f"{base_url}/no-such-thing", timeout=10)
        assert (missing.status_code, missing.json()["code"]) == (404, 404)

        assert PASSWORD not in http.get(f"{base_url}/cpos", timeout=10).text
        docs = http.get(f"{base_url}/docs", timeout=10)
        assert docs.status_code == 200
        assert http.get(f"{base_url}/docs/assets/swagger-ui-bundle.js", timeout=10).status_code == 200
