"""Liveness for load balancers and monitoring: no token needed, no data revealed."""

import logging

from flask import Response, jsonify
from sqlalchemy import Engine, text

from service.api.blueprint import Blueprint
from service.api.schemas import HealthSchema
from service.usecases import Context

log = logging.getLogger("gridcap.api")


def health_response(engine: Engine, what: str) -> Response:
    """200 when the database answers a trivial query, else 503 (the cause only in the log)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        log.exception("health check: %s does not answer", what)
        response = jsonify(status="unavailable", database="unavailable")
        response.status_code = 503
        return response
    return jsonify(status="ok", database="ok")


def blueprint(ctx: Context) -> Blueprint:
    blp = Blueprint(
        "health", __name__, url_prefix="/api/v1", description="Is the service up and its database reachable?"
    )

    @blp.route("/health", methods=["GET"])
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database does not answer")
    def health() -> Response:
        """Health of the service and its database"""
        return health_response(ctx.db.engine, "the database")

    return blp
