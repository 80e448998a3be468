"""Cables, overrides, CPOs, subscriptions and the audit over REST, on SQLite and on PostgreSQL."""

import pytest
from test_api_support import PASSWORD, Client, cable_body, cpo_body, make_app

from service.usecases import Context


@pytest.fixture
def api(ctx: Context) -> Client:
    return Client(make_app(ctx))


def test_cable_lifecycle(api: Client) -> None:
    assert api.get("cables") == []
    created = api.post("cables", cable_body("c1", margin="2.5", reserve_share=0.2, base_load=10))
    assert created == {
        "id": "c1",
        "name": "LS cable c1",
        "unit": "A",
        "rated_limit": 100,
        "phases": 3,
        "voltage_v": 230,
        "margin": 2.5,
        "reserve_share": 0.2,
        "base_load": 10,
        "overrides": [],
    }
    response = api.call("GET", "cables/c1")
    assert response.get_json() == created
    api.post("cables", cable_body("c0", unit="KW", rated_limit="150.25", phases=1))
    assert [c["id"] for c in api.get("cables")] == ["c0", "c1"]
    assert api.get("cables/c0")["rated_limit"] == 150.25

    updated = api.patch("cables/c1", {"name": "renamed", "rated_limit": 80, "unit": "A"})
    assert updated["name"] == "renamed"
    assert updated["rated_limit"] == 80
    assert api.get("cables/c1") == updated
    api.delete("cables/c1")
    assert api.call("GET", "cables/c1").status_code == 404
    assert [c["id"] for c in api.get("cables")] == ["c0"]

    actions = [(d["action"], d["actor"], d["cable_id"]) for d in api.get("audit/decisions")["decisions"]]
    assert ("cable_created", "api:admin", "c1") in actions
    assert ("cable_updated", "api:admin", "c1") in actions
    assert ("cable_deleted", "api:admin", "c1") in actions


def test_overrides(api: Client) -> None:
    api.post("cables", cable_body("c1"))
    assert api.get("cables/c1/overrides") == []
    body = {"start": "2026-11-24T15:00:00+01:00", "end": "2026-11-24T16:00:00+01:00", "limit": 40, "reason": "joint 4"}
    created = api.post("cables/c1/overrides", body)
    assert isinstance(created["id"], int)
    assert created == {
        "id": created["id"],
        "start": "2026-11-24T14:00:00Z",
        "end": "2026-11-24T15:00:00Z",
        "limit": 40,
        "reason": "joint 4",
    }
    assert api.get("cables/c1/overrides") == [created]
    assert api.get("cables/c1")["overrides"] == [created]
    api.delete(f"cables/c1/overrides/{created['id']}")
    assert api.get("cables/c1/overrides") == []
    assert api.call("DELETE", f"cables/c1/overrides/{created['id']}").status_code == 404


def test_cpo_lifecycle_never_returns_the_password(api: Client) -> None:
    assert api.get("cpos") == []
    created = api.post("cpos", cpo_body("cpo-a", binding="soap12"))
    assert created == {
        "id": "cpo-a",
        "name": "CPO cpo-a",
        "username": "user-cpo-a",
        "endpoint_url": "https://cpo-a.example/oscp",
        "binding": "soap12",
    }
    assert api.get("cpos/cpo-a") == created
    assert api.get("cpos") == [created]
    new_password = "another long password 42"  # noqa: S105
    updated = api.patch("cpos/cpo-a", {"name": "Renamed", "password": new_password, "binding": "soap11"})
    assert updated == {**created, "name": "Renamed", "binding": "soap11"}
    api.delete("cpos/cpo-a")
    assert api.call("GET", "cpos/cpo-a").status_code == 404
    api.get("audit/decisions")
    api.get("audit")

    seen = b"".join(api.bodies)
    for secret in (PASSWORD, new_password, "scrypt$"):
        assert secret.encode() not in seen


