"""Which MLflow store a workspace uses, and clients bound to it.

Default: a tracking and registry store on SQLite at ``<home>/mlflow/mlflow.db`` with
artifacts under ``<home>/mlflow/artifacts`` (no server). ``Settings.mlflow_uri`` points at
a team's store instead: an ``http(s)://`` tracking server (artifacts as it serves them) or
a database URI (artifacts still under the home). Experiments are created with an explicit
``artifact_location``: MLflow's default is ``./mlruns`` relative to whatever directory the
process runs in.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from ultron_nb.config import Settings
from ultron_nb.errors import ConfigError, EngineError

if TYPE_CHECKING:
    from mlflow import MlflowClient

ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
_INIT_LOCK = threading.Lock()
_ENSURED: set[str] = set()  # stores whose schema this process has seen


def mask_uri(uri: str) -> str:
    """``uri`` with the password of its user part (or a bare token user) replaced by
    ``***``; safe to show, log and store."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "***"
    if "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    masked = f"{user}:***@{host}" if sep else f"***@{host}"
    return urlunsplit((parts.scheme, masked, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class MlflowStore:
    """The MLflow store of a workspace: ``uri`` (tracking = registry), where local files go."""

    uri: str
    home: Path

    @classmethod
    def of(cls, settings: Settings) -> MlflowStore:
        return cls(settings.mlflow_tracking_uri, settings.home)

    @property
    def safe_uri(self) -> str:
        return mask_uri(self.uri)

    @property
    def is_server(self) -> bool:
        """A tracking server (HTTP): it decides where artifacts go."""
        return urlsplit(self.uri).scheme in ("http", "https", "databricks")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite store, else None."""
        if not self.uri.startswith("sqlite:///"):
            return None
        path = unquote(self.uri[len("sqlite:///"):].split("?", 1)[0])
        return Path(path).resolve() if path and path != ":memory:" else None

    @property
    def artifact_root(self) -> Path | None:
        """Where experiments created here keep their artifacts (None: the server decides)."""
        return None if self.is_server else self.home / "mlflow" / "artifacts"

    def exists(self) -> bool:
        """Is there a store to read (always assumed for a non-SQLite one)?"""
        path = self.sqlite_path
        return path is None or _has_registry_schema(path)

    def client(self) -> MlflowClient:
        """A client bound to this store (created, with its schema, for a local SQLite one)."""
        self.ensure()
        return _client(self.uri)

    def ensure(self) -> None:
        """Create a SQLite store's directory and schema once, under a file lock, so that
        concurrent first users do not race on MLflow's schema migration."""
        if self.uri in _ENSURED:
            return
        path = self.sqlite_path
        if path is None or _has_registry_schema(path):
            _ENSURED.add(self.uri)
            return
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with _INIT_LOCK, open(path.parent / ".init.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _has_registry_schema(path):
                _ENSURED.add(self.uri)
                return
            client = _client(self.uri)
            try:  # both stores build their tables on first use
                client.search_experiments(max_results=1)
                client.search_registered_models(max_results=1)
            except Exception as exc:
                raise engine_error(f"cannot create the MLflow store {self.safe_uri}", exc,
                                   self) from None
            _ENSURED.add(self.uri)

    def experiment_id(self, name: str, tags: dict[str, str] | None = None) -> str:
        """The id of MLflow experiment ``name``, created (with an explicit artifact location
        under the home) when it does not exist yet."""
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        root = self.artifact_root
        location = None
        if root is not None:
            location = str(root / _safe_dir(name))
            Path(location).mkdir(parents=True, exist_ok=True)
        try:
            return str(client.create_experiment(name, artifact_location=location, tags=tags))
        except Exception as exc:
            if error_code(exc) != ALREADY_EXISTS:
                raise
        found = client.get_experiment_by_name(name)  # created meanwhile by another process
        if found is None:
            raise EngineError(f"MLflow experiment {name!r} cannot be created in {self.safe_uri}")
        return str(found.experiment_id)


@functools.lru_cache(maxsize=8)
def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _has_registry_schema(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(read_only_uri(path), uri=True,
                                                timeout=5)) as conn:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
                "('alembic_version', 'registered_models', 'model_versions', "
                "'registered_model_aliases')").fetchall()
            if len(rows) < 4:
                return False
            return conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def read_only_uri(path: Path) -> str:
    """The SQLite URI that opens ``path`` read-only."""
    return path.as_uri() + "?mode=ro"


def _safe_dir(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def error_code(exc: BaseException) -> str | None:
    """The MLflow error code of ``exc`` (``RESOURCE_DOES_NOT_EXIST``, ...), if it has one."""
    code = getattr(exc, "error_code", None)
    return str(code) if code is not None else None


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def engine_error(what: str, exc: BaseException, store: MlflowStore) -> EngineError:
    """One line for an MLflow failure, the store's URI masked."""
    text = _message(exc).replace(store.uri, store.safe_uri)
    return EngineError(f"{what}: {text}")


def check_name(name: str, what: str = "model name") -> str:
    """A registered model name MLflow accepts, or a :class:`ConfigError` naming it."""
    if not name or not name.strip() or "/" in name or ":" in name:
        raise ConfigError(f"{what} {name!r}: must be non-empty, without '/' or ':'")
    return name


__all__ = ["MlflowStore", "check_name", "engine_error", "error_code", "mask_uri"]
