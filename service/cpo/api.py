"""The CPO adapter's REST API under /api/v1/cpo (flask-smorest, OpenAPI 3), for the CPO's operators.

Built like the DSO's API (service.api), whose parts it reuses: the typed Blueprint and its parser, the
admin bearer token, the JSON error format and the schema fields (decimals as JSON numbers, datetimes in
RFC 3339 UTC). Thin by design: each route parses and validates its input with marshmallow, calls the
adapter and dumps the result; the rules (ratings, credentials, what may be removed) are the adapter's.
Every route but /health needs the admin token; the OpenAPI document (/api/v1/cpo/openapi.json) and
Swagger UI (/api/v1/cpo/docs) are public, as they hold no data.
"""

import logging
from dataclasses import replace
from decimal import Decimal
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import Flask, Response, request, url_for
from marshmallow import fields, validate
from werkzeug.exceptions import HTTPException

from service.api import docs
from service.api.auth import protect
from service.api.blueprint import Blueprint
from service.api.errors import error_response, handle_domain_error, handle_http_error, handle_unexpected
from service.api.health import health_response
from service.api.schemas import HealthSchema, MessageCountsSchema, Moment, Number, Strict, storable, text
from service.cpo.adapter import Adapter
from service.cpo.dso import MessageLog
from service.cpo.profiles import ChargePoint, ProfileKind
from service.cpo.store import Transaction
from service.domain.errors import GridcapError, NotFound
from service.domain.units import Unit

__all__ = ["register_cpo_api"]

log = logging.getLogger("gridcap.cpo")

PREFIX = "/api/v1/cpo"
DOCS_URL = f"{PREFIX}/docs"
MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 12, 256  # the store keeps up to 256 characters
MAX_USERNAME = 64
MAX_LISTED = 1000

_DESCRIPTION = """\
The CPO adapter: OSCP budgets from the DSO in, OCPP 1.6 charging profiles out, usage back to the DSO.

Register charge points with the cable they hang on and their ratings; see the running sessions, the
current limit per connector, the profiles sent and how each charge point answered, the budgets received
and the link to the DSO.

Authenticate with the admin token: `Authorization: Bearer <token>` (the Authorize button).
Send bodies as JSON. Currents are in A per phase, datetimes come back in UTC (RFC 3339). Errors are JSON:
`{"code": 422, "status": "Unprocessable Entity", "message": "what to fix", "errors": {...}}`.
"""


# --- schemas -------------------------------------------------------------------------------------


def _limit(default: int, what: str) -> fields.Integer:
    return fields.Integer(
        load_default=default,
        validate=validate.Range(min=1, max=MAX_LISTED, error="must be between {min} and {max}"),
        metadata={"description": f"at most this many {what} (1-{MAX_LISTED}, default {default})"},
    )


def _rating(description: str, **kwargs: Any) -> Number:
    return Number(metadata={"description": f"{description}, in A per phase (0-10000)"}, **kwargs)


class ConnectorStateSchema(ma.Schema):
    connector_id = fields.Integer()
    status = fields.String(allow_none=True, metadata={"description": "the last StatusNotification, e.g. Charging"})
    limit_a = Number(allow_none=True, metadata={"description": "the limit in force (null: no profile accepted)"})
    transaction_id = fields.Integer(allow_none=True)


class BootSchema(ma.Schema):
    vendor = fields.String()
    model = fields.String()
    firmware = fields.String(allow_none=True)


