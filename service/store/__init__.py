"""Persistence of the service's state (SQLAlchemy 2: SQLite by default, PostgreSQL in production)."""

from service.store.engine import Database
from service.store.repository import DecisionRecord, HoldRules, Repository

__all__ = ["Database", "DecisionRecord", "HoldRules", "Repository"]
