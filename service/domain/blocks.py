"""15-minute blocks: tz-aware, aligned to the quarter hour, identified by their UTC start."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from service.domain.errors import InvalidInput

BLOCK = timedelta(minutes=15)
FIRST_YEAR, LAST_YEAR = 1970, 2999  # block arithmetic stays far from datetime's limits


def as_utc(moment: datetime, field: str) -> datetime:
    """Reject naive datetimes (their meaning depends on a server's zone) and convert to UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(
            f"{field} has no UTC offset ({moment.isoformat()}); "
            "send it with an offset, e.g. 2026-03-29T18:00:00+02:00 or ...Z"
        )
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not FIRST_YEAR <= utc.year <= LAST_YEAR:
        raise InvalidInput(f"{field} {moment.isoformat()} is out of range; use a date in {FIRST_YEAR}-{LAST_YEAR}")
    return utc


def is_aligned(moment: datetime) -> bool:
    return moment.second == 0 and moment.microsecond == 0 and moment.minute % 15 == 0


def block_floor(moment: datetime) -> datetime:
    """Start of the block containing `moment` (UTC)."""
    utc = as_utc(moment, "moment")
    return utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)


def aligned(moment: datetime, field: str) -> datetime:
    utc = as_utc(moment, field)
    if not is_aligned(utc):
        raise InvalidInput(
            f"{field} {moment.isoformat()} is not on a quarter hour; blocks start at :00, :15, :30 or :45"
        )
    return utc


def block_of(start: datetime, end: datetime, field: str = "block") -> datetime:
    """Validate one block given as start and end; return its UTC start."""
    start_utc = aligned(start, f"{field}.start")
    end_utc = as_utc(end, f"{field}.end")
    if end_utc - start_utc != BLOCK:
        raise InvalidInput(f"{field} runs from {start.isoformat()} to {end.isoformat()}; a block is exactly 15 minutes")
    return start_utc


def block_starts(start: datetime, end: datetime) -> Iterator[datetime]:
    """UTC starts of the blocks covering [start, end); both ends must be aligned."""
    cursor = aligned(start, "start")
    stop = aligned(end, "end")
    if stop <= cursor:
        raise InvalidInput(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    while cursor < stop:
        yield cursor
        cursor += BLOCK
