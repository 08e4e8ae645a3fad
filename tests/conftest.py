"""Fixtures shared by every test: an isolated workspace and an IPython shell with ultron."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory whose ``.ultron`` holds the metadata store."""
    monkeypatch.chdir(tmp_path)
    for var in ("ULTRON_HOME", "ULTRON_DB_URL", "ULTRON_FLINK_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def workspace(workdir: Path) -> Any:
    from ultron_nb import Workspace

    return Workspace()


@pytest.fixture(scope="session")
def _shell() -> Any:
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture
def ip(_shell: Any, workdir: Path) -> Iterator[Any]:
    """The testing IPython shell with a fresh ``%ultron`` magic bound to ``workdir``."""
    from ultron_nb.notebook.magics import UltronMagic, load_verbs

    load_verbs()
    _shell.config.pop("UltronMagic", None)  # a test's `%config UltronMagic.home` ends with it
    magic = UltronMagic(shell=_shell)
    _shell.register_magics(magic)
    _shell.user_ns["__ultron_magic"] = magic
    yield _shell
    _shell.user_ns.pop("__ultron_magic", None)
    _shell.config.pop("UltronMagic", None)


def run_cell(ip: Any, source: str) -> Any:
    """Run a cell; return its result, raising whatever the cell raised."""
    result = ip.run_cell(source, store_history=False)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result


@pytest.fixture
def cell(ip: Any) -> Any:
    return lambda source: run_cell(ip, source)


@pytest.fixture(autouse=True)
def _job_servers_stopped(request: pytest.FixtureRequest) -> Iterator[None]:
    """A job server a test's home started (``ultron up``, ``%ultron cluster up`` in a
    notebook, a launch test) is stopped by its pid when the test ends, whatever the test's
    own teardown stopped; a link to the session's job server is left alone."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is None:
        return
    from ultron_nb.config import Settings
    from ultron_nb.engines.flink import jobclient

    for record in tmp.rglob("jobserver.json"):
        if not record.is_symlink():
            jobclient.stop_server(Settings(home=record.parent))


#: Test files that run for minutes: collected first, so that the two workers of `make test`
#: start them early instead of one worker ending the run alone.
LONG_FILES = ("test_notebooks.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONG_FILES)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("ULTRON_TEST", "1")


pytest_plugins = ["tests.support.postgres", "tests.support.s3", "tests.support.mlflow_store",
                  "tests.conftest_flink", "pytest_jupyter.jupyter_server"]