class ChargePointSchema(Strict):
    """A charge point. Write: id, cable_id, the ratings and the OCPP login; the rest is what the adapter
    knows of it while it runs."""

    id = text(required=True, metadata={"description": "its OCPP identity: 1-64 letters, digits, '.', '_', ':' or '-'"})
    cable_id = text(required=True, metadata={"description": "the cable it hangs on, as the DSO names it"})
    max_current_a = _rating("its rating", required=True)
    phases = fields.Integer(required=True, strict=True, metadata={"description": "1, 2 or 3"})
    voltage_v = Number(metadata={"description": "phase voltage, e.g. 230 (the default)"})
    connectors = fields.Integer(strict=True, metadata={"description": "1-99 (default 1); they share the rating"})
    protection_a = _rating("the breaker in front of it, if lower than its rating", allow_none=True)
    connector_max_current_a = _rating("the socket or fixed cable rating of each connector", allow_none=True)
    username = fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=MAX_USERNAME, error="must be {min} to {max} characters long"), storable],
        metadata={"description": "OCPP Basic auth user (default: the charge point id); needs a password"},
    )
    password = fields.String(
        load_only=True,
        validate=[
            validate.Length(
                min=MIN_PASSWORD_LENGTH,
                max=MAX_PASSWORD_LENGTH,
                error="must be {min} to {max} characters long; pick a longer one",
            ),
            storable,
        ],
        metadata={
            "description": f"OCPP Basic auth password, {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters; "
            "stored hashed, never returned"
        },
    )
    has_password = fields.Boolean(dump_only=True)
    connected = fields.Boolean(dump_only=True, metadata={"description": "has an OCPP connection now"})
    boot = fields.Nested(BootSchema, dump_only=True, allow_none=True, metadata={"description": "its last boot"})
    profile_kind = fields.String(
        dump_only=True,
        validate=validate.OneOf([k.value for k in ProfileKind]),
        metadata={"description": "the charging profile purpose it is steered with"},
    )
    excluded = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "why its full rating is reserved (it cannot be steered); see /retry"},
    )
    unconfirmed = fields.String(
        dump_only=True, allow_none=True, metadata={"description": "how its last profile failed (Timeout, ...)"}
    )
    connector_states = fields.List(fields.Nested(ConnectorStateSchema), dump_only=True)


class ChargePointPatchSchema(Strict):
    """The fields to change; the rest stay. null removes protection_a or connector_max_current_a."""

    cable_id = text()
    max_current_a = _rating("its rating")
    phases = fields.Integer(strict=True)
    voltage_v = Number()
    connectors = fields.Integer(strict=True)
    protection_a = _rating("the breaker in front of it", allow_none=True)
    connector_max_current_a = _rating("each connector's rating", allow_none=True)


class NoBodySchema(Strict):
    """Nothing: send no body or {}."""


class SessionQuerySchema(Strict):
    all = fields.Boolean(load_default=False, metadata={"description": "add recent finished transactions"})
    limit = _limit(100, "finished transactions, newest first")


class SessionSchema(ma.Schema):
    transaction_id = fields.Integer()
    charge_point_id = fields.String()
    connector_id = fields.Integer()
    id_tag = fields.String()
    running = fields.Boolean()
    started_at = Moment()
    stopped_at = Moment(allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "why it stopped, as the charge point said"})
    energy_kwh = Number(metadata={"description": "delivered so far (or in all, once stopped)"})
    drawn_a = Number(allow_none=True, metadata={"description": "the highest phase current in the last sample"})
    phases_in_use = fields.Integer(allow_none=True)
    limit_a = Number(allow_none=True, metadata={"description": "its share of the current block's budget"})


class LimitSchema(ma.Schema):
    charge_point_id = fields.String()
    connector_id = fields.Integer()
    cable_id = fields.String()
    limit_a = Number(allow_none=True, metadata={"description": "the limit in force (null: no profile accepted)"})
    profile_kind = fields.String()
    excluded = fields.String(allow_none=True)


class ProfileQuerySchema(Strict):
    charge_point_id = text(metadata={"description": "only this charge point"})
    limit = _limit(100, "profiles, newest first")


