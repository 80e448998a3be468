"""OSCP gateway: what each CPO confirmed per block, the push outbox, CPO presence and the
record of every OSCP message.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

import service.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budgets") as batch:
        batch.add_column(sa.Column("told", service.store.tables.Quantity(precision=14, scale=3), nullable=True))
        batch.add_column(sa.Column("reduced_at", service.store.tables.UtcDateTime(timezone=True), nullable=True))
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cpo_id", sa.String(length=64), nullable=False),
        sa.Column("cable_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", service.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_cpo_pending", "outbox", ["cpo_id", "delivered_at", "id"])
    op.create_index(op.f("ix_outbox_next_attempt_at"), "outbox", ["next_attempt_at"])
    op.create_table(
        "cpo_presence",
        sa.Column("cpo_id", sa.String(length=64), nullable=False),
        sa.Column("last_seen_at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cpo_id"),
    )
    op.create_table(
        "oscp_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", service.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("cpo_id", sa.String(length=64), nullable=True),
        sa.Column("binding", sa.String(length=8), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_oscp_messages_at"), "oscp_messages", ["at"])
    op.create_index(op.f("ix_oscp_messages_cpo_id"), "oscp_messages", ["cpo_id"])


def downgrade() -> None:
    op.drop_table("oscp_messages")
    op.drop_table("cpo_presence")
    op.drop_index(op.f("ix_outbox_next_attempt_at"), table_name="outbox")
    op.drop_index("ix_outbox_cpo_pending", table_name="outbox")
    op.drop_table("outbox")
    with op.batch_alter_table("budgets") as batch:
        batch.drop_column("reduced_at")
        batch.drop_column("told")
