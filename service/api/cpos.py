"""Charge point operators. Their passwords go in and never come out."""

from collections.abc import Callable
from typing import Any

from flask import Response, url_for

from service.api.auth import ACTOR
from service.api.blueprint import Blueprint
from service.api.schemas import CpoPatchSchema, CpoSchema
from service.domain.model import Cpo
from service.usecases import Context, cpos


def blueprint(ctx: Context, logins_changed: Callable[[], None] = lambda: None) -> Blueprint:
    """`logins_changed` runs after a CPO's login changed or went away (the gateway forgets what
    credentials it verified)."""
    blp = Blueprint("cpos", __name__, url_prefix="/api/v1", description="Charge point operators and their logins.")

    @blp.route("/cpos", methods=["GET"])
    @blp.response(200, CpoSchema(many=True))
    def list_cpos() -> list[Cpo]:
        """List CPOs"""
        return cpos.list_cpos(ctx)

    @blp.route("/cpos", methods=["POST"])
    @blp.arguments(CpoSchema)
    @blp.response(201, CpoSchema)
    def create_cpo(body: dict[str, Any]) -> tuple[Cpo, int, dict[str, str]]:
        """Create a CPO with its OSCP login"""
        password = body.pop("password")
        cpo = cpos.create_cpo(ctx, Cpo(**body), password, actor=ACTOR)
        return cpo, 201, {"Location": url_for(".get_cpo", cpo_id=cpo.id)}

    @blp.route("/cpos/<cpo_id>", methods=["GET"])
    @blp.response(200, CpoSchema)
    def get_cpo(cpo_id: str) -> Cpo:
        """Get a CPO"""
        return cpos.get_cpo(ctx, cpo_id)

    @blp.route("/cpos/<cpo_id>", methods=["PATCH"])
    @blp.arguments(CpoPatchSchema)
    @blp.response(200, CpoSchema)
    def update_cpo(body: dict[str, Any], cpo_id: str) -> Cpo:
        """Change a CPO (a new password replaces the old one)"""
        cpo = cpos.update_cpo(ctx, cpo_id, body, actor=ACTOR)
        logins_changed()
        return cpo

    @blp.route("/cpos/<cpo_id>", methods=["DELETE"])
    @blp.response(204)
    def delete_cpo(cpo_id: str) -> Response:
        """Delete a CPO that is subscribed to no cable"""
        cpos.delete_cpo(ctx, cpo_id, actor=ACTOR)
        logins_changed()
        return Response(status=204)

    return blp
