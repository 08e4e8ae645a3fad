"""The metadata store: everything that must outlive a kernel (SQLAlchemy Core)."""

from __future__ import annotations

from ultron_nb.store.db import Database
from ultron_nb.store.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Database", "open_database"]

_OPEN: dict[str, Database] = {}


def open_database(url: str, *, create_parent: bool = True) -> Database:
    """The (per-process shared) database at ``url``, its schema ensured. A SQLite store's
    missing folder is created unless ``create_parent`` is false."""
    db = _OPEN.get(url)
    if db is None:
        db = Database(url, create_parent=create_parent)
        _OPEN[url] = db
    db.ensure_schema()
    return db
