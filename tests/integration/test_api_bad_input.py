"""Bad input over REST: every refusal is a JSON error that says what to fix, and changes nothing.

Runs on SQLite only, against one seeded database for the module (seeding hashes passwords and
hands out a horizon, which would dominate the run if repeated per case). Sharing it is safe because
each case checks that the decisions and the watched state are exactly as before the call.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from test_api_support import Client, assert_error, cable_body, cpo_body, make_app, seed, unchanged

from service.store import Database
from service.usecases import Context

NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
X0, X1 = "2026-11-24T14:00:00Z", "2026-11-24T14:15:00Z"
WATCHED = ("cables", "cpos", "cables/c1", "cables/c1/subscriptions", "cables/c1/capacity", "cables/c2/capacity")


def wish(start: str = X0, end: str = X1, capacity: Any = 50, **extra: Any) -> dict[str, Any]:
    return {"start": start, "end": end, "capacity": capacity, **extra}


def asking(*blocks: dict[str, Any], cpo_id: Any = "cpo-a", **extra: Any) -> dict[str, Any]:
    return {"cpo_id": cpo_id, "blocks": list(blocks) or [wish()], **extra}


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    needles: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def case(name: str, method: str, path: str, status: int, *needles: str, **kwargs: Any) -> Any:
    return pytest.param(Case(method, path, status, needles, kwargs), id=name)


NO_OFFSET = "no UTC offset"
OUT_OF_RANGE = "outside the years 1970 to 2999"
HUGE_INTEGER = json.dumps(asking(wish(capacity=12345))).replace("12345", "1" + "0" * 5000)  # json.loads refuses it
CASES = [
    # datetimes without an offset
    case("naive-block", "POST", "cables/c1/requests", 422, NO_OFFSET, "blocks[0].start",
         json=asking(wish(start="2026-11-24T14:00:00"))),
    case("naive-query", "GET", "cables/c1/capacity?start=2026-11-24T14:00:00", 422, NO_OFFSET, "query parameter start"),
    case("naive-override", "POST", "cables/c1/overrides", 422, NO_OFFSET,
         json={"start": "2026-11-24T14:00:00", "end": X1, "limit": 1, "reason": "x"}),
    case("naive-since", "GET", "audit?since=2026-11-24T00:00:00", 422, NO_OFFSET),
    case("not-a-datetime", "POST", "cables/c1/requests", 422, "blocks[0].end", "date-time",
         json=asking(wish(end="soon"))),
    # blocks
    case("misaligned", "POST", "cables/c1/requests", 422, "quarter hour",
         json=asking(wish("2026-11-24T14:07:00Z", "2026-11-24T14:22:00Z"))),
    case("block-30-min", "POST", "cables/c1/requests", 422, "exactly 15 minutes",
         json=asking(wish(X0, "2026-11-24T14:30:00Z"))),
    case("block-backwards", "POST", "cables/c1/requests", 422, "exactly 15 minutes", json=asking(wish(X1, X0))),
    case("same-block-twice", "POST", "cables/c1/requests", 422, "already covers",
         json=asking(wish(), wish("2026-11-24T15:00:00+01:00", "2026-11-24T15:15:00+01:00"))),
    case("no-blocks", "POST", "cables/c1/requests", 422, "at least one block", json={"cpo_id": "cpo-a", "blocks": []}),
    case("past-block", "POST", "cables/c1/requests", 422, "already ended",
         json=asking(wish("2026-11-24T11:45:00Z", "2026-11-24T12:00:00Z"))),
    case("beyond-horizon", "POST", "cables/c1/requests", 422, "beyond the horizon",
         json=asking(wish("2026-11-26T12:00:00Z", "2026-11-26T12:15:00Z"))),
    case("usage-not-begun", "POST", "cables/c1/usage", 422, "has not begun",
         json={"cpo_id": "cpo-a", "blocks": [{"start": X0, "end": X1, "average_usage": 3}]}),
    case("view-past-horizon", "GET", "cables/c1/capacity?end=2026-11-27T00:00:00Z", 422, "horizon"),
    case("view-backwards", "GET", f"cables/c1/capacity?start={X1}&end={X0}", 422, "must be after start"),
    # quantities
    case("negative-capacity", "POST", "cables/c1/requests", 422, ">= 0", json=asking(wish(capacity=-5))),
    case("negative-usage", "POST", "cables/c1/usage", 422, ">= 0",
         json={"cpo_id": "cpo-a", "blocks": [{"start": "2026-11-24T12:00:00Z", "end": "2026-11-24T12:15:00Z",
                                              "average_usage": -1}]}),
    case("negative-limit", "POST", "cables", 422, "rated_limit", ">= 0", json=cable_body("c9", rated_limit=-100)),
    case("negative-weight", "PATCH", "cables/c1/subscriptions/cpo-a", 422, "weight", json={"weight": -1}),
    case("negative-override", "POST", "cables/c1/overrides", 422, ">= 0",
         json={"start": X0, "end": X1, "limit": -1, "reason": "x"}),
    case("nan", "POST", "cables/c1/requests", 422, "finite",
         data=json.dumps(asking(wish(capacity=float("nan")))), content_type="application/json"),
    case("huge", "POST", "cables/c1/requests", 422, "at most", json=asking(wish(capacity=1e15))),
    # unknown fields and parameters
    case("unknown-field", "POST", "cables/c1/requests", 422, "urgent: unknown field", "blocks, cpo_id",
         json=asking(urgent=True)),
    case("unknown-nested", "POST", "cables/c1/requests", 422, "blocks[0].note: unknown field",
         json=asking(wish(note="x"))),
    case("id-in-patch", "PATCH", "cables/c1", 422, "id: unknown field", json={"id": "c9"}),
    case("overrides-in-patch", "PATCH", "cables/c1", 422, "overrides: unknown field", json={"overrides": []}),
    case("unknown-query", "GET", "audit?cabel=c1", 422, "query parameter cabel: unknown field"),
    # malformed bodies
    case("malformed-json", "POST", "cables/c1/requests", 400, "not valid JSON",
         data='{"cpo_id": "cpo-a",', content_type="application/json"),
    case("array-body", "POST", "cables/c1/requests", 422, "JSON object", json=[asking()]),
    case("text-body", "POST", "cables/c1/requests", 415, "Content-Type: application/json",
         data=json.dumps(asking()), content_type="text/plain"),
    case("form-body", "PATCH", "cables/c1", 415, "Content-Type: application/json", data={"name": "x"}),
    case("no-body", "POST", "cables", 415, "Content-Type: application/json"),
    case("empty-json", "POST", "cables/c1/requests", 422, "cpo_id: Missing data",
         data="", content_type="application/json"),
    # wrong types
    case("phases-text", "POST", "cables", 422, "phases", "integer", json=cable_body("c9", phases="three")),
    case("phases-float", "POST", "cables", 422, "phases", json=cable_body("c9", phases=2.5)),
    case("capacity-text", "POST", "cables/c1/requests", 422, "blocks[0].capacity", "number",
         json=asking(wish(capacity="lots"))),
    case("capacity-bool", "POST", "cables/c1/requests", 422, "blocks[0].capacity", json=asking(wish(capacity=True))),
    case("blocks-not-list", "POST", "cables/c1/requests", 422, "blocks", json={"cpo_id": "cpo-a", "blocks": "all"}),
    case("cpo-id-number", "POST", "cables/c1/requests", 422, "cpo_id", json=asking(cpo_id=5)),
    case("missing-cpo-id", "POST", "cables/c1/requests", 422, "cpo_id: Missing data", json={"blocks": [wish()]}),
    case("limit-text", "GET", "audit/decisions?limit=lots", 422, "limit"),
    case("limit-zero", "GET", "audit/decisions?limit=0", 422, "limit must be between"),
    # domain rules on records
    case("bad-unit", "POST", "cables", 422, "unit", json=cable_body("c9", unit="V")),
    case("bad-id", "POST", "cables", 422, "not a valid id", json=cable_body("c 9")),
    case("four-phases", "POST", "cables", 422, "phases must be 1, 2 or 3", json=cable_body("c9", phases=4)),
    case("reserve-share-1", "PATCH", "cables/c1", 422, "reserve_share", json={"reserve_share": 1}),
    case("empty-name", "PATCH", "cables/c1", 422, "name", json={"name": "  "}),
    case("bad-binding", "POST", "cpos", 422, "binding", json=cpo_body("cpo-z", binding="xml")),
    case("bad-endpoint", "POST", "cpos", 422, "endpoint_url", json=cpo_body("cpo-z", endpoint_url="ftp://x")),
    case("short-password", "POST", "cpos", 422, "at least 12 characters", json=cpo_body("cpo-z", password="short")),  # noqa: S106
    case("short-new-password", "PATCH", "cpos/cpo-a", 422, "at least 12 characters", json={"password": "short"}),
    case("override-backwards", "POST", "cables/c1/overrides", 422, "after override.start",
         json={"start": X1, "end": X0, "limit": 1, "reason": "x"}),
    case("override-no-reason", "POST", "cables/c1/overrides", 422, "reason",
         json={"start": X0, "end": X1, "limit": 1, "reason": " "}),
    case("minimums-infeasible", "PATCH", "cables/c1/subscriptions/cpo-a", 409, "minimums",
         json={"guaranteed_minimum": 101}),
    # unknown records
    case("unknown-cable", "GET", "cables/nope", 404, "'nope' does not exist"),
    case("unknown-cable-patch", "PATCH", "cables/nope", 404, "nope", json={"name": "x"}),
    case("unknown-cable-delete", "DELETE", "cables/nope", 404, "nope"),
    case("unknown-cable-view", "GET", "cables/nope/capacity", 404, "nope"),
    case("unknown-cable-request", "POST", "cables/nope/requests", 404, "nope", json=asking()),
    case("unknown-cable-override", "POST", "cables/nope/overrides", 404, "nope",
         json={"start": X0, "end": X1, "limit": 1, "reason": "x"}),
    case("unknown-override", "DELETE", "cables/c1/overrides/999", 404, "override 999"),
    case("unknown-cable-subs", "GET", "cables/nope/subscriptions", 404, "nope"),
    case("unknown-cpo", "GET", "cpos/ghost", 404, "'ghost' does not exist"),
    case("unknown-cpo-patch", "PATCH", "cpos/ghost", 404, "ghost", json={"name": "x"}),
    case("unknown-cpo-delete", "DELETE", "cpos/ghost", 404, "ghost"),
    case("unknown-cpo-request", "POST", "cables/c1/requests", 404, "ghost", json=asking(cpo_id="ghost")),
    case("unknown-cpo-subscribe", "POST", "cables/c1/subscriptions", 404, "ghost",
         json={"cpo_id": "ghost", "weight": 1, "guaranteed_minimum": 0}),
    # not subscribed
    case("not-subscribed-request", "POST", "cables/c1/requests", 409, "not subscribed", json=asking(cpo_id="cpo-c")),
    case("not-subscribed-usage", "POST", "cables/c1/usage", 409, "not subscribed",
         json={"cpo_id": "cpo-c", "blocks": [{"start": "2026-11-24T12:00:00Z", "end": "2026-11-24T12:15:00Z",
                                              "average_usage": 1}]}),
    case("not-subscribed-get", "GET", "cables/c1/subscriptions/cpo-c", 404, "not subscribed"),
    case("not-subscribed-patch", "PATCH", "cables/c1/subscriptions/cpo-c", 404, "not subscribed", json={"weight": 2}),
    case("not-subscribed-delete", "DELETE", "cables/c1/subscriptions/cpo-c", 404, "not subscribed"),
    # conflicts
    case("duplicate-cable", "POST", "cables", 409, "already exists", json=cable_body("c1")),
    case("duplicate-cpo", "POST", "cpos", 409, "already exists", json=cpo_body("cpo-a", username="fresh")),
    case("duplicate-username", "POST", "cpos", 409, "already exists", json=cpo_body("cpo-z", username="user-cpo-a")),
    case("username-taken", "PATCH", "cpos/cpo-b", 409, "taken", json={"username": "user-cpo-a"}),
    case("duplicate-subscription", "POST", "cables/c1/subscriptions", 409, "already subscribed",
         json={"cpo_id": "cpo-a", "weight": 1, "guaranteed_minimum": 0}),
    case("unit-change", "PATCH", "cables/c1", 409, "unit cannot change", json={"unit": "KW", "rated_limit": 60}),
    case("delete-cable-with-subscribers", "DELETE", "cables/c1", 409, "subscribers", "cpo-a"),
    case("delete-subscribed-cpo", "DELETE", "cpos/cpo-a", 409, "still subscribed", "c1"),
    # size and routing
    case("oversized", "POST", "cables", 413, "larger than 1048576 bytes", json=cable_body("c9", name="x" * 1_100_000)),
    case("no-such-route", "GET", "cabels", 404, "there is no /api/v1/cabels"),
    case("override-id-not-int", "DELETE", "cables/c1/overrides/first", 404, "there is no"),
    case("wrong-method", "PUT", "cables/c1", 405, "PUT is not allowed", "PATCH", json=cable_body("c1")),
    case("override-id-beyond-int", "DELETE", f"cables/c1/overrides/{10**20}", 404, f"override {10**20}",
         "from 1 to 2147483647"),
    case("override-id-beyond-int-unknown-cable", "DELETE", f"cables/nope/overrides/{10**20}", 404, "'nope'"),
    # bodies Python's json module cannot take apart
    case("deeply-nested", "POST", "cables/c1/requests", 400, "not valid JSON", "nested too deeply",
         data="[" * 50_000, content_type="application/json"),
    case("deeply-nested-valid", "PATCH", "cables/c1", 400, "not valid JSON", "nested too deeply",
         data="[" * 50_000 + "]" * 50_000, content_type="application/json"),
    case("integer-too-long", "POST", "cables/c1/requests", 400, "not valid JSON", "digits",
         data=HUGE_INTEGER, content_type="application/json"),
    # text the database columns cannot hold
    case("surrogate-cable-name", "POST", "cables", 422, "name:", "surrogate",
         data=json.dumps(cable_body("c9", name="LS \ud800")), content_type="application/json"),
    case("surrogate-cable-rename", "PATCH", "cables/c1", 422, "name:", "surrogate",
         data=json.dumps({"name": "\udfff"}), content_type="application/json"),
    case("surrogate-password", "POST", "cpos", 422, "password:", "surrogate",
         data=json.dumps(cpo_body("cpo-z", password="correct horse \ud800 staple")),  # noqa: S106
         content_type="application/json"),
    case("surrogate-new-password", "PATCH", "cpos/cpo-a", 422, "password:", "surrogate",
         data=json.dumps({"password": "correct horse \ud800 staple"}), content_type="application/json"),
    case("surrogate-reason", "POST", "cables/c1/overrides", 422, "reason:", "surrogate",
         data=json.dumps({"start": X0, "end": X1, "limit": 1, "reason": "\ud800"}), content_type="application/json"),
    case("nul-cable-name", "PATCH", "cables/c1", 422, "name:", "NUL", json={"name": "LS\x00 1"}),
    case("nul-cpo-name", "POST", "cpos", 422, "name:", "NUL", json=cpo_body("cpo-z", name="CPO\x00")),
    case("nul-username", "PATCH", "cpos/cpo-a", 422, "username:", "NUL", json={"username": "a\x00"}),
    case("nul-endpoint", "PATCH", "cpos/cpo-a", 422, "endpoint_url:", "NUL",
         json={"endpoint_url": "https://cpo-a.example/\x00"}),
    case("nul-password", "POST", "cpos", 422, "password:", "NUL",
         json=cpo_body("cpo-z", password="correct horse\x00battery")),  # noqa: S106
    case("nul-reason", "POST", "cables/c1/overrides", 422, "reason:", "NUL",
         json={"start": X0, "end": X1, "limit": 1, "reason": "joint\x004"}),
    case("nul-cpo-id", "POST", "cables/c1/requests", 422, "cpo_id:", "NUL", json=asking(cpo_id="cpo-a\x00")),
    case("nul-subscriber-id", "POST", "cables/c1/subscriptions", 422, "cpo_id:", "NUL",
         json={"cpo_id": "\x00", "weight": 1, "guaranteed_minimum": 0}),
    case("nul-audit-filter", "GET", "audit?cable=c1%00", 422, "query parameter cable:", "NUL"),
    case("nul-cable-in-path", "GET", "cables/c1%00", 404, "cable_id", "NUL"),
    case("nul-cable-in-path-patch", "PATCH", "cables/%00", 404, "cable_id", "NUL", json={"name": "x"}),
    case("nul-cable-in-path-view", "GET", "cables/%00/capacity", 404, "cable_id", "NUL"),
    case("nul-cpo-in-path", "DELETE", "cpos/cpo-a%00", 404, "cpo_id", "NUL"),
    case("nul-cpo-in-subscription-path", "GET", "cables/c1/subscriptions/%00", 404, "cpo_id", "NUL"),
    case("long-cable-name", "POST", "cables", 422, "name:", "at most 200 characters",
         json=cable_body("c9", name="x" * 201)),
    case("long-cable-rename", "PATCH", "cables/c1", 422, "name:", "at most 200 characters", json={"name": "x" * 201}),
    case("long-cpo-name", "POST", "cpos", 422, "name:", "at most 200 characters",
         json=cpo_body("cpo-z", name="x" * 201)),
    case("long-cpo-rename", "PATCH", "cpos/cpo-a", 422, "name:", "at most 200 characters", json={"name": "x" * 201}),
    case("long-username", "POST", "cpos", 422, "username:", "at most 64 characters",
         json=cpo_body("cpo-z", username="u" * 65)),
    case("long-new-username", "PATCH", "cpos/cpo-a", 422, "username:", "at most 64 characters",
         json={"username": "u" * 65}),
    case("long-endpoint", "POST", "cpos", 422, "endpoint_url:", "at most 2000 characters",
         json=cpo_body("cpo-z", endpoint_url="https://cpo.example/" + "p" * 1981)),
    case("long-new-endpoint", "PATCH", "cpos/cpo-a", 422, "endpoint_url:", "at most 2000 characters",
         json={"endpoint_url": "https://cpo.example/" + "p" * 1981}),
    case("long-reason", "POST", "cables/c1/overrides", 422, "reason:", "at most 1000 characters",
         json={"start": X0, "end": X1, "limit": 1, "reason": "r" * 1001}),
    # datetimes whose UTC time falls outside years 1-9999
    case("block-after-year-9999", "POST", "cables/c1/requests", 422, "blocks[0].start", OUT_OF_RANGE,
         json=asking(wish("9999-12-31T23:45:00-01:00", "9999-12-31T23:59:00-01:00"))),
    case("block-before-year-1", "POST", "cables/c1/requests", 422, "blocks[0].end", OUT_OF_RANGE,
         json=asking(wish("0001-01-01T00:00:00Z", "0001-01-01T00:15:00+01:00"))),
    case("usage-before-year-1", "POST", "cables/c1/usage", 422, "blocks[0].start", OUT_OF_RANGE,
         json={"cpo_id": "cpo-a", "blocks": [{"start": "0001-01-01T00:00:00+01:00", "end": X1, "average_usage": 1}]}),
    case("view-after-year-9999", "GET", "cables/c1/capacity?end=9999-12-31T23:45:00-01:00", 422,
         "query parameter end", OUT_OF_RANGE),
    case("view-before-year-1", "GET", "cables/c1/capacity?start=0001-01-01T00:00:00%2B01:00", 422,
         "query parameter start", OUT_OF_RANGE),
    case("since-before-year-1", "GET", "audit?since=0001-01-01T00:00:00%2B01:00", 422, "query parameter since",
         OUT_OF_RANGE),
    case("since-after-year-9999", "GET", "audit/decisions?since=9999-12-31T23:45:00-01:00", 422,
         "query parameter since", OUT_OF_RANGE),
    case("override-after-year-9999", "POST", "cables/c1/overrides", 422, "end", OUT_OF_RANGE,
         json={"start": X0, "end": "9999-12-31T23:45:00-01:00", "limit": 1, "reason": "x"}),
    case("override-before-year-1", "POST", "cables/c1/overrides", 422, "start", OUT_OF_RANGE,
         json={"start": "0001-01-01T00:00:00+01:00", "end": X1, "limit": 1, "reason": "x"}),
    case("block-in-year-3000", "POST", "cables/c1/requests", 422, "blocks[0].start", OUT_OF_RANGE,
         json=asking(wish("3000-01-01T00:00:00Z", "3000-01-01T00:15:00Z"))),
    case("since-in-1969", "GET", "audit?since=1969-12-31T23:59:59Z", 422, "query parameter since", OUT_OF_RANGE),
    case("long-password", "POST", "cpos", 422, "password:", "at most 1024 characters",
         json=cpo_body("cpo-z", password="p" * 1025)),
    case("long-new-password", "PATCH", "cpos/cpo-a", 422, "password:", "at most 1024 characters",
         json={"password": "p" * 1025}),
    # the largest quantity the database holds, checked where it is parsed
    case("quantity-above-max", "POST", "cables/c1/requests", 422, "blocks[0].capacity: must be at most 999999999.999",
         json=asking(wish(capacity=1_000_000_000))),
    case("limit-above-max", "PATCH", "cables/c1", 422, "rated_limit: must be at most 999999999.999",
         json={"rated_limit": "999999999.9995"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('bad-input') / 'gridcap.db'}")
    db.create_schema()
    client = Client(make_app(Context(db, clock=lambda: NOW)))
    seed(client)  # c1 with cpo-a and cpo-b
    client.post("cpos", cpo_body("cpo-c"))  # subscribed to nothing
    client.post("cables", cable_body("c2"))  # no subscribers
    yield client
    db.dispose()


@pytest.mark.parametrize("bad", CASES)
def test_refused_with_a_helpful_message_and_nothing_changed(api: Client, bad: Case) -> None:
    with unchanged(api, *WATCHED):
        response = api.call(bad.method, bad.path, **bad.kwargs)
        assert_error(response, bad.status, *bad.needles)


def test_every_refusal_names_its_field(api: Client) -> None:
    """Validation errors carry marshmallow's per-field detail besides the message."""
    response = api.call("POST", "cables/c1/requests", json=asking(wish(start="2026-11-24T14:00:00", capacity="x")))
    body = assert_error(response, 422, "blocks[0].start", "blocks[0].capacity")
    assert set(body["errors"]["json"]["blocks"]["0"]) == {"start", "capacity"}


def test_method_not_allowed_lists_the_allowed_ones(api: Client) -> None:
    response = api.call("PUT", "cables/c1", json={})
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "PATCH", "DELETE"}


def test_plus_sign_of_an_offset_lost_in_an_unencoded_query_still_parses(api: Client) -> None:
    view = api.get("cables/c1/capacity?start=2026-11-24T15:00:00+01:00&end=2026-11-24T16:00:00+01:00")
    assert [b["start"] for b in view["blocks"]] == [
        "2026-11-24T14:00:00Z",
        "2026-11-24T14:15:00Z",
        "2026-11-24T14:30:00Z",
        "2026-11-24T14:45:00Z",
    ]
