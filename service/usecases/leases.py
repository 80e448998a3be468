"""Named leases in the database: among many processes, the one holding a lease does the work.

The scheduler's jobs run only in the process holding SCHEDULER, so several web workers started
with --with-scheduler (or a `gridcap scheduler` beside them) never double a push or a refresh.
A holder that dies loses the lease when it expires; another process takes it over then.
"""

from datetime import timedelta

from service.store import Repository
from service.usecases.context import Context

SCHEDULER = "scheduler"


def hold(ctx: Context, name: str, owner: str, ttl: timedelta) -> bool:
    """Take the lease, or keep it for another `ttl`; False while another owner holds it."""
    with ctx.db.write() as session:
        now = ctx.clock()
        return Repository(session).take_lease(name, owner, now, now + ttl)


def release(ctx: Context, name: str, owner: str) -> None:
    with ctx.db.write() as session:
        Repository(session).drop_lease(name, owner, ctx.clock())


def holder(ctx: Context, name: str) -> str | None:
    with ctx.db.read() as session:
        return Repository(session).lease_holder(name, ctx.clock())
