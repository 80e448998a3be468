"""The REST API for DSO engineers under /api/v1 (flask-smorest, OpenAPI 3).

Thin by design: each route parses and validates its input with marshmallow, calls one use case
and dumps the result. Every route but /health needs the admin token; the OpenAPI document
(/api/v1/openapi.json) and Swagger UI (/api/v1/docs) are public, as they hold no data.
"""

from collections.abc import Callable
from typing import Any

import flask_smorest
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from service.api import audit, cables, capacity, cpos, docs, forecasts, health, oscp
from service.api.auth import protect
from service.api.errors import handle_domain_error, handle_http_error, handle_unexpected
from service.domain.errors import GridcapError
from service.usecases import Context

__all__ = ["register_api"]

_DESCRIPTION = """\
Capacity budgets per 15-minute block on low-voltage cables, for the DSO's engineers.

Authenticate with the admin token: `Authorization: Bearer <token>` (the Authorize button).
Send datetimes with a UTC offset (RFC 3339); they come back in UTC. Quantities are in the
cable's unit (A per phase or kW) on a 0.001 grid. Errors are JSON:
`{"code": 422, "status": "Unprocessable Entity", "message": "what to fix", "errors": {...}}`.
"""


class _Api(flask_smorest.Api):  # type: ignore[misc]  # untyped library
    def handle_http_exception(self, error: HTTPException) -> Response:
        return handle_http_error(error)


def register_api(
    app: Flask,
    ctx: Context,
    *,
    admin_token: str,
    flush_record: Callable[[], None] = lambda: None,
    logins_changed: Callable[[], None] = lambda: None,
) -> None:
    """Mount the API, its docs and its error handlers on `app`; routes call use cases on `ctx`."""
    app.config.update(
        API_TITLE="gridcap",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=docs.ASSETS_URL,
        API_SPEC_OPTIONS=_spec_options(),
    )
    api = _Api(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "the admin token"}
    )
    api.register_blueprint(health.blueprint(ctx))
    blueprints = [
        cables.blueprint(ctx),
        cpos.blueprint(ctx, logins_changed),
        capacity.blueprint(ctx),
        forecasts.blueprint(ctx),
        audit.blueprint(ctx),
        oscp.blueprint(ctx, flush_record),
    ]
    for blp in blueprints:
        protect(blp, admin_token)
        api.register_blueprint(blp)
    app.register_blueprint(docs.assets_blueprint())
    app.register_error_handler(GridcapError, handle_domain_error)
    app.register_error_handler(Exception, handle_unexpected)


def _spec_options() -> dict[str, Any]:
    return {"info": {"description": _DESCRIPTION}, "security": [{"bearerAuth": []}]}
