"""Initial schema: cables, overrides, CPOs, subscriptions, blocks, budgets, pending requests,
usage reports, decisions and the ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

import service.store.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("start", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("cpo_id", sa.String(length=64), nullable=False),
        sa.Column("capacity", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.PrimaryKeyConstraint("cable_id", "start", "cpo_id"),
    )
    op.create_table(
        "cables",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("unit", sa.String(length=2), nullable=False),
        sa.Column("rated_limit", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("phases", sa.Integer(), nullable=False),
        sa.Column("voltage_v", sa.Numeric(precision=8, scale=2), nullable=False),
        sa.Column("margin", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("reserve_share", sa.Numeric(precision=5, scale=4), nullable=False),
        sa.Column("base_load", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("created_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cpos",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=False),
        sa.Column("endpoint_url", sa.String(length=2000), nullable=False),
        sa.Column("binding", sa.String(length=8), nullable=False),
        sa.Column("created_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("cable_id", sa.String(length=64), nullable=True),
        sa.Column("cpo_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decisions_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_decisions_cable_id"), ["cable_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_decisions_cpo_id"), ["cpo_id"], unique=False)

    op.create_table(
        "pending_requests",
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("start", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("cpo_id", sa.String(length=64), nullable=False),
        sa.Column("target", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("requested_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cable_id", "start", "cpo_id"),
    )
    op.create_table(
        "usage_reports",
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("cpo_id", sa.String(length=64), nullable=False),
        sa.Column("start", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("average_usage", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("reported_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cable_id", "cpo_id", "start"),
    )
    op.create_table(
        "blocks",
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("start", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("limit", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("base_load", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("margin", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.ForeignKeyConstraint(["cable_id"], ["cables.id"]),
        sa.PrimaryKeyConstraint("cable_id", "start"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("cpo_id", sa.String(length=64), nullable=False),
        sa.Column("start", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("old_capacity", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("new_capacity", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decisions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_at"), ["at"], unique=False)
        batch_op.create_index("ix_ledger_cable_cpo", ["cable_id", "cpo_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_decision_id"), ["decision_id"], unique=False)

    op.create_table(
        "limit_overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("start", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("end", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("limit", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["cable_id"], ["cables.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("limit_overrides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_limit_overrides_cable_id"), ["cable_id"], unique=False)

    op.create_table(
        "subscriptions",
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("cpo_id", sa.String(length=64), nullable=False),
        sa.Column("weight", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.Column("guaranteed_minimum", service.store.tables.Quantity(precision=14, scale=3), nullable=False),
        sa.ForeignKeyConstraint(["cable_id"], ["cables.id"]),
        sa.ForeignKeyConstraint(["cpo_id"], ["cpos.id"]),
        sa.PrimaryKeyConstraint("cable_id", "cpo_id"),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscriptions_cpo_id"), ["cpo_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_cpo_id"))

    op.drop_table("subscriptions")
    with op.batch_alter_table("limit_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_limit_overrides_cable_id"))

    op.drop_table("limit_overrides")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_decision_id"))
        batch_op.drop_index("ix_ledger_cable_cpo")
        batch_op.drop_index(batch_op.f("ix_ledger_at"))

    op.drop_table("ledger")
    op.drop_table("blocks")
    op.drop_table("usage_reports")
    op.drop_table("pending_requests")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decisions_cpo_id"))
        batch_op.drop_index(batch_op.f("ix_decisions_cable_id"))
        batch_op.drop_index(batch_op.f("ix_decisions_at"))

    op.drop_table("decisions")
    op.drop_table("cpos")
    op.drop_table("cables")
    op.drop_table("budgets")
