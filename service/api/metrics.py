"""GET /metrics: Prometheus metrics in the text exposition format.

Public, like /api/v1/health, because scrapers rarely carry tokens: it reveals counts, durations,
CPO ids and outbox depths, never credentials or message contents. Keep it off the public internet
(the reverse proxy in front of OSCP should not route /metrics). What is measured and how several
gunicorn workers agree is in service/monitoring/metrics.py.
"""

from flask import Blueprint, Response

from service.monitoring.metrics import DatabaseCollector, exposition
from service.usecases import Context


def blueprint(ctx: Context) -> Blueprint:
    blp = Blueprint("metrics", __name__)
    database = DatabaseCollector(ctx)  # one per process: it reuses a recent read

    @blp.get("/metrics")
    def metrics() -> Response:
        body, content_type = exposition(database)  # a database failure shows as gridcap_database_up 0
        return Response(body, 200, content_type=content_type, headers={"Cache-Control": "no-store"})

    return blp