class JsonObject(fields.Dict):
    """A JSON object as stored; decimals in it go out as JSON numbers."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return _json_numbers(value)


def _json_numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_numbers(item) for item in value]
    return value


class ProfileSchema(ma.Schema):
    id = fields.Integer()
    charge_point_id = fields.String()
    connector_id = fields.Integer(metadata={"description": "0: the whole charge point"})
    purpose = fields.String(validate=validate.OneOf([k.value for k in ProfileKind]))
    stack_level = fields.Integer()
    charging_profile_id = fields.Integer(allow_none=True)
    transaction_id = fields.Integer(allow_none=True)
    sent_at = Moment()
    status = fields.String(metadata={"description": "Accepted, Rejected, NotSupported, Timeout, Offline or CallError"})
    detail = fields.String(allow_none=True, metadata={"description": "what the adapter did about the answer"})
    schedule = JsonObject(metadata={"description": "the OCPP 1.6 ChargingSchedule sent"})


class ProfilesSchema(ma.Schema):
    profiles = fields.List(fields.Nested(ProfileSchema))


class BudgetBlockSchema(ma.Schema):
    start = Moment()
    capacity = Number()
    received_at = Moment()


class BudgetsSchema(ma.Schema):
    cable_id = fields.String()
    unit = fields.String(validate=validate.OneOf([u.value for u in Unit]))
    backup_capacity = Number(
        allow_none=True, metadata={"description": "what applies after the last known block (null: none received)"}
    )
    known_until = Moment(
        allow_none=True, metadata={"description": "end of the known blocks from now on, without a gap"}
    )
    blocks = fields.List(fields.Nested(BudgetBlockSchema), metadata={"description": "from the current block on"})


class DsoStatusSchema(ma.Schema):
    url = fields.String(allow_none=True)
    binding = fields.String(allow_none=True)
    online = fields.Boolean(metadata={"description": "heard from within three heartbeat intervals"})
    last_heard = Moment(allow_none=True)
    heartbeat_interval_s = fields.Integer()
    forecasts_pulled = fields.Boolean()
    last_error = fields.String(allow_none=True)
    usage_buffered = fields.Integer(metadata={"description": "usage blocks not yet delivered to the DSO"})


class OcppStatusSchema(ma.Schema):
    connected = fields.List(fields.String(), metadata={"description": "charge points connected now"})
    excluded = fields.List(fields.String(), metadata={"description": "charge points whose rating is reserved"})


class StatusSchema(ma.Schema):
    dso = fields.Nested(DsoStatusSchema)
    ocpp = fields.Nested(OcppStatusSchema)


class MessageQuerySchema(Strict):
    limit = _limit(100, "messages, newest first")


class MessageSchema(ma.Schema):
    at = Moment()
    direction = fields.String(metadata={"description": "in (the DSO called) or out (the adapter called)"})
    operation = fields.String()
    outcome = fields.String(metadata={"description": "ok, a FaultCode, Rejected, or Unreachable"})
    http_status = fields.Integer(allow_none=True)
    duration_ms = fields.Float()
    detail = fields.String(allow_none=True)


class MessagesSchema(ma.Schema):
    messages = fields.List(fields.Nested(MessageSchema))


# --- blueprints ----------------------------------------------------------------------------------


def _health(adapter: Adapter) -> Blueprint:
    blp = Blueprint(
        "cpo_health", __name__, url_prefix=PREFIX, description="Is the adapter up and its database reachable?"
    )

    @blp.route("/health", methods=["GET"])
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database does not answer")
    def health() -> Response:
        """Health of the adapter and its database"""
        return health_response(adapter.store.engine, "the CPO adapter's database")

    return blp


def _charge_points(adapter: Adapter) -> Blueprint:
    blp = Blueprint(
        "cpo_charge_points",
        __name__,
        url_prefix=PREFIX,
        description="The charge points the adapter steers, their cables, ratings and OCPP logins.",
    )

    @blp.route("/charge-points", methods=["GET"])
    @blp.response(200, ChargePointSchema(many=True))
    def list_charge_points() -> list[dict[str, Any]]:
        """List charge points"""
        return adapter.charge_points_view()

    @blp.route("/charge-points", methods=["POST"])
    @blp.arguments(ChargePointSchema)
    @blp.response(201, ChargePointSchema)
    def add_charge_point(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Register a charge point (a password makes it log in with OCPP Basic auth)"""
        username, password = body.pop("username", None), body.pop("password", None)
        view = adapter.add_charge_point(ChargePoint(**body), username=username, password=password)
        return view, 201, {"Location": url_for(".get_charge_point", charge_point_id=view["id"])}

    @blp.route("/charge-points/<charge_point_id>", methods=["GET"])
    @blp.response(200, ChargePointSchema)
    def get_charge_point(charge_point_id: str) -> dict[str, Any]:
        """Get a charge point and what the adapter knows of it"""
        return adapter.charge_point_view(charge_point_id)

    @blp.route("/charge-points/<charge_point_id>", methods=["PATCH"])
    @blp.arguments(ChargePointPatchSchema)
    @blp.response(200, ChargePointSchema)
    def update_charge_point(body: dict[str, Any], charge_point_id: str) -> dict[str, Any]:
        """Change a charge point's cable or ratings (its login stays)"""
        record = adapter.store.get_charge_point(charge_point_id)
        if record is None:
            raise NotFound(f"charge point {charge_point_id} is not registered; add it with POST {PREFIX}/charge-points")
        return adapter.update_charge_point(replace(record.charge_point, **body))

    @blp.route("/charge-points/<charge_point_id>", methods=["DELETE"])
    @blp.response(204)
    @blp.alt_response(409, description="A session runs on it; remove it when the car has left")
    def remove_charge_point(charge_point_id: str) -> Response:
        """Remove a charge point that has no session running"""
        adapter.remove_charge_point(charge_point_id)
        return Response(status=204)

    @blp.route("/charge-points/<charge_point_id>/retry", methods=["POST"])
    @blp.arguments(NoBodySchema, required=False)
    @blp.response(200, ChargePointSchema)
    def retry(_body: dict[str, Any], charge_point_id: str) -> dict[str, Any]:
        """Give an excluded charge point another chance, from ChargePointMaxProfile on
        (send Content-Type: application/json with no body or {})"""
        return adapter.retry(charge_point_id)

    return blp


