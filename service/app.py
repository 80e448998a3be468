"""The application factory: wires settings, database and transports. Starts no jobs."""

import logging
from dataclasses import dataclass

from flask import Flask

from service.api import metrics, register_api
from service.oscp.v1.gateway import GatewaySettings, OscpGateway, dso_role, register_oscp
from service.oscp.v1.recorder import Recorder
from service.settings import Settings
from service.usecases import Context, build_context


@dataclass(frozen=True)
class Wiring:
    """What create_app built that outlives a request: close it when the server stops."""

    ctx: Context
    recorder: Recorder
    gateway: OscpGateway

    def close(self) -> None:
        self.recorder.close()


def create_app(settings: Settings, ctx: Context | None = None) -> Flask:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = ctx or build_context(settings)
    app = Flask("gridcap")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    recorder = Recorder(ctx)
    gateway = OscpGateway(
        dso_role(ctx),
        GatewaySettings(settings.max_body_bytes, settings.oscp_rate_per_minute, settings.public_url),
        recorder,
    )
    register_api(
        app,
        ctx,
        admin_token=settings.resolved_admin_token(),
        flush_record=recorder.flush,
        logins_changed=gateway.credentials.forget,  # other processes forget within CREDENTIAL_TTL_S
    )
    register_oscp(app, gateway)
    app.register_blueprint(metrics.blueprint(ctx))  # GET /metrics, public: see service/api/metrics.py
    app.extensions["gridcap"] = Wiring(ctx, recorder, gateway)
    return app


def wiring(app: Flask) -> Wiring:
    found: Wiring = app.extensions["gridcap"]
    return found
