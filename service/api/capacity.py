"""What a cable offers per 15-minute block, requests and hand-backs, and reported EV usage."""

from typing import Any

from flask import Response, jsonify

from service.api.auth import ACTOR
from service.api.blueprint import Blueprint
from service.api.schemas import (
    CapacityQuerySchema,
    CapacityRequestSchema,
    CapacityViewSchema,
    RequestDecisionSchema,
    UsageReceiptSchema,
    UsageReportSchema,
    utc_iso,
)
from service.domain.blocks import BLOCK
from service.usecases import Context
from service.usecases import capacity as usecases
from service.usecases.capacity import BlockQuantity


def view_json(view: usecases.CapacityView) -> dict[str, Any]:
    """The view exactly as CapacityViewSchema documents it (a test holds them equal), built directly:
    marshmallow's field-by-field dump of a 192-block, 20-CPO view takes 6-15 ms here, this ~2 ms."""
    return {
        "cable_id": view.cable_id,
        "unit": view.unit,
        "blocks": [
            {
                "start": utc_iso(b.start),
                "end": utc_iso(b.end),
                "limit": float(b.limit),
                "base_load": float(b.base_load),
                "margin": float(b.margin),
                "available": float(b.available),
                "unallocated": float(b.unallocated),
                "budgets": {cpo_id: float(budget) for cpo_id, budget in b.budgets.items()},
                "handed_out": b.handed_out,
            }
            for b in view.blocks
        ],
    }


def _blocks(items: list[dict[str, Any]], quantity: str) -> list[BlockQuantity]:
    return [BlockQuantity(item["start"], item["end"], item[quantity]) for item in items]


def blueprint(ctx: Context) -> Blueprint:
    blp = Blueprint(
        "capacity",
        __name__,
        url_prefix="/api/v1",
        description="Capacity per 15-minute block: the view, requests and hand-backs, reported usage.",
    )

    @blp.route("/cables/<cable_id>/capacity", methods=["GET"])
    @blp.arguments(CapacityQuerySchema, location="query")
    @blp.response(200, CapacityViewSchema)
    def capacity_view(query: dict[str, Any], cable_id: str) -> Response:
        """Limit, base load, margin, available and unallocated capacity and budgets per block

        Covers [start, end) (default: the whole horizon). Blocks of local days with a DST change
        are simply 92 or 100 blocks; all times are sent back in UTC.
        """
        return jsonify(view_json(usecases.capacity(ctx, cable_id, **query)))

    @blp.route("/cables/<cable_id>/requests", methods=["POST"])
    @blp.arguments(CapacityRequestSchema)
    @blp.response(200, RequestDecisionSchema)
    def request_capacity(body: dict[str, Any], cable_id: str) -> dict[str, Any]:
        """Ask for a budget per block on behalf of a CPO

        Above the current budget is a request (granted from unallocated capacity, then from budget
        other CPOs demonstrably do not use); below it hands capacity back.
        """
        result = usecases.request(ctx, cable_id, body["cpo_id"], _blocks(body["blocks"], "capacity"), actor=ACTOR)
        return {
            "decision_id": result.decision_id,
            "status": result.status.value,
            "blocks": [{"start": s, "end": s + BLOCK, "budget": b} for s, b in result.budgets.items()],
        }

    @blp.route("/cables/<cable_id>/usage", methods=["POST"])
    @blp.arguments(UsageReportSchema)
    @blp.response(200, UsageReceiptSchema)
    def report_usage(body: dict[str, Any], cable_id: str) -> dict[str, int]:
        """Report a CPO's measured average EV load per block (blocks that have begun)"""
        blocks = _blocks(body["blocks"], "average_usage")
        return {"decision_id": usecases.report_usage(ctx, cable_id, body["cpo_id"], blocks, actor=ACTOR)}

    return blp
