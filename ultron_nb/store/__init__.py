"""The metadata store: everything that must outlive a kernel (SQLAlchemy Core)."""

from __future__ import annotations

import os

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


def _fresh_pools_after_fork() -> None:
    """A forked child (a warm worker's runner, a user's ``multiprocessing``) must not use
    the connections its parent pooled: each engine gets a new pool, the parent's are left
    alone (SQLAlchemy's ``dispose(close=False)``)."""
    for db in _OPEN.values():
        db.engine.dispose(close=False)


os.register_at_fork(after_in_child=_fresh_pools_after_fork)
