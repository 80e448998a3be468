"""Swagger UI from the assets that ship with flask-swagger-ui: the docs work without a CDN."""

from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

ASSETS_URL = "/api/v1/docs/assets/"


def assets_blueprint() -> Blueprint:
    dist = Path(str(files("flask_swagger_ui") / "dist"))
    blp = Blueprint("docs_assets", __name__, url_prefix=ASSETS_URL.rstrip("/"))

    @blp.route("/<path:filename>")
    def asset(filename: str) -> Response:
        return send_from_directory(dist, filename, max_age=24 * 3600)

    return blp
