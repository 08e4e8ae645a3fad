"""Fixtures for tests on a real MLflow store (a plugin of ``tests/conftest.py``): a SQLite
store built once per session and copied into each test's home (MLflow builds a new store's
schema in seconds), and a plain MLflow client in another process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.store import MlflowStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema, built once."""
    home = tmp_path_factory.mktemp("mlflow-template") / ".ultron"
    MlflowStore.of(Settings(home=home)).ensure()
    return home / "mlflow" / "mlflow.db"


def install_store(home: Path, template: Path) -> MlflowStore:
    """Put a copy of the template store at ``<home>/mlflow/mlflow.db``."""
    target = home / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    store = MlflowStore.of(Settings(home=home))
    assert store.exists()
    return store


class RegistryClient:
    """``tests/support/registry_client.py`` in its own process: a plain MlflowClient."""

    def __init__(self, uri: str, artifacts: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["PYTHONPATH"] = ""  # nothing of ultron_nb on its path
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "support" / "registry_client.py"), uri,
             str(artifacts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env, cwd=str(artifacts.parent))
        assert self._read().get("ready")

    def _read(self) -> dict[str, Any]:
        out: IO[str] = self.proc.stdout  # type: ignore[assignment]
        line = out.readline()
        if not line:
            raise AssertionError(f"the registry client died (exit {self.proc.wait()})")
        return dict(json.loads(line))

    def __call__(self, op: str, **kw: Any) -> dict[str, Any]:
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        stdin.write(json.dumps({"op": op, **kw}) + "\n")
        stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self("quit")
            except (AssertionError, BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def registry_client(ms_settings: Settings) -> Iterator[RegistryClient]:
    artifacts = ms_settings.home / "foreign-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    client = RegistryClient(ms_settings.mlflow_tracking_uri, artifacts)
    yield client
    client.close()


@pytest.fixture
def ms_settings(workdir: Path, mlflow_template: Path) -> Settings:
    """Settings of a fresh workspace whose MLflow store exists (empty)."""
    settings = Settings(home=workdir / ".ultron")
    install_store(settings.home, mlflow_template)
    return settings