def _charging(adapter: Adapter) -> Blueprint:
    blp = Blueprint(
        "cpo_charging",
        __name__,
        url_prefix=PREFIX,
        description="What the adapter does: sessions, limits per connector, profiles sent, budgets received.",
    )

    @blp.route("/sessions", methods=["GET"])
    @blp.arguments(SessionQuerySchema, location="query")
    @blp.response(200, SessionSchema(many=True))
    def sessions(query: dict[str, Any]) -> list[dict[str, Any]]:
        """Running sessions by transaction id; with all=true, then recent finished ones, newest first"""
        running = [{**s, "running": True, "stopped_at": None, "reason": None} for s in adapter.sessions_view()]
        if not query["all"]:
            return running
        # the newest transactions hold the running ones too: fetch enough to leave `limit` finished ones
        recent = adapter.store.recent_transactions(query["limit"] + len(running))
        return running + [_finished(tx) for tx in recent if not tx.is_open][: query["limit"]]

    @blp.route("/limits", methods=["GET"])
    @blp.response(200, LimitSchema(many=True))
    def limits() -> list[dict[str, Any]]:
        """The limit in force on every connector"""
        return adapter.limits_view()

    @blp.route("/profiles", methods=["GET"])
    @blp.arguments(ProfileQuerySchema, location="query")
    @blp.response(200, ProfilesSchema)
    def profiles(query: dict[str, Any]) -> dict[str, Any]:
        """Charging profiles sent and how the charge points answered, newest first"""
        return {"profiles": adapter.store.recent_profiles(query["limit"], charge_point_id=query.get("charge_point_id"))}

    @blp.route("/budgets", methods=["GET"])
    @blp.response(200, BudgetsSchema(many=True))
    def budgets() -> list[dict[str, Any]]:
        """Budgets received per cable from the current block on, the backup capacity, how far they reach"""
        return adapter.budgets_view()

    return blp


