"""InfluxQL text: quoted identifiers and string literals, and the load queries.

Cable ids come from users, so every name and value goes through `ident` or `literal`: InfluxQL reads
backslash escapes inside quotes (\\\\, \\", \\', \\n), so escaping the backslash first and then the quote
keeps any text a single token.
"""

from collections.abc import Sequence

from service.timeseries.base import LoadLayout


def ident(name: str) -> str:
    """A double-quoted identifier: measurement, field, tag key, database."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def literal(value: str) -> str:
    """A single-quoted string literal: tag values in WHERE."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def one_of(tag: str, values: Sequence[str]) -> str:
    """("tag" = 'a' OR "tag" = 'b'): equality on the index, no regular expression to escape."""
    return "(" + " OR ".join(f"{ident(tag)} = {literal(v)}" for v in values) + ")"


def mean_query(layout: LoadLayout, cable_ids: Sequence[str], start_s: int, end_s: int) -> str:
    """15-minute means per cable (and phase), computed by the server; GROUP BY time() buckets are
    aligned to the epoch, so they are exactly the UTC quarter hours."""
    group = [ident(layout.cable_tag)] + ([ident(layout.phase_tag)] if layout.phase_tag else [])
    return (
        f"SELECT mean({ident(layout.field)}) FROM {ident(layout.measurement)} "  # noqa: S608 - quoted by ident/literal
        f"WHERE {one_of(layout.cable_tag, cable_ids)} AND time >= {start_s}s AND time < {end_s}s "
        f"GROUP BY time(15m), {', '.join(group)} fill(none)"
    )


def raw_query(layout: LoadLayout, cable_id: str, phase: str | None, start_ns: int, end_ns: int) -> str:
    where = f"{ident(layout.cable_tag)} = {literal(cable_id)}"
    if phase is not None:
        where += f" AND {ident(layout.phase_tag)} = {literal(phase)}"
    return (
        f"SELECT {ident(layout.field)} FROM {ident(layout.measurement)} "  # noqa: S608 - quoted by ident/literal
        f"WHERE {where} AND time >= {start_ns}ns AND time < {end_ns}ns"
    )
