"""The admin bearer token, and the request checks every protected blueprint runs first."""

from collections.abc import Callable

from flask import Blueprint, Response, request

from service.api.errors import error_response
from service.security import same_secret

ACTOR = "api:admin"  # who REST calls are recorded as in the audit trail

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def challenge(error: str | None = None) -> dict[str, str]:
    """The WWW-Authenticate header of a 401 (RFC 6750)."""
    value = 'Bearer realm="gridcap"' + (f', error="{error}"' if error else "")
    return {"WWW-Authenticate": value}


def protect(blueprint: Blueprint, admin_token: str) -> None:
    """Every route of the blueprint needs `Authorization: Bearer <admin token>`; bodies must be JSON."""
    blueprint.before_request(_guard(admin_token))


def _guard(admin_token: str) -> Callable[[], Response | None]:
    def guard() -> Response | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error_response(
                401,
                "this route needs the admin token: send the header 'Authorization: Bearer <token>'",
                headers=challenge(),
            )
        if not same_secret(given.strip(), admin_token):
            return error_response(401, "the bearer token is not the admin token", headers=challenge("invalid_token"))
        if request.method in _BODY_METHODS and not request.is_json:
            return error_response(
                415,
                f"the body must be JSON: send it with 'Content-Type: application/json' "
                f"(got {request.mimetype or 'no content type'!r})",
            )
        return _unstorable_path_part()

    return guard


def _unstorable_path_part() -> Response | None:
    """A 404 for ids in the path that no record can have: a NUL (%00), which PostgreSQL cannot even look up."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and "\x00" in value:
            return error_response(
                404,
                f"{name} in the path contains a NUL character (%00), so no record has it; "
                "ids are 1-64 letters, digits, '.', '_', ':' or '-'",
            )
    return None