def _finished(tx: Transaction) -> dict[str, Any]:
    stop_wh = tx.meter_start_wh if tx.meter_stop_wh is None else tx.meter_stop_wh
    delivered = Decimal(max(0, stop_wh - tx.meter_start_wh)) / 1000
    return {
        "transaction_id": tx.id,
        "charge_point_id": tx.charge_point_id,
        "connector_id": tx.connector_id,
        "id_tag": tx.id_tag,
        "running": False,
        "started_at": tx.started_at,
        "stopped_at": tx.stopped_at,
        "reason": tx.reason,
        "energy_kwh": delivered.quantize(Decimal("0.001")),
        "drawn_a": None,
        "phases_in_use": None,
        "limit_a": None,
    }


def _links(adapter: Adapter, messages: MessageLog) -> Blueprint:
    blp = Blueprint(
        "cpo_links",
        __name__,
        url_prefix=PREFIX,
        description="The link to the DSO (OSCP) and to the charge points (OCPP): status and every OSCP message.",
    )

    @blp.route("/status", methods=["GET"])
    @blp.response(200, StatusSchema)
    def status() -> dict[str, Any]:
        """The DSO link and the OCPP connections"""
        return adapter.status_view()

    @blp.route("/oscp/messages", methods=["GET"])
    @blp.arguments(MessageQuerySchema, location="query")
    @blp.response(200, MessagesSchema)
    def oscp_messages(query: dict[str, Any]) -> dict[str, Any]:
        """The latest OSCP messages in and out, newest first: operation, outcome and duration"""
        return {"messages": messages.recent(query["limit"])}

    @blp.route("/oscp/messages/counts", methods=["GET"])
    @blp.response(200, MessageCountsSchema)
    def oscp_counts() -> dict[str, Any]:
        """Every OSCP message since the start, counted by direction, operation and outcome"""
        return {"counts": messages.counts()}

    return blp


# --- the API -------------------------------------------------------------------------------------


class _Api(flask_smorest.Api):  # type: ignore[misc]  # untyped library
    def handle_http_exception(self, error: HTTPException) -> Response:
        if error.code == 404 and not getattr(error, "data", None):
            return error_response(404, f"there is no {request.path}; the routes are listed at {DOCS_URL}")
        return handle_http_error(error)


def register_cpo_api(app: Flask, adapter: Adapter, *, admin_token: str, messages: MessageLog) -> None:
    """Mount the adapter's API, its docs and the error handlers on `app`. Its settings carry the prefix
    CPO_, so the DSO's API (service.api) could share the app."""
    app.config.update(
        CPO_API_TITLE="gridcap CPO adapter",
        CPO_API_VERSION="1",
        CPO_OPENAPI_VERSION="3.0.3",
        CPO_OPENAPI_URL_PREFIX=PREFIX,
        CPO_OPENAPI_JSON_PATH="openapi.json",
        CPO_OPENAPI_SWAGGER_UI_PATH="docs",
        CPO_OPENAPI_SWAGGER_UI_URL=docs.ASSETS_URL,
        CPO_API_SPEC_OPTIONS={"info": {"description": _DESCRIPTION}, "security": [{"bearerAuth": []}]},
    )
    api = _Api(app, config_prefix="CPO")
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "the admin token"}
    )
    api.register_blueprint(_health(adapter))
    for blp in (_charge_points(adapter), _charging(adapter), _links(adapter, messages)):
        protect(blp, admin_token)
        api.register_blueprint(blp)
    if "docs_assets" not in app.blueprints:  # shared with the DSO's API
        app.register_blueprint(docs.assets_blueprint())
    app.register_error_handler(GridcapError, handle_domain_error)
    app.register_error_handler(Exception, handle_unexpected)
