"""The capacity view, requests, hand-backs, usage and reallocation over REST, on SQLite and PostgreSQL.

The clock stands at 2026-11-24T12:07:30Z; the horizon is 48 hours of 15-minute blocks from 12:00Z.
Cable c1: 100 A, reserve 10 %, so 90 A are handed out, shared by weight between cpo-a and cpo-b.
"""

from datetime import datetime
from typing import Any

import pytest
from test_api_support import Client, budgets_fit, make_app, seed

from service.api.schemas import CapacityViewSchema
from service.usecases import Context, capacity


@pytest.fixture
def api(ctx: Context) -> Client:
    return Client(make_app(ctx))


def block(view: dict[str, Any], start: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b["start"] == start)


def ask(api: Client, cpo_id: str, *wishes: tuple[str, str, float]) -> dict[str, Any]:
    blocks = [{"start": start, "end": end, "capacity": capacity} for start, end, capacity in wishes]
    result: dict[str, Any] = api.post("cables/c1/requests", {"cpo_id": cpo_id, "blocks": blocks}, status=200)
    return result


def test_initial_hand_out_is_visible(api: Client) -> None:
    seed(api)
    view = api.get("cables/c1/capacity")
    assert (view["cable_id"], view["unit"], len(view["blocks"])) == ("c1", "A", 192)
    assert view["blocks"][0]["start"] == "2026-11-24T12:00:00Z"
    assert view["blocks"][-1]["end"] == "2026-11-26T12:00:00Z"
    assert block(view, "2026-11-24T14:00:00Z") == {
        "start": "2026-11-24T14:00:00Z",
        "end": "2026-11-24T14:15:00Z",
        "limit": 100,
        "base_load": 0,
        "margin": 0,
        "available": 100,
        "unallocated": 10,
        "budgets": {"cpo-a": 45, "cpo-b": 45},
        "handed_out": True,
    }
    assert all(b["handed_out"] for b in view["blocks"])
    budgets_fit(view)

    # Blocks before the service knew the cable: what they would offer, handed out to nobody.
    past = api.get("cables/c1/capacity?start=2026-11-24T10:00:00Z&end=2026-11-24T12:00:00%2B01:00")
    assert [b["start"] for b in past["blocks"]] == [
        "2026-11-24T10:00:00Z",
        "2026-11-24T10:15:00Z",
        "2026-11-24T10:30:00Z",
        "2026-11-24T10:45:00Z",
    ]
    assert all(not b["handed_out"] and b["budgets"] == {} and b["available"] == 100 for b in past["blocks"])


def test_the_view_is_what_its_schema_documents(api: Client, ctx: Context) -> None:
    """The view is dumped without marshmallow for speed; it must match the documented schema."""
    seed(api, rated_limit="99.999", margin="0.5")
    api.patch("cables/c1/subscriptions/cpo-b", {"weight": 2})
    view = api.get("cables/c1/capacity")
    assert view == CapacityViewSchema().dump(capacity.capacity(ctx, "c1"))
    assert block(view, "2026-11-24T14:00:00Z")["budgets"] == {"cpo-a": 29.849, "cpo-b": 59.699}


def test_requests_hand_backs_and_pending_requests(api: Client) -> None:
    seed(api)
    x = ("2026-11-24T14:00:00Z", "2026-11-24T14:15:00Z")

    accepted = ask(api, "cpo-a", (*x, 55))
    assert accepted["status"] == "Accepted"
    assert accepted["blocks"] == [{"start": x[0], "end": x[1], "budget": 55}]
    assert isinstance(accepted["decision_id"], int)
    assert block(api.get("cables/c1/capacity"), x[0])["unallocated"] == 0

    rejected = ask(api, "cpo-b", ("2026-11-24T15:00:00+01:00", "2026-11-24T15:15:00+01:00", 50))
    assert rejected["status"] == "Rejected"
    assert rejected["blocks"] == [{"start": x[0], "end": x[1], "budget": 45}]

    # cpo-a hands back 15 A: 5 A serve cpo-b's waiting request, 10 A stay unallocated.
    handed_back = ask(api, "cpo-a", (*x, "40"))
    assert handed_back["status"] == "Accepted"
    after = block(api.get("cables/c1/capacity"), x[0])
    assert after["budgets"] == {"cpo-a": 40, "cpo-b": 50}
    assert after["unallocated"] == 10
    served = [e for e in api.get("audit?cable=c1&cpo=cpo-b")["entries"] if e["reason"] == "pending_request_served"]
    assert [(e["start"], e["old_capacity"], e["new_capacity"]) for e in served] == [(x[0], 45, 50)]
    assert served[0]["decision_id"] == handed_back["decision_id"]

    # A hand-back nobody waits for shows up as unallocated capacity.
    ask(api, "cpo-b", ("2026-11-24T18:00:00Z", "2026-11-24T18:15:00Z", 20))
    assert block(api.get("cables/c1/capacity"), "2026-11-24T18:00:00Z")["unallocated"] == 35

    partly = ask(
        api,
        "cpo-a",
        ("2026-11-24T15:00:00Z", "2026-11-24T15:15:00Z", 70),
        ("2026-11-24T15:15:00Z", "2026-11-24T15:30:00Z", 50),
    )
    assert partly["status"] == "PartiallyAccepted"
    assert [b["budget"] for b in partly["blocks"]] == [55, 50]

    decisions = api.get("audit/decisions?cable=c1&cpo=cpo-a")["decisions"]
    assert [d["status"] for d in decisions if d["action"] == "request"] == [
        "Accepted",
        "Accepted",
        "PartiallyAccepted",
    ]
    budgets_fit(api.get("cables/c1/capacity"))