def test_subscriptions(api: Client) -> None:
    api.post("cables", cable_body("c1"))
    api.post("cpos", cpo_body("cpo-a"))
    api.post("cpos", cpo_body("cpo-b"))
    assert api.get("cables/c1/subscriptions") == []
    created = api.post("cables/c1/subscriptions", {"cpo_id": "cpo-a", "weight": 1, "guaranteed_minimum": "5"})
    assert created == {"cable_id": "c1", "cpo_id": "cpo-a", "weight": 1, "guaranteed_minimum": 5}
    api.post("cables/c1/subscriptions", {"cpo_id": "cpo-b", "weight": 3, "guaranteed_minimum": 0})
    assert [s["cpo_id"] for s in api.get("cables/c1/subscriptions")] == ["cpo-a", "cpo-b"]
    assert api.get("cables/c1/subscriptions/cpo-a") == created

    changed = api.patch("cables/c1/subscriptions/cpo-a", {"guaranteed_minimum": 10})
    assert changed == {**created, "guaranteed_minimum": 10}
    assert api.get("cables/c1/subscriptions/cpo-a") == changed
    assert api.patch("cables/c1/subscriptions/cpo-a", {"weight": 2})["guaranteed_minimum"] == 10

    api.delete("cables/c1/subscriptions/cpo-a")
    assert api.call("GET", "cables/c1/subscriptions/cpo-a").status_code == 404
    assert [s["cpo_id"] for s in api.get("cables/c1/subscriptions")] == ["cpo-b"]
    budgets = {cpo for block in api.get("cables/c1/capacity")["blocks"] for cpo in block["budgets"]}
    assert budgets == {"cpo-b"}


def test_audit_filters(api: Client) -> None:
    api.post("cables", cable_body("c1"))
    api.post("cables", cable_body("c2"))
    api.post("cpos", cpo_body("cpo-a"))
    api.post("cables/c1/subscriptions", {"cpo_id": "cpo-a", "weight": 1, "guaranteed_minimum": 0})

    everything = api.get("audit/decisions")["decisions"]
    assert [d["action"] for d in everything] == [
        "hand_out",  # the horizon of the new cable, by the system
        "cable_created",
        "hand_out",
        "cable_created",
        "cpo_created",
        "subscription_added",
    ]
    assert [d["actor"] for d in everything] == ["system", "api:admin", "system", "api:admin", "api:admin", "api:admin"]
    assert [d["action"] for d in api.get("audit/decisions?cable=c2")["decisions"]] == ["hand_out", "cable_created"]
    assert [d["action"] for d in api.get("audit/decisions?cpo=cpo-a")["decisions"]] == [
        "cpo_created",
        "subscription_added",
    ]
    assert len(api.get("audit/decisions?limit=2")["decisions"]) == 2
    assert api.get("audit/decisions?since=2030-01-01T00:00:00%2B01:00")["decisions"] == []
    first = everything[1]
    assert set(first) == {"id", "at", "actor", "action", "cable_id", "cpo_id", "status", "severity", "message"}
    assert first["at"] == "2026-11-24T12:07:30Z"

    entries = api.get("audit?cable=c1&cpo=cpo-a")["entries"]
    assert len(entries) == 192  # the whole 48-hour horizon handed out to the new subscriber
    entry = entries[0]
    assert set(entry) == {
        "id", "at", "decision_id", "actor", "action", "cable_id", "cpo_id", "start", "end",
        "old_capacity", "new_capacity", "reason", "severity",
    }  # fmt: skip
    assert entry["start"] == "2026-11-24T12:00:00Z"
    assert entry["end"] == "2026-11-24T12:15:00Z"
    assert (entry["old_capacity"], entry["new_capacity"], entry["actor"]) == (0, 90, "api:admin")
    assert api.get("audit?cpo=nobody")["entries"] == []
    assert len(api.get("audit?limit=5")["entries"]) == 5


def test_the_largest_values_the_columns_hold_are_accepted(api: Client) -> None:
    """The API's limits are the database's: texts of the column sizes and the largest quantity round-trip."""
    name = "Kabel 😀 Straße " + "x" * 184  # 200 characters, one outside the BMP
    cable = api.post("cables", cable_body("c1", name=name, rated_limit="999999999.999"))
    assert (cable["name"], cable["rated_limit"]) == (name, 999999999.999)
    assert api.get("cables/c1")["name"] == name
    reason = "r" * 1000
    override = api.post(
        "cables/c1/overrides",
        {"start": "2026-11-24T15:00:00Z", "end": "2026-11-24T16:00:00Z", "limit": 999999999.999, "reason": reason},
    )
    assert api.get("cables/c1/overrides") == [override]
    assert override["reason"] == reason

    endpoint = "https://cpo.example/" + "p" * 1980  # 2000 characters
    body = cpo_body("cpo-a", name="n" * 200, username="u" * 64, endpoint_url=endpoint)
    created = api.post("cpos", {**body, "password": "wachtwoord 🔑 met emoji"})
    assert api.get("cpos/cpo-a") == created
    assert (created["name"], created["username"], created["endpoint_url"]) == ("n" * 200, "u" * 64, endpoint)


def test_the_api_and_the_domain_share_one_maximum_quantity() -> None:
    from service.api import schemas
    from service.domain import units

    assert schemas.MAX_QUANTITY is units.MAX_QUANTITY
