"""Helpers shared by the REST API tests (test_api_*.py); this module holds no tests."""

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.test import TestResponse

from service.app import create_app
from service.settings import Settings
from service.usecases import Context

TOKEN = "t" * 32
PASSWORD = "correct horse battery staple"  # noqa: S105
V1 = "/api/v1"


def make_app(ctx: Context, **settings: Any) -> Flask:
    return create_app(Settings(admin_token=TOKEN, **settings), ctx)


class Client:
    """Flask's test client sending the admin token; keeps every response body it saw."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.bodies: list[bytes] = []

    def call(self, method: str, path: str, *, token: str | None = TOKEN, **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        response = self.client.open(
            path if path.startswith("/") else f"{V1}/{path}", method=method, headers=headers, **kwargs
        )
        self.bodies.append(response.get_data())
        return response

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """The JSON body of a call that must answer `status`."""
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.get_data(as_text=True))
        return response.get_json() if response.get_data() else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.ok("GET", path, **kwargs)

    def post(self, path: str, body: Any, status: int = 201, **kwargs: Any) -> Any:
        return self.ok("POST", path, status, json=body, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.ok("PATCH", path, json=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> None:
        assert self.ok("DELETE", path, 204, **kwargs) is None


def assert_error(response: TestResponse, status: int, *needles: str) -> dict[str, Any]:
    """The response is our JSON error shape with `status`, and its message mentions every needle."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert {"code", "status", "message"} <= set(body) <= {"code", "status", "message", "errors"}, body
    assert body["code"] == status
    assert body["status"] == HTTP_STATUS_CODES[status]
    assert isinstance(body["message"], str)
    assert len(body["message"]) >= 15, body
    for needle in needles:
        assert needle.lower() in body["message"].lower(), (needle, body["message"])
    assert "Traceback" not in response.get_data(as_text=True)
    return dict(body)


def cable_body(cable_id: str = "c1", **changes: Any) -> dict[str, Any]:
    return {
        "id": cable_id,
        "name": f"LS cable {cable_id}",
        "unit": "A",
        "rated_limit": 100,
        "phases": 3,
        "voltage_v": 230,
        **changes,
    }


def cpo_body(cpo_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": cpo_id,
        "name": f"CPO {cpo_id}",
        "username": f"user-{cpo_id}",
        "password": PASSWORD,
        "endpoint_url": f"https://{cpo_id}.example/oscp",
        "binding": "json",
        **changes,
    }


def seed(api: Client, cable_id: str = "c1", cpos: tuple[str, ...] = ("cpo-a", "cpo-b"), **cable: Any) -> None:
    """A cable of 100 A (reserve 10 %) with the given CPOs subscribed at weight 1, minimum 0."""
    api.post("cables", cable_body(cable_id, **cable))
    for cpo_id in cpos:
        api.post("cpos", cpo_body(cpo_id))
        api.post(f"cables/{cable_id}/subscriptions", {"cpo_id": cpo_id, "weight": 1, "guaranteed_minimum": 0})


def snapshot(api: Client, *paths: str) -> list[Any]:
    """The decisions so far and the state behind `paths`, to show that a refused call changed nothing."""
    return [api.get("audit/decisions?limit=10000"), *(api.get(path) for path in paths)]


@contextmanager
def unchanged(api: Client, *paths: str) -> Iterator[None]:
    before = snapshot(api, *paths)
    yield
    after = snapshot(api, *paths)
    assert len(after[0]["decisions"]) == len(before[0]["decisions"])
    assert after == before


def budgets_fit(view: dict[str, Any]) -> None:
    """In every block the budgets add up to at most the available capacity, and none is negative."""
    for block in view["blocks"]:
        total = sum((Decimal(str(b)) for b in block["budgets"].values()), Decimal(0))
        assert total <= Decimal(str(block["available"])), block
        assert all(b >= 0 for b in block["budgets"].values()), block
        assert Decimal(str(block["unallocated"])) == max(Decimal(0), Decimal(str(block["available"])) - total)
