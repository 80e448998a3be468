"""Core statements compiled once per dialect and run straight on the DBAPI cursor.

A decision holds its cable's lock from its first statement to its commit. SQLAlchemy's execution of
an already compiled statement (cache lookup, execution context, result object, events) costs some
40 µs where SQLite takes 5 to 10 to run it, and made up half of a decision. A `Prepared` statement
is still Core, compiled by SQLAlchemy for the dialect, and its column types still convert values
both ways; only the per-call machinery is skipped. Database errors are wrapped as SQLAlchemy wraps
them (an IntegrityError stays one), with the parameters hidden, as the engines hide them.
"""

from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import Dialect, exc
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None
_GIVEN = object()  # a bind parameter the caller must give


class Link(NamedTuple):
    """A cursor of the transaction's own DBAPI connection (what runs on it is part of the
    transaction), and the dialect that statements are compiled for."""

    dialect: Dialect
    cursor: Any


def link(session: Session) -> Link:
    connection = session.connection()
    return Link(connection.dialect, connection.connection.driver_connection.cursor())  # type: ignore[union-attr]


def run_driver_sql(dialect: Dialect, execute: Callable[..., Any], sql: str, params: Any = ()) -> None:
    """execute(sql, params) on the driver, its errors wrapped as SQLAlchemy wraps them."""
    try:
        execute(sql, params)
    except dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(
            sql, params, error, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
        ) from error


def _key(dialect: Dialect) -> tuple[str, str]:
    return dialect.name, dialect.driver  # drivers of one database differ in parameter style and types


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # bind names in order, for positional paramstyles (SQLite's qmark)
    binds: tuple[tuple[str, Processor, Any], ...]  # name, converter, the value of a literal (else _GIVEN)
    row: Any  # the namedtuple type of a result row, or None
    columns: tuple[Any, ...]  # what it returns, whose types convert the values


class Prepared:
    """One statement, compiled for each dialect on first use.

    `keys`: for an INSERT, the columns its rows give, all of them every time (no defaults are
    applied here); for other statements the bind parameters are the statement's own.
    """

    def __init__(self, statement: ClauseElement, *, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._results: dict[tuple[str, str], tuple[Processor, ...]] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(_key(dialect))
        if compiled is None:
            compiled = self._compiled[_key(dialect)] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        columns = tuple(getattr(self.statement, "exported_columns", ()))  # a SELECT's, or RETURNING
        # for_executemany: no RETURNING of the new key that was not asked for (PostgreSQL adds one)
        compiled = self.statement.compile(dialect=dialect, column_keys=self.keys, for_executemany=not columns)
        compiler = cast(SQLCompiler, compiled)
        if compiler.post_compile_params:
            raise ValueError("a prepared statement has a fixed text: no expanding IN or literal_execute parameters")
        if compiler.insert_prefetch or compiler.update_prefetch:
            raise ValueError("a prepared statement applies no Python-side defaults: give every column in `keys`")
        binds = tuple(
            (name, bind.type.dialect_impl(dialect).bind_processor(dialect), _GIVEN if bind.required else bind.value)
            for name, bind in compiler.binds.items()
        )
        row = namedtuple("Row", [c.key or f"c{i}" for i, c in enumerate(columns)], rename=True) if columns else None
        positional = tuple(compiler.positiontup) if compiler.positional and compiler.positiontup else None
        return _Compiled(compiler.string, positional, binds, row, columns)

    def rows(self, link: Link, params: Mapping[str, Any]) -> list[Any]:
        """The result rows (named tuples) of one execution."""
        dialect, cursor = link
        compiled = self._for(dialect)
        self._run(dialect, compiled, cursor.execute, self._params(compiled, params))
        fetched: list[Any] = cursor.fetchall()
        if compiled.row is None:
            return fetched
        processors = self._results.get(_key(dialect))
        if processors is None:  # some drivers' converters depend on the type the database reports
            processors = self._results[_key(dialect)] = tuple(
                c.type.dialect_impl(dialect).result_processor(dialect, d[1])
                for c, d in zip(compiled.columns, cursor.description, strict=True)
            )
        make = compiled.row._make
        return [make([p(v) if p else v for p, v in zip(processors, raw, strict=True)]) for raw in fetched]

    def first(self, link: Link, params: Mapping[str, Any]) -> Any | None:
        rows = self.rows(link, params)
        return rows[0] if rows else None

    def run(self, link: Link, rows: Iterable[Mapping[str, Any]]) -> None:
        """Execute once per row of parameters (executemany)."""
        dialect, cursor = link
        compiled = self._for(dialect)
        self._run(dialect, compiled, cursor.executemany, [self._params(compiled, r) for r in rows])

    @staticmethod
    def _run(dialect: Dialect, compiled: _Compiled, execute: Callable[..., Any], params: Any) -> None:
        run_driver_sql(dialect, execute, compiled.sql, params)

    @staticmethod
    def _params(compiled: _Compiled, given: Mapping[str, Any]) -> Any:
        values = {}
        for name, process, literal in compiled.binds:
            value = given[name] if literal is _GIVEN or name in given else literal
            try:
                values[name] = process(value) if process else value
            except Exception as error:  # as SQLAlchemy reports a value its type refuses (a naive datetime)
                raise exc.StatementError(f"({type(error).__name__}) {error}", compiled.sql, None, error) from error
        if compiled.positional is None:
            return values
        return tuple(values[name] for name in compiled.positional)
