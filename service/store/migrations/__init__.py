"""Alembic migrations of the gridcap schema; `gridcap init-db` applies them."""
