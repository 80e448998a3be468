"""The application factory: wires settings, database and transports. Starts no jobs."""

import logging

from flask import Flask

from service.api import register_api
from service.settings import Settings
from service.usecases import Context, build_context


def create_app(settings: Settings, ctx: Context | None = None) -> Flask:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask("gridcap")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    register_api(app, ctx or build_context(settings), admin_token=settings.resolved_admin_token())
    return app
