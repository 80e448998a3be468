"""How the OSCP link to each CPO is doing: presence, undelivered pushes, the message record."""

from collections.abc import Callable
from typing import Any

from service.api.blueprint import Blueprint
from service.api.schemas import (
    MessageCountsSchema,
    MessageQuerySchema,
    MessagesSchema,
    OutboxSchema,
    PresenceListSchema,
)
from service.usecases import Context
from service.usecases import oscp as uc


def blueprint(ctx: Context, flush_record: Callable[[], None]) -> Blueprint:
    blp = Blueprint(
        "oscp",
        __name__,
        url_prefix="/api/v1/oscp",
        description="The OSCP link to each CPO: who is online, what is still to be pushed, every message.",
    )

    @blp.route("/cpos", methods=["GET"])
    @blp.response(200, PresenceListSchema)
    def presence() -> dict[str, Any]:
        """Each CPO's last contact and whether it counts as online"""
        return {"cpos": uc.presence(ctx)}

    @blp.route("/outbox", methods=["GET"])
    @blp.response(200, OutboxSchema)
    def outbox() -> dict[str, Any]:
        """Undelivered UpdateCableCapacityForecast pushes per CPO, with the last error"""
        return {"cpos": uc.outbox(ctx)}

    @blp.route("/messages", methods=["GET"])
    @blp.arguments(MessageQuerySchema, location="query")
    @blp.response(200, MessagesSchema)
    def messages(query: dict[str, Any]) -> dict[str, Any]:
        """Every OSCP message in and out: when, with whom, which operation, outcome and duration"""
        flush_record()
        return {"messages": uc.messages(ctx, **query)}

    @blp.route("/messages/counts", methods=["GET"])
    @blp.response(200, MessageCountsSchema)
    def counts() -> dict[str, Any]:
        """Messages counted by direction, operation and outcome"""
        flush_record()
        return {
            "counts": [
                dict(zip(("direction", "operation", "outcome", "count"), c, strict=True))
                for c in uc.message_counts(ctx)
            ]
        }

    return blp
