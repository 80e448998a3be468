"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.store import Database
from service.store.tables import Base


def test_migrations_build_the_schema_the_models_describe(db: Database) -> None:
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_migrating_twice_changes_nothing_and_records_the_revision(db: Database) -> None:
    db.create_schema()
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0001"
        assert set(inspect(conn).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
