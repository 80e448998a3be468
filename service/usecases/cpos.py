"""Use cases for charge point operators: their records and their credentials."""

import dataclasses
from functools import cache
from typing import Any

from service.domain.errors import Conflict, InvalidInput, NotAuthorized
from service.domain.model import Cpo, check_text
from service.security import hash_password, verify_password
from service.store import DecisionRecord, Repository
from service.usecases.context import Context

MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 12, 1024


def _check_password(password: str) -> str:
    check_text(password, "password", MAX_PASSWORD_LENGTH)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters long")
    return hash_password(password)


def list_cpos(ctx: Context) -> list[Cpo]:
    with ctx.db.read() as session:
        return Repository(session).cpos()


def get_cpo(ctx: Context, cpo_id: str) -> Cpo:
    with ctx.db.read() as session:
        return Repository(session).cpo(cpo_id)


def create_cpo(ctx: Context, cpo: Cpo, password: str, *, actor: str) -> Cpo:
    password_hash = _check_password(password)
    with ctx.db.write() as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        if repo.cpo_id_of_username(cpo.username) is not None or repo.cpo_exists(cpo.id):
            raise Conflict(f"a CPO with id {cpo.id!r} or username {cpo.username!r} already exists; pick another")
        repo.save_cpo(cpo, now, password_hash)
        message = f"CPO {cpo.id} created ({cpo.binding}, {cpo.endpoint_url})"
        repo.record(DecisionRecord(now, actor, "cpo_created", message, cpo_id=cpo.id), [])
    return cpo


def update_cpo(ctx: Context, cpo_id: str, changes: dict[str, Any], *, actor: str) -> Cpo:
    changes = dict(changes)
    password = changes.pop("password", None)
    password_hash = _check_password(password) if password is not None else None
    with ctx.db.write() as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        old = repo.cpo(cpo_id)
        new = dataclasses.replace(old, **changes)
        if new.username != old.username and repo.cpo_id_of_username(new.username) is not None:
            raise Conflict(f"username {new.username!r} is taken by another CPO; pick another")
        repo.save_cpo(new, now, password_hash)
        described = [
            f"{k} {getattr(old, k)} -> {getattr(new, k)}" for k in changes if getattr(old, k) != getattr(new, k)
        ]
        if password_hash:
            described.append("password changed")
        message = f"CPO {cpo_id} updated: {', '.join(described) or 'no change'}"
        repo.record(DecisionRecord(now, actor, "cpo_updated", message, cpo_id=cpo_id), [])
    return new


def delete_cpo(ctx: Context, cpo_id: str, *, actor: str) -> None:
    with ctx.db.write(lock_cpos=(cpo_id,)) as session:  # subscribe takes this lock too
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        repo.cpo(cpo_id)
        cables = repo.cables_of_cpo(cpo_id)
        if cables:
            raise Conflict(f"CPO {cpo_id} is still subscribed to {', '.join(cables)}; remove those subscriptions first")
        repo.delete_cpo(cpo_id)
        repo.record(DecisionRecord(now, actor, "cpo_deleted", f"CPO {cpo_id} deleted", cpo_id=cpo_id), [])


def authenticate(ctx: Context, username: str, password: str) -> str:
    """The id of the CPO these credentials belong to. Unknown users cost as much as wrong passwords."""
    with ctx.db.read() as session:
        repo = Repository(session)
        cpo_id = repo.cpo_id_of_username(username)
        stored = repo.password_hash(cpo_id) if cpo_id else _dummy_hash()
    if not verify_password(password, stored) or cpo_id is None:
        raise NotAuthorized("unknown username or wrong password")
    return cpo_id


@cache
def _dummy_hash() -> str:
    return hash_password("not a password of anyone")
