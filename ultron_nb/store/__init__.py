"""The metadata store: everything that must outlive a kernel (SQLAlchemy Core)."""

from __future__ import annotations

import os

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


def _forget_connections() -> None:
    """In a forked child: never use the parent's pooled connections (SQLAlchemy's advice
    for ``fork``: dispose without closing what the parent still uses)."""
    for db in _OPEN.values():
        db.engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections)
