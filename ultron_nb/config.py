"""Settings: where the metadata store lives, which Flink cluster to use.

Resolution order, first hit wins: explicit arguments, environment variables
(``ULTRON_HOME``, ``ULTRON_DB_URL``, ``ULTRON_FLINK_URL``, ``ULTRON_FLINK_PORT``,
``ULTRON_FLINK_SLOTS``, ``ULTRON_MLFLOW_URI``), the ``[tool.ultron_nb]`` table of the nearest
``pyproject.toml`` at or above the working directory, then defaults (home ``./.ultron``,
SQLite under it, the embedded local cluster on port 8081, an MLflow store under
``<home>/mlflow``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ultron_nb.errors import ConfigError

_ENV = {
    "home": "ULTRON_HOME",
    "db_url": "ULTRON_DB_URL",
    "flink_url": "ULTRON_FLINK_URL",
    "flink_port": "ULTRON_FLINK_PORT",
    "flink_slots": "ULTRON_FLINK_SLOTS",
    "mlflow_uri": "ULTRON_MLFLOW_URI",
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings. ``flink_url`` empty means the embedded local cluster;
    ``mlflow_uri`` empty means the MLflow store under ``<home>/mlflow`` (SQLite)."""

    home: Path = field(default_factory=lambda: Path.cwd() / ".ultron")
    db_url: str = ""
    flink_url: str = ""
    flink_port: int = 8081
    flink_slots: int = 12
    flink_headers: dict[str, str] = field(default_factory=dict)
    flink_verify: bool | str = True
    mlflow_uri: str = ""

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the metadata store."""
        return self.db_url or f"sqlite:///{self.home / 'ultron.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow tracking and registry URI: the configured one, or SQLite under the home."""
        return self.mlflow_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def local_flink_url(self) -> str:
        return f"http://127.0.0.1:{self.flink_port}"

    @property
    def target_url(self) -> str:
        """The REST URL of the cluster experiments run on."""
        return self.flink_url or self.local_flink_url

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _pyproject_table(start: Path) -> tuple[dict[str, Any], Path | None]:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: invalid TOML: {exc}") from None
            table = data.get("tool", {}).get("ultron_nb")
            if table is not None:
                return dict(table), candidate
            return {}, None
    return {}, None


def _coerce(name: str, value: Any, source: str) -> Any:
    try:
        if name == "home":
            return Path(value).expanduser().resolve()
        if name in ("flink_port", "flink_slots"):
            number = int(value)
            if number <= 0:
                raise ValueError
            return number
        if name == "flink_headers":
            if not isinstance(value, dict):
                raise ValueError
            return {str(k): str(v) for k, v in value.items()}
        if name == "flink_verify":
            if isinstance(value, bool):
                return value
            text = str(value)
            return {"true": True, "false": False}.get(text.lower(), text)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {name}") from None


def load_settings(cwd: Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings for ``cwd`` (default: the working directory)."""
    cwd = (cwd or Path.cwd()).resolve()
    values: dict[str, Any] = {"home": cwd / ".ultron"}
    table, where = _pyproject_table(cwd)
    known = set(Settings.__dataclass_fields__)
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown key [tool.ultron_nb] {key}")
        if name == "home":
            value = (where.parent / str(value)) if where else value
        values[name] = _coerce(name, value, f"{where} [tool.ultron_nb] {key}")
    for name, var in _ENV.items():
        if os.environ.get(var):
            values[name] = _coerce(name, os.environ[var], f"environment variable {var}")
    for name, value in overrides.items():
        if value is None or value == "":
            continue
        if name not in known:
            raise ConfigError(f"unknown setting {name}")
        values[name] = _coerce(name, value, f"setting {name}")
    return Settings(**values)
