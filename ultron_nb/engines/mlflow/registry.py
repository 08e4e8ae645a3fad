"""Reading the MLflow registry for change, cheaply.

:class:`ChangeProbe` says whether the registry may have changed since the last look: on a
SQLite store, ``PRAGMA data_version`` on a read-only connection (a few microseconds; it
changes when any other connection commits); on any other store, every ``interval``
seconds. :meth:`ChangeProbe.models` reads each registered model's highest version and
aliases: on SQLite with three indexed queries on that same read-only connection (about a
millisecond; MLflow's own search computes every model's latest versions, tens of
milliseconds at a thousand versions), elsewhere with :func:`read_models`, one paged search.
:func:`versions_after` reads the versions above a number, oldest first, through the client.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.mlflow.store import (
    DOES_NOT_EXIST,
    MlflowStore,
    error_code,
    read_only_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

READY = "READY"
PENDING = "PENDING_REGISTRATION"
FAILED = "FAILED_REGISTRATION"


class ChangeProbe:
    """``changed()`` is True on the first call, then when the registry may have changed."""

    def __init__(self, store: MlflowStore, *, interval: float = 2.0):
        self.store = store
        self.interval = interval
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._looked_at = 0.0
        self._first = True

    def changed(self) -> bool:
        path = self.store.sqlite_path
        if path is None:
            now = time.monotonic()
            if self._first or now - self._looked_at >= self.interval:
                self._first = False
                self._looked_at = now
                return True
            return False
        if self._conn is None:
            if not path.is_file():
                return False
            try:
                self._conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=5,
                                             check_same_thread=False)
            except sqlite3.Error:
                return False
        try:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return True
        if self._first or version != self._version:
            self._first = False
            self._version = version
            return True
        return False

    def models(self, client: MlflowClient) -> dict[str, ModelSummary]:
        """Every registered model's highest version and aliases."""
        if self._conn is None:
            return read_models(client)
        try:
            return _read_sqlite(self._conn)
        except sqlite3.Error:  # a schema this code does not know: ask MLflow
            return read_models(client)

    def close(self) -> None:
        """Drop the connection; the next :meth:`changed` is True (versions are per
        connection)."""
        self._first = True
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class ModelSummary:
    """A registered model as the registry search shows it."""

    name: str
    top: int  # the highest version number (0: none)
    aliases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    status: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    created_ms: int


_DELETED = "Deleted_Internal"  # MLflow's stage of a deleted version (the row stays)


def _read_sqlite(conn: sqlite3.Connection) -> dict[str, ModelSummary]:
    """The registry's models, top versions and aliases from MLflow's tables, in one read
    transaction (the default workspace: what a client without one sees)."""
    conn.execute("BEGIN")
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM registered_models WHERE workspace = 'default'")]
        tops = dict(conn.execute(
            "SELECT name, MAX(version) FROM model_versions WHERE workspace = 'default' "
            "AND current_stage != ? GROUP BY name", (_DELETED,)).fetchall())
        aliases: dict[str, dict[str, int]] = {}
        for name, alias, version in conn.execute(
                "SELECT name, alias, version FROM registered_model_aliases "
                "WHERE workspace = 'default'"):
            aliases.setdefault(name, {})[str(alias)] = int(version)
    finally:
        conn.execute("COMMIT")
    return {n: ModelSummary(n, int(tops.get(n) or 0), aliases.get(n, {})) for n in names}


def read_models(client: MlflowClient) -> dict[str, ModelSummary]:
    """Every registered model's highest version and aliases (alias → version)."""
    out: dict[str, ModelSummary] = {}
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        for model in page:
            top = max((int(v.version) for v in (model.latest_versions or [])), default=0)
            aliases = {str(a): int(v) for a, v in dict(model.aliases or {}).items()}
            out[model.name] = ModelSummary(model.name, top, aliases)
        token = page.token
        if not token:
            return out


def _info(v: Any) -> VersionInfo:
    return VersionInfo(v.name, int(v.version), str(v.status), v.run_id or None,
                       str(v.source or ""), {str(k): str(x) for k, x in dict(v.tags or {}).items()},
                       int(v.creation_timestamp or 0))


def _quote(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def versions_after(client: MlflowClient, name: str, after: int) -> list[VersionInfo]:
    """Versions of ``name`` numbered above ``after``, oldest first."""
    out: list[VersionInfo] = []
    token = None
    query = f"name = {_quote(name)} AND version_number > {int(after)}"
    while True:
        page = client.search_model_versions(query, max_results=1000,
                                            order_by=["version_number ASC"], page_token=token)
        out.extend(_info(v) for v in page)
        token = page.token
        if not token:
            return sorted(out, key=lambda v: v.version)


def get_version(client: MlflowClient, name: str, version: int) -> VersionInfo | None:
    """One version, or None when it (or its model) is gone."""
    try:
        return _info(client.get_model_version(name, str(version)))
    except Exception as exc:
        if error_code(exc) == DOES_NOT_EXIST:
            return None
        raise


def run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    """The latest metrics of run ``run_id`` ({} when there is none or it is elsewhere)."""
    if not run_id:
        return {}
    try:
        return {str(k): float(v) for k, v in client.get_run(run_id).data.metrics.items()}
    except Exception as exc:
        if error_code(exc) in (DOES_NOT_EXIST, "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return {}
        raise


__all__ = ["FAILED", "PENDING", "READY", "ChangeProbe", "ModelSummary", "VersionInfo",
           "get_version", "read_models", "run_metrics", "versions_after"]
