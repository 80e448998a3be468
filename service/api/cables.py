"""Cables, their limit overrides, and the CPOs subscribed to them."""

from typing import Any

from flask import Response, url_for

from service.api.auth import ACTOR
from service.api.blueprint import Blueprint
from service.api.schemas import (
    CablePatchSchema,
    CableSchema,
    OverrideSchema,
    SubscriptionPatchSchema,
    SubscriptionSchema,
)
from service.domain.errors import NotFound
from service.domain.model import Cable, LimitOverride, Subscription
from service.usecases import Context, grid

MAX_OVERRIDE_ID = 2**31 - 1  # the id column is a 32-bit integer


def blueprint(ctx: Context) -> Blueprint:
    blp = Blueprint(
        "cables",
        __name__,
        url_prefix="/api/v1",
        description="Cables, their limit overrides and which CPO is on which cable.",
    )

    @blp.route("/cables", methods=["GET"])
    @blp.response(200, CableSchema(many=True))
    def list_cables() -> list[Cable]:
        """List cables"""
        return grid.list_cables(ctx)

    @blp.route("/cables", methods=["POST"])
    @blp.arguments(CableSchema)
    @blp.response(201, CableSchema)
    def create_cable(body: dict[str, Any]) -> tuple[Cable, int, dict[str, str]]:
        """Create a cable

        Its horizon is handed out at once (to nobody until CPOs subscribe).
        """
        cable = grid.create_cable(ctx, Cable(**body), actor=ACTOR)
        return cable, 201, {"Location": url_for(".get_cable", cable_id=cable.id)}

    @blp.route("/cables/<cable_id>", methods=["GET"])
    @blp.response(200, CableSchema)
    def get_cable(cable_id: str) -> Cable:
        """Get a cable"""
        return grid.get_cable(ctx, cable_id)

    @blp.route("/cables/<cable_id>", methods=["PATCH"])
    @blp.arguments(CablePatchSchema)
    @blp.response(200, CableSchema)
    def update_cable(body: dict[str, Any], cable_id: str) -> Cable:
        """Change a cable

        Changes to rated_limit, margin or base_load reallocate its budgets at once, from the current
        block on. A new reserve_share applies to blocks handed out afterwards and to later top-ups;
        budgets already handed out stay.
        """
        return grid.update_cable(ctx, cable_id, body, actor=ACTOR)

    @blp.route("/cables/<cable_id>", methods=["DELETE"])
    @blp.response(204)
    def delete_cable(cable_id: str) -> Response:
        """Delete a cable that has no subscribers"""
        grid.delete_cable(ctx, cable_id, actor=ACTOR)
        return Response(status=204)

    # --- limit overrides ------------------------------------------------------------------------

    @blp.route("/cables/<cable_id>/overrides", methods=["GET"])
    @blp.response(200, OverrideSchema(many=True))
    def list_overrides(cable_id: str) -> list[LimitOverride]:
        """List a cable's limit overrides"""
        return list(grid.get_cable(ctx, cable_id).overrides)  # a list: flask reads a tuple as (body, status)

    @blp.route("/cables/<cable_id>/overrides", methods=["POST"])
    @blp.arguments(OverrideSchema)
    @blp.response(201, OverrideSchema)
    def add_override(body: dict[str, Any], cable_id: str) -> LimitOverride:
        """Override the limit in a window

        The lowest override covering a block replaces the rated limit; budgets are reallocated at once.
        """
        return grid.add_override(ctx, cable_id, LimitOverride(**body), actor=ACTOR)

    @blp.route("/cables/<cable_id>/overrides/<int:override_id>", methods=["DELETE"])
    @blp.response(204)
    def remove_override(cable_id: str, override_id: int) -> Response:
        """Remove a limit override"""
        if not 1 <= override_id <= MAX_OVERRIDE_ID:  # no such id can exist; the database could not even look
            grid.get_cable(ctx, cable_id)  # an unknown cable is reported as such
            raise NotFound(
                f"cable {cable_id} has no limit override {override_id}; override ids run from 1 to "
                f"{MAX_OVERRIDE_ID} (list them with GET /api/v1/cables/{cable_id}/overrides)"
            )
        grid.remove_override(ctx, cable_id, override_id, actor=ACTOR)
        return Response(status=204)

    # --- subscriptions --------------------------------------------------------------------------

    @blp.route("/cables/<cable_id>/subscriptions", methods=["GET"])
    @blp.response(200, SubscriptionSchema(many=True))
    def list_subscriptions(cable_id: str) -> list[Subscription]:
        """List the CPOs subscribed to a cable"""
        return grid.list_subscriptions(ctx, cable_id)

    @blp.route("/cables/<cable_id>/subscriptions", methods=["POST"])
    @blp.arguments(SubscriptionSchema)
    @blp.response(201, SubscriptionSchema)
    def subscribe(body: dict[str, Any], cable_id: str) -> Subscription:
        """Subscribe a CPO to a cable

        Budgets of blocks after the reclaim notice are shared afresh; sooner blocks only share what
        is unallocated.
        """
        return grid.subscribe(ctx, Subscription(cable_id=cable_id, **body), actor=ACTOR)

    @blp.route("/cables/<cable_id>/subscriptions/<cpo_id>", methods=["GET"])
    @blp.response(200, SubscriptionSchema)
    def get_subscription(cable_id: str, cpo_id: str) -> Subscription:
        """Get a subscription"""
        return grid.get_subscription(ctx, cable_id, cpo_id)

    @blp.route("/cables/<cable_id>/subscriptions/<cpo_id>", methods=["PATCH"])
    @blp.arguments(SubscriptionPatchSchema)
    @blp.response(200, SubscriptionSchema)
    def update_subscription(body: dict[str, Any], cable_id: str, cpo_id: str) -> Subscription:
        """Change a subscription's weight or guaranteed minimum"""
        return grid.update_subscription(ctx, cable_id, cpo_id, body, actor=ACTOR)

    @blp.route("/cables/<cable_id>/subscriptions/<cpo_id>", methods=["DELETE"])
    @blp.response(204)
    def unsubscribe(cable_id: str, cpo_id: str) -> Response:
        """End a subscription; the CPO's budgets on the cable go at once"""
        grid.unsubscribe(ctx, cable_id, cpo_id, actor=ACTOR)
        return Response(status=204)

    return blp
