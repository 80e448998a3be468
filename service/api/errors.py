"""Every error leaves as JSON: {"code": 422, "status": "Unprocessable Entity", "message": ..., "errors": {...}}.

That is flask-smorest's own error format, so the errors of the framework (routing, parsing) and
of the domain look alike. The domain's exceptions map to HTTP statuses in the one table below.
"""

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES

from service.domain.errors import Conflict, GridcapError, InvalidInput, NotAuthorized, NotFound, NotSubscribed

log = logging.getLogger("gridcap.api")

# The one table from domain exceptions to HTTP statuses; subclasses (UnknownCable, ...) follow their
# base. Anything absent (InvariantViolation, bugs) is a 500 with a generic message.
STATUS_OF_ERROR: dict[type[GridcapError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    NotSubscribed: 409,
    Conflict: 409,
    NotAuthorized: 401,
}


def error_response(
    code: int, message: str, *, errors: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Error"), "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = code
    response.headers.update(headers or {})
    return response


def status_of(error: GridcapError) -> int | None:
    for cls in type(error).__mro__:
        if cls in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[cls]
    return None


def handle_domain_error(error: GridcapError) -> Response:
    code = status_of(error)
    if code is None:
        return handle_unexpected(error)
    headers = {"WWW-Authenticate": 'Bearer realm="gridcap"'} if code == 401 else None
    return error_response(code, error.message, errors=error.errors, headers=headers)


def handle_unexpected(error: Exception) -> Response:
    """A bug or a broken invariant: log it with its traceback, tell the caller no details."""
    reference = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", reference, request.method, request.path, exc_info=error)
    return error_response(
        500,
        f"internal error (reference {reference}); it has been logged for the operators, who can look it up",
    )


def handle_http_error(error: HTTPException) -> Response:
    """Framework errors (routing, parsing, size limits) and webargs' aborts, in the same format."""
    code = error.code or 500
    data: Mapping[str, Any] = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    if isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        headers["Allow"] = allowed
        default = f"{request.method} is not allowed on {request.path}; it accepts {allowed}"
    elif code == 404:
        default = f"there is no {request.path}; the routes are listed at /api/v1/docs"
    elif code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        default = f"the request body is larger than {limit} bytes; send less (e.g. fewer blocks per request)"
    else:
        default = error.description or HTTP_STATUS_CODES.get(code, "error")
    return error_response(
        code, data.get("message") or default, errors=data.get("errors") or data.get("messages"), headers=headers
    )
