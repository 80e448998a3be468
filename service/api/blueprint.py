"""A typed flask-smorest Blueprint whose argument parser reports errors in the API's error format.

flask-smorest ships no type hints; the thin overrides below give mypy typed decorators, so the
views stay fully typed.
"""

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar, cast

import flask
import flask_smorest
import marshmallow as ma
from webargs.flaskparser import FlaskParser, abort

View = TypeVar("View", bound=Callable[..., Any])

_MAX_LISTED = 5


def describe(errors: Mapping[str, Any]) -> str:
    """One readable sentence out of webargs' nested error dict, e.g.
    "blocks[0].start: has no UTC offset ...; cpo_id: Missing data for required field."."""
    items = [_line(path, text) for path, text in _flatten(errors, ())]
    if not items:
        return "the request is invalid"
    more = f" (and {len(items) - _MAX_LISTED} more problems)" if len(items) > _MAX_LISTED else ""
    return "; ".join(items[:_MAX_LISTED]) + more


def _flatten(messages: object, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(messages, Mapping):
        return [
            item
            for key, value in messages.items()
            for item in _flatten(value, path if key == "_schema" else (*path, key))
        ]
    if isinstance(messages, list):
        return [item for message in messages for item in _flatten(message, path)]
    return [(path, str(messages))]


def _line(path: tuple[str | int, ...], text: str) -> str:
    location, *rest = path or ("json",)
    where = ""
    for part in rest:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    if location in ("query", "querystring"):
        where = f"query parameter {where}" if where else "query string"
    where = where or "body"
    if text == "Invalid input type.":
        text = "must be a JSON object" if where == "body" else "has the wrong type"
    return f"{where}: {text.rstrip('.')}"


class Parser(FlaskParser):
    """webargs' Flask parser: unknown query parameters are rejected like unknown body fields, and
    its errors carry a message saying what to fix."""

    # None: every location uses the schema's own `unknown`, which is RAISE for all our schemas.
    DEFAULT_UNKNOWN_BY_LOCATION = dict.fromkeys(FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION)

    def handle_error(
        self,
        error: ma.ValidationError,
        req: flask.Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        messages = error.messages if isinstance(error.messages, dict) else {"json": error.messages}
        abort(error_status_code or 422, message=describe(messages), errors=messages, headers=error_headers)

    def _raw_load_json(self, req: flask.Request) -> Any:
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise  # webargs reads an empty body as missing and passes the rest to the hook below
        except RecursionError:  # e.g. "[" * 50000
            _invalid_json("it is nested too deeply")
        except ValueError as exc:  # json.loads' own limit on integer literals
            limit = sys.get_int_max_str_digits()
            _invalid_json(f"a number has more than {limit} digits" if "digits" in str(exc) else str(exc))

    def _handle_invalid_json_error(self, error: Exception, req: flask.Request, *args: Any, **kwargs: Any) -> NoReturn:
        _invalid_json(str(error))


def _invalid_json(problem: str) -> NoReturn:
    abort(400, message=f"the request body is not valid JSON ({problem}); send one JSON object")


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]  # untyped library
    """flask_smorest.Blueprint with typed decorators and our argument parser."""

    ARGUMENTS_PARSER = Parser()

    def route(self, rule: str, **options: Any) -> Callable[[View], View]:
        return cast(Callable[[View], View], super().route(rule, **options))

    def arguments(self, schema: type[ma.Schema] | ma.Schema, **options: Any) -> Callable[[View], View]:
        return cast(Callable[[View], View], super().arguments(schema, **options))

    def response(
        self, status_code: int, schema: type[ma.Schema] | ma.Schema | None = None, **options: Any
    ) -> Callable[[View], View]:
        return cast(Callable[[View], View], super().response(status_code, schema, **options))

    def alt_response(self, status_code: int, **options: Any) -> Callable[[View], View]:
        return cast(Callable[[View], View], super().alt_response(status_code, **options))

    @staticmethod
    def doc(**options: Any) -> Callable[[View], View]:
        return cast(Callable[[View], View], flask_smorest.Blueprint.doc(**options))
