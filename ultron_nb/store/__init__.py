"""The metadata store: everything that must outlive a kernel (SQLAlchemy Core)."""

from __future__ import annotations

from ultron_nb.store.db import Database
from ultron_nb.store.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Database", "open_database"]

_OPEN: dict[str, Database] = {}


def open_database(url: str) -> Database:
    """The (per-process shared) database at ``url``, its schema ensured."""
    db = _OPEN.get(url)
    if db is None:
        db = _OPEN[url] = Database(url)
    db.ensure_schema()
    return db
