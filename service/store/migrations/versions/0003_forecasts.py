"""Forecasts: the newest base-load forecast per block, each cable's last refresh, and leases
(one scheduler among many processes).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

import service.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    quantity = service.store.tables.Quantity(precision=14, scale=3)
    utc = service.store.tables.UtcDateTime(timezone=True)
    op.create_table(
        "base_load_forecasts",
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("start", utc, nullable=False),
        sa.Column("issued_at", utc, nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("p50", quantity, nullable=False),
        sa.Column("lower", quantity, nullable=False),
        sa.Column("upper", quantity, nullable=False),
        sa.ForeignKeyConstraint(["cable_id"], ["cables.id"]),
        sa.PrimaryKeyConstraint("cable_id", "start"),
    )
    op.create_table(
        "forecast_runs",
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("attempted_at", utc, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("issued_at", utc, nullable=True),
        sa.Column("model", sa.String(length=32), nullable=True),
        sa.Column("peak", quantity, nullable=True),
        sa.Column("quality", sa.Text(), nullable=True),
        sa.Column("metrics", sa.Text(), nullable=True),
        sa.Column("metrics_at", utc, nullable=True),
        sa.ForeignKeyConstraint(["cable_id"], ["cables.id"]),
        sa.PrimaryKeyConstraint("cable_id"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", utc, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("forecast_runs")
    op.drop_table("base_load_forecasts")
