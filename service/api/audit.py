"""The audit trail: every budget change with its reason, and every decision."""

from typing import Any

from service.api.blueprint import Blueprint
from service.api.schemas import AuditQuerySchema, DecisionsSchema, LedgerSchema
from service.usecases import Context, audit


def blueprint(ctx: Context) -> Blueprint:
    blp = Blueprint("audit", __name__, url_prefix="/api/v1", description="Who changed which budget, when and why.")

    @blp.route("/audit", methods=["GET"])
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, LedgerSchema)
    def ledger(query: dict[str, Any]) -> dict[str, Any]:
        """Budget changes, oldest first, with the decision that made each"""
        return {"entries": audit.ledger(ctx, **query)}

    @blp.route("/audit/decisions", methods=["GET"])
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, DecisionsSchema)
    def decisions(query: dict[str, Any]) -> dict[str, Any]:
        """Decisions (requests, hand-outs, configuration changes), oldest first"""
        return {"decisions": audit.decisions(ctx, **query)}

    return blp