def test_reported_usage_shows_unused_budget(api: Client) -> None:
    seed(api)
    usage = {"cpo_id": "cpo-b", "blocks": [{"start": "2026-11-24T12:00:00Z", "end": "2026-11-24T12:15:00Z",
                                            "average_usage": 10}]}  # fmt: skip
    receipt = api.post("cables/c1/usage", usage, status=200)
    assert set(receipt) == {"decision_id"}
    decision = api.get("audit/decisions?cpo=cpo-b")["decisions"][-1]
    assert (decision["id"], decision["action"]) == (receipt["decision_id"], "usage_reported")

    # cpo-b keeps its peak usage + 20 % (12 A); the rest of its 45 A is demonstrably unused.
    result = ask(api, "cpo-a", ("2026-11-24T16:00:00Z", "2026-11-24T16:15:00Z", 100))
    assert result["status"] == "PartiallyAccepted"
    assert result["blocks"][0]["budget"] == 88
    after = block(api.get("cables/c1/capacity"), "2026-11-24T16:00:00Z")
    assert after["budgets"] == {"cpo-a": 88, "cpo-b": 12}
    budgets_fit(api.get("cables/c1/capacity"))


def test_limit_change_reallocates(api: Client) -> None:
    seed(api)
    api.patch("cables/c1", {"rated_limit": 50})
    view = api.get("cables/c1/capacity")
    assert {b["available"] for b in view["blocks"]} == {50}
    budgets_fit(view)
    assert block(view, "2026-11-24T14:00:00Z")["budgets"] == {"cpo-a": 25, "cpo-b": 25}

    api.patch("cables/c1", {"rated_limit": "200", "margin": 10})
    view = api.get("cables/c1/capacity")
    assert {b["available"] for b in view["blocks"]} == {190}
    budgets_fit(view)
    assert sum(block(view, "2026-11-24T14:00:00Z")["budgets"].values()) > 50
    reasons = {e["reason"] for e in api.get("audit?cable=c1&limit=10000")["entries"]}
    assert {"reallocated_down", "reallocated_up"} <= reasons


def test_override_limits_only_its_window(api: Client) -> None:
    seed(api)
    override = {"start": "2026-11-24T14:00:00Z", "end": "2026-11-24T15:00:00Z", "limit": 20, "reason": "repair"}
    created = api.post("cables/c1/overrides", override)
    view = api.get("cables/c1/capacity")
    budgets_fit(view)
    inside = [b for b in view["blocks"] if "2026-11-24T14:00:00Z" <= b["start"] < "2026-11-24T15:00:00Z"]
    outside = [b for b in view["blocks"] if b not in inside]
    assert len(inside) == 4
    assert all(b["limit"] == 20 and sum(b["budgets"].values()) <= 20 for b in inside)
    assert all(b["limit"] == 100 for b in outside)
    assert block(view, "2026-11-24T15:00:00Z")["budgets"] == {"cpo-a": 45, "cpo-b": 45}

    api.delete(f"cables/c1/overrides/{created['id']}")
    view = api.get("cables/c1/capacity")
    assert {b["limit"] for b in view["blocks"]} == {100}
    budgets_fit(view)


# (clock, local midnight, next local midnight, blocks, first start in UTC, last end in UTC)
SPRING = ("2026-03-28T22:00:00Z", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", 92,
          "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")  # fmt: skip
AUTUMN = ("2026-10-24T21:00:00Z", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 100,
          "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z")  # fmt: skip


@pytest.mark.parametrize("day", [SPRING, AUTUMN], ids=["spring", "autumn"])
def test_local_days_with_a_dst_change(api: Client, clock: Any, day: tuple[str, str, str, int, str, str]) -> None:
    """A local day in Europe/Amsterdam, given by its local midnights: 23 or 25 hours of blocks."""
    now, start, end, blocks, first_utc, last_utc = day
    clock.now = datetime.fromisoformat(now)
    seed(api)
    view = api.get("cables/c1/capacity", query_string={"start": start, "end": end})
    assert len(view["blocks"]) == blocks
    assert (view["blocks"][0]["start"], view["blocks"][-1]["end"]) == (first_utc, last_utc)
    assert all(b["handed_out"] for b in view["blocks"])
    budgets_fit(view)
